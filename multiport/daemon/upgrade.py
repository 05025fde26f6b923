"""
Replacing the running daemon with a new one (new code from disk) without
refusing a connection: C{POST /api/upgrade} and C{multiport-ctl upgrade}.

The old process starts the new one with the same command line and a
private UNIX socket (a socketpair) at descriptor L{HANDOVER_FD}, named by
C{$MULTIPORT_UPGRADE_FD}.  Over it, it sends every listening socket
(C{SCM_RIGHTS}), the running configuration (ports added through the admin
API included) and a snapshot of the counters.  The new process adopts the
sockets instead of binding (they are shared then: never shut down),
starts, and answers C{ready PID}.  Only then does the old one close its
copies of the listening sockets (close, not C{shutdown(2)}, which would
stop the new process accepting too), drain its connections and exit.  If
the new one does not answer within the timeout, or exits first, the old
one kills it, logs why and goes on serving.

SIGUSR2 (nginx's upgrade signal) is taken by the stats dump, so the
trigger is the admin API.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any
from typing import Protocol as Protocol_

from attrs import evolve
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import (
    ProcessProtocol,
    Protocol,
    ServerFactory,
    connectionDone,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.config.model import Config, PortConfig
from multiport.daemon.handover import (
    HANDOVER_FD,
    UPGRADE_VARIABLE,
    Handover,
    sendHandover,
)
from multiport.daemon.upgradetotals import TotalsSender
from multiport.errors import ReconcileError, ReloadUnavailable
from multiport.handlers.interface import PortStatus
from multiport.io.reactortype import ReactorLike

# Twisted leaves parts of the API this module calls unannotated
# (Failure.check): those calls carry an ignore of no-untyped-call.

log = Logger()

#: How long the new process has to report ready, by default (seconds).
DEFAULT_UPGRADE_TIMEOUT = 30.0
NO_UPGRADE = "this daemon was not started by twistd: nothing to upgrade"


class _Answer(Protocol):
    """
    The old daemon's end of the handover socket: waits for C{ready PID}.
    """

    def __init__(self, upgrade: Upgrade) -> None:
        self.upgrade = upgrade
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0]
            words = line.split()
            if len(words) == 2 and words[0] == b"ready" and words[1].isdigit():
                self.upgrade.ready(int(words[1]))
                # Nothing more to read here; the counts go out on the
                # upgrade's own descriptor of the socket, which a shutdown(2)
                # of this one (Twisted's orderly close, at the latest when
                # the reactor stops) would end too.
                transport: Any = self.transport
                transport._shouldShutdown = False
                transport.loseConnection()
            else:
                self.upgrade.failed(f"the new daemon said {line[:80]!r}")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.upgrade.done:
            self.upgrade.failed("the new daemon closed the handover socket first")


class _Child(ProcessProtocol):
    def __init__(self, upgrade: Upgrade) -> None:
        self.upgrade = upgrade

    def processEnded(self, reason: Failure) -> None:
        self.upgrade.exited(reason)


class Upgrade:
    """
    One upgrade, seen from the old daemon.

    @ivar result: Fires with the new process's pid once it serves, or
        fails with L{ReconcileError} saying why it did not.
    """

    def __init__(
        self,
        reactor: ReactorLike,
        timeout: float,
        handOver: Callable[[int], None],
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.handOver = handOver
        self.result: Deferred[int] = Deferred()
        self.done = False
        self.process: object = None
        self.channel: socket.socket | None = None
        self.pid: int | None = None
        self._timer: IDelayedCall | None = None

    def start(
        self,
        command: Sequence[str],
        handover: Handover,
        sockets: Sequence[int],
    ) -> Deferred[int]:
        """
        Start the new daemon with C{command} and give it C{handover}.
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        environment = dict(os.environ)
        environment[UPGRADE_VARIABLE] = str(HANDOVER_FD)
        environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            process = self.reactor.spawnProcess(
                _Child(self),
                command[0],
                list(command),
                env=environment,
                childFDs={0: 0, 1: 1, 2: 2, HANDOVER_FD: theirs.fileno()},
            )
        finally:
            theirs.close()
        self.process = process
        self.pid = process.pid
        log.info(
            "upgrade: started the new daemon (pid {pid}); handing over "
            "{count} listening sockets",
            pid=self.pid,
            count=len(sockets),
        )
        try:
            mine.setblocking(True)
            sendHandover(mine, handover, sockets)
        except OSError as e:
            mine.close()
            self.failed(f"cannot hand over: {e}")
            return self.result
        self._timer = self.reactor.callLater(self.timeout, self._late)
        mine.setblocking(False)
        self.reactor.adoptStreamConnection(
            mine.fileno(), socket.AF_UNIX, _factory(self)
        )
        # Kept: the counts go on over it after the handover.
        self.channel = mine
        return self.result

    def _late(self) -> None:
        self._timer = None
        self.failed(f"the new daemon was not ready within {self.timeout:g} s")

    def ready(self, pid: int) -> None:
        """
        The new process serves every port: hand the service over to it.
        """
        if self.done:
            return
        self._finish()
        log.info("upgrade: the new daemon (pid {pid}) is ready", pid=pid)
        self.handOver(pid)
        self.result.callback(pid)

    def failed(self, why: str) -> None:
        """
        The upgrade failed: kill the new process, log why, serve on.
        """
        if self.done:
            return
        self._finish()
        signal = getattr(self.process, "signalProcess", None)
        if signal is not None:
            try:
                signal("KILL")
            except Exception:  # it is gone already
                pass
        if self.channel is not None:
            self.channel.close()
        message = f"upgrade failed, still serving: {why}; the new daemon was killed"
        log.error("{message}", message=message)
        # 409: the request was fine; the daemon could not do it now.
        self.result.errback(ReconcileError(message, conflict=True))

    def exited(self, reason: Failure) -> None:
        """
        The new process ended.
        """
        if reason.check(ProcessDone) and not self.done:  # type: ignore[no-untyped-call]
            # twistd without -n: the first process exits once the daemon
            # forked off; the timeout still guards the answer.
            return
        if not self.done:
            self.failed(f"the new daemon exited first ({reason.getErrorMessage()})")

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _factory(upgrade: Upgrade) -> ServerFactory:
    factory = ServerFactory()
    factory.protocol = lambda: _Answer(upgrade)
    return factory


class Upgrader:
    """
    Upgrades one running single-process daemon (C{PortsService}): one
    upgrade at a time.

    @ivar command: The command line that starts the new daemon (this
        one's, so the new code on disk is what runs).
    @ivar pidfile: twistd's pid file, or L{None}: the new daemon's twistd
        refuses to start while it names a live process, so it is removed
        before and written back if the upgrade fails.
    """

    def __init__(
        self,
        reactor: ReactorLike,
        command: Sequence[str],
        timeout: float = DEFAULT_UPGRADE_TIMEOUT,
        notifyMainPid: Callable[[int], object] = lambda pid: None,
        pidfile: Callable[[], str | None] = lambda: None,
        forgetPidfile: Callable[[], object] = lambda: None,
    ) -> None:
        self.reactor = reactor
        self.command = list(command)
        self.timeout = timeout
        self.notifyMainPid = notifyMainPid
        self.pidfile = pidfile
        self.forgetPidfile = forgetPidfile
        self.running: Upgrade | None = None

    def upgrade(self, service: UpgradableService) -> Deferred[int]:
        """
        Start the new daemon, hand C{service}'s sockets, configuration and
        counters over; fires with the new pid once it serves (this process
        then stops accepting, drains and exits).
        """
        if self.running is not None:
            raise ReconcileError("an upgrade is in progress already", conflict=True)
        sockets = service.listeningSockets()
        handover = Handover(
            names=tuple(sockets),
            # The whole running configuration ([acme], [cluster]...), every
            # port with the number it got.
            config=evolve(service.config, ports=tuple(service.runningConfigs())),
            addedLive=service.liveAdditions(),
            statuses=tuple(service.portStatus()),
        )
        descriptors = list(sockets.values())
        pidfile = self.pidfile()
        if pidfile:
            _removeQuietly(pidfile)

        def handOver(pid: int) -> None:
            # From now on the new process accepts on the same sockets: ours
            # must only ever be closed.
            service.shareSockets()
            self.notifyMainPid(pid)
            self.forgetPidfile()
            if upgrade.channel is not None:
                TotalsSender(
                    upgrade.channel, service.portStatus, self.reactor, self.reactor
                )
            self.reactor.callLater(0, self.reactor.stop)

        upgrade = Upgrade(self.reactor, self.timeout, handOver)
        self.running = upgrade

        def failed(reason: Failure) -> Failure:
            self.running = None
            if pidfile:
                _writePid(pidfile, os.getpid())
            return reason

        try:
            result = upgrade.start(self.command, handover, descriptors)
        except Exception:
            self.running = None
            if pidfile:
                _writePid(pidfile, os.getpid())
            raise
        return result.addErrback(failed)


class UpgradableService(Protocol_):
    """
    What L{Upgrader} needs of the service it upgrades (the single process's
    L{multiport.daemon.service.PortsService} or the workers'
    L{multiport.daemon.pool.WorkerPool}).
    """

    config: Config

    def liveAdditions(self) -> frozenset[str]:
        """
        The names of the ports added through the admin API.
        """

    def listeningSockets(self) -> dict[str, int]:
        """
        Every listening socket's descriptor, by name (L{Handover.names}).
        """

    def shareSockets(self) -> None:
        """
        Another process listens on the same sockets from now on: stopping
        must close them, never shut them down.
        """

    def runningConfigs(self) -> list[PortConfig]: ...

    def portStatus(self) -> list[PortStatus]: ...


def upgradeService(
    upgrader: Upgrader | None, service: UpgradableService
) -> Deferred[dict[str, int]]:
    """
    C{POST /api/upgrade}: replace the daemon running C{service} with a new
    one started from the same command line; fires with C{{"pid": PID}} once
    it serves every port (this process then drains and exits), or fails
    with L{ReconcileError} (nothing changed) if it did not start.
    """
    if upgrader is None:
        return fail(ReloadUnavailable(NO_UPGRADE))
    return maybeDeferred(upgrader.upgrade, service).addCallback(
        lambda pid: {"pid": pid}
    )


def _removeQuietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _writePid(path: str, pid: int) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{pid}\n")
    except OSError as e:
        log.warn("cannot write the pid file {path}: {reason}", path=path, reason=str(e))


__all__ = [
    "DEFAULT_UPGRADE_TIMEOUT",
    "Upgrade",
    "Upgrader",
    "upgradeService",
]
