"""
C{--workers N}: the main process binds every port's socket (before twistd
drops privileges), spawns N worker processes that all accept on those same
sockets, restarts any that dies, and is the daemon's one face: it serves
the status port itself (totals over the workers, or per worker on
request), takes the admin API's changes and SIGHUP, and passes them to
every worker, all or nothing.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import define, evolve, field, frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport import __version__
from multiport.config.model import Config, PortConfig
from multiport.daemon.ipc import Channel
from multiport.daemon.logformat import emitLine, eventFromWorker
from multiport.daemon.service import (
    PortsService,
    ReconcileError,
    ReloadUnavailable,
    StartupError,
    claims,
    describeListenError,
    logReloaded,
    reloadLogged,
    signalName,
)
from multiport.daemon.worker import CHANNEL_FD
from multiport.errors import ConfigError
from multiport.handlers.interface import IDaemonControl, IDaemonView, PortStatus
from multiport.ports.counters import PortCounters
from multiport.status.admintoken import tokenMatches
from multiport.text import plural

log = Logger()
#: What workers write that is not one of their log events, after
#: "worker N: ", written once per reactor turn.
workerOutput = Logger(namespace="multiport.daemon.worker")

STATUS_HANDLER = "status"
#: How often the main process asks the workers for their counters.
REFRESH_SECONDS = 1.0
#: Restart delays after a worker dies: doubling from the first to the last;
#: back to the first once a worker has run for RESET_AFTER seconds.
FIRST_RESTART = 0.5
LAST_RESTART = 30.0
RESET_AFTER = 60.0


def workerCount(value: str, cores: int | None = None) -> int:
    """
    C{--workers}: a whole number of at least 1, or C{auto} (one per core).

    @raise ConfigError: naming the bad value.
    """
    if value == "auto":
        return max(1, cores if cores is not None else (os.cpu_count() or 1))
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise ConfigError("--workers", f"expected 1 to 256 or auto, got {value!r}")
    return int(value)


#: Set to "reuseport" to give each worker a socket of its own in an
#: SO_REUSEPORT group instead of one shared socket per port (an experiment
#: the benchmarks measure; see docs/benchmarks.rst).
SOCKETS_ENV = "MULTIPORT_WORKER_SOCKETS"


def bindSocket(config: PortConfig, reusePort: bool = False) -> socket.socket:
    """
    A socket bound and listening for C{config}, for the workers to share.

    @raise CannotListenError: if it can't be bound.
    """
    family = socket.AF_INET6 if config.ipv6 else socket.AF_INET
    skt = socket.socket(family, socket.SOCK_STREAM)
    try:
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reusePort:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if config.ipv6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        skt.bind((config.interface, config.port))
        skt.listen(config.backlog)
        skt.setblocking(False)
    except OSError as e:
        skt.close()
        raise CannotListenError(config.interface, config.port, e) from None
    return skt


def _add(total: dict[str, Any], more: Mapping[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, Mapping):
            _add(total.setdefault(key, {}), value)
        elif key == "listening_since":
            if value is not None:
                previous = total.get(key)
                total[key] = value if previous is None else min(previous, value)
            else:
                total.setdefault(key, None)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        else:
            total.setdefault(key, value)


def mergeStatuses(
    name: str, config: PortConfig, parts: Sequence[PortStatus]
) -> PortStatus:
    """
    One port's status summed over the workers' C{parts}.
    """
    counters: dict[str, Any] = {}
    _add(counters, PortCounters().snapshot())
    handlerCounters: dict[Any, int] = {}
    for part in parts:
        _add(counters, part.counters)
        for key, value in part.handlerCounters.items():
            handlerCounters[key] = handlerCounters.get(key, 0) + value
    expiries = [p.certificateExpiry for p in parts if p.certificateExpiry is not None]
    return PortStatus(
        name=name,
        config=config,
        listening=any(p.listening for p in parts),
        counters=counters,
        handlerCounters=handlerCounters,
        certificateExpiry=min(expiries) if expiries else None,
        draining=bool(parts) and all(p.draining for p in parts),
    )


@define
class Retired:
    """
    What the workers that exited had counted on one port, at their last
    report: kept so that the daemon's totals never go backwards.
    """

    counters: dict[str, Any] = field(factory=dict)
    handlerCounters: dict[Any, int] = field(factory=dict)

    def fold(self, status: PortStatus) -> None:
        """
        Add the last figures of a worker that exited: its connections still
        open are gone with it, so they count as closed.
        """
        counters = {
            key: dict(value) if isinstance(value, Mapping) else value
            for key, value in status.counters.items()
            if key != "listening_since"
        }
        connections = counters.get("connections")
        if isinstance(connections, dict):
            current = connections.get("current", 0)
            connections["closed"] = connections.get("closed", 0) + current
            connections["current"] = 0
        _add(self.counters, counters)
        for key, value in status.handlerCounters.items():
            self.handlerCounters[key] = self.handlerCounters.get(key, 0) + value

    def addedTo(self, status: PortStatus) -> PortStatus:
        """
        C{status} with these figures added.
        """
        counters: dict[str, Any] = {}
        _add(counters, status.counters)
        _add(counters, self.counters)
        handlerCounters = dict(status.handlerCounters)
        for key, value in self.handlerCounters.items():
            handlerCounters[key] = handlerCounters.get(key, 0) + value
        return evolve(status, counters=counters, handlerCounters=handlerCounters)


@frozen
class PortRef:
    """
    A port as a change reports it: its name and real number.
    """

    name: str
    port: int


@define
class Slot:
    """
    One worker: its process, its channel, and what it last reported.
    """

    index: int
    process: Any = None
    channel: Channel | None = None
    pid: int | None = None
    ready: bool = False
    started: float = 0.0
    delay: float = FIRST_RESTART
    statuses: list[PortStatus] = field(factory=list)
    ended: Deferred[None] | None = None


class WorkerProcess(ProcessProtocol):
    """
    The main process's side of one worker process: its output is logged
    line by line with its number.  The worker writes its log events as
    L{workerRecord} lines, logged again here with their namespace, level
    and fields (L{eventFromWorker}); anything else it writes (Python's own
    last words) is logged as it is, in the C{multiport.daemon.worker} namespace.
    """

    def __init__(self, pool: WorkerPool, slot: Slot) -> None:
        self.pool = pool
        self.slot = slot
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        index = self.slot.index
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if not text:
                continue
            event = eventFromWorker(text, index) if childFD == 1 else None
            if event is not None:
                workerOutput.observer(event)
            else:
                emitLine(workerOutput, f"worker {index}: {text}", worker=index)

    def processEnded(self, reason: Failure) -> None:
        self.pool.workerEnded(self.slot, reason)


@implementer(IDaemonView, IDaemonControl)
class WorkerPool(MultiService):
    """
    The main process of C{--workers N}.

    @ivar config: The workers' ports, with their real numbers once bound.
    @ivar status: The main process's own ports (the status port), served
        here; its handlers see this pool as the daemon.
    """

    def __init__(
        self,
        config: Config,
        count: int,
        reactor: Any,
        makeStatus: Callable[[WorkerPool, Config], PortsService],
        rebuild: Callable[[], Config] | None = None,
        adminToken: str | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.version = __version__
        self.started = reactor.seconds()
        self.count = count
        self.rebuild = rebuild
        self.adminToken = adminToken
        self.owner = owner
        self._reactor = reactor
        workers, own = split(config)
        self.config = workers
        #: Each worker port's configuration as given (port 0 stays 0), by
        #: name: a reload matches port 0 entries against these.
        self.given: dict[str, PortConfig] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.addedLive: set[str] = set()
        self.slots = [Slot(index) for index in range(count)]
        #: By port name: what workers that exited had counted.
        self.retired: dict[str, Retired] = {}
        self.reusePort = os.environ.get(SOCKETS_ENV) == "reuseport"
        #: With reusePort: each port's sockets, one per worker.
        self.ownSockets: dict[str, list[socket.socket]] = {}
        self.status = makeStatus(self, own)
        self.status.setServiceParent(self)
        self._refresher = LoopingCall(self.refresh)
        self._refresher.clock = reactor
        self._stopping = False

    # Starting and stopping.

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        bound: dict[str, socket.socket] = {}
        ports: list[PortConfig] = []
        for config in self.config.ports:
            try:
                skt = bindSocket(config, reusePort=self.reusePort)
                if self.reusePort:
                    # Worker 0 takes the first socket of the group.
                    real = evolve(config, port=skt.getsockname()[1])
                    self.ownSockets[real.name] = [skt] + [
                        bindSocket(real, reusePort=True) for _ in range(self.count - 1)
                    ]
            except CannotListenError as e:
                for other in bound.values():
                    other.close()
                message = describeListenError(config, e)
                log.critical("{message}", message=message)
                raise StartupError(message) from None
            real = evolve(config, port=skt.getsockname()[1])
            bound[real.name] = skt
            self.given[real.name] = config
            ports.append(real)
        self.sockets = bound
        self.config = Config(tuple(ports), self.config.stateDir)
        try:
            self.status.privilegedStartService()
        except StartupError:
            for skt in bound.values():
                skt.close()
            raise
        for config in ports:
            log.info(
                "listening on {name}: handler {handler}, TLS {tls}, backlog "
                "{backlog}, served by {count} workers",
                name=config.name,
                handler=config.handler,
                tls=config.tls.describe() if config.tls else "off",
                backlog=config.backlog,
                count=self.count,
            )
        for slot in self.slots:
            self._spawn(slot, dropPrivileges=True)

    def startService(self) -> None:
        Service.startService(self)
        self.status.startService()
        for child in self:
            if child is not self.status and not child.running:
                child.startService()
        self._refresher.start(REFRESH_SECONDS, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Stop the status port, then every worker (each drains its
        connections); fires once all have exited.
        """
        Service.stopService(self)
        self._stopping = True
        if self._refresher.running:
            self._refresher.stop()
        waits: list[Deferred[Any]] = []
        for child in list(self):
            if child.running:
                result = child.stopService()
                if isinstance(result, Deferred):
                    waits.append(result)
        for slot in self.slots:
            if slot.process is not None and slot.ended is not None:
                waits.append(slot.ended)
                try:
                    slot.process.signalProcess("TERM")
                except Exception:
                    pass
        # The workers stop listening on TERM; this process's copies of the
        # listening sockets (kept for restarting workers, which no longer
        # happens) must go too, or the kernel keeps completing handshakes
        # that nobody will ever accept: new clients would hang, not be
        # refused, for the whole drain.
        for skt in self.sockets.values():
            skt.close()
        for sockets in self.ownSockets.values():
            for skt in sockets[1:]:
                skt.close()
        self.sockets = {}
        self.ownSockets = {}
        return DeferredList(waits).addCallback(lambda _: None)

    def hurry(self, signalNumber: int) -> None:
        """
        The daemon is stopping and got C{signalNumber} (SIGTERM or SIGINT)
        again: every worker is told to close its connections now (a second
        SIGTERM does that in a worker), and so are the status port's.
        """
        log.info(
            "{signal} again: the workers close their connections now, without "
            "waiting for the drain",
            signal=signalName(signalNumber),
        )
        for slot in self.slots:
            if slot.process is not None:
                try:
                    slot.process.signalProcess("TERM")
                except Exception:
                    pass
        self.status.hurry(signalNumber)

    # Workers.

    def _spawn(self, slot: Slot, dropPrivileges: bool = False) -> None:
        parentEnd, childEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        arguments = [
            sys.executable,
            "-m",
            "multiport.daemon.worker",
            "--index",
            str(slot.index),
        ]
        if type(self._reactor).__name__ != "MultiportEPollReactor":
            arguments.append("--twisted-reactor")
        if dropPrivileges and self.owner is not None and os.getuid() == 0:
            arguments += ["--uid", str(self.owner[0]), "--gid", str(self.owner[1])]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        slot.ready = False
        slot.ended = Deferred()
        slot.started = self._reactor.seconds()
        slot.process = self._reactor.spawnProcess(
            WorkerProcess(self, slot),
            sys.executable,
            arguments,
            env=environment,
            childFDs={0: "w", 1: "r", 2: "r", CHANNEL_FD: childEnd.fileno()},
        )
        childEnd.close()
        slot.pid = slot.process.pid
        channel = Channel({})
        self._reactor.adoptStreamConnection(
            parentEnd.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: channel)
        )
        parentEnd.close()
        slot.channel = channel
        names = list(self.sockets)
        started = channel.call(
            "start",
            {"config": self.config, "names": names, "workers": self.count},
            [self._socketFor(name, slot).fileno() for name in names],
        )

        def ready(answer: Mapping[str, int]) -> None:
            slot.ready = True
            log.info(
                "worker {index} (pid {pid}) serving {ports}",
                index=slot.index,
                pid=answer["pid"],
                count=len(names),
                ports=plural(len(names), "port"),
            )

        def failed(reason: Failure) -> None:
            log.error(
                "worker {index} could not start: {reason}",
                index=slot.index,
                reason=reason.getErrorMessage(),
            )
            if slot.process is not None:
                slot.process.signalProcess("KILL")

        started.addCallbacks(ready, failed)

    def _socketFor(self, name: str, slot: Slot) -> socket.socket:
        own = self.ownSockets.get(name)
        return own[slot.index] if own else self.sockets[name]

    def workerEnded(self, slot: Slot, reason: Failure) -> None:
        """
        A worker exited: unless the daemon is stopping, start another after
        a delay that doubles while workers keep dying.
        """
        ended, slot.ended = slot.ended, None
        slot.ready = False
        slot.process = None
        slot.channel = None
        for status in slot.statuses:
            self.retired.setdefault(status.name, Retired()).fold(status)
        slot.statuses = []
        if ended is not None:
            ended.callback(None)
        if self._stopping or not self.running:
            log.info("worker {index} exited", index=slot.index)
            return
        ranFor = self._reactor.seconds() - slot.started
        if ranFor >= RESET_AFTER:
            slot.delay = FIRST_RESTART
        delay = slot.delay
        slot.delay = min(LAST_RESTART, slot.delay * 2)
        log.warn(
            "worker {index} (pid {pid}) exited ({reason}); the others serve its "
            "ports; restarting it in {delay:g}s",
            index=slot.index,
            pid=slot.pid,
            reason=reason.getErrorMessage(),
            delay=delay,
        )

        def restart() -> None:
            if not self._stopping and self.running:
                self._spawn(slot)

        self._reactor.callLater(delay, restart)

    def refresh(self) -> Deferred[None]:
        """
        Ask every worker for its counters.
        """
        asked = []
        for slot in self.slots:
            if slot.ready and slot.channel is not None:

                def keep(statuses: list[PortStatus], slot: Slot = slot) -> None:
                    slot.statuses = statuses

                asked.append(
                    slot.channel.call("status", None).addCallbacks(keep, lambda _: None)
                )
        return DeferredList(asked).addCallback(lambda _: None)

    # IDaemonView.

    def portStatus(self) -> list[PortStatus]:
        """
        Every port summed over the workers, then the main process's own.
        """
        byName: dict[str, list[PortStatus]] = {}
        order: list[str] = []
        for slot in self.slots:
            for status in slot.statuses:
                if status.name not in byName:
                    order.append(status.name)
                byName.setdefault(status.name, []).append(status)
        result = []
        configured = {c.name for c in self.config.ports}
        for config in self.config.ports:
            parts = byName.get(config.name, [])
            merged = mergeStatuses(config.name, config, parts)
            if not parts:
                merged = evolve(merged, listening=False, draining=False)
            result.append(merged)
        for name in order:
            if name not in configured:
                parts = byName[name]
                result.append(mergeStatuses(name, parts[0].config, parts))
        result = [
            self.retired[s.name].addedTo(s) if s.name in self.retired else s
            for s in result
        ]
        return result + self.status.portStatus()

    def workerStatus(self) -> list[tuple[int, int | None, list[PortStatus]]]:
        """
        Each worker's number, process id and ports.
        """
        return [(s.index, s.pid, list(s.statuses)) for s in self.slots]

    # IDaemonControl.

    def checkToken(self, token: str) -> bool:
        return tokenMatches(self.adminToken, token)

    def _allConfigs(self) -> list[PortConfig]:
        return [*self.config.ports, *self.status.runningConfigs()]

    def addPort(self, table: Mapping[str, object]) -> Deferred[PortRef]:
        if table.get("handler") == STATUS_HANDLER:
            server = self.status.addPort(table)
            return succeed(PortRef(server.name, server.boundAddress().port))
        new = self.status._requestFrom(table, "POST /api/ports")
        self.status.checkAmong(self._allConfigs(), new)
        skt = self._bind(new)
        real = evolve(new, port=skt.getsockname()[1])
        config = Config((*self.config.ports, real), self.config.stateDir)
        changed = self._everywhere(config, {real.name: skt})

        def added(_: object) -> PortRef:
            self.given[real.name] = new
            self.addedLive.add(real.name)
            log.info("added {name} through the admin API", name=real.name)
            return PortRef(real.name, real.port)

        return changed.addCallback(added)

    def _bind(self, config: PortConfig) -> socket.socket:
        try:
            return bindSocket(config)
        except CannotListenError as e:
            reason = getattr(e.socketError, "errno", None)
            raise ReconcileError(
                describeListenError(config, e), conflict=reason == errno.EADDRINUSE
            ) from None

    def _named(self, name: str) -> PortConfig:
        for config in self.config.ports:
            if config.name == name:
                return config
        raise KeyError(name)

    def changePort(
        self,
        name: str,
        table: Mapping[str, object],
        servingFrom: IAddress | None = None,
    ) -> Deferred[PortRef]:
        if name in self.status.namedServices:
            server = self.status.changePort(name, table, servingFrom)
            return succeed(PortRef(server.name, server.boundAddress().port))
        current = self._named(name)
        new = self.status.changedConfig(name, current, current.port, table)
        self.status.checkAmong([c for c in self._allConfigs() if c is not current], new)
        config = Config(
            tuple(new if c is current else c for c in self.config.ports),
            self.config.stateDir,
        )
        return self._everywhere(config, {}).addCallback(
            lambda _: PortRef(name, current.port)
        )

    def removePort(self, name: str, servingFrom: IAddress | None = None) -> Any:
        if name in self.status.namedServices:
            return self.status.removePort(name, servingFrom)
        current = self._named(name)
        draining = sum(
            s.counters["connections"]["current"]  # type: ignore[index]
            for s in self.portStatus()
            if s.name == name
        )
        config = Config(
            tuple(c for c in self.config.ports if c is not current),
            self.config.stateDir,
        )

        def removed(_: object) -> int:
            self.addedLive.discard(name)
            return draining

        return self._everywhere(config, {}).addCallback(removed)

    def reload(self) -> Deferred[dict[str, object]]:
        if self.rebuild is None:
            raise ReloadUnavailable(
                "the daemon was started without --config: nothing to reload"
            )
        workers, own = split(self.rebuild())
        given = list(workers.ports)
        for name in sorted(self.addedLive):
            config = self._named(name)
            if any(claims(c, config) for c in given):
                self.addedLive.discard(name)
            else:
                given.append(self.given[name])
        # Sockets: a port at the same address keeps its socket; port 0
        # entries keep theirs when their configuration is the same.
        current = {(c.interface, c.port): c for c in self.config.ports}
        zeroes = {n: c for n, c in self.given.items() if c.port == 0}
        ports: list[PortConfig] = []
        newSockets: dict[str, socket.socket] = {}
        try:
            for config in given:
                if config.port == 0:
                    same = next(
                        (
                            n
                            for n, c in zeroes.items()
                            if c == config and n not in {p.name for p in ports}
                        ),
                        None,
                    )
                    if same is not None:
                        ports.append(evolve(config, port=self._named(same).port))
                        continue
                elif (config.interface, config.port) in current:
                    ports.append(config)
                    continue
                skt = self._bind(config)
                real = evolve(config, port=skt.getsockname()[1])
                newSockets[real.name] = skt
                self.given[real.name] = config
                ports.append(real)
        except ReconcileError:
            for skt in newSockets.values():
                skt.close()
            raise
        config = Config(tuple(ports), workers.stateDir)
        changed = self._everywhere(config, newSockets)

        def ownPorts(summary: dict[str, object]) -> dict[str, object]:
            from multiport.daemon.live import loadCertificates

            mine = self.status.reconcile(
                own, loadCertificates(own.ports, own.stateDir, self.owner)
            )
            for key in ("added", "removed", "changed"):
                summary[key] = [*summary[key], *mine[key]]  # type: ignore[misc]
            summary["unchanged"] = summary["unchanged"] + mine["unchanged"]  # type: ignore[operator]
            logReloaded(summary, ", in every worker")
            return summary

        return changed.addCallback(ownPorts)

    def reloadLogged(self) -> None:
        """
        L{reload} for SIGHUP: a failure is logged and nothing changes.
        """
        reloadLogged(self.reload)

    def _everywhere(
        self, config: Config, newSockets: Mapping[str, socket.socket]
    ) -> Deferred[dict[str, object]]:
        """
        Apply C{config} in every running worker, passing the sockets of its
        new ports.  Applied only if every worker applied it; otherwise the
        workers that did go back to the previous configuration, the new
        sockets are closed, and it fails with L{ReconcileError}.
        """
        previous = self.config
        live = [s for s in self.slots if s.ready and s.channel is not None]
        names = list(newSockets)
        descriptors = [newSockets[n].fileno() for n in names]
        calls = [
            s.channel.call("apply", {"config": config, "names": names}, descriptors)  # type: ignore[union-attr]
            for s in live
        ]

        def settled(results: list[tuple[bool, Any]]) -> dict[str, object]:
            failures = [r for ok, r in results if not ok]
            if failures:
                removedNames = [
                    c.name
                    for c in previous.ports
                    if c.name not in {p.name for p in config.ports}
                ]
                for slot, (ok, _) in zip(live, results, strict=True):
                    if ok and slot.channel is not None:
                        slot.channel.call(
                            "apply",
                            {"config": previous, "names": removedNames},
                            [self.sockets[n].fileno() for n in removedNames],
                        ).addErrback(lambda f: log.failure("rollback failed", f))
                for skt in newSockets.values():
                    skt.close()
                reason = failures[0]
                message = (
                    reason.getErrorMessage()
                    if isinstance(reason, Failure)
                    else str(reason)
                )
                raise ReconcileError(f"a worker refused the change: {message}")
            kept = {c.name for c in config.ports}
            for name in [n for n in self.sockets if n not in kept]:
                self.sockets.pop(name).close()
                self.given.pop(name, None)
                # A port removed is forgotten, as in one process.
                self.retired.pop(name, None)
            self.sockets.update(newSockets)
            self.config = config
            self.refresh()
            summaries = [r for ok, r in results if ok]
            if summaries:
                return summaries[0]  # type: ignore[no-any-return]
            return {"added": list(names), "removed": [], "changed": [], "unchanged": 0}

        return DeferredList(calls, consumeErrors=True).addCallback(settled)


def split(config: Config) -> tuple[Config, Config]:
    """
    The workers' ports and the main process's own (status ports).
    """
    workers = tuple(p for p in config.ports if p.handler != STATUS_HANDLER)
    own = tuple(p for p in config.ports if p.handler == STATUS_HANDLER)
    return Config(workers, config.stateDir), Config(own, config.stateDir)


__all__ = [
    "PortRef",
    "WorkerPool",
    "bindSocket",
    "mergeStatuses",
    "split",
    "workerCount",
]
