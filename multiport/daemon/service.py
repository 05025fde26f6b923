"""
The service tree: one L{MultiService} holding a L{PortTCPServer} or
L{PortSSLServer} child per configured port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from attrs import evolve, frozen
from twisted.application.service import MultiService, Service
from twisted.internet import tcp
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from zope.interface import implementer

from multiport import __version__
from multiport.config.model import (
    Config,
    Defaults,
    PortConfig,
    TLSConfig,
    formatAddress,
)
from multiport.daemon.apply import LiveChanges
from multiport.daemon.control import AdminControl
from multiport.daemon.drain import BalancerDrain
from multiport.daemon.notify import SILENT, Notifier
from multiport.daemon.startup import (
    describeListenError,
    noCollections,
    serving,
    signalName,
)
from multiport.daemon.totals import Retired
from multiport.errors import StartupError
from multiport.handlers.interface import (
    HandlerContext,
    IDaemonControl,
    IDaemonDrain,
    IDaemonView,
    IDatagramHandler,
    IHandler,
    PortStatus,
    descriptorsOf,
)
from multiport.io.reactortype import ReactorLike
from multiport.io.splice import DEFAULT_POOL, PipePool, poolSize
from multiport.io.transport import FastServer
from multiport.ports.admission import DaemonLimit
from multiport.ports.counters import PortCounters
from multiport.ports.datagram import DatagramGate
from multiport.ports.datagramcounters import DatagramCounters
from multiport.ports.datagramserver import PortUDPServer
from multiport.ports.factory import PortFactory
from multiport.ports.policies import drainTimeoutOf
from multiport.ports.server import (
    PORT_SERVERS,
    PortServer,
    PortSSLServer,
    PortTCPServer,
)
from multiport.ports.sockets import Activated, Inherited, _honourSharing
from multiport.ports.tls import LoadedCertificate
from multiport.text import plural

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

log = Logger()


def _stoppedListening(_: object, name: str | None) -> None:
    log.info("stopped listening on {name}", name=name)


def _withBoundPort(server: PortServer) -> PortConfig:
    """
    C{server}'s configuration with the port number it listens on.
    """
    bound = server.boundAddress()
    number = getattr(bound, "port", None)
    if server.config.port == 0 and number is not None:
        return evolve(server.config, port=number)
    return server.config


@frozen
class BoundPort:
    """
    A listening port as it really is.

    @ivar name: The port's name with its real number (C{tcp:127.0.0.1:41234}).
    @ivar address: The bound address, from the socket.
    """

    name: str
    config: PortConfig
    address: IAddress
    counters: PortCounters | DatagramCounters


@implementer(IDaemonView, IDaemonControl, IDaemonDrain)
class PortsService(LiveChanges, AdminControl, BalancerDrain, MultiService):
    """
    Every port of a L{Config}, bound all or nothing.  It is also the
    read-only L{IDaemonView} handlers get (the status handler reads it).

    Ports bind in C{privilegedStartService} (so twistd drops privileges after
    binding).  If one can't bind, those already bound are closed and
    L{StartupError} says why.  Children are named C{tcp:HOST:PORT} once
    bound, with the real number for port 0.
    """

    def __init__(
        self,
        config: Config,
        handlers: Mapping[str, IHandler],
        certificates: Mapping[TLSConfig, LoadedCertificate],
        reactor: ReactorLike,
        daemonLimit: DaemonLimit | None = None,
        defaults: Defaults | None = None,
        rebuild: Callable[[], Config] | None = None,
        adminToken: str | None = None,
        owner: tuple[int, int] | None = None,
        view: IDaemonView | None = None,
        descriptors: Mapping[str, int] | None = None,
        pipes: PipePool | None = None,
        transport: type[tcp.Server] = FastServer,
        notifier: Notifier = SILENT,
        activated: Mapping[str, int] | None = None,
    ) -> None:
        """
        @param defaults: What ports added through the admin API inherit.
        @param rebuild: Reads the configuration again (file and command
            line) for a reload; L{None} when there is nothing to reload.
        @param adminToken: The admin API's bearer token; L{None} turns off
            the admin API's changes.
        @param owner: The uid and gid a self-signed certificate made while
            running is given to.
        @param view: What handlers see of the daemon (the status port);
            this service by default, the worker pool in the main process.
        @param descriptors: Listening sockets to adopt rather than bind, by
            port name (in a worker: the main process's sockets).
        @param pipes: The splice pipe pool every relay port shares; by
            default one sized from C{daemonLimit} (L{poolSize}) that takes
            its descriptors from it.
        @param transport: The class of every port's accepted connections
            (C{--transport}).
        @param notifier: Told of reloads (systemd's C{sd_notify}).
        @param activated: Sockets systemd passed (socket activation), by
            port name: adopted, then closed here.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.daemonLimit = daemonLimit
        if pipes is None:
            pipes = (
                PipePool(DEFAULT_POOL)
                if daemonLimit is None
                else PipePool(poolSize(daemonLimit.maximum), daemonLimit)
            )
        self.pipes = pipes
        self.transport = transport
        self.defaults = Defaults() if defaults is None else defaults
        self.rebuild = rebuild
        self.adminToken = adminToken
        self.owner = owner
        self.view = self if view is None else view
        self.descriptors: dict[str, int] = dict(descriptors or {})
        self.activated: dict[str, int] = dict(activated or {})
        self.notifier = notifier
        #: Names of the ports added through the admin API (a reload keeps
        #: them unless the file now configures their address).
        self.addedLive: set[str] = set()
        #: By port name: what the daemon an upgrade replaced has counted
        #: (replaced by each of its reports until it exits).
        self.carried: dict[str, Retired] = {}
        #: An upgrade's new daemon: fires once the old one stopped
        #: accepting (the status pages wait for it).
        self.countsSettled: Deferred[None] | None = None
        self.config = config
        self.handlers = handlers
        #: Ports removed while running, until their last connection is gone.
        self.draining: list[PortServer] = []
        self.version = __version__
        self.started = reactor.seconds()
        self._reactor = reactor
        self._bound = False
        self._certificates = dict(certificates)
        #: The renewal state of a port's ACME certificate (set by
        #: L{multiport.acme.attach}).
        self.acmeStatus: Callable[[PortConfig], Mapping[str, object] | None] | None = (
            None
        )
        for portConfig in config.ports:
            self.addService(  # type: ignore[no-untyped-call]
                self._makePort(portConfig, handlers[portConfig.handler], certificates)
            )

    def _makePort(
        self,
        config: PortConfig,
        handler: IHandler,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> PortServer:
        if config.datagram:
            context, protocol = self._datagramProtocol(config, handler)
            udp = PortUDPServer(config, DatagramGate(protocol, context), self._reactor)
            udp.inherited = self.descriptors.pop(config.name, None)
            udp.activated = self.activated.pop(config.name, None)
            return udp
        context, inner = self._handlerFactory(config, handler)
        factory = PortFactory(
            inner, PortCounters(), context, self.daemonLimit, descriptorsOf(handler)
        )
        server = self._server(config, factory, certificates)
        descriptor = self.descriptors.pop(config.name, None)
        if descriptor is not None:
            server.source = Inherited(descriptor)
        activated = self.activated.pop(config.name, None)
        if activated is not None:
            server.source = Activated(activated)
        return server

    def _datagramProtocol(
        self, config: PortConfig, handler: IHandler
    ) -> tuple[HandlerContext, DatagramProtocol]:
        context = self._context(config)
        protocol = IDatagramHandler(handler).buildDatagramProtocol(context)
        # Our own log line says when a port starts.
        protocol.noisy = False
        return context, protocol

    def _context(self, config: PortConfig) -> HandlerContext:
        return HandlerContext(
            reactor=self._reactor,
            clock=self._reactor,
            port=config,
            daemon=self.view,
            pipes=self.pipes,
        )

    def _handlerFactory(
        self, config: PortConfig, handler: IHandler
    ) -> tuple[HandlerContext, IProtocolFactory]:
        context = self._context(config)
        inner: IProtocolFactory = handler.buildFactory(context)
        if isinstance(inner, Factory):
            # Our own log line says when a port starts; Twisted's per-factory
            # "Starting factory" lines would only repeat it.
            inner.noisy = False
        return context, inner

    def _server(
        self,
        config: PortConfig,
        factory: PortFactory,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> PortTCPServer | PortSSLServer:
        server: PortTCPServer | PortSSLServer
        if config.tls is None:
            server = PortTCPServer(config, factory, self._reactor)
        else:
            server = PortSSLServer(
                config, factory, certificates[config.tls].contextFactory, self._reactor
            )
        server.transport = self.transport
        return server

    def serveCertificate(self, tls: TLSConfig, loaded: LoadedCertificate) -> None:
        """
        Serve C{loaded} on every TLS port configured with C{tls} (an ACME
        certificate arrived): new connections get it, open ones keep theirs,
        and the listening socket is left alone.
        """
        self._certificates[tls] = loaded
        for port in self.ports():
            if isinstance(port, PortSSLServer) and port.config.tls == tls:
                port.creator.contextFactory = loaded.contextFactory

    @property
    def peers(self) -> tuple[str, ...]:
        """
        The other instances' status URLs (C{[cluster] peers}), as the
        configuration says now.
        """
        return self.config.peers

    def ports(self) -> Sequence[PortServer]:
        """
        The port services, in configuration order.
        """
        return [s for s in self if isinstance(s, PORT_SERVERS)]

    def runningConfigs(self, leaving: PortServer | None = None) -> list[PortConfig]:
        """
        The configuration of every port but C{leaving}, port 0 replaced by
        the number it got: what a new port is checked against.
        """
        return [_withBoundPort(s) for s in self.ports() if s is not leaving]

    def portStatus(self) -> list[PortStatus]:
        """
        Every configured port now, listening or not, then the removed ones
        still draining (L{IDaemonView}).
        """
        statuses = []
        draining = set(self.draining)
        for port in [*self.ports(), *self.draining]:
            config = port.config
            expiry = None
            if config.tls is not None and config.tls in self._certificates:
                expiry = self._certificates[config.tls].notAfter.timestamp()
            statuses.append(
                PortStatus(
                    name=port.name or config.name,
                    config=config,
                    listening=port.boundAddress() is not None,
                    counters=port.factory.counters.snapshot(),
                    handlerCounters=port.factory.handlerContext.counters.snapshot(),
                    certificateExpiry=expiry,
                    draining=port in draining,
                    acme=None if self.acmeStatus is None else self.acmeStatus(config),
                )
            )
        return [
            self.carried[s.name].addedTo(s) if s.name in self.carried else s
            for s in statuses
        ]

    def listeningSockets(self) -> dict[str, int]:
        """
        Every listening socket's descriptor by port name (an upgrade hands
        them over).
        """
        return {
            port.name: port._port.fileno()  # type: ignore[attr-defined]
            for port in self.ports()
            if port._port is not None and port.name is not None
        }

    def shareSockets(self) -> None:
        """
        Another process accepts on these sockets from now on (an upgrade's
        new daemon): stopping closes them, never shuts them down.
        """
        for port in self.ports():
            if port._port is not None:
                _honourSharing(port._port, True)

    def boundPorts(self) -> Sequence[BoundPort]:
        """
        Every listening port with its real address and number.
        """
        bound = []
        for port in self.ports():
            address = port.boundAddress()
            if address is not None:
                bound.append(
                    BoundPort(
                        name=port.name or port.config.name,
                        config=port.config,
                        address=address,
                        counters=port.factory.counters,
                    )
                )
        return bound

    def _bindAll(self) -> None:
        with noCollections():
            self._bindEach()

    def _bindEach(self) -> None:
        bound: list[PortServer] = []
        for port in self.ports():
            try:
                port.privilegedStartService()  # type: ignore[no-untyped-call]
            except CannotListenError as e:
                for done in bound:
                    name = done.name
                    done.unbindNow()
                    self._forgetName(done)
                    log.info("closed {name}: the start failed", name=name)
                message = describeListenError(port.config, e)
                log.critical("{message}", message=message)
                raise StartupError(message) from None
            bound.append(port)
            self._nameBound(port)
        self._bound = True

    def _nameBound(self, port: PortServer) -> None:
        address = port.boundAddress()
        assert address is not None
        name = f"{port.config.protocol}:" + formatAddress(
            port.config.interface,
            address.port,  # type: ignore[attr-defined]
        )
        port.name = name
        port.factory.portName = name
        self.namedServices[name] = port
        port.factory.counters.listeningSince = self._reactor.seconds()
        what, fields = serving(port.config)
        log.info("listening on {name}: " + what, name=name, **fields)

    def _forgetName(self, port: PortServer) -> None:
        if port.name is not None:
            self.namedServices.pop(port.name, None)
            port.name = None

    def privilegedStartService(self) -> None:
        """
        Bind every port, all or nothing.

        @raise StartupError: if a port can't bind; none is left bound.
        """
        Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        self._bindAll()

    def startService(self) -> None:
        """
        Start every port (binding first if twistd did not).
        """
        if not self._bound:
            self._bindAll()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[object]:
        """
        Stop listening on every port (and stop the other children), then
        let open connections finish, each port for at most its drain
        timeout; fires when all have stopped and drained.
        """
        Service.stopService(self)  # type: ignore[no-untyped-call]
        self._bound = False
        stops = []
        for child in reversed(list(self)):
            if child.running and not isinstance(child, PORT_SERVERS):
                stops.append(maybeDeferred(child.stopService))
        for port in reversed(self.ports()):
            name = port.name
            stopped = port.stopService()
            if stopped is not None:
                stops.append(stopped)
                stopped.addCallback(_stoppedListening, name)
            else:
                log.info("stopped listening on {name}", name=name)
        open = sum(p.factory.counters.current for p in [*self.ports(), *self.draining])
        if open:
            log.info(
                "draining {connections}",
                count=open,
                connections=plural(open, "open connection"),
            )
        for port in [*self.ports(), *self.draining]:
            stops.append(port.factory.drain(drainTimeoutOf(port.config.policy)))
        # Once no connection is left, no pipe is in use: close the kept ones.
        return DeferredList(stops).addCallback(lambda _: self.pipes.close())

    def hurry(self, signalNumber: int) -> int:
        """
        The daemon is stopping and got C{signalNumber} (SIGTERM or SIGINT)
        again: close every open connection now rather than let it drain;
        how many there were.
        """
        count = sum(p.factory.closeNow() for p in [*self.ports(), *self.draining])
        log.info(
            "{signal} again: closing {connections} now, without waiting for the drain",
            signal=signalName(signalNumber),
            count=count,
            connections=plural(count, "open connection"),
        )
        return count
