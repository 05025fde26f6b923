"""
The main process of C{--workers N}: it binds every port's socket (before
twistd drops privileges), spawns N worker processes that all accept on
those same sockets, restarts any that dies, and is the daemon's one face:
it serves the status port itself (totals over the workers, or per worker
on request), and carries the admin API's changes and SIGHUP to every
worker (L{PoolControl}).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping

from attrs import evolve
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport import __version__
from multiport.config.model import Config, PortConfig
from multiport.daemon.drain import BalancerDrain
from multiport.daemon.ipc import Channel, channelFactory
from multiport.daemon.notify import SILENT, Notifier
from multiport.daemon.poolcontrol import PoolControl
from multiport.daemon.service import PortsService
from multiport.daemon.startup import describeListenError, serving, signalName
from multiport.daemon.worker import CHANNEL_FD
from multiport.daemon.workers import (
    FIRST_RESTART,
    LAST_RESTART,
    REFRESH_SECONDS,
    RESET_AFTER,
    Retired,
    Slot,
    WorkerProcess,
    mergeStatuses,
    split,
)
from multiport.errors import StartupError
from multiport.handlers.interface import (
    IDaemonControl,
    IDaemonDrain,
    IDaemonView,
    IHandler,
    PortStatus,
)
from multiport.io.reactortype import ReactorLike
from multiport.io.transports import DEFAULT_TRANSPORT
from multiport.ports.sockets import adoptActivated, bindShared
from multiport.text import plural

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

# The lines were the workers module's before this module existed; their
# namespace is part of the JSON log.
log = Logger(namespace="multiport.daemon.workers")


@implementer(IDaemonView, IDaemonControl, IDaemonDrain)
class WorkerPool(PoolControl, BalancerDrain, MultiService):
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
        reactor: ReactorLike,
        handlers: Mapping[str, IHandler],
        makeStatus: Callable[[WorkerPool, Config], PortsService],
        rebuild: Callable[[], Config] | None = None,
        adminToken: str | None = None,
        owner: tuple[int, int] | None = None,
        reusePort: bool = False,
        transport: str = DEFAULT_TRANSPORT,
        notifier: Notifier = SILENT,
        activated: Mapping[str, int] | None = None,
    ) -> None:
        """
        @param handlers: The handlers by name: those L{servedByMainProcess}
            (status) run their ports here, the others in the workers.
        @param reusePort: Give each worker a socket of its own in an
            SO_REUSEPORT group rather than one shared socket per port
            (C{--worker-sockets reuseport}).
        @param transport: C{--transport}'s value, passed on to each worker.
        @param notifier: Told of reloads (systemd's C{sd_notify}).
        @param activated: Sockets systemd passed (socket activation:
            listening TCP sockets, UDP sockets), by port name: the workers
            share these rather than sockets bound here.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.version = __version__
        self.started = reactor.seconds()
        self.count = count
        self.rebuild = rebuild
        self.adminToken = adminToken
        self.owner = owner
        self._reactor = reactor
        self.handlers = handlers
        workers, own = split(config, handlers)
        self.config = workers
        #: Each worker port's configuration as given (port 0 stays 0), by
        #: name: a reload matches port 0 entries against these.
        self.given: dict[str, PortConfig] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.addedLive: set[str] = set()
        self.slots = [Slot(index) for index in range(count)]
        #: By port name: what workers that exited had counted.
        self.retired: dict[str, Retired] = {}
        #: By port name: what the daemon an upgrade replaced has counted
        #: (replaced by each of its reports until it exits).
        self.carried: dict[str, Retired] = {}
        #: An upgrade's new daemon: fires once the old one stopped
        #: accepting (the status pages wait for it).
        self.countsSettled: Deferred[None] | None = None
        self.reusePort = reusePort
        self.transport = transport
        self.notifier = notifier
        self.activated = dict(activated or {})
        #: With reusePort: each port's sockets, one per worker.
        self.ownSockets: dict[str, list[socket.socket]] = {}
        #: The renewal state of a port's ACME certificate, ordered here
        #: (set by L{multiport.acme.attach.orderForWorkers}).
        self.acmeStatus: Callable[[PortConfig], Mapping[str, object] | None] | None = (
            None
        )
        self.status = makeStatus(self, own)
        self.status.setServiceParent(self)  # type: ignore[no-untyped-call]
        self._refresher = LoopingCall(self.refresh)
        self._refresher.clock = reactor
        self._stopping = False
        self._serving: list[Deferred[None]] = []

    # Starting and stopping.

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        bound: dict[str, socket.socket] = {}
        ports: list[PortConfig] = []
        for config in self.config.ports:
            try:
                descriptor = self.activated.pop(config.name, None)
                if descriptor is not None:
                    skt = adoptActivated(descriptor)
                else:
                    skt = bindShared(config, reusePort=self.reusePort)
                # A socket systemd passed is every worker's; one an upgrade
                # handed over comes with the rest of its group.
                if self.reusePort and (
                    descriptor is None or f"{config.name}#1" in self.activated
                ):
                    # Worker 0 takes the first socket of the group.
                    real = evolve(config, port=skt.getsockname()[1])
                    self.ownSockets[real.name] = [skt] + self._group(real)
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
        self.config = evolve(self.config, ports=tuple(ports))
        try:
            self.status.privilegedStartService()
        except StartupError:
            for skt in bound.values():
                skt.close()
            raise
        for config in ports:
            what, fields = serving(config)
            log.info(
                "listening on {name}: " + what + ", served by {count} workers",
                name=config.name,
                count=self.count,
                **fields,
            )
        for slot in self.slots:
            self._spawn(slot, dropPrivileges=True)

    def _group(self, config: PortConfig) -> list[socket.socket]:
        """
        A C{reuseport} port's sockets for workers 1 to N-1: those an
        upgrade handed over (C{NAME#I}; a connection waiting in the queue
        of a socket closed instead would be reset), bound for the rest.
        """
        group = []
        for index in range(1, self.count):
            handed = self.activated.pop(f"{config.name}#{index}", None)
            if handed is not None:
                group.append(adoptActivated(handed))
            else:
                group.append(bindShared(config, reusePort=True))
        return group

    def listeningSockets(self) -> dict[str, int]:
        """
        Every listening socket's descriptor by port name, the status
        port's included; with C{reuseport}, a port's I-th extra socket as
        C{NAME#I} (an upgrade hands them over).
        """
        sockets = {name: skt.fileno() for name, skt in self.sockets.items()}
        for name, group in self.ownSockets.items():
            for index, skt in enumerate(group[1:], 1):
                sockets[f"{name}#{index}"] = skt.fileno()
        sockets.update(self.status.listeningSockets())
        return sockets

    def whenServing(self) -> Deferred[None]:
        """
        Fires once every worker serves its ports and their status is
        known here.
        """
        if all(s.ready for s in self.slots):
            return self.refresh()
        waiting: Deferred[None] = Deferred()
        self._serving.append(waiting)
        return waiting.addCallback(lambda _: self.refresh())

    def startService(self) -> None:
        Service.startService(self)  # type: ignore[no-untyped-call]
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
        Service.stopService(self)  # type: ignore[no-untyped-call]
        self._stopping = True
        if self._refresher.running:
            self._refresher.stop()
        waits: list[Deferred[None]] = []
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
        arguments += ["--transport", self.transport]
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
        channel = Channel({"final": lambda statuses, _: self._final(slot, statuses)})
        self._reactor.adoptStreamConnection(
            parentEnd.fileno(),
            socket.AF_UNIX,
            channelFactory(channel),
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
            if all(s.ready for s in self.slots):
                waiting, self._serving = self._serving, []
                for waiter in waiting:
                    waiter.callback(None)
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

    def _final(self, slot: Slot, statuses: object) -> None:
        """
        A worker's figures once it has drained, as it exits: what it
        counted since its last report is kept too.
        """
        if isinstance(statuses, list) and all(
            isinstance(s, PortStatus) for s in statuses
        ):
            slot.statuses = statuses

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
            if self.acmeStatus is not None:
                # The workers only serve; renewals are this process's.
                merged = evolve(merged, acme=self.acmeStatus(config))
            result.append(merged)
        for name in order:
            if name not in configured:
                parts = byName[name]
                result.append(mergeStatuses(name, parts[0].config, parts))
        for totals in (self.retired, self.carried):
            result = [
                totals[s.name].addedTo(s) if s.name in totals else s for s in result
            ]
        return result + self.status.portStatus()

    @property
    def peers(self) -> tuple[str, ...]:
        """
        The other instances' status URLs (C{[cluster] peers}), as the
        configuration says now.
        """
        return self.config.peers

    def workerStatus(self) -> list[tuple[int, int | None, list[PortStatus]]]:
        """
        Each worker's number, process id and ports.
        """
        return [(s.index, s.pid, list(s.statuses)) for s in self.slots]
