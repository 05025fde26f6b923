"""
One port's listening side: the C{TCPServer}/C{SSLServer} children that
listen for it, and the listening socket they make.

A connection they accept goes to the port's L{PortFactory}
(L{multiport.ports.factory}), which admits it, and its L{PortProtocol}
(L{multiport.ports.connection}), which counts it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from OpenSSL import SSL
from twisted.application.internet import SSLServer, TCPServer
from twisted.internet import tcp
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.config.model import PortConfig
from multiport.daemon.logformat import PORT_START_SYSTEM
from multiport.io.transport import FastServer
from multiport.ports.connection import PortProtocol
from multiport.ports.factory import PortFactory


def serverTransport(environ: Mapping[str, str] | None = None) -> type[tcp.Server]:
    """
    The class of a port's accepted connections: L{FastServer}, or Twisted's
    own C{tcp.Server} when C{MULTIPORT_TRANSPORT=twisted} is in the
    daemon's environment (read when a port starts listening, not when this
    module is imported).
    """
    if environ is None:
        environ = os.environ
    if environ.get("MULTIPORT_TRANSPORT") == "twisted":
        return tcp.Server
    return FastServer


@implementer(IOpenSSLServerConnectionCreator)
class SwitchableCreator:
    """
    What a TLS port asks for each new connection's TLS state: the current
    certificate's context, which a live change may replace without
    touching the listening socket or the connections already open.
    """

    def __init__(self, contextFactory: Any) -> None:
        self.contextFactory = contextFactory

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.contextFactory.getContext(), None)


class ListeningPort(tcp.Port):
    """
    Twisted's TCP port, with IPV6_V6ONLY set on IPv6 sockets, whose
    connections are L{FastServer}s (a write goes to the socket at once when
    nothing is queued, rather than on a later reactor turn).

    Twisted leaves V6ONLY off, so C{[::]:P} would also take C{0.0.0.0:P};
    with it on (as nginx does) the two can be configured side by side.
    """

    #: The connections' class, chosen when the port starts listening.
    transport: type[tcp.Server] = FastServer

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return skt

    def startListening(self) -> None:
        self.transport = serverTransport()
        # tcp.Port logs "<factory> starting on N" as it starts; multiport's
        # "listening on" line says that and more: the daemon's observers
        # leave out Twisted's line, known by this log system.
        legacyLog.callWithContext({"system": PORT_START_SYSTEM}, super().startListening)

    def _logConnectionLostMsg(self) -> None:
        # Twisted's "(TCP Port N Closed)": multiport's own "stopped listening
        # on" line says it.
        pass

    def closeNow(self) -> None:
        """
        Close the socket at once, not on the next reactor turn, so that a
        failed start leaves nothing bound even if the reactor never runs.
        """
        self.stopReading()
        self.connectionLost(Failure(Exception("closed by multiport")))


def listenTCP(
    reactor: Any,
    port: int,
    factory: IProtocolFactory,
    backlog: int,
    interface: str,
    adopt: int | None = None,
) -> IListeningPort:
    """
    Listen with L{ListeningPort} on a real reactor, or with the reactor's own
    C{listenTCP} on a test double (a C{MemoryReactor}).

    @param adopt: A descriptor of a socket already bound and listening (a
        worker's copy of the main process's socket): listen on it instead
        of binding.  It is duplicated; the caller closes its own.
    """
    if adopt is not None:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        adopted = ListeningPort._fromListeningDescriptor(
            reactor, adopt, family, factory
        )
        adopted.startListening()
        return adopted  # type: ignore[no-any-return]
    if isinstance(reactor, PosixReactorBase):
        listening = ListeningPort(port, factory, backlog, interface, reactor)
        listening.startListening()
        return listening
    return reactor.listenTCP(port, factory, backlog, interface)  # type: ignore[no-any-return]


class _PortServerMixin:
    """
    What the plain and TLS port services share.
    """

    config: PortConfig
    factory: PortFactory
    _port: IListeningPort | None
    #: A listening socket's descriptor to adopt instead of binding (in a
    #: worker process); used once.
    adoptDescriptor: int | None = None

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        adopt, self.adoptDescriptor = self.adoptDescriptor, None
        return listenTCP(
            self.reactor,  # type: ignore[attr-defined]
            self.config.port,
            factory,
            self.config.backlog,
            self.config.interface,
            adopt,
        )

    def boundAddress(self) -> IAddress | None:
        """
        The address the port listens on (with its real number), or C{None}.
        """
        if self._port is None:
            return None
        return self._port.getHost()

    def stopService(self) -> Any:
        """
        Stop listening; the port no longer counts as listening.
        """
        self.factory.counters.listeningSince = None
        return super().stopService()  # type: ignore[misc]

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
        self._port = port
        port.factory = self.listeningFactory()  # type: ignore[attr-defined]
        backlog = self.config.backlog
        if backlog != other.config.backlog:
            # listen() again on a listening socket only changes its backlog.
            socketObject = getattr(port, "socket", None)
            if socketObject is not None:
                socketObject.listen(backlog)
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

    def __init__(self, config: PortConfig, factory: PortFactory, reactor: Any) -> None:
        TCPServer.__init__(
            self,
            config.port,
            factory,
            backlog=config.backlog,
            interface=config.interface,
            reactor=reactor,
        )
        self.config = config
        self.factory = factory

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
        contextFactory: Any,
        reactor: Any,
    ) -> None:
        SSLServer.__init__(
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
        self.contextFactory = contextFactory
        self.creator = SwitchableCreator(contextFactory)

    def listeningFactory(self) -> IProtocolFactory:
        return self.factory.listeningFactory(self.creator)

    def _getPort(self) -> IListeningPort:
        # A PROXY header comes before the TLS handshake, so with one the TLS
        # layer is composed here rather than by listenSSL, on any reactor.
        if (
            isinstance(self.reactor, PosixReactorBase)
            or self.config.policy.proxyProtocol is not None
            or self.adoptDescriptor is not None
        ):
            return self._listen(self.listeningFactory())
        return self.reactor.listenSSL(  # type: ignore[no-any-return]
            self.config.port,
            self.factory,
            self.contextFactory,
            self.config.backlog,
            self.config.interface,
        )


PortServer = PortTCPServer | PortSSLServer

__all__ = [
    "ListeningPort",
    "PortFactory",
    "PortProtocol",
    "PortSSLServer",
    "PortServer",
    "PortTCPServer",
    "listenTCP",
]
