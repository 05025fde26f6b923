"""
Telling systemd how the daemon is doing (C{sd_notify(3)}), without
libsystemd: a datagram of C{KEY=value} lines to C{$NOTIFY_SOCKET}.

The protocol is a few lines of text on a UNIX datagram socket; a binding
(python-systemd, sdnotify) would be a new dependency, a compiled one for
python-systemd, for what the standard library's C{socket} does in ten
lines.  Nothing is sent when C{NOTIFY_SOCKET} is unset.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from attrs import field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from multiport.handlers.interface import PortStatus
from multiport.text import plural

# Twisted leaves parts of the API this module calls unannotated (its
# services, LoopingCall): those calls carry type: ignore[no-untyped-call].

log = Logger()

_R = TypeVar("_R")

#: How often STATUS= is sent again while running, in seconds.
STATUS_SECONDS = 5.0


def _socketAddress(address: str) -> str | bytes:
    """
    The C{sendto} address for C{$NOTIFY_SOCKET}: C{@name} is C{name} in
    Linux's abstract namespace (a leading NUL byte).
    """
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


@frozen
class Notifier:
    """
    Sends notifications to the service manager at C{address}
    (C{$NOTIFY_SOCKET}); with L{None}, sends nothing.

    @ivar clock: Monotonic seconds, for C{MONOTONIC_USEC=} (systemd's
        C{Type=notify-reload} wants it beside C{RELOADING=1}).
    """

    address: str | None
    clock: Callable[[], float] = field(default=time.monotonic, eq=False)

    @classmethod
    def fromEnvironment(
        cls,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
    ) -> Notifier:
        """
        The notifier C{environ}'s C{NOTIFY_SOCKET} names, if any.
        """
        return cls(environ.get("NOTIFY_SOCKET") or None, clock)

    @property
    def enabled(self) -> bool:
        """
        Whether a service manager listens.
        """
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """
        Send C{lines} (C{KEY=value} each) in one datagram; whether it went.
        A failure is logged, never raised: systemd being away must not
        stop the daemon.
        """
        if self.address is None:
            return False
        try:
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
            ) as skt:
                skt.sendto("\n".join(lines).encode(), _socketAddress(self.address))
        except OSError as e:
            log.warn(
                "cannot notify the service manager at {address}: {reason}",
                address=self.address,
                reason=e.strerror or str(e),
            )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """
        C{READY=1}: every port listens (again, after a reload).
        """
        return self.send("READY=1", *_status(status))

    def reloading(self) -> bool:
        """
        C{RELOADING=1}: a reload begins.
        """
        usec = int(self.clock() * 1_000_000)
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """
        C{STOPPING=1}: the drain begins.
        """
        return self.send("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """
        C{STATUS=}: one line for C{systemctl status}.
        """
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """
        C{WATCHDOG=1}: the reactor still turns.
        """
        return self.send("WATCHDOG=1")

    def mainPid(self, pid: int) -> bool:
        """
        C{MAINPID=}: another process is now the service's main one.
        """
        return self.send(f"MAINPID={pid}")


def _status(text: str | None) -> Sequence[str]:
    return () if text is None else (f"STATUS={text}",)


#: Sends nothing.
SILENT = Notifier(None)


def watchdogSeconds(environ: Mapping[str, str], pid: int) -> float | None:
    """
    How often systemd wants C{WATCHDOG=1} (C{WATCHDOG_USEC}) if it asks
    this process (C{WATCHDOG_PID}, when set, is C{pid}); L{None} otherwise.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        if usec:
            log.warn(
                "WATCHDOG_USEC={value} is not a number of microseconds: no "
                "watchdog pings",
                value=usec,
            )
        return None
    return value / 1_000_000 if value > 0 else None


def describePorts(statuses: Sequence[PortStatus]) -> str:
    """
    The C{STATUS=} line: how many ports listen and connections are open.
    """
    listening = sum(1 for s in statuses if s.listening)
    current = 0
    for s in statuses:
        value = s.counters.get("current", 0)
        current += value if isinstance(value, int) else 0
    return (
        f"{plural(listening, 'port')} listening, {plural(current, 'open connection')}"
    )


def announcedReload(
    notifier: Notifier, reload: Callable[[], Deferred[_R]]
) -> Deferred[_R]:
    """
    C{reload()} between C{RELOADING=1} and C{READY=1} (sent whether it
    succeeded or not: a failed reload leaves the daemon serving as before).
    """
    notifier.reloading()

    def done(result: _R) -> _R:
        notifier.ready()
        return result

    return reload().addBoth(done)


class NotifyService(Service):
    """
    Tells the service manager the daemon is ready once started (every
    port listens then), keeps C{STATUS=} current, pings the watchdog at
    half its interval while the reactor turns, and says C{STOPPING=1}
    when stopped (the drain begins).
    """

    def __init__(
        self,
        notifier: Notifier,
        clock: IReactorTime,
        ports: Callable[[], Sequence[PortStatus]],
        watchdog: float | None = None,
        statusEvery: float = STATUS_SECONDS,
        whenReady: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        """
        @param ports: The ports now, for C{STATUS=}.
        @param watchdog: C{WATCHDOG_USEC} in seconds (L{watchdogSeconds}).
        @param whenReady: Fires once every port serves, if that comes
            after the start (the workers of C{--workers}); READY=1 waits
            for it.
        """
        self.notifier = notifier
        self.whenReady = whenReady
        self.ports = ports
        self.watchdog = watchdog
        self._pinger = LoopingCall(notifier.watchdog)
        self._pinger.clock = clock
        self._reporter = LoopingCall(self.report)
        self._reporter.clock = clock
        self._statusEvery = statusEvery
        self._lastStatus = ""
        self._handedOver = False

    def report(self) -> None:
        """
        Send C{STATUS=} if it changed.
        """
        status = describePorts(self.ports())
        if status != self._lastStatus:
            self._lastStatus = status
            self.notifier.status(status)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if not self.notifier.enabled:
            return
        if self.whenReady is None:
            self._ready()
        else:
            self.whenReady().addCallback(lambda _: self._ready())
        # Pings go on while the workers start, too.
        if self.watchdog is not None:
            self._pinger.start(self.watchdog / 2, now=True)

    def _ready(self) -> None:
        if not self.running:
            return
        self._lastStatus = describePorts(self.ports())
        self.notifier.ready(self._lastStatus)
        self._reporter.start(self._statusEvery, now=False)

    def handOver(self, pid: int) -> None:
        """
        An upgrade's new process (C{pid}) serves now: it is the main
        process (C{MAINPID=}); this one's stop is no longer the service's
        (no STOPPING=1).
        """
        self._handedOver = True
        self.notifier.mainPid(pid)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        for loop in (self._pinger, self._reporter):
            if loop.running:
                loop.stop()
        if self.notifier.enabled and not self._handedOver:
            self.notifier.stopping(f"stopping: {describePorts(self.ports())}")


__all__ = [
    "SILENT",
    "NotifyService",
    "Notifier",
    "announcedReload",
    "describePorts",
    "watchdogSeconds",
]
