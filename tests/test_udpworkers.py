"""
A UDP port under C{--workers 2}: the main process binds the socket and
both workers read from it.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from tests.support import Daemon, waitUntil


def getJSON(port: int, path: str) -> dict:
    """
    One JSON document from the status port on 127.0.0.1:C{port}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


#: At most this many bursts of 50 datagrams until both workers read some.
BURSTS = 40


class UDPWorkersTests(SynchronousTestCase):
    """
    A real daemon with C{--workers 2} and a UDP echo port.
    """

    def test_bothWorkersRead(self):
        """
        Every datagram is answered, the main process's count is the sum of
        the workers', and both workers read from the one socket.
        """
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        daemon = Daemon(
            [
                "--workers",
                "2",
                "--ports",
                "127.0.0.1:0/udp=echo",
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(folder / "state"),
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"worker \d \(pid \d+\) serving", 2)
        udp = daemon.waitFor(
            r"listening on (udp:127\.0\.0\.1:(\d+)): handler echo, served by 2 "
            r"workers$"
        )[0]
        name, number = udp.group(1), int(udp.group(2))
        status = daemon.waitFor(r"listening on tcp:127\.0\.0\.1:(\d+): handler status")[
            0
        ]
        statusPort = int(status.group(1))
        # Which worker a datagram wakes is the kernel's choice: send bursts
        # (each datagram from its own socket, all sent before any answer is
        # read) until both workers have read some, at most BURSTS of them.
        total = 0

        def port() -> dict:
            document = getJSON(statusPort, "/status?workers=1")
            return next(p for p in document["ports"] if p["name"] == name)

        for _ in range(BURSTS):
            clients = [
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(50)
            ]
            for index, client in enumerate(clients):
                self.addCleanup(client.close)
                client.settimeout(5)
                client.sendto(b"%d" % (total + index), ("127.0.0.1", number))
            for index, client in enumerate(clients):
                self.assertEqual(client.recv(100), b"%d" % (total + index))
                client.close()
            total += len(clients)
            found = waitUntil(
                port,
                15,
                accept=lambda p, total=total: p["datagrams"]["received"] == total,
                interval=0.1,
            )
            workers = found["workers"]
            if all(w["datagrams"]["received"] > 0 for w in workers):
                break
        self.assertEqual(len(workers), 2)
        self.assertEqual(sum(w["datagrams"]["received"] for w in workers), total)
        self.assertTrue(all(w["listening"] for w in workers), workers)
        self.assertTrue(all(w["datagrams"]["received"] > 0 for w in workers), workers)


class UDPWorkersLiveTests(SynchronousTestCase):
    """
    A UDP port added through multiport-ctl under C{--workers 2}.
    """

    def test_liveAdd(self):
        """
        C{multiport-ctl add 127.0.0.1:0/udp=echo} adds a UDP port both
        workers serve; C{remove} closes it.
        """
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        daemon = Daemon(
            [
                "--workers",
                "2",
                "--ports",
                "127.0.0.1:0=echo",
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(folder / "state"),
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"worker \d \(pid \d+\) serving", 2)
        status = daemon.waitFor(r"listening on tcp:127\.0\.0\.1:(\d+): handler status")
        statusPort = int(status[0].group(1))

        def ctlRun(*args: str) -> tuple[int, str]:
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = ctl.main(
                    [
                        "--status",
                        f"127.0.0.1:{statusPort}",
                        "--state-dir",
                        str(folder / "state"),
                        *args,
                    ]
                )
            return code, out.getvalue() + err.getvalue()

        code, out = ctlRun("add", "127.0.0.1:0/udp=echo")
        self.assertEqual(code, 0, out)
        name = out.split()[-1]
        self.assertTrue(name.startswith("udp:127.0.0.1:"), out)
        number = int(name.rpartition(":")[2])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"new", ("127.0.0.1", number))
            self.assertEqual(client.recv(100), b"new")

        def port() -> dict:
            document = getJSON(statusPort, "/status?workers=1")
            return next(p for p in document["ports"] if p["name"] == name)

        waitUntil(port, 15, accept=lambda p: len(p["workers"]) == 2, interval=0.1)
        code, out = ctlRun("remove", name)
        self.assertEqual(code, 0, out)
