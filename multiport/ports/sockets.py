"""
Where a port's listening socket comes from.

A port's server asks its L{ISocketSource} for a listening port and serves
on what it gets.  Four sources exist: L{BoundHere} (this process binds
the address), L{Inherited} (a descriptor another process bound and passed
on: the main process of C{--workers}, later the previous daemon on an
upgrade), L{Activated} (a socket systemd passed) and L{Kept} (the running
port's socket, carried over by a live change).

Whether the socket may be C{shutdown(2)} when the port stops listening is
the source's to say (L{ISocketSource.shared}): a shutdown of a listening
socket stops it accepting in I{every} process that holds it, so a socket
another process holds is only ever closed.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol

from attrs import frozen
from twisted.internet import tcp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.posixbase import PosixReactorBase
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from multiport.config.model import PortConfig
from multiport.daemon.logformat import PORT_START_SYSTEM
from multiport.io.transport import FastServer

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].


class ListeningPort(tcp.Port):
    """
    Twisted's TCP port, with IPV6_V6ONLY set on IPv6 sockets, whose
    connections are L{FastServer}s (a write goes to the socket at once when
    nothing is queued, rather than on a later reactor turn).

    Twisted leaves V6ONLY off, so C{[::]:P} would also take C{0.0.0.0:P};
    with it on (as nginx does) the two can be configured side by side.
    """

    #: The connections' class (C{--transport}), set before the port starts
    #: listening.
    transport: type[tcp.Server] = FastServer

    def createInternetSocket(self) -> socket.socket:
        skt: socket.socket = super().createInternetSocket()  # type: ignore[no-untyped-call]
        if self.addressFamily == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return skt

    def startListening(self) -> None:
        # tcp.Port logs "<factory> starting on N" as it starts; multiport's
        # "listening on" line says that and more: the daemon's observers
        # leave out Twisted's line, known by this log system.
        legacyLog.callWithContext({"system": PORT_START_SYSTEM}, super().startListening)  # type: ignore[no-untyped-call]

    def _logConnectionLostMsg(self) -> None:
        # Twisted's "(TCP Port N Closed)": multiport's own "stopped listening
        # on" line says it.
        pass

    def closeNow(self) -> None:
        """
        Close the socket at once, not on the next reactor turn, so that a
        failed start leaves nothing bound even if the reactor never runs.
        """
        self.stopReading()  # type: ignore[no-untyped-call]
        self.connectionLost(Failure(Exception("closed by multiport")))  # type: ignore[no-untyped-call]


class _TCPReactor(Protocol):
    """
    The one reactor method a test double (a C{MemoryReactor}) is asked for.
    """

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int, interface: str
    ) -> IListeningPort: ...


def listenTCP(
    reactor: object,
    port: int,
    factory: IProtocolFactory,
    backlog: int,
    interface: str,
    adopt: int | None = None,
    transport: type[tcp.Server] = FastServer,
) -> IListeningPort:
    """
    Listen with L{ListeningPort} on a real reactor, or with the reactor's own
    C{listenTCP} on a test double (a C{MemoryReactor}).

    @param adopt: A descriptor of a socket already bound and listening:
        listen on it instead of binding (see L{Inherited}).
    @param transport: The accepted connections' class (C{--transport}).
    """
    if adopt is not None:
        return _adopt(reactor, adopt, interface, factory, transport)
    if isinstance(reactor, PosixReactorBase):
        listening = ListeningPort(port, factory, backlog, interface, reactor)
        listening.transport = transport
        listening.startListening()
        return listening
    double: _TCPReactor = reactor  # type: ignore[assignment]
    return double.listenTCP(port, factory, backlog, interface)


def _adopt(
    reactor: object,
    descriptor: int,
    interface: str,
    factory: IProtocolFactory,
    transport: type[tcp.Server],
    family: int | None = None,
) -> ListeningPort:
    """
    A L{ListeningPort} on a duplicate of C{descriptor}, a socket bound and
    listening already: the one way multiport adopts a socket.

    @param family: The socket's address family; by default, C{interface}'s.
    """
    if family is None:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    adopted: ListeningPort = ListeningPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
        reactor, descriptor, family, factory
    )
    adopted.transport = transport
    adopted.startListening()
    return adopted


class ISocketSource(Interface):
    """
    Where one port's listening socket comes from.
    """

    shared = Attribute(
        "Whether another process may hold the same listening socket: then a "
        "port that stops listening closes its descriptor and never calls "
        "shutdown(2), which would stop every holder accepting."
    )

    def listen(
        reactor: object,
        config: PortConfig,
        factory: IProtocolFactory,
        transport: type[tcp.Server],
    ) -> IListeningPort:
        """
        A port listening for C{config} that hands new connections, made
        C{transport}s, to C{factory}.

        @raise CannotListenError: if the socket can't be had.
        """


def _honourSharing(port: IListeningPort, shared: bool) -> IListeningPort:
    """
    C{port}, told whether it may shut its socket down when it stops.
    """
    if isinstance(port, tcp.Port):
        # Twisted's tcp.Port reads this in _closeSocket: a shutdown(2) before
        # close() when set.
        port._shouldShutdown = not shared
    return port


@implementer(ISocketSource)
@frozen
class BoundHere:
    """
    This process binds the address itself (the single process's way).
    Nobody else holds the socket: stopping shuts it down.
    """

    shared: bool = False

    def listen(
        self,
        reactor: object,
        config: PortConfig,
        factory: IProtocolFactory,
        transport: type[tcp.Server] = FastServer,
    ) -> IListeningPort:
        port = listenTCP(
            reactor,
            config.port,
            factory,
            config.backlog,
            config.interface,
            transport=transport,
        )
        return _honourSharing(port, self.shared)


@implementer(ISocketSource)
@frozen
class Inherited:
    """
    A descriptor of a socket another process bound and listens on (a
    worker's copy of the main process's socket).  It is duplicated; the
    caller closes its own copy.  The other process holds it too: stopping
    only closes this process's descriptor.
    """

    descriptor: int
    shared: bool = True

    def listen(
        self,
        reactor: object,
        config: PortConfig,
        factory: IProtocolFactory,
        transport: type[tcp.Server] = FastServer,
    ) -> IListeningPort:
        adopted = _adopt(reactor, self.descriptor, config.interface, factory, transport)
        return _honourSharing(adopted, self.shared)


@implementer(ISocketSource)
@frozen
class Activated:
    """
    A listening socket the service manager passed (systemd's socket
    activation, L{multiport.daemon.activation}).  It is adopted on a
    duplicate and this process's original descriptor is closed then; the
    manager keeps its own, so stopping only closes, never shuts down.
    The socket's own family counts, not the configured address's: a socket
    matched by name may be bound elsewhere.
    """

    descriptor: int
    shared: bool = True

    def listen(
        self,
        reactor: object,
        config: PortConfig,
        factory: IProtocolFactory,
        transport: type[tcp.Server] = FastServer,
    ) -> IListeningPort:
        try:
            family = familyOf(self.descriptor)
            adopted = _adopt(
                reactor, self.descriptor, config.interface, factory, transport, family
            )
        finally:
            os.close(self.descriptor)
        return _honourSharing(adopted, self.shared)


def familyOf(descriptor: int) -> int:
    """
    The address family of the socket C{descriptor} (left open), made
    non-blocking: the service manager may pass it blocking, and a blocking
    accept(2) would stop the reactor.
    """
    skt = socket.socket(fileno=descriptor)
    try:
        skt.setblocking(False)
        return int(skt.family)
    finally:
        skt.detach()


def adoptActivated(descriptor: int) -> socket.socket:
    """
    The socket systemd passed as C{descriptor} (a listening TCP socket or
    a UDP socket), non-blocking, for the worker processes to share (the
    descriptor is the socket's now).
    """
    skt = socket.socket(fileno=descriptor)
    skt.setblocking(False)
    return skt


@implementer(ISocketSource)
@frozen
class Kept:
    """
    The listening port a running port service had, carried over to the
    service replacing it (a live change that keeps the address): the
    socket never closes, and its sharing stays what it was.

    @ivar backlog: The backlog the socket listens with now.
    """

    port: IListeningPort
    backlog: int
    shared: bool

    def listen(
        self,
        reactor: object,
        config: PortConfig,
        factory: IProtocolFactory,
        transport: type[tcp.Server] = FastServer,
    ) -> IListeningPort:
        # tcp.Port hands each accepted connection to its factory attribute;
        # its connections keep the class they had (--transport is the
        # daemon's, not a port's).
        self.port.factory = factory  # type: ignore[attr-defined]
        if config.backlog != self.backlog:
            # listen() again on a listening socket only changes its backlog.
            socketObject = getattr(self.port, "socket", None)
            if socketObject is not None:
                socketObject.listen(config.backlog)
        return _honourSharing(self.port, self.shared)


def isShared(port: IListeningPort) -> bool:
    """
    Whether C{port}'s socket is held by another process too (it must not
    be shut down).
    """
    return isinstance(port, tcp.Port) and not port._shouldShutdown


def bindShared(config: PortConfig, reusePort: bool = False) -> socket.socket:
    """
    A socket bound (and listening, for TCP) for C{config}, for worker
    processes to share (each adopts it: L{Inherited} for TCP, a UDP port
    reads from it as it is).

    @raise CannotListenError: if it can't be bound.
    """
    family = socket.AF_INET6 if config.ipv6 else socket.AF_INET
    kind = socket.SOCK_DGRAM if config.datagram else socket.SOCK_STREAM
    skt = socket.socket(family, kind)
    try:
        if not config.datagram:
            # On a UDP socket SO_REUSEADDR would let a second socket bind
            # the same address silently: "in use" must stay an error.
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reusePort:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if config.ipv6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        skt.bind((config.interface, config.port))
        if not config.datagram:
            skt.listen(config.backlog)
        skt.setblocking(False)
    except OSError as e:
        skt.close()
        raise CannotListenError(config.interface, config.port, e) from None  # type: ignore[no-untyped-call]
    return skt


__all__ = [
    "Activated",
    "BoundHere",
    "ISocketSource",
    "Inherited",
    "Kept",
    "ListeningPort",
    "adoptActivated",
    "bindShared",
    "familyOf",
    "isShared",
    "listenTCP",
]
