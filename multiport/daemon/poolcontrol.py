"""
The worker pool's L{IDaemonControl}: the admin API's changes and the
reload, decided in the main process (L{multiport.daemon.plan.plan}) and
carried to every worker, which applies them as a single process does;
all or nothing.  The pool binds the sockets of new ports and passes them
along.  The main process's own ports (the status port) change in place.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from attrs import evolve
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.config.model import Config, PortConfig
from multiport.daemon.control import NO_RELOAD, changedConfig, checkAmong
from multiport.daemon.notify import SILENT, Notifier, announcedReload
from multiport.daemon.plan import claims, plan
from multiport.daemon.reload import logReloaded, reloadLogged
from multiport.daemon.service import PortsService
from multiport.daemon.startup import liveListenError
from multiport.daemon.upgrade import Upgrader, upgradeService
from multiport.daemon.workers import Retired, Slot, split
from multiport.errors import ReconcileError, ReloadUnavailable
from multiport.handlers.interface import (
    ChangeSummary,
    IHandler,
    PortRef,
    PortStatus,
    servedByMainProcess,
)
from multiport.ports.certificates import loadCertificates, makeSelfSigned
from multiport.ports.sockets import bindShared
from multiport.status.admintoken import tokenMatches

# The lines were the workers module's before this module existed; their
# namespace is part of the JSON log.
log = Logger(namespace="multiport.daemon.workers")


class PoolControl:
    """
    The part of L{multiport.daemon.pool.WorkerPool} that changes its ports
    while running.
    """

    config: Config
    given: dict[str, PortConfig]
    sockets: dict[str, socket.socket]
    addedLive: set[str]
    slots: list[Slot]
    retired: dict[str, Retired]
    status: PortsService
    handlers: Mapping[str, IHandler]
    rebuild: Callable[[], Config] | None
    adminToken: str | None
    owner: tuple[int, int] | None
    #: Told of reloads (RELOADING=1, READY=1).
    notifier: Notifier = SILENT
    #: Starts a new daemon and hands the ports over (POST /api/upgrade).
    upgrader: Upgrader | None = None
    #: Called once every worker applied a live change (the ACME orders
    #: placed here follow the workers' ports).
    afterChange: Callable[[], None] | None = None

    # Provided by the pool.

    def portStatus(self) -> list[PortStatus]:
        raise NotImplementedError

    def refresh(self) -> Deferred[None]:
        raise NotImplementedError

    def listeningSockets(self) -> dict[str, int]:
        raise NotImplementedError

    # IDaemonControl.

    def checkToken(self, token: str) -> bool:
        return tokenMatches(self.adminToken, token)

    def _allConfigs(self) -> list[PortConfig]:
        return [*self.config.ports, *self.status.runningConfigs()]

    # What an upgrade reads (L{multiport.daemon.upgrade.UpgradableService}).

    def runningConfigs(self) -> list[PortConfig]:
        """
        Every port's configuration, with the number it got.
        """
        return self._allConfigs()

    def liveAdditions(self) -> frozenset[str]:
        """
        The names of the ports added through the admin API.
        """
        return frozenset(self.addedLive | self.status.addedLive)

    def shareSockets(self) -> None:
        """
        An upgrade's new daemon accepts on the sockets from now on: the
        workers' copies are shared already, the status port's become so.
        """
        self.status.shareSockets()

    def upgrade(self) -> Deferred[dict[str, int]]:
        """
        Replace this daemon and its workers with a new one that brings its
        own (L{multiport.daemon.upgrade}); the old workers drain.
        """
        return upgradeService(self.upgrader, self)

    def addPort(self, table: Mapping[str, object]) -> Deferred[PortRef]:
        """
        Add a port in every worker (a status port: here).
        """
        return maybeDeferred(self._addPort, table)

    def _addPort(self, table: Mapping[str, object]) -> Deferred[PortRef]:
        handler = self.handlers.get(str(table.get("handler")))
        if servedByMainProcess(handler):
            return self.status.addPort(table)
        new = self.status.requestFrom(table, "POST /api/ports")
        checkAmong(self._allConfigs(), new)
        self._makeSelfSigned([new])
        skt = self._bind(new)
        real = evolve(new, port=skt.getsockname()[1])
        config = evolve(self.config, ports=(*self.config.ports, real))
        changed = self._everywhere(config, {real.name: skt})

        def added(_: object) -> PortRef:
            self.given[real.name] = new
            self.addedLive.add(real.name)
            log.info("added {name} through the admin API", name=real.name)
            return PortRef(real.name, real.port)

        return changed.addCallback(added)

    def _makeSelfSigned(self, ports: Sequence[PortConfig]) -> None:
        """
        Make the self-signed certificate for C{ports} here, before the
        workers load it: two workers making it at once could leave the key
        of one beside the certificate of the other.
        """
        makeSelfSigned(ports, self.config.stateDir, self.owner)

    def _bind(self, config: PortConfig) -> socket.socket:
        try:
            return bindShared(config)
        except CannotListenError as e:
            raise liveListenError(config, e) from None

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
        """
        Change a port in every worker (a status port: here).
        """
        return maybeDeferred(self._changePort, name, table, servingFrom)

    def _changePort(
        self,
        name: str,
        table: Mapping[str, object],
        servingFrom: IAddress | None,
    ) -> Deferred[PortRef]:
        if name in self.status.namedServices:
            return self.status.changePort(name, table, servingFrom)
        current = self._named(name)
        new = changedConfig(name, current, current.port, table, self.status.requestFrom)
        checkAmong([c for c in self._allConfigs() if c is not current], new)
        self._makeSelfSigned([new])
        config = evolve(
            self.config,
            ports=tuple(new if c is current else c for c in self.config.ports),
        )
        return self._everywhere(config, {}).addCallback(
            lambda _: PortRef(name, current.port)
        )

    def removePort(
        self, name: str, servingFrom: IAddress | None = None
    ) -> Deferred[int]:
        """
        Remove a port from every worker (a status port: here); how many
        connections drain, over all workers.
        """
        return maybeDeferred(self._removePort, name, servingFrom)

    def _removePort(self, name: str, servingFrom: IAddress | None) -> Deferred[int]:
        if name in self.status.namedServices:
            return self.status.removePort(name, servingFrom)
        current = self._named(name)
        draining = 0
        for status in self.portStatus():
            if status.name == name:
                connections = status.counters.get("connections", {})
                assert isinstance(connections, Mapping)
                draining += int(connections.get("current", 0))
        config = evolve(
            self.config, ports=tuple(c for c in self.config.ports if c is not current)
        )

        def removed(_: object) -> int:
            self.addedLive.discard(name)
            return draining

        return self._everywhere(config, {}).addCallback(removed)

    def reload(self) -> Deferred[ChangeSummary]:
        """
        Read the configuration again and carry it to every worker, keeping
        the ports added through the admin API (unless the file now
        configures their address); the main process's own ports change
        here.
        """
        return announcedReload(self.notifier, lambda: maybeDeferred(self._reload))

    def _reload(self) -> Deferred[ChangeSummary]:
        if self.rebuild is None:
            raise ReloadUnavailable(NO_RELOAD)
        workers, own = split(self.rebuild(), self.handlers)
        given = list(workers.ports)
        for name in sorted(self.addedLive):
            added = self._named(name)
            if any(claims(c, added) for c in given):
                self.addedLive.discard(name)
            else:
                given.append(self.given[name])
        # Sockets: a port the plan keeps keeps its socket (port 0 entries
        # with their number); the others get new ones.
        decided = plan(
            [
                (PortRef(c.name, c.port), self.given.get(c.name, c))
                for c in self.config.ports
            ],
            given,
        )
        self._makeSelfSigned(given)
        keeps = {id(config): ref for config, ref in decided.kept}
        ports: list[PortConfig] = []
        newSockets: dict[str, socket.socket] = {}
        try:
            for wanted in given:
                ref = keeps.get(id(wanted))
                if ref is not None:
                    ports.append(evolve(wanted, port=ref.port))
                    continue
                skt = self._bind(wanted)
                real = evolve(wanted, port=skt.getsockname()[1])
                newSockets[real.name] = skt
                self.given[real.name] = wanted
                ports.append(real)
        except ReconcileError:
            for skt in newSockets.values():
                skt.close()
            raise
        config = evolve(workers, ports=tuple(ports))
        changed = self._everywhere(config, newSockets)

        def ownPorts(summary: ChangeSummary) -> ChangeSummary:
            mine = self.status.reconcile(
                own, loadCertificates(own.ports, own.stateDir, self.owner)
            )
            both = ChangeSummary(
                added=[*summary["added"], *mine["added"]],
                removed=[*summary["removed"], *mine["removed"]],
                changed=[*summary["changed"], *mine["changed"]],
                unchanged=summary["unchanged"] + mine["unchanged"],
            )
            logReloaded(both, ", in every worker")
            return both

        return changed.addCallback(ownPorts)

    def reloadLogged(self) -> None:
        """
        L{reload} for SIGHUP: a failure is logged and nothing changes.
        """
        reloadLogged(self.reload)

    def _everywhere(
        self, config: Config, newSockets: Mapping[str, socket.socket]
    ) -> Deferred[ChangeSummary]:
        """
        Apply C{config} in every running worker, passing the sockets of its
        new ports.  Applied only if every worker applied it; otherwise the
        workers that did go back to the previous configuration, the new
        sockets are closed, and it fails with L{ReconcileError}.
        """
        previous = self.config
        live = [(s, s.channel) for s in self.slots if s.ready and s.channel is not None]
        names = list(newSockets)
        descriptors = [newSockets[n].fileno() for n in names]
        calls = [
            channel.call("apply", {"config": config, "names": names}, descriptors)
            for _, channel in live
        ]

        def settled(results: list[tuple[bool, object]]) -> ChangeSummary:
            failures = [r for ok, r in results if not ok]
            if failures:
                removedNames = [
                    c.name
                    for c in previous.ports
                    if c.name not in {p.name for p in config.ports}
                ]
                for (slot, _), (ok, _) in zip(live, results, strict=True):
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
            if self.afterChange is not None:
                self.afterChange()
            self.refresh()
            summaries = [r for ok, r in results if ok]
            if summaries:
                # A worker answers apply with its reconcile's summary.
                return cast(ChangeSummary, summaries[0])
            return ChangeSummary(added=list(names), removed=[], changed=[], unchanged=0)

        return DeferredList(calls, consumeErrors=True).addCallback(settled)
