"""
Live changes on a real C{twistd -n multiport}: multiport-ctl through the
admin API, SIGHUP after editing the file, and draining at shutdown.

The daemon is another process, so blocking sockets are fine here.
"""

from __future__ import annotations

import io
import signal
import socket
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from tests.support import Daemon
from tests.test_live import freePort


def echoes(connection: socket.socket, data: bytes) -> bool:
    """
    Whether C{data} comes back on C{connection}.
    """
    connection.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = connection.recv(65536)
        if not chunk:
            return False
        received += chunk
    return received == data


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


class LiveDaemonTests(SynchronousTestCase):
    """
    One daemon changed while a client stays connected.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.file = self.folder / "multiport.toml"
        self.a, self.b, self.c = freePort(), freePort(), freePort()
        self.write(f"127.0.0.1:{self.a}=echo")
        self.daemon = Daemon(
            [
                "--config",
                str(self.file),
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(self.folder / "state"),
                "--drain-timeout",
                "20",
            ],
            str(self.folder),
        )
        self.addCleanup(self.daemon.stop)
        self.status = self.daemon.listening(2)["status"][1]

    def write(self, *items: str) -> None:
        tables = []
        for item in items:
            address, handler = item.split("=")
            host, port = address.rsplit(":", 1)
            tables.append(
                f"[[port]]\ninterface = '{host}'\nport = {port}\n"
                f"handler = '{handler}'\n"
            )
        self.file.write_text("\n".join(tables))

    def ctl(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = ctl.main(
                [
                    "--status",
                    f"127.0.0.1:{self.status}",
                    "--state-dir",
                    str(self.folder / "state"),
                    *args,
                ]
            )
        return code, out.getvalue(), err.getvalue()

    def test_liveChanges(self):
        """
        Add through multiport-ctl, reload on SIGHUP, remove through
        multiport-ctl: a client connected all along is never disturbed,
        and a bad file changes nothing.
        """
        first = connect(self.a)
        self.addCleanup(first.close)
        self.assertTrue(echoes(first, b"before"))

        code, out, err = self.ctl("add", f"127.0.0.1:{self.b}=echo")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"tcp:127.0.0.1:{self.b}", out)
        with connect(self.b) as added:
            self.assertTrue(echoes(added, b"added"))

        self.write(f"127.0.0.1:{self.a}=echo", f"127.0.0.1:{self.c}=echo")
        self.daemon.process.send_signal(signal.SIGHUP)
        self.daemon.waitFor(r"reloaded: added tcp:127\.0\.0\.1:\d+")
        with connect(self.c) as reloaded, connect(self.b) as kept:
            self.assertTrue(echoes(reloaded, b"from the file"))
            self.assertTrue(echoes(kept, b"kept"))
        self.assertTrue(echoes(first, b"undisturbed"))

        self.file.write_text("[[port]]\nport = 'not a number'\n")
        self.daemon.process.send_signal(signal.SIGHUP)
        self.daemon.waitFor(r"reload failed, nothing changed: .*port\[1\]\.port")
        with connect(self.c) as still:
            self.assertTrue(echoes(still, b"still"))

        code, out, err = self.ctl("remove", f"tcp:127.0.0.1:{self.a}")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("1 connection draining", out)
        self.assertRaises(ConnectionRefusedError, connect, self.a)
        self.assertTrue(echoes(first, b"draining"))
        code, out, _ = self.ctl("list", "--json")
        self.assertIn('"draining": true', out)
        first.close()
        self.daemon.waitFor(rf"tcp:127\.0\.0\.1:{self.a} drained")

    def test_shutdownDrains(self):
        """
        SIGTERM stops listening at once, then waits for open connections.
        """
        client = connect(self.a)
        self.addCleanup(client.close)
        self.assertTrue(echoes(client, b"hello"))
        self.daemon.process.send_signal(signal.SIGTERM)
        self.daemon.waitFor(r"draining 1 open connection$")
        self.daemon.waitFor(rf"stopped listening on tcp:127\.0\.0\.1:{self.a}")
        self.assertRaises(ConnectionRefusedError, connect, self.a)
        self.assertIsNone(self.daemon.process.poll())
        self.assertTrue(echoes(client, b"finishing"))
        self.assertIsNone(self.daemon.process.poll())
        client.close()
        self.daemon.process.wait(timeout=15)
