"""
sd_notify: the daemon tells systemd it is ready, reloading, stopping, how
it is doing, and that it still turns, through C{$NOTIFY_SOCKET}.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from multiport.daemon.notify import (
    SILENT,
    Notifier,
    NotifyService,
    announcedReload,
    describePorts,
    watchdogSeconds,
)
from multiport.handlers.interface import PortStatus
from tests.support import configFor, configuredDaemon


class Listener:
    """
    A C{NOTIFY_SOCKET} of the test's own: a datagram socket that collects
    what is sent to it.
    """

    def __init__(self, testCase: SynchronousTestCase, abstract: bool = False) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        testCase.addCleanup(self.socket.close)
        if abstract:
            name = f"multiport-test-{os.getpid()}-{id(self)}"
            self.socket.bind("\0" + name)
            self.address = "@" + name
        else:
            folder = tempfile.mkdtemp()
            testCase.addCleanup(os.rmdir, folder)
            self.address = os.path.join(folder, "notify")
            self.socket.bind(self.address)
            testCase.addCleanup(os.unlink, self.address)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float = 0.0) -> list[dict[str, str]]:
        """
        Every datagram that arrived (waiting at most C{timeout} seconds for
        the first), each as its fields.
        """
        self.socket.settimeout(timeout if timeout > 0 else None)
        self.socket.setblocking(timeout > 0)
        got = []
        while True:
            try:
                data = self.socket.recv(4096)
            except (BlockingIOError, TimeoutError):
                return got
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            got.append(fields)
            self.messages.append(fields)
            self.socket.setblocking(False)

    def until(self, key: str, timeout: float = 30) -> list[dict[str, str]]:
        """
        Receive until a message with C{key} arrives; every message so far.
        """
        deadline = time.monotonic() + timeout
        while not any(key in m for m in self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key} in {timeout} s: {self.messages}")
            self.receive(remaining)
        return self.messages


def status(name: str, listening: bool, current: int) -> PortStatus:
    config = configFor("7000=echo", tempfile.gettempdir()).ports[0]
    return PortStatus(name, config, listening, {"current": current}, {})


class NotifierTests(SynchronousTestCase):
    """
    L{Notifier} sends datagrams of C{KEY=value} lines.
    """

    def test_path(self) -> None:
        """
        A C{NOTIFY_SOCKET} that is a path gets the lines in one datagram.
        """
        listener = Listener(self)
        notifier = Notifier.fromEnvironment({"NOTIFY_SOCKET": listener.address})
        self.assertTrue(notifier.ready("2 ports listening"))
        self.assertEqual(
            listener.receive(5), [{"READY": "1", "STATUS": "2 ports listening"}]
        )

    def test_abstract(self) -> None:
        """
        C{@name} is a socket in the abstract namespace.
        """
        listener = Listener(self, abstract=True)
        Notifier(listener.address).watchdog()
        self.assertEqual(listener.receive(5), [{"WATCHDOG": "1"}])

    def test_nothingWithoutSocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET} nothing is sent.
        """
        notifier = Notifier.fromEnvironment({})
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.ready())
        self.assertFalse(SILENT.stopping())

    def test_goneManager(self) -> None:
        """
        A socket nobody listens on is logged, not raised.
        """
        self.assertFalse(Notifier("/nonexistent/notify").ready())

    def test_reloadingCarriesMonotonicTime(self) -> None:
        """
        C{RELOADING=1} comes with C{MONOTONIC_USEC} from the injected clock.
        """
        listener = Listener(self)
        Notifier(listener.address, clock=lambda: 12.5).reloading()
        self.assertEqual(
            listener.receive(5), [{"RELOADING": "1", "MONOTONIC_USEC": "12500000"}]
        )

    def test_watchdogSeconds(self) -> None:
        """
        C{WATCHDOG_USEC} in seconds, only for the process C{WATCHDOG_PID}
        names (when set).
        """
        self.assertEqual(watchdogSeconds({"WATCHDOG_USEC": "3000000"}, 7), 3.0)
        self.assertEqual(
            watchdogSeconds({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, 7), 2.0
        )
        self.assertIsNone(
            watchdogSeconds({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, 7)
        )
        self.assertIsNone(watchdogSeconds({}, 7))
        self.assertIsNone(watchdogSeconds({"WATCHDOG_USEC": "soon"}, 7))

    def test_describePorts(self) -> None:
        """
        STATUS= counts the listening ports and the open connections.
        """
        self.assertEqual(
            describePorts(
                [status("a", True, 2), status("b", True, 1), status("c", False, 4)]
            ),
            "2 ports listening, 7 open connections",
        )


class NotifyServiceTests(SynchronousTestCase):
    """
    L{NotifyService} says READY=1 when started, pings the watchdog at half
    its interval, refreshes STATUS=, and says STOPPING=1 when stopped.
    """

    def setUp(self) -> None:
        self.listener = Listener(self)
        self.clock = Clock()
        self.ports = [status("a", True, 0)]
        self.service = NotifyService(
            Notifier(self.listener.address),
            self.clock,
            lambda: self.ports,
            watchdog=4.0,
            statusEvery=5.0,
        )

    def test_lifecycle(self) -> None:
        """
        READY (with STATUS), WATCHDOG every two seconds, a new STATUS when
        it changes, then STOPPING.
        """
        self.service.startService()
        self.assertEqual(
            self.listener.receive(5),
            [
                {"READY": "1", "STATUS": "1 port listening, 0 open connections"},
                {"WATCHDOG": "1"},
            ],
        )
        self.clock.advance(2)
        self.assertEqual(self.listener.receive(5), [{"WATCHDOG": "1"}])
        self.ports = [status("a", True, 3)]
        self.clock.advance(3)
        self.assertEqual(
            self.listener.receive(5),
            [{"WATCHDOG": "1"}, {"STATUS": "1 port listening, 3 open connections"}],
        )
        self.service.stopService()
        self.assertEqual(
            self.listener.receive(5),
            [
                {
                    "STOPPING": "1",
                    "STATUS": "stopping: 1 port listening, 3 open connections",
                }
            ],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silent(self) -> None:
        """
        Without a socket, the service sends nothing and schedules nothing.
        """
        service = NotifyService(SILENT, self.clock, lambda: self.ports, watchdog=4.0)
        service.startService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        service.stopService()

    def test_announcedReload(self) -> None:
        """
        A reload is framed by RELOADING=1 and READY=1, failed or not.
        """
        notifier = Notifier(self.listener.address, clock=lambda: 1.0)
        done: Deferred[str] = Deferred()
        result = announcedReload(notifier, lambda: done)
        self.assertEqual(
            [list(m) for m in self.listener.receive(5)],
            [["RELOADING", "MONOTONIC_USEC"]],
        )
        done.errback(ValueError("bad file"))
        self.failureResultOf(result, ValueError)
        self.assertEqual(self.listener.receive(5), [{"READY": "1"}])
        self.assertEqual(
            self.successResultOf(announcedReload(notifier, lambda: succeed(3))), 3
        )


class DaemonNotifyTests(SynchronousTestCase):
    """
    A real C{twistd multiport} under a C{NOTIFY_SOCKET} of the test's own.
    """

    def test_order(self) -> None:
        """
        READY (with STATUS) once every port listens, WATCHDOG while it
        runs, RELOADING then READY around a SIGHUP reload, and STOPPING
        when SIGTERM starts the drain.
        """
        self.checkOrder()

    def test_orderWorkers(self) -> None:
        """
        The same from the main process of C{--workers 2}.
        """
        self.checkOrder("--workers", "2")

    def checkOrder(self, *args: str) -> None:
        listener = Listener(self)
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000")
        daemon = configuredDaemon(
            folder,
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "echo"
            """,
            *args,
            env=env,
        )
        self.addCleanup(daemon.stop)
        daemon.listening(2)
        listener.until("READY")
        ready = next(m for m in listener.messages if "READY" in m)
        self.assertEqual(ready["STATUS"], "2 ports listening, 0 open connections")
        # Two pings at 0.2 s apart: the reactor turns.
        deadline = time.monotonic() + 30
        while sum("WATCHDOG" in m for m in listener.messages) < 2:
            self.assertLess(time.monotonic(), deadline, listener.messages)
            listener.receive(deadline - time.monotonic())
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor("reloaded")
        count = len(listener.messages)
        deadline = time.monotonic() + 30
        while not any("READY" in m for m in listener.messages[count:]):
            listener.receive(max(0.1, deadline - time.monotonic()))
            self.assertLess(time.monotonic(), deadline, listener.messages)
        daemon.stop()
        listener.until("STOPPING")
        kinds = [
            key
            for m in listener.messages
            for key in ("READY", "RELOADING", "STOPPING")
            if key in m
        ]
        self.assertEqual(kinds, ["READY", "RELOADING", "READY", "STOPPING"])
        watchdogs = [i for i, m in enumerate(listener.messages) if "WATCHDOG" in m]
        stopping = next(i for i, m in enumerate(listener.messages) if "STOPPING" in m)
        self.assertTrue(all(i < stopping for i in watchdogs))


class WaitForReadyTests(SynchronousTestCase):
    """
    With C{whenReady} (the workers of C{--workers}), READY=1 waits for it.
    """

    def test_waits(self) -> None:
        """
        Nothing but watchdog pings before C{whenReady} fires; READY after.
        """
        listener = Listener(self)
        serving: Deferred[None] = Deferred()
        service = NotifyService(
            Notifier(listener.address),
            Clock(),
            lambda: [status("a", True, 0)],
            watchdog=4.0,
            whenReady=lambda: serving,
        )
        service.startService()
        self.assertEqual(listener.receive(5), [{"WATCHDOG": "1"}])
        serving.callback(None)
        self.assertEqual([list(m) for m in listener.receive(5)], [["READY", "STATUS"]])
        service.stopService()
