"""
Carrying out a live change in this process: L{LiveChanges.apply} takes a
L{Plan} (decided by L{multiport.daemon.plan.plan}) and binds, switches
and drains the port services, all or nothing.  A worker process applies
the plans its main process sends the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from attrs import evolve
from twisted.application.service import IService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from multiport.config.model import Config, PortConfig, TLSConfig
from multiport.daemon.plan import Blockers, Plan, plan
from multiport.daemon.startup import liveListenError, serving
from multiport.errors import ReconcileError
from multiport.handlers.interface import (
    ChangeSummary,
    HandlerContext,
    IHandler,
    descriptorsOf,
)
from multiport.ports.admission import DaemonLimit
from multiport.ports.datagramserver import PortUDPServer
from multiport.ports.factory import PortFactory
from multiport.ports.policies import drainTimeoutOf
from multiport.ports.server import PortServer, PortSSLServer, PortTCPServer
from multiport.ports.tls import LoadedCertificate
from multiport.text import plural

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

# The lines were the service's before this module existed; their namespace
# is part of the JSON log.
log = Logger(namespace="multiport.daemon.service")


class LiveChanges:
    """
    The part of L{multiport.daemon.service.PortsService} that changes its
    ports while running.
    """

    config: Config
    handlers: Mapping[str, IHandler]
    daemonLimit: DaemonLimit | None
    draining: list[PortServer]
    services: list[IService]
    namedServices: dict[str, IService]
    running: int
    _certificates: dict[TLSConfig, LoadedCertificate]
    #: Called after every live change (ACME follows the ports).
    afterChange: Callable[[], None] | None = None

    # Provided by the service.

    def ports(self) -> Sequence[PortServer]:
        raise NotImplementedError

    def _makePort(
        self,
        config: PortConfig,
        handler: IHandler,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> PortServer:
        raise NotImplementedError

    def _handlerFactory(
        self, config: PortConfig, handler: IHandler
    ) -> tuple[HandlerContext, IProtocolFactory]:
        raise NotImplementedError

    def _datagramProtocol(
        self, config: PortConfig, handler: IHandler
    ) -> tuple[HandlerContext, DatagramProtocol]:
        raise NotImplementedError

    def _server(
        self,
        config: PortConfig,
        factory: PortFactory,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> PortTCPServer | PortSSLServer:
        raise NotImplementedError

    def _nameBound(self, port: PortServer) -> None:
        raise NotImplementedError

    def _forgetName(self, port: PortServer) -> None:
        raise NotImplementedError

    # Planning.

    def plan(
        self,
        config: Config,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> Plan[PortServer]:
        """
        What it takes to go from the running ports to C{config}: see
        L{multiport.daemon.plan.plan}; a port whose certificate file now
        holds another certificate is changed.
        """
        return plan(
            [(s, s.config) for s in self.ports()],
            config.ports,
            lambda server, new: self._newCertificate(server, new, certificates),
        )

    def _newCertificate(
        self,
        server: PortServer,
        new: PortConfig,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> bool:
        if new.tls is None or new.tls not in certificates or new.tls.acme:
            # An ACME port's certificate is ACME's to change, not its file's.
            return False
        current = self._certificates.get(new.tls)
        return (
            current is None or current.fingerprint != certificates[new.tls].fingerprint
        )

    # Applying.

    def apply(
        self,
        plan: Plan[PortServer],
        certificates: Mapping[TLSConfig, LoadedCertificate] = {},
    ) -> None:
        """
        Carry out C{plan}, all or nothing: build every new handler factory
        first, bind the new ports, and only then stop the removed ones
        (they drain) and switch the changed ones in place.  A new port
        overlapping one being removed on the same number can only bind once
        that one has closed: those go last, and the old port is bound
        again if the new one fails (a short gap in listening).

        @raise ReconcileError: if anything fails; nothing has changed.
        """
        # What ACME serves stays; the self-signed certificate loaded for an
        # ACME port only serves until the first one is issued.
        known = {
            **self._certificates,
            **{
                t: c
                for t, c in certificates.items()
                if not (t.acme and t in self._certificates)
            },
        }
        try:
            added = [
                self._makePort(c, self.handlers[c.handler], known) for c in plan.add
            ]
            changed = [(old, new, *self._innerFor(new)) for old, new in plan.change]
        except Exception as e:
            log.failure("a live change could not build its handlers")
            raise ReconcileError(f"cannot build the handler: {e}") from e
        removed = list(plan.remove)
        blockers = Blockers([(s, s.config) for s in removed])
        later = [s for s in added if blockers.of(s.config)]
        waiting = set(later)
        now = [s for s in added if s not in waiting]
        bound: list[PortServer] = []
        try:
            self._bindLive(now, bound)
            if later:
                blocking = list(
                    {id(r): r for s in later for r in blockers.of(s.config)}.values()
                )
                for server in blocking:
                    server.unbindNow()
                try:
                    self._bindLive(later, bound)
                except ReconcileError:
                    for server in blocking:
                        server.privilegedStartService()  # type: ignore[no-untyped-call]
                    raise
        except ReconcileError:
            for server in bound:
                server.unbindNow()
            raise
        positions = {id(server): index for index, server in enumerate(self.services)}
        for server in bound:
            self._attach(server)
        for old, new, context, inner in changed:
            self._switch(old, new, context, inner, known, positions[id(old)])
        for server in removed:
            self._detach(server)
        if removed:
            gone = {id(server) for server in removed}
            self.services = [s for s in self.services if id(s) not in gone]
        self._certificates = known
        self._rememberConfig()
        if self.afterChange is not None:
            self.afterChange()
        if self.daemonLimit is not None:
            # Each port's fair share of the daemon's connections follows
            # the number of ports listening.
            self.daemonLimit.ports = max(1, len(self.ports()))

    def _innerFor(
        self, config: PortConfig
    ) -> tuple[HandlerContext, IProtocolFactory | DatagramProtocol]:
        handler = self.handlers[config.handler]
        if config.datagram:
            return self._datagramProtocol(config, handler)
        return self._handlerFactory(config, handler)

    def _bindLive(self, servers: Sequence[PortServer], bound: list[PortServer]) -> None:
        for server in servers:
            try:
                server.privilegedStartService()  # type: ignore[no-untyped-call]
            except CannotListenError as e:
                raise liveListenError(server.config, e) from None
            bound.append(server)

    def _attach(self, server: PortServer) -> None:
        # MultiService.addService would bind again: the port is bound.
        server.parent = self
        self.services.append(server)
        self._nameBound(server)
        if self.running:
            server.startService()  # type: ignore[no-untyped-call]

    def _switch(
        self,
        old: PortServer,
        config: PortConfig,
        context: HandlerContext,
        inner: IProtocolFactory | DatagramProtocol,
        certificates: Mapping[TLSConfig, LoadedCertificate],
        position: int,
    ) -> None:
        server: PortServer
        if isinstance(old, PortUDPServer):
            assert isinstance(inner, DatagramProtocol)
            old.factory.reconfigure(inner, context)
            server = PortUDPServer(config, old.factory, old.listenWith)
            server.takeOver(old)
        else:
            assert not isinstance(inner, DatagramProtocol)
            factory = old.factory
            cost = descriptorsOf(self.handlers[config.handler])
            factory.reconfigure(inner, context, cost)
            server = self._server(config, factory, certificates)
            server.takeOver(old)
        server.parent = self
        self.services[position] = server
        old.parent = None
        old.running = 0
        if old.name is not None:
            self.namedServices[old.name] = server
        if self.running:
            server.startService()  # type: ignore[no-untyped-call]
        what, fields = serving(config)
        log.info("changed {name}: " + what, name=server.name, **fields)

    def _detach(self, server: PortServer) -> None:
        """
        Stop C{server} listening now; its connections drain.
        """
        name = server.name
        server.unbindNow()
        server.factory.counters.listeningSince = None
        self._forgetName(server)
        server.name = name
        server.parent = None
        server.running = 0
        self.draining.append(server)
        timeout = drainTimeoutOf(server.config.policy)
        count = server.factory.counters.current
        log.info(
            "stopped listening on {name}; {connections} draining (at most "
            "{timeout:g}s)",
            name=name,
            count=count,
            connections=plural(count, "connection"),
            timeout=timeout,
        )

        def drained(_: object) -> None:
            self.draining.remove(server)
            log.info("{name} drained", name=name)

        server.factory.drain(timeout).addCallback(drained)

    def _rememberConfig(self) -> None:
        self.config = evolve(self.config, ports=tuple(s.config for s in self.ports()))

    def reconcile(
        self,
        config: Config,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> ChangeSummary:
        """
        Go from the running ports to C{config} (see L{apply}); what changed.
        """
        plan = self.plan(config, certificates)
        before = {s.name for s in self.ports()}
        # What is not ports ([acme], [cluster]) comes with them; afterChange
        # applies [acme].
        previous = self.config
        self.config = evolve(config, ports=previous.ports)
        try:
            self.apply(plan, certificates)
        except Exception:
            self.config = previous
            raise
        summary = plan.summary()
        summary["added"] = [s.name for s in self.ports() if s.name not in before]
        return summary
