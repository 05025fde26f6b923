"""
Signals as operators expect them (nginx's table): SIGTERM or SIGINT drains,
a second one stops at once; SIGUSR1 reopens the log file.

The daemon tests send real signals to a real C{twistd multiport}.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from multiport.daemon.signals import HurryOnSecondSignal
from tests.support import Daemon, waitUntil
from tests.test_livedaemon import connect, echoes

#: The drain timeout of the daemons here: far longer than a test may wait,
#: so a prompt exit can only come from the second signal.
LONG_DRAIN = 120
#: How long a daemon told to stop at once may take to exit.
PROMPTLY = 15.0


class FakeReactor:
    """
    What L{HurryOnSecondSignal} asks of a reactor: calls from the signal
    handler run at once, system event triggers are recorded.
    """

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, Any]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))


class HurryOnSecondSignalTests(SynchronousTestCase):
    """
    The service takes SIGTERM and SIGINT over once stopping, and gives them
    back after the shutdown.
    """

    def setUp(self) -> None:
        self.calls: list[int] = []
        self.reactor = FakeReactor()
        self.service = HurryOnSecondSignal(self.calls.append, self.reactor)
        before = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
        self.addCleanup(lambda: [signal.signal(n, h) for n, h in before.items()])

    def test_notWhileRunning(self):
        """
        Starting changes no handler: the reactor's first SIGTERM stops it.
        """
        before = signal.getsignal(signal.SIGTERM)
        self.service.startService()
        self.assertIs(signal.getsignal(signal.SIGTERM), before)

    def test_secondSignal(self):
        """
        Once stopping, a real SIGTERM (then SIGINT) calls hurry with its
        number, on the reactor's thread.
        """
        self.service.startService()
        self.service.stopService()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        self.assertEqual(self.calls, [signal.SIGTERM, signal.SIGINT])

    def test_restoredAfterShutdown(self):
        """
        After the reactor's shutdown the handlers are the ones before.
        """
        before = signal.getsignal(signal.SIGINT)
        self.service.startService()
        self.service.stopService()
        self.assertIsNot(signal.getsignal(signal.SIGINT), before)
        [(phase, event, restore)] = self.reactor.triggers
        self.assertEqual((phase, event), ("after", "shutdown"))
        restore()
        self.assertIs(signal.getsignal(signal.SIGINT), before)


class SecondSignalDaemonTests(SynchronousTestCase):
    """
    A real daemon draining a connection for a long drain timeout stops at
    once on a second SIGTERM or SIGINT, without a traceback.
    """

    def daemon(self, *args: str) -> Daemon:
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--drain-timeout",
                str(LONG_DRAIN),
                "--ports",
                "127.0.0.1:0=echo",
                *args,
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        return daemon

    def stopTwice(self, daemon: Daemon, first: int, second: int) -> float:
        """
        With a connection open, send C{first}, wait for the drain, send
        C{second}; how long the daemon took to exit after it.
        """
        [(host, port)] = {a for a in daemon.listening(1).values()}
        client = connect(port)
        self.addCleanup(client.close)
        self.assertTrue(echoes(client, b"open"))
        daemon.process.send_signal(first)
        daemon.waitFor(r"draining 1 open connections?$")
        self.assertIsNone(daemon.process.poll())
        sent = time.monotonic()
        daemon.process.send_signal(second)
        daemon.process.wait(timeout=PROMPTLY)
        took = time.monotonic() - sent
        daemon.stop()
        self.assertTrue(closedByServer(client))
        return took

    def test_secondSIGTERM(self):
        """
        SIGTERM drains; the second SIGTERM closes the connection and the
        daemon exits well before the drain timeout, logging why.
        """
        daemon = self.daemon()
        took = self.stopTwice(daemon, signal.SIGTERM, signal.SIGTERM)
        self.assertLess(took, PROMPTLY)
        output = "".join(daemon.lines)
        self.assertIn(
            "SIGTERM again: closing 1 open connection now, without waiting for "
            "the drain",
            output,
        )
        self.assertIn(" closed drain after ", output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("ReactorNotRunning", output)
        self.assertIn("Server Shut Down", output)

    def test_SIGINTAfterSIGTERM(self):
        """
        SIGINT (Ctrl-C) while draining after a SIGTERM stops at once too.
        """
        daemon = self.daemon()
        took = self.stopTwice(daemon, signal.SIGTERM, signal.SIGINT)
        self.assertLess(took, PROMPTLY)
        output = "".join(daemon.lines)
        self.assertIn("SIGINT again: closing 1 open connection now", output)
        self.assertNotIn("Traceback", output)

    def test_workers(self):
        """
        With --workers 2 the second SIGTERM reaches the workers, which close
        their connections at once; the daemon exits promptly.
        """
        daemon = self.daemon("--workers", "2")
        [(host, port)] = {a for a in daemon.listening(1).values()}
        daemon.waitFor(r"worker \d \(pid \d+\) serving 1 ports?$", 2)
        clients = [connect(port) for _ in range(4)]
        for client in clients:
            self.addCleanup(client.close)
            self.assertTrue(echoes(client, b"open"))
        daemon.process.send_signal(signal.SIGTERM)
        daemon.waitFor(r"worker \d: draining \d open connections?$")
        # Both workers must have had the first TERM before the second is
        # sent: two signals still pending in a process are one.
        daemon.waitFor(r"worker \d: stopped listening on tcp:", 2)
        self.assertIsNone(daemon.process.poll())
        daemon.process.send_signal(signal.SIGTERM)
        daemon.process.wait(timeout=PROMPTLY)
        daemon.stop()
        output = "".join(daemon.lines)
        self.assertIn("SIGTERM again: the workers close their connections now", output)
        self.assertEqual(output.count(" closed drain after "), 4)
        self.assertNotIn("Traceback", output)
        for client in clients:
            self.assertTrue(closedByServer(client))


def closedByServer(client: socket.socket) -> bool:
    """
    Whether the daemon closed C{client} (aborted: a reset, or an end of
    file), waiting at most L{PROMPTLY}.
    """
    client.settimeout(PROMPTLY)
    try:
        return client.recv(10) == b""
    except ConnectionResetError:
        return True


def readWhen(
    path: Path, pattern: str, timeout: float = PROMPTLY, rotated: bool = False
) -> re.Match[str]:
    """
    Poll the file at C{path} (and, if C{rotated}, the files it was rotated
    to, C{path.1} ...) until a line matches C{pattern}; the match.  Fails
    after C{timeout} seconds.
    """
    expression = re.compile(pattern, re.MULTILINE)

    def search() -> re.Match[str] | None:
        paths = [path]
        if rotated:
            paths += sorted(path.parent.glob(glob.escape(path.name) + ".*"))
        for each in paths:
            try:
                found = expression.search(each.read_text())
            except FileNotFoundError:
                # Rotated away between the listing and the read.
                continue
            if found:
                return found
        return None

    match = waitUntil(search, timeout, what=f"a line matching {pattern!r} in {path}")
    assert match is not None
    return match


class LogSignalDaemonTests(SynchronousTestCase):
    """
    SIGUSR1 to a real daemon logging to a file reopens the file by name
    once logrotate has moved it; logging to standard output, SIGUSR1 does
    no harm.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.logfile = self.folder / "multiport.log"

    def daemon(self, *args: str, logfile: bool = True) -> Daemon:
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(self.folder / "state"),
                "--ports",
                "127.0.0.1:0=echo",
                *args,
            ],
            str(self.folder),
            twistdArgs=["--logfile", str(self.logfile)] if logfile else [],
        )
        self.addCleanup(daemon.stop)
        return daemon

    def echoPort(self) -> int:
        # A small --log-rotate-size may rotate the line away before it is read.
        found = readWhen(
            self.logfile, r"listening on tcp:127\.0\.0\.1:(\d+)", rotated=True
        )
        return int(found[1])

    def test_reopenAfterMove(self):
        """
        After the file is moved away (logrotate), SIGUSR1 makes the daemon
        write a new file at the path; the moved file gets nothing more.
        """
        daemon = self.daemon()
        port = self.echoPort()
        moved = self.folder / "multiport.log.1"
        self.logfile.rename(moved)
        daemon.process.send_signal(signal.SIGUSR1)
        readWhen(self.logfile, r"SIGUSR1: .*multiport\.log was moved away: reopened")
        with connect(port) as client:
            self.assertTrue(echoes(client, b"after the move"))
        readWhen(self.logfile, rf"tcp:127\.0\.0\.1:{port} echo .* closed clean")
        self.assertEqual(daemon.stop(), -signal.SIGTERM)
        readWhen(self.logfile, r"Server Shut Down")
        before = moved.read_text()
        self.assertIn("listening on", before)
        self.assertNotIn("closed clean", before)
        self.assertNotIn("Traceback", before + self.logfile.read_text())

    def test_rotatedFilesCapped(self):
        """
        --log-rotate-size and --log-rotate-keep: the file rotates by size
        and at most that many rotated files are kept.
        """
        self.daemon("--log-rotate-size", "1000", "--log-rotate-keep", "2")
        port = self.echoPort()
        for n in range(40):
            with connect(port) as client:
                self.assertTrue(echoes(client, b"%d" % n))
        readWhen(self.logfile, r"127\.0\.0\.1:\d+ closed clean after .*, received 2 B")
        names = {p.name for p in self.folder.iterdir() if p.name.startswith("multip")}
        self.assertEqual(names, {"multiport.log", "multiport.log.1", "multiport.log.2"})
        self.assertLess(self.logfile.stat().st_size, 1200)

    def test_standardOutput(self):
        """
        Logging to standard output (-n, as under systemd), SIGUSR1 is logged
        and the daemon goes on serving.
        """
        daemon = self.daemon(logfile=False)
        [(host, port)] = {a for a in daemon.listening(1).values()}
        daemon.process.send_signal(signal.SIGUSR1)
        daemon.waitFor(r"SIGUSR1: the log goes to standard output; nothing to reopen")
        with connect(port) as client:
            self.assertTrue(echoes(client, b"still here"))
        self.assertIsNone(daemon.process.poll())
