"""
The PROXY protocol (v1 and v2): a load balancer in front of a port tells
it who the client really is.

A load balancer that speaks the PROXY protocol (HAProxy, AWS NLB, nginx's
C{proxy_protocol on} upstreams...) opens the TCP connection itself and
sends one header before the client's bytes: v1 is a text line
(C{PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\\r\\n}), v2 a binary block
starting with a 12-byte signature.  See
U{https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt}.

L{HeaderParser} (L{multiport.ports.proxyheader}) reads that header
incrementally, from reads split anywhere.  L{ProxyProtocolFactory} sits
outside everything else on a listening port (outside TLS too, as the
header is sent in the clear): it refuses connections from senders that are
not trusted, waits for the header, then hands the connection to the
wrapped factory with the client's address as the peer, already in
C{connectionMade}.

Twisted's own L{twisted.protocols.haproxy} is not used: it drops a
connection whose header arrives split over reads (twisted#8287) and its
C{getPeer} is wrong in C{connectionMade} (twisted#12501).
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, directlyProvides, providedBy

from multiport.ports.admission import clientAddress
from multiport.ports.proxyheader import (
    HeaderParser,
    Network,
    ProxyInfo,
    ProxyProtocolError,
    Versions,
    _acceptedVersions,
    _describe,
)

log = Logger()


class ProxiedTransport:
    """
    The transport a connection's inner protocol gets once the PROXY header
    is read: the real transport, except that L{getPeer} is the client the
    header named and L{getHost} the address it connected to.

    C{write} and C{writeSequence} are the real transport's own bound
    methods (no extra call); everything else not defined here (producer
    and consumer calls, C{getTcpNoDelay}, C{disconnecting}...) is looked
    up on the real transport.  It provides whatever interfaces the real
    transport provides, so that wrappers such as
    L{twisted.protocols.tls.TLSMemoryBIOProtocol} copy them as usual.

    @ivar closeRequested: Whether the inner protocol closed or aborted the
        connection.
    """

    def __init__(self, transport: ITransport, peer: IAddress, host: IAddress) -> None:
        self._transport = transport
        self._peer = peer
        self._host = host
        self.closeRequested = False
        self.write = transport.write
        self.writeSequence = transport.writeSequence
        directlyProvides(self, providedBy(transport))

    def getPeer(self) -> IAddress:
        """
        The client's address as the PROXY header gave it.
        """
        return self._peer

    def getHost(self) -> IAddress:
        """
        The address the client connected to as the PROXY header gave it.
        """
        return self._host

    @property
    def passThrough(self) -> ITransport:
        """
        The real transport (bytes pass through this one unchanged).
        """
        return self._transport

    def loseConnection(self) -> None:
        self.closeRequested = True
        self._transport.loseConnection()

    def abortConnection(self) -> None:
        self.closeRequested = True
        self._transport.abortConnection()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # Special names (zope.interface's __providedBy__, __conform__...) are
        # not passed on: this object's own declarations hold.
        transport = self.__dict__.get("_transport")
        if transport is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(transport, name)

    def __repr__(self) -> str:
        return f"<ProxiedTransport peer={self._peer!r} over {self._transport!r}>"


class ProxyProtocolWrapper(Protocol):
    """
    One connection until its PROXY header is read: buffers and parses it
    under a timeout, then connects the wrapped factory's protocol (with a
    L{ProxiedTransport}) and passes every later byte straight to it.

    @ivar wrappedProtocol: The inner protocol, once the header is read.
    """

    factory: ProxyProtocolFactory
    wrappedProtocol: IProtocol | None = None

    def __init__(self, factory: ProxyProtocolFactory) -> None:
        self.factory = factory
        self._parser: HeaderParser | None = None
        self._timer: Any = None

    def logPrefix(self) -> str:
        return "ProxyProtocol"

    def connectionMade(self) -> None:
        factory = self.factory
        self._parser = HeaderParser(factory.versions)
        self._timer = factory.clock.callLater(factory.timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        inner = self.wrappedProtocol
        if inner is not None:
            inner.dataReceived(data)
            return
        parser = self._parser
        if parser is None:
            # Failed, refused or lost: whatever still arrives is dropped.
            return
        try:
            info = parser.feed(data)
        except ProxyProtocolError as e:
            self._fail("proxy_protocol", str(e))
            return
        if info is not None:
            self._connectInner(info, parser.rest)

    def _connectInner(self, info: ProxyInfo, rest: bytes) -> None:
        """
        The header is read: connect the wrapped factory's protocol as from
        the client it names, and give it the bytes after the header.
        """
        self._parser = None
        self._cancelTimer()
        transport = self.transport
        assert transport is not None
        peer: IAddress
        host: IAddress
        if info.command == "proxy" and info.source is not None:
            peer = info.source
            host = info.destination or transport.getHost()
        else:
            peer, host = transport.getPeer(), transport.getHost()
        inner = self.factory.wrappedFactory.buildProtocol(peer)
        if inner is None:
            # The wrapped factory turned the client away (and counted it).
            transport.loseConnection()
            return
        proxied = ProxiedTransport(transport, peer, host)
        self.wrappedProtocol = inner
        if IHalfCloseableProtocol.providedBy(inner):
            alsoProvides(self, IHalfCloseableProtocol)
        # A ProxiedTransport provides the real transport's interfaces
        # (directlyProvides), which the type checker can't see.
        inner.makeConnection(cast(ITransport, proxied))
        if rest and self.wrappedProtocol is inner and not proxied.closeRequested:
            inner.dataReceived(rest)

    def _fail(self, kind: str, message: str) -> None:
        """
        Abort the connection before its header was read, and report it.
        """
        self._parser = None
        self._cancelTimer()
        transport = self.transport
        assert transport is not None
        peer = transport.getPeer()
        log.info(
            "PROXY protocol: closing the connection from {peer}: {reason}",
            peer=_describe(peer),
            reason=message,
            kind=kind,
        )
        transport.abortConnection()  # type: ignore[attr-defined]
        self.factory.onError(kind, peer)

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(
            "timeout",
            f"no complete PROXY protocol header within {self.factory.timeout:g}s",
        )

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def readConnectionLost(self) -> None:
        """
        The client half-closed; only declared (and called) when the inner
        protocol is an L{IHalfCloseableProtocol}.
        """
        IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()

    def writeConnectionLost(self) -> None:
        """
        Writing half-closed; only declared (and called) when the inner
        protocol is an L{IHalfCloseableProtocol}.
        """
        IHalfCloseableProtocol(self.wrappedProtocol).writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._parser = None
        self._cancelTimer()
        inner, self.wrappedProtocol = self.wrappedProtocol, None
        if inner is not None:
            inner.connectionLost(reason)


class ProxyProtocolFactory(Factory[ProxyProtocolWrapper]):
    """
    The outermost factory of a port that takes PROXY protocol headers.

    Connections from outside C{trusted} are refused at once; the others
    must send a header of an accepted version within C{timeout} seconds,
    then go on to C{wrappedFactory} as from the client the header names.

    C{onError(kind, address)} is called for each connection turned away
    here, with the TCP peer's address and C{kind}: C{"proxy_protocol"}
    (untrusted sender, or a bad header) or C{"timeout"}.  A connection the
    wrapped factory refuses (its C{buildProtocol} returns C{None}) is only
    closed: that factory counts its own refusals.
    """

    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        versions: Versions,
        trusted: Sequence[Network],
        clock: IReactorTime,
        timeout: float,
        onError: Callable[[str, IAddress], None],
    ) -> None:
        _acceptedVersions(versions)
        if not timeout > 0:
            raise ValueError(f"the PROXY header timeout must be above 0, not {timeout}")
        self.wrappedFactory = wrappedFactory
        self.versions = versions
        self.trusted = tuple(trusted)
        self.clock = clock
        self.timeout = timeout
        self.onError = onError

    def isTrusted(self, address: IAddress) -> bool:
        """
        Whether C{address} (IPv4-mapped IPv6 as IPv4) may send headers.
        """
        ip = clientAddress(address)
        return ip is not None and any(ip in network for network in self.trusted)

    # Factory's stub allows no address; the listening port calling this
    # always gives one.
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress
    ) -> ProxyProtocolWrapper | None:
        if not self.isTrusted(addr):
            log.info(
                "PROXY protocol: refusing the connection from {peer}: "
                "not a trusted sender",
                peer=_describe(addr),
            )
            self.onError("proxy_protocol", addr)
            return None
        return ProxyProtocolWrapper(self)

    def doStart(self) -> None:
        self.wrappedFactory.doStart()
        super().doStart()  # type: ignore[no-untyped-call]

    def doStop(self) -> None:
        self.wrappedFactory.doStop()
        super().doStop()  # type: ignore[no-untyped-call]

    def logPrefix(self) -> str:
        logPrefix = getattr(self.wrappedFactory, "logPrefix", None)
        if logPrefix is None:
            return self.__class__.__name__
        return logPrefix()  # type: ignore[no-any-return]
