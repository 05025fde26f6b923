"""
Faults on a running daemon, each a test: an upstream that dies mid-stream,
clients that reset mid-transfer, a handler that raises, a port removed
under load, a certificate missing or half-written at SIGHUP, a state
directory that can't be written, and running out of file descriptors.

Every test runs a real C{twistd multiport} process (L{Daemon}) on
127.0.0.1 and talks to it with blocking sockets (it is another process);
every wait is a poll with a bound, every load loop is bounded in count and
time.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from multiport.ports.tls import ensureSelfSigned
from tests.support import TWISTD, configuredDaemon, waitUntil, writePlugin
from tests.test_live import freePort

#: How long a test waits for anything the daemon should do at once.
PROMPTLY = 10.0

#: The figures each test saw go to trial's log (_trial_temp/test.log), in
#: this namespace; docs/reliability.rst quotes them.
log = Logger(namespace="tests.test_faults.figures")


def connect(port: int) -> socket.socket:
    """
    A blocking connection to 127.0.0.1:C{port}.
    """
    return socket.create_connection(("127.0.0.1", port), timeout=PROMPTLY)


def reset(connection: socket.socket) -> None:
    """
    Close C{connection} with a reset (RST): C{SO_LINGER} 0.
    """
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def receiveExactly(connection: socket.socket, size: int) -> bytes:
    """
    C{size} bytes from C{connection}; fewer if it closes first.
    """
    received = bytearray()
    while len(received) < size:
        chunk = connection.recv(min(65536, size - len(received)))
        if not chunk:
            break
        received += chunk
    return bytes(received)


def readToEnd(connection: socket.socket, limit: int = 1 << 26) -> tuple[bytes, str]:
    """
    Read until the daemon closes; what came and how it ended (C{"eof"} or
    C{"reset"}).  Fails on a timeout or past C{limit} bytes.
    """
    received = bytearray()
    while len(received) < limit:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            return bytes(received), "reset"
        if not chunk:
            return bytes(received), "eof"
        received += chunk
    raise AssertionError(f"still open after {limit} bytes")


def echoes(port: int, data: bytes = b"still serving") -> bool:
    """
    Whether the echo (or relay-to-echo) port C{port} echoes C{data} (not if
    it refuses, closes or resets).
    """
    try:
        with connect(port) as connection:
            connection.sendall(data)
            return receiveExactly(connection, len(data)) == data
    except OSError:
        return False


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """
    One HTTP(S) request to 127.0.0.1:C{port}; its status and body.
    """
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROMPTLY)
    else:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=PROMPTLY, context=context
        )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def untrusting() -> ssl.SSLContext:
    """
    A TLS client context that takes any certificate (the tests compare
    fingerprints themselves).
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fingerprint(port: int) -> str:
    """
    The SHA-256 of the certificate the TLS port C{port} presents.
    """
    with untrusting().wrap_socket(connect(port)) as connection:
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def cpuSeconds(pid: int) -> float:
    """
    The user and system CPU time of process C{pid}, from /proc.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DaemonCase(SynchronousTestCase):
    """
    A daemon with a configuration file and a status port on 127.0.0.1, in a
    folder of its own.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.stateDir = self.folder / "state"

    def startDaemon(
        self,
        toml: str,
        count: int,
        *args: str,
        env: dict[str, str] | None = None,
        fileLimit: int | None = None,
    ) -> dict[str, tuple[str, int]]:
        """
        Start the daemon with C{toml} as its file and wait for its C{count}
        ports (the status port included); they are returned by handler and
        by name.
        """
        self.daemon = configuredDaemon(
            self.folder, toml, *args, env=env, fileLimit=fileLimit
        )
        self.addCleanup(self.daemon.stop)
        self.ports = self.daemon.listening(count)
        self.statusPort = self.ports["status"][1]
        return self.ports

    def status(self) -> dict:
        """
        The daemon's C{/status}.
        """
        code, body = request(self.statusPort, "GET", "/status")
        self.assertEqual(code, 200)
        return json.loads(body)

    def portStatus(self, port: int) -> dict:
        """
        Port C{port}'s entry in C{/status}.
        """
        [entry] = [p for p in self.status()["ports"] if p["port"] == port]
        return entry

    def assertConsistent(self) -> None:
        """
        Every port's accepted = closed + current.
        """
        for port in self.status()["ports"]:
            c = port["connections"]
            self.assertEqual(c["accepted"], c["closed"] + c["current"], port)

    def closeLine(self, port: int, client: int) -> str:
        """
        The connection log's line for the client at C{client} on C{port}.
        """
        [match] = self.daemon.waitFor(
            rf"tcp:127\.0\.0\.1:{port} \S+ 127\.0\.0\.1:{client} closed \w+.*"
        )
        return match.group(0)

    def assertNoTraceback(self) -> None:
        self.assertNotIn("Traceback", "".join(self.daemon.lines))


# --------------------------------------------------------------------------
# An upstream that dies mid-stream.

#: An upstream that streams bytes 0..255 over and over to each client it
#: accepts and never reads what the client sends (so that killing it makes
#: the kernel reset the connection).  It prints its port first.
STREAMING_UPSTREAM = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print(server.getsockname()[1], flush=True)
    block = bytes(range(256)) * 256
    while True:
        connection, _ = server.accept()
        try:
            while True:
                connection.sendall(block)
        except OSError:
            connection.close()
    """
)


class UpstreamDiesTests(DaemonCase):
    """
    The relay's upstream process is killed while it streams to a client.
    """

    def startUpstream(self, port: int = 0) -> subprocess.Popen:
        upstream = subprocess.Popen(
            [sys.executable, "-c", STREAMING_UPSTREAM, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(self.killUpstream, upstream)
        assert upstream.stdout is not None
        self.upstreamPort = int(upstream.stdout.readline())
        return upstream

    def killUpstream(self, upstream: subprocess.Popen) -> None:
        if upstream.poll() is None:
            upstream.kill()
        upstream.wait(PROMPTLY)
        assert upstream.stdout is not None
        upstream.stdout.close()

    def assertPattern(self, data: bytes) -> None:
        """
        C{data} is the upstream's stream from its start: byte i is i % 256.
        """
        expected = (bytes(range(256)) * (len(data) // 256 + 1))[: len(data)]
        self.assertTrue(data == expected, "the relayed stream was corrupted")

    def test_upstreamDiesMidStream(self):
        """
        On a relay port with splice and one without: the client of an
        upstream killed mid-stream is closed, having received an unbroken
        prefix of the stream; the port goes on relaying new clients once an
        upstream listens again; its counters add up.
        """
        upstream = self.startUpstream()
        self.startDaemon(
            f"""
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "relay"
            options = {{ upstream = "127.0.0.1:{self.upstreamPort}" }}

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "relay"
            options = {{ upstream = "127.0.0.1:{self.upstreamPort}", splice = false }}
            """,
            3,
        )
        relays = [
            port
            for name, (_, port) in self.ports.items()
            if name.startswith("tcp:") and port != self.statusPort
        ]
        self.assertEqual(len(relays), 2)
        for relay in relays:
            client = connect(relay)
            self.addCleanup(client.close)
            client.sendall(b"never read by the upstream")
            first = receiveExactly(client, 256 * 1024)
            self.assertEqual(len(first), 256 * 1024)
            self.killUpstream(upstream)
            rest, ending = readToEnd(client)
            self.assertIn(ending, ("eof", "reset"))
            self.assertPattern(first + rest)
            clientPort = client.getsockname()[1]
            client.close()
            # With splice the daemon passes the upstream's reset on (the
            # client gets RST); without, it closes the client cleanly once
            # what it holds is delivered.  Either way it is logged.
            line = self.closeLine(relay, clientPort)
            self.assertRegex(line, "closed (reset|clean)")
            log.info(
                "upstream died: client got {got} B then {ending}; daemon: {line}",
                got=len(first + rest),
                ending=ending,
                line=line,
            )

            upstream = self.startUpstream(self.upstreamPort)
            with connect(relay) as again:
                self.assertPattern(receiveExactly(again, 64 * 1024))
            waitUntil(
                lambda r=relay: self.portStatus(r)["connections"]["current"] == 0,
                timeout=PROMPTLY,
            )
            connections = self.portStatus(relay)["connections"]
            self.assertEqual(
                (connections["accepted"], connections["closed"]), (2, 2), relay
            )
            self.assertGreaterEqual(
                self.portStatus(relay)["bytes"]["sent"], len(first + rest)
            )
        self.assertConsistent()
        self.assertNoTraceback()


# --------------------------------------------------------------------------
# Clients that reset mid-transfer.


class ClientResetTests(DaemonCase):
    """
    Clients that reset (RST) in the middle of a transfer on echo, http and
    relay ports.
    """

    def test_resetMidTransfer(self):
        """
        Each reset is logged as C{reset}, and each port goes on serving.
        """
        root = self.folder / "www"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(4 << 20))
        echoPort = freePort()
        self.startDaemon(
            f"""
            [[port]]
            port = {echoPort}
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "http"
            options = {{ root = "www" }}

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "relay"
            options = {{ upstream = "127.0.0.1:{echoPort}" }}
            """,
            4,
        )
        httpPort, relayPort = self.ports["http"][1], self.ports["relay"][1]

        for port in (echoPort, relayPort):
            client = connect(port)
            client.setblocking(False)
            # Send until the daemon and the kernel hold all they can (the
            # client reads nothing back), then reset.
            block = os.urandom(65536)
            sent = 0
            deadline = time.monotonic() + PROMPTLY
            while sent < 64 << 20 and time.monotonic() < deadline:
                try:
                    sent += client.send(block)
                except BlockingIOError:
                    if sent >= 1 << 20:
                        break
                    select.select([], [client], [], deadline - time.monotonic())
            self.assertGreater(sent, 0)
            clientPort = client.getsockname()[1]
            reset(client)
            line = self.closeLine(port, clientPort)
            self.assertIn("closed reset", line)
            self.assertTrue(echoes(port))
            log.info("reset after sending {sent} B: {line}", sent=sent, line=line)

        client = connect(httpPort)
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(len(receiveExactly(client, 65536)), 65536)
        clientPort = client.getsockname()[1]
        reset(client)
        line = self.closeLine(httpPort, clientPort)
        self.assertIn("closed reset", line)
        log.info("reset after reading 65536 B: {line}", line=line)
        code, body = request(httpPort, "GET", "/big.bin")
        self.assertEqual((code, len(body)), (200, 4 << 20))

        for port in (echoPort, httpPort, relayPort):
            waitUntil(
                lambda p=port: self.portStatus(p)["connections"]["current"] == 0,
                timeout=PROMPTLY,
            )
        self.assertConsistent()
        self.assertNoTraceback()


# --------------------------------------------------------------------------
# A handler that raises.

#: A third-party plugin with two handlers that raise: one in dataReceived
#: (on data starting with "boom"; else it echoes), one in connectionMade
#: (every other connection; else it greets and closes).
FAULTY_PLUGIN = """
from twisted.internet.protocol import Factory, Protocol
from multiport.handlers import Handler


class RaisesInData(Protocol):
    def connectionMade(self):
        self.transport.write(b"ready\\r\\n")

    def dataReceived(self, data):
        if data.startswith(b"boom"):
            raise ValueError("boom in dataReceived")
        self.transport.write(data)


class RaisesInStart(Protocol):
    def connectionMade(self):
        self.factory.made += 1
        if self.factory.made % 2:
            raise RuntimeError("boom in connectionMade")
        self.transport.write(b"served\\r\\n")
        self.transport.loseConnection()


def startFactory(context):
    factory = Factory.forProtocol(RaisesInStart)
    factory.made = 0
    return factory


boom_data = Handler(
    "boom_data",
    "Raises in dataReceived.",
    lambda context: Factory.forProtocol(RaisesInData),
)
boom_start = Handler(
    "boom_start", "Raises in connectionMade every other time.", startFactory
)
"""


class HandlerRaisesTests(DaemonCase):
    """
    A third-party handler that raises in dataReceived or connectionMade.
    """

    def setUp(self) -> None:
        super().setUp()
        plugins = writePlugin(
            self.folder / "thirdparty", "faulty_handler", FAULTY_PLUGIN
        )
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(plugins), environment.get("PYTHONPATH", "")]
        )
        self.startDaemon(
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "boom_data"

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "boom_start"
            """,
            3,
            env=environment,
        )

    def assertLoggedOnce(self, handler: str, where: str, error: str, port: int):
        """
        The error is logged once, with its traceback, and counted.
        """
        waitUntil(
            lambda: self.portStatus(port)["connections"]["current"] == 0,
            timeout=PROMPTLY,
        )
        self.assertEqual(self.portStatus(port)["errors"]["protocol"], 1)
        log = "".join(self.daemon.lines)
        headline = rf"handler {handler} raised in {where} on tcp:127\.0\.0\.1:{port}"
        self.assertEqual(len(re.findall(headline, log)), 1, log)
        self.assertEqual(log.count(error), 1, log)
        self.assertRegex(log, headline + r"[^\n]*\n(.*\n)*?.*Traceback")

    def test_raisesInDataReceived(self):
        """
        The connection whose data made the handler raise is closed, the error
        is logged once with its traceback and counted, and the port goes on
        serving.
        """
        port = self.ports["boom_data"][1]
        with connect(port) as client:
            self.assertEqual(receiveExactly(client, 7), b"ready\r\n")
            clientPort = client.getsockname()[1]
            client.sendall(b"boom")
            try:
                client.sendall(b"boom again")
            except OSError:
                pass
            self.assertEqual(readToEnd(client)[0], b"")
        self.assertIn("closed error", self.closeLine(port, clientPort))
        self.assertLoggedOnce(
            "boom_data", "dataReceived", "ValueError: boom in dataReceived", port
        )
        with connect(port) as again:
            self.assertEqual(receiveExactly(again, 7), b"ready\r\n")
            again.sendall(b"fine")
            self.assertEqual(receiveExactly(again, 4), b"fine")
        self.assertConsistent()

    def test_raisesInConnectionMade(self):
        """
        The connection whose start made the handler raise is closed, the
        error is logged once with its traceback and counted, and the next
        connection is served.
        """
        port = self.ports["boom_start"][1]
        # Bound first, so that its port is known even when the daemon's
        # reset arrives before connect() returns (it then raises).
        with socket.socket() as client:
            client.bind(("127.0.0.1", 0))
            clientPort = client.getsockname()[1]
            client.settimeout(PROMPTLY)
            try:
                client.connect(("127.0.0.1", port))
                received = readToEnd(client)[0]
            except ConnectionResetError:
                received = b""
        self.assertEqual(received, b"")
        self.assertIn("closed error", self.closeLine(port, clientPort))
        self.assertLoggedOnce(
            "boom_start",
            "connectionMade",
            "RuntimeError: boom in connectionMade",
            port,
        )
        with connect(port) as again:
            self.assertEqual(readToEnd(again), (b"served\r\n", "eof"))
        self.assertConsistent()


# --------------------------------------------------------------------------
# A port removed under load.


class Streamer(threading.Thread):
    """
    A client that echoes 8 KB blocks through a port as fast as it can,
    checking each, until told to stop (at most 100,000 blocks or 60 s).
    """

    def __init__(self, port: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.connection = connect(port)
        self.clientPort = self.connection.getsockname()[1]
        self.rng = random.Random(seed)
        self.exchanges = 0
        self.sent = 0
        self.verified = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        try:
            for _ in range(100_000):
                if self.stopping.is_set() or time.monotonic() > deadline:
                    break
                block = self.rng.randbytes(8192)
                self.connection.sendall(block)
                self.sent += len(block)
                back = receiveExactly(self.connection, len(block))
                if back != block:
                    raise AssertionError(f"{len(back)} bytes back, not the same")
                self.verified += len(back)
                self.exchanges += 1
        except BaseException as e:
            self.error = e
        finally:
            self.connection.close()

    def finish(self) -> None:
        """
        Stop and wait for the thread (bounded).
        """
        self.stopping.set()
        self.join(PROMPTLY)
        assert not self.is_alive(), "a streamer did not stop"


class RemovedUnderLoadTests(DaemonCase):
    """
    A port removed through the admin API while clients stream through it.
    """

    def test_removeWhileStreaming(self):
        """
        The removed port stops accepting, its four open connections finish
        with every byte they sent echoed, and the other port's four clients
        never notice.
        """
        self.startDaemon(
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "echo"
            """,
            3,
            "--drain-timeout",
            "30",
        )
        removed, kept = [
            port
            for name, (_, port) in self.ports.items()
            if name.startswith("tcp:") and port != self.statusPort
        ]
        going = [Streamer(removed, seed) for seed in range(4)]
        staying = [Streamer(kept, seed) for seed in range(4, 8)]
        for streamer in going + staying:
            self.addCleanup(streamer.finish)
            streamer.start()
        waitUntil(
            lambda: all(s.exchanges >= 20 for s in going + staying), timeout=PROMPTLY
        )

        out = io.StringIO()
        with redirect_stdout(out):
            code = ctl.main(
                [
                    "--status",
                    f"127.0.0.1:{self.statusPort}",
                    "--state-dir",
                    str(self.stateDir),
                    "remove",
                    f"tcp:127.0.0.1:{removed}",
                ]
            )
        self.assertEqual(code, 0)
        self.assertIn("(4 connections draining)", out.getvalue())
        self.daemon.waitFor(rf"removed tcp:127\.0\.0\.1:{removed} through the admin")
        self.assertRaises(ConnectionRefusedError, connect, removed)
        entry = self.portStatus(removed)
        self.assertEqual(
            (entry["draining"], entry["connections"]["current"]), (True, 4)
        )

        # The draining connections carry on: 50 more blocks each.
        marks = [s.exchanges for s in going + staying]
        waitUntil(
            lambda: all(
                s.exchanges >= mark + 50
                for s, mark in zip(going + staying, marks, strict=True)
            ),
            timeout=30,
        )
        for streamer in going:
            streamer.finish()
        self.daemon.waitFor(rf"tcp:127\.0\.0\.1:{removed} drained")
        log.info(
            "removed under load: {count} draining clients echoed {sent} B "
            "({after} blocks after the removal), all verified; the other port's "
            "clients {kept} B",
            count=len(going),
            sent=sum(s.sent for s in going),
            after=sum(s.exchanges for s in going) - sum(marks[: len(going)]),
            kept=sum(s.sent for s in staying),
        )
        for streamer in going:
            self.assertIsNone(streamer.error)
            self.assertEqual(streamer.sent, streamer.verified)
            line = self.closeLine(removed, streamer.clientPort)
            self.assertIn("closed clean after", line)
            self.assertIn(f"received {streamer.sent} B, sent {streamer.sent} B", line)
        self.assertNotIn(removed, [p["port"] for p in self.status()["ports"]])

        for streamer in staying:
            streamer.finish()
            self.assertIsNone(streamer.error)
            self.assertEqual(streamer.sent, streamer.verified)
        waitUntil(
            lambda: self.portStatus(kept)["connections"]["current"] == 0,
            timeout=PROMPTLY,
        )
        connections = self.portStatus(kept)["connections"]
        self.assertEqual((connections["accepted"], connections["closed"]), (4, 4))
        self.assertConsistent()
        self.assertNoTraceback()


# --------------------------------------------------------------------------
# SIGHUP with a certificate missing or half-written.


class CertificateReloadTests(DaemonCase):
    """
    SIGHUP while the certificate file of a TLS port is missing, then
    half-written.
    """

    def test_badCertificateChangesNothing(self):
        """
        Each reload fails with a line naming the file, nothing changes, and
        TLS clients are still served with the old certificate.
        """
        ensureSelfSigned(self.folder / "certs")
        certificate = self.folder / "certs" / "selfsigned-cert.pem"
        self.startDaemon(
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "https"
            [port.tls]
            cert = "certs/selfsigned-cert.pem"
            key = "certs/selfsigned-key.pem"
            """,
            2,
        )
        port = self.ports["https"][1]
        before = fingerprint(port)
        statusBefore = self.portStatus(port)
        pem = certificate.read_bytes()
        name = re.escape(str(certificate))

        certificate.unlink()
        self.daemon.process.send_signal(signal.SIGHUP)
        [missing] = self.daemon.waitFor(rf"reload failed, nothing changed: .*{name}")
        self.assertEqual(fingerprint(port), before)
        self.assertEqual(request(port, "GET", "/", context=untrusting())[0], 200)

        certificate.write_bytes(pem[: len(pem) // 2])
        self.daemon.process.send_signal(signal.SIGHUP)
        half = self.daemon.waitFor(rf"reload failed, nothing changed: .*{name}", 2)
        for match in (missing, half[1]):
            log.info("certificate reload: {line}", line=match.string.strip())
        self.assertEqual(fingerprint(port), before)
        self.assertEqual(request(port, "GET", "/", context=untrusting())[0], 200)
        after = self.portStatus(port)
        self.assertEqual(
            (after["name"], after["listening_since"], after["certificate_expiry"]),
            (
                statusBefore["name"],
                statusBefore["listening_since"],
                statusBefore["certificate_expiry"],
            ),
        )
        self.assertNotIn("reloaded", "".join(self.daemon.lines))
        self.assertNoTraceback()


# --------------------------------------------------------------------------
# A state directory that can't be written.


class StateDirectoryTests(DaemonCase):
    """
    The state directory can't be written, at start or later.
    """

    def test_atStart(self):
        """
        A state directory under a regular file: one line naming it, exit
        status 1.
        """
        blocker = self.folder / "a-file"
        blocker.write_text("not a folder")
        stateDir = blocker / "state"
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "multiport",
                "--ports",
                "127.0.0.1:0=echo",
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(stateDir),
            ],
            cwd=str(self.folder),
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(str(stateDir), lines[0])
        log.info(
            "state directory at start: exit {code}: {line}",
            code=result.returncode,
            line=lines[0],
        )
        self.assertNotIn("Traceback", result.stderr)

    def test_goneWhileRunning(self):
        """
        The state directory replaced by a regular file while the daemon
        runs: a SIGHUP that needs it fails with a line naming it, adding a
        TLS port through the admin API is refused with the reason, and the
        daemon carries on serving every port.
        """
        self.startDaemon(
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "https"
            """,
            3,
        )
        echoPort, httpsPort = self.ports["echo"][1], self.ports["https"][1]
        before = fingerprint(httpsPort)
        token = (self.stateDir / "admin-token").read_text().strip()
        shutil.rmtree(self.stateDir)
        self.stateDir.write_text("no longer a folder")
        name = re.escape(str(self.stateDir))

        self.daemon.process.send_signal(signal.SIGHUP)
        [failed] = self.daemon.waitFor(rf"reload failed, nothing changed: .*{name}")
        log.info("state directory gone: SIGHUP: {line}", line=failed.string.strip())

        code, body = request(
            self.statusPort,
            "POST",
            "/api/ports",
            body=json.dumps(
                {"port": 0, "interface": "127.0.0.1", "handler": "echo", "tls": True}
            ).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
        )
        self.assertEqual(code, 400, body)
        log.info(
            "state directory gone: POST a TLS port: {code} {body}", code=code, body=body
        )
        self.assertIn(str(self.stateDir), json.loads(body)["error"])

        self.assertTrue(echoes(echoPort))
        self.assertEqual(fingerprint(httpsPort), before)
        self.assertEqual(request(httpsPort, "GET", "/", context=untrusting())[0], 200)
        self.assertEqual(request(self.statusPort, "GET", "/healthz"), (200, b"ok\n"))
        self.assertEqual(len(self.status()["ports"]), 3)
        self.assertConsistent()
        self.assertNoTraceback()


# --------------------------------------------------------------------------
# Running out of file descriptors.

#: The daemon's descriptor limit in these tests: 128 - 4 ports - 64 in
#: reserve leave 60 for connections.  Admission counts the descriptors each
#: handler declares (two for a relayed connection), so honest handlers
#: never run the daemon out; a third-party handler that takes more than it
#: declares can, and that is what these tests do.
FILE_LIMIT = 128

#: A handler that declares one descriptor a connection but, told a number
#: N, opens files until the process has none left but N, and closes them
#: when its client goes: a plugin that undercounts.
HOG_PLUGIN = """
import os

from twisted.internet.protocol import Factory, Protocol
from multiport.handlers import Handler


class Hog(Protocol):
    def connectionMade(self):
        self.files = []

    def dataReceived(self, data):
        try:
            for _ in range(100000):
                self.files.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        for _ in range(min(int(data), len(self.files))):
            os.close(self.files.pop())
        self.transport.write(b"%d\\n" % len(self.files))

    def connectionLost(self, reason):
        for descriptor in self.files:
            os.close(descriptor)
        self.files = []


hog = Handler(
    "hog", "Takes every descriptor it can.", lambda context: Factory.forProtocol(Hog)
)
"""


class OutOfFilesTests(DaemonCase):
    """
    A daemon with a low descriptor limit that a handler taking more than it
    declares runs out of descriptors, while relay clients keep coming.
    """

    def startLimited(self, failTimeout: float | None) -> tuple[int, int]:
        plugins = writePlugin(self.folder / "thirdparty", "hog_handler", HOG_PLUGIN)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(plugins), environment.get("PYTHONPATH", "")]
        )
        echoPort = freePort()
        option = "" if failTimeout is None else f", fail_timeout = {failTimeout}"
        self.startDaemon(
            f"""
            [[port]]
            port = {echoPort}
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "relay"
            options = {{ upstream = "127.0.0.1:{echoPort}"{option} }}

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "hog"
            """,
            4,
            env=environment,
            fileLimit=FILE_LIMIT,
        )
        return echoPort, self.ports["relay"][1]

    def hog(self, leave: int) -> socket.socket:
        """
        Have the hog port take every descriptor but C{leave}; its
        connection (closing it gives them back).
        """
        hog = connect(self.ports["hog"][1])
        self.addCleanup(hog.close)
        hog.sendall(b"%d" % leave)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = hog.recv(100)
            self.assertTrue(chunk, answer)
            answer += chunk
        self.assertGreater(int(answer), 0)
        return hog

    def tryRelay(self, relayPort: int, count: int) -> tuple[list, dict[str, int]]:
        """
        Open C{count} relay clients, each trying one round trip; the
        connections (held open) and how many of each outcome.
        """
        clients: list[socket.socket] = []
        self.addCleanup(lambda: [c.close() for c in clients])
        outcomes: dict[str, int] = {}
        for _ in range(count):
            try:
                client = connect(relayPort)
            except OSError as e:
                outcome = f"connect: {type(e).__name__}"
            else:
                clients.append(client)
                try:
                    client.sendall(b"x")
                    answer = client.recv(1)
                    outcome = "served" if answer == b"x" else "closed"
                except OSError as e:
                    outcome = type(e).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return clients, outcomes

    def test_outOfFiles(self):
        """
        Out of descriptors, the daemon turns clients away and logs it; it
        does not spin (under half a core while the clients hold on and new
        ones keep knocking); once the descriptors are free it serves again.
        """
        echoPort, relayPort = self.startLimited(failTimeout=1)
        pid = self.daemon.process.pid
        filesAtStart = len(os.listdir(f"/proc/{pid}/fd"))
        before, served = self.tryRelay(relayPort, 5)
        self.assertEqual(served, {"served": 5})
        hog = self.hog(leave=0)
        filesAtPeak = len(os.listdir(f"/proc/{pid}/fd"))
        self.assertEqual(filesAtPeak, FILE_LIMIT)
        clients, outcomes = self.tryRelay(relayPort, 80)
        self.assertEqual(outcomes.get("served", 0), 0, outcomes)
        self.daemon.waitFor(r"EMFILE encountered")

        # A bounded window while the clients hold on and 20 more are left
        # in the listen backlog (the listening socket stays readable).
        knocking = []
        self.addCleanup(lambda: [k.close() for k in knocking])
        started, cpu = time.monotonic(), cpuSeconds(pid)
        for _ in range(20):
            knock = socket.socket()
            knock.setblocking(False)
            knock.connect_ex(("127.0.0.1", relayPort))
            knocking.append(knock)
        window = 2.0
        # The daemon must stay up through the window its CPU is measured in.
        with self.assertRaises(subprocess.TimeoutExpired):
            self.daemon.process.wait(window)
        used = (cpuSeconds(pid) - cpu) / (time.monotonic() - started)
        self.assertLess(used, 0.5)

        hog.close()
        for connection in before + clients + knocking:
            connection.close()
        waitUntil(
            lambda: len(os.listdir(f"/proc/{pid}/fd")) <= filesAtStart + 4,
            timeout=PROMPTLY,
        )
        filesAfter = len(os.listdir(f"/proc/{pid}/fd"))
        self.assertTrue(echoes(echoPort))
        waitUntil(lambda: echoes(relayPort), timeout=PROMPTLY)
        log.info(
            "out of files: a hog took every descriptor; 80 relay clients: "
            "{outcomes}; descriptors {start} at start, {peak} of {limit} held, "
            "{after} after; {emfile} EMFILE recoveries logged; CPU {used:.1%} "
            "of {window} s",
            outcomes=outcomes,
            start=filesAtStart,
            peak=filesAtPeak,
            limit=FILE_LIMIT,
            after=filesAfter,
            emfile=sum("EMFILE encountered" in line for line in self.daemon.lines),
            used=used,
            window=window,
        )
        waitUntil(
            lambda: all(
                p["connections"]["current"] == (p["handler"] == "status")
                for p in self.status()["ports"]
            ),
            timeout=PROMPTLY,
        )
        self.assertConsistent()
        self.assertNoTraceback()

    # Fixed bug: the relay blamed its upstream for the daemon's own shortage.
    # When socket() fails with EMFILE while connecting to the upstream, the
    # relay's errback called UpstreamPool.failed(upstream), so a healthy
    # upstream was skipped for fail_timeout (10 s by default): once
    # descriptors were free again, every new relay client was still closed
    # at once ("no upstream answered") for up to 10 s.  Fix: in
    # RelayProtocol._tryNext's errback, a local failure (EMFILE, ENFILE,
    # ENOBUFS, ENOMEM) closes the client and counts local_connect_failures.
    # Since admission counts a relayed connection's upstream socket, only a
    # handler taking more than it declares (the hog, leaving one descriptor:
    # the client's) brings this about.
    def test_relayUpstreamNotBlamedForOwnShortage(self):
        """
        With the default fail_timeout, the relay serves again as soon as
        the daemon has descriptors again.
        """
        echoPort, relayPort = self.startLimited(failTimeout=None)
        hog = self.hog(leave=1)
        clients, outcomes = self.tryRelay(relayPort, 10)
        self.assertEqual(outcomes.get("served", 0), 0, outcomes)
        for connection in clients:
            connection.close()
        counters = {
            c["name"]: c["value"]
            for c in self.portStatus(relayPort)["handler_counters"]
        }
        self.assertEqual(counters.get("local_connect_failures"), 10, counters)
        self.assertNotIn("upstream_connect_failures", counters)
        hog.close()
        waitUntil(lambda: echoes(echoPort), timeout=PROMPTLY)
        waitUntil(lambda: echoes(relayPort), timeout=3)
