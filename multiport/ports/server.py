"""
The listening side of a port: the C{TCPServer}/C{SSLServer} children of
the service tree, which listen on the socket their L{ISocketSource} gives
and hand connections to the port's L{PortFactory}.
"""

from __future__ import annotations

from typing import cast

from OpenSSL import SSL
from twisted.application.internet import SSLServer, TCPServer
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Protocol, ServerFactory
from zope.interface import implementer

from multiport.config.model import PortConfig
from multiport.io.reactortype import ReactorLike
from multiport.io.transport import FastServer
from multiport.ports.datagramserver import PortUDPServer
from multiport.ports.factory import PortFactory
from multiport.ports.sockets import (
    BoundHere,
    ISocketSource,
    Kept,
    ListeningPort,
    isShared,
)

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].


@implementer(IOpenSSLServerConnectionCreator)
class SwitchableCreator:
    """
    What a TLS port asks for each new connection's TLS state: the current
    certificate's context, which a live change may replace without
    touching the listening socket or the connections already open.
    """

    def __init__(self, contextFactory: IOpenSSLContextFactory) -> None:
        self.contextFactory = contextFactory

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.contextFactory.getContext(), None)


class _PortServerMixin:
    """
    What the plain and TLS port services share.
    """

    config: PortConfig
    factory: PortFactory
    #: The reactor it listens with (TCPServer keeps it untyped as reactor).
    listenWith: ReactorLike
    #: C{tcp:HOST:PORT} once listening (L{Service}'s name).
    name: str | None
    _port: IListeningPort | None
    #: Where the listening socket comes from.  Asked once: binding again
    #: later (after a failed live change gave the address back) binds here.
    source: ISocketSource = BoundHere()
    #: The class of its accepted connections (C{--transport}).
    transport: type[tcp.Server] = FastServer

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        source, self.source = self.source, BoundHere()
        return source.listen(self.listenWith, self.config, factory, self.transport)

    def boundAddress(self) -> IAddress | None:
        """
        The address the port listens on (with its real number), or C{None}.
        """
        if self._port is None:
            return None
        return self._port.getHost()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening; the port no longer counts as listening.
        """
        self.factory.counters.listeningSince = None
        stopped: Deferred[None] | None = super().stopService()  # type: ignore[misc]
        return stopped

    def listeningFactory(self) -> IProtocolFactory:
        """
        What the listening socket hands new connections to.
        """
        raise NotImplementedError

    def takeOver(self, other: PortServer) -> None:
        """
        Listen on C{other}'s socket from now on (a live change of a port
        that keeps its address): new connections reach this service's
        factory chain, the socket never closes, and C{other} is left with
        nothing to stop.
        """
        port, other._port = other._port, None
        assert port is not None, "the port being replaced is listening"
        self.source = Kept(port, other.config.backlog, isShared(port))
        self._port = self._listen(self.listeningFactory())
        self.name = other.name
        self.factory.portName = other.factory.portName
        self.factory.counters.listeningSince = other.factory.counters.listeningSince

    def unbindNow(self) -> None:
        """
        Stop listening at once (after a failed start).
        """
        port, self._port = self._port, None
        if isinstance(port, ListeningPort):
            port.closeNow()
        elif port is not None:
            port.stopListening()


class PortTCPServer(_PortServerMixin, TCPServer):
    """
    A plain port: a L{TCPServer} with its L{PortConfig} and L{PortFactory}.
    """

    def __init__(
        self, config: PortConfig, factory: PortFactory, reactor: ReactorLike
    ) -> None:
        TCPServer.__init__(  # type: ignore[no-untyped-call]
            self,
            config.port,
            factory,
            backlog=config.backlog,
            interface=config.interface,
            reactor=reactor,
        )
        self.config = config
        self.factory = factory
        self.listenWith = reactor

    def listeningFactory(self) -> IProtocolFactory:
        return self.factory.listeningFactory()

    def _getPort(self) -> IListeningPort:
        return self._listen(self.listeningFactory())


class PortSSLServer(_PortServerMixin, SSLServer):
    """
    A TLS port: an L{SSLServer}; the L{PortFactory} sits inside TLS, so it
    sees a connection at once (before the handshake) and counts decrypted
    application bytes.
    """

    def __init__(
        self,
        config: PortConfig,
        factory: PortFactory,
        contextFactory: IOpenSSLContextFactory,
        reactor: ReactorLike,
    ) -> None:
        SSLServer.__init__(  # type: ignore[no-untyped-call]
            self,
            config.port,
            factory,
            contextFactory,
            backlog=config.backlog,
            interface=config.interface,
            reactor=reactor,
        )
        self.config = config
        self.factory = factory
        self.listenWith = reactor
        self.contextFactory = contextFactory
        self.creator = SwitchableCreator(contextFactory)

    def listeningFactory(self) -> IProtocolFactory:
        return self.factory.listeningFactory(self.creator)

    def _getPort(self) -> IListeningPort:
        # A PROXY header comes before the TLS handshake, so with one the TLS
        # layer is composed here rather than by listenSSL, on any reactor.
        if (
            isinstance(self.listenWith, PosixReactorBase)
            or self.config.policy.proxyProtocol is not None
            or not isinstance(self.source, BoundHere)
        ):
            return self._listen(self.listeningFactory())
        return self.listenWith.listenSSL(
            self.config.port,
            # The stub asks for a ServerFactory; listenSSL takes any
            # IProtocolFactory, and PortFactory is a WrappingFactory.
            cast(ServerFactory[Protocol], self.factory),
            self.contextFactory,
            self.config.backlog,
            self.config.interface,
        )


PortServer = PortTCPServer | PortSSLServer | PortUDPServer
#: The port services' classes, for isinstance.
PORT_SERVERS = (PortTCPServer, PortSSLServer, PortUDPServer)

__all__ = [
    "PORT_SERVERS",
    "PortSSLServer",
    "PortServer",
    "PortTCPServer",
    "PortUDPServer",
    "SwitchableCreator",
]
