"""
Flow control through the websocket bridge of a real daemon: a client that
stops reading pauses the upstream, an upstream that stops reading pauses
the client, and the daemon's memory stays within a few MB meanwhile;
nothing is lost once the reader reads again.

Blocking sockets and the C{websockets} library's blocking client are fine
here: the daemon is another process.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from websockets.sync.client import ClientConnection, connect

from tests.support import Daemon
from tests.test_relay import MB, residentBytes

#: Seconds a blocked send must stay blocked to count as paused.
PAUSED_AFTER = 3.0
#: The most either side may push before the test calls it unbounded.
CAP = 200 * MB
CHUNK = 256 * 1024


class BridgeFlowControlTests(SynchronousTestCase):
    """
    A real daemon's websocket bridge between the C{websockets} client and
    a blocking TCP upstream.
    """

    def setUp(self) -> None:
        self.upstream = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(self.upstream.close)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        (folder / "multiport.toml").write_text(
            "[[port]]\ninterface = '127.0.0.1'\nport = 0\nhandler = 'websocket'\n"
            f"options = {{ upstream = '127.0.0.1:{self.upstream.getsockname()[1]}',"
            " ping_interval = 0, idle_timeout = 0 }\n"
        )
        self.daemon = Daemon(
            ["--no-status", "--config", str(folder / "multiport.toml")], str(folder)
        )
        self.addCleanup(self.daemon.stop)
        port = self.daemon.listening(1)["websocket"][1]
        # max_queue: the client stops reading its socket once 4 messages
        # wait unread, as an application that stops calling recv().
        self.client: ClientConnection = connect(
            f"ws://127.0.0.1:{port}/ws",
            proxy=None,
            max_queue=4,
            ping_interval=None,
            open_timeout=10,
        )
        self.addCleanup(self.client.close)
        self.server, _ = self.upstream.accept()
        self.addCleanup(self.server.close)
        self.client.send(b"warm up")
        self.assertEqual(self.server.recv(100), b"warm up")
        self.server.sendall(b"warm up")
        self.assertEqual(self.client.recv(timeout=10), b"warm up")
        self.start = residentBytes(self.daemon.process.pid)

    def growth(self) -> int:
        """
        How much the daemon's resident memory grew since the warm-up.
        """
        return residentBytes(self.daemon.process.pid) - self.start

    def test_clientStopsReading(self) -> None:
        """
        The client reads nothing: the upstream's sends block once a
        bounded amount is in flight, the daemon's memory stays put; then
        the client reads it all, intact.
        """
        self.server.settimeout(PAUSED_AFTER)
        sent = hashlib.sha256()
        total = 0
        chunk = os.urandom(CHUNK)
        while total < CAP:
            try:
                self.server.sendall(chunk)
            except TimeoutError:
                break
            sent.update(chunk)
            total += len(chunk)
        # A partial sendall may have queued part of the chunk: nothing the
        # client checks, since it reads exactly what was counted first.
        self.assertLess(total, 64 * MB, "the upstream was never paused")
        growth = self.growth()
        self.assertLess(growth, 8 * MB, f"grew {growth / MB:.1f} MB")
        received = hashlib.sha256()
        got = 0
        while got < total:
            message = self.client.recv(timeout=30)
            assert isinstance(message, bytes)
            message = message[: total - got]
            received.update(message)
            got += len(message)
        self.assertEqual(received.hexdigest(), sent.hexdigest())

    def test_upstreamStopsReading(self) -> None:
        """
        The upstream reads nothing: the client's sends block once a
        bounded amount is in flight, the daemon's memory stays put; then
        the upstream reads it all, intact.
        """
        chunk = os.urandom(CHUNK)
        progress = [0]
        done = threading.Event()

        def push() -> None:
            try:
                while progress[0] < CAP and not done.is_set():
                    self.client.send(chunk)
                    progress[0] += len(chunk)
            except Exception:
                pass

        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        # Paused: no progress for PAUSED_AFTER seconds, checked a bounded
        # number of times.
        last = -1
        for _ in range(40):
            if progress[0] == last:
                break
            last = progress[0]
            done.wait(PAUSED_AFTER)
        total = progress[0]
        self.assertLess(total, 64 * MB, "the client was never paused")
        growth = self.growth()
        self.assertLess(growth, 8 * MB, f"grew {growth / MB:.1f} MB")
        # Read what was sent (the message in flight too), then stop.
        done.set()
        self.server.settimeout(30)
        got = 0
        expected = hashlib.sha256()
        received = hashlib.sha256()
        while got < total:
            data = self.server.recv(1024 * 1024)
            self.assertTrue(data, "the upstream's connection ended early")
            received.update(data)
            got += len(data)
        sender.join(30)
        while got < progress[0]:
            data = self.server.recv(1024 * 1024)
            received.update(data)
            got += len(data)
        for _ in range(progress[0] // CHUNK):
            expected.update(chunk)
        self.assertEqual(got, progress[0])
        self.assertEqual(received.hexdigest(), expected.hexdigest())
