"""
The relay's upstream side: which upstream a connection goes to
(L{UpstreamPool}), TLS and the PROXY header towards it, and the protocol
that carries its bytes back to the client (L{UpstreamProtocol}).
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
import errno
import ipaddress
from typing import TYPE_CHECKING, Any

from attrs import define, field
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IConsumer,
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.handlers.relayoptions import RelayOptions, Upstream
from multiport.io.splice import tcpTransport

if TYPE_CHECKING:
    from multiport.handlers.relay import RelayProtocol


class IStreamTransport(ITCPTransport, IConsumer, IPushProducer):
    """
    What the relay uses of either side's connection (a type for the
    checker: TCP transports, and TLS over them, provide all three).
    """


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    Client TLS that does not check the upstream's certificate (only when
    upstream_tls_verify = false asks for it); it still sends the name.
    """

    def __init__(self, serverName: str) -> None:
        self._name = serverName.encode("idna")
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._name)
        connection.set_connect_state()
        return connection


def clientTLS(options: RelayOptions, upstream: Upstream) -> Any:
    """
    The client TLS settings for C{upstream}: its name verified with
    service_identity against C{upstream_ca}, else the system's trust store.
    """
    name = options.serverName or upstream.host
    if not options.verify:
        return _Unverified(name)
    trust = (
        Certificate.loadPEM(options.caPEM)
        if options.caPEM is not None
        else platformTrust()  # type: ignore[no-untyped-call]
    )
    return optionsForClientTLS(name, trustRoot=trust)


def proxyHeader(version: str, source: IAddress, destination: IAddress) -> bytes:
    """
    A PROXY protocol header (v1 text or v2 binary) carrying C{source} and
    C{destination}; UNKNOWN/LOCAL when they are not IP addresses.
    """
    src = ipaddress.ip_address(getattr(source, "host", "0.0.0.0").split("%")[0])
    dst = ipaddress.ip_address(getattr(destination, "host", "0.0.0.0").split("%")[0])
    sport, dport = getattr(source, "port", 0), getattr(destination, "port", 0)
    if src.version != dst.version:
        src = ipaddress.ip_address(src.ipv4_mapped or src) if src.version == 6 else src
    if version == "v1":
        family = "TCP4" if src.version == 4 and dst.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode("ascii")
    if src.version == 4 and dst.version == 4:
        head = b"\x21\x11" + (12).to_bytes(2, "big")
    else:
        src, dst = (
            ipaddress.IPv6Address(a)
            if a.version == 6
            else ipaddress.IPv6Address("::ffff:" + str(a))
            for a in (src, dst)
        )
        head = b"\x21\x21" + (36).to_bytes(2, "big")
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + head
        + src.packed
        + dst.packed
        + sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
    )


@define
class UpstreamPool:
    """
    Which upstream to try next: by the balance rule, skipping those that
    failed to connect within the last C{failTimeout} seconds.
    """

    options: RelayOptions
    clock: IReactorTime
    failedUntil: dict[Upstream, float] = field(factory=dict)
    active: dict[Upstream, int] = field(factory=dict)
    _next: int = 0

    def candidates(self) -> list[Upstream]:
        """
        Upstreams in the order to try them now.
        """
        upstreams = list(self.options.upstreams)
        if self.options.balance == "round_robin":
            start = self._next % len(upstreams)
            self._next += 1
            upstreams = upstreams[start:] + upstreams[:start]
        elif self.options.balance == "least_connections":
            upstreams.sort(key=lambda u: self.active.get(u, 0))
        now = self.clock.seconds()
        return [u for u in upstreams if self.failedUntil.get(u, 0) <= now]

    def failed(self, upstream: Upstream) -> None:
        """
        C{upstream} did not answer: skip it for a while.
        """
        self.failedUntil[upstream] = self.clock.seconds() + self.options.failTimeout


#: Connect failures that are the daemon's own shortage, not the upstream's.
LOCAL_SHORTAGE = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def localShortage(reason: Failure) -> bool:
    """
    Whether a failed connect failed for lack of descriptors or memory here
    (C{socket()} itself failing), rather than because of the upstream.
    """
    value = reason.value
    for candidate in (value, getattr(value, "osError", None)):
        code = (
            candidate
            if isinstance(candidate, int)
            else getattr(candidate, "errno", None)
        )
        if code in LOCAL_SHORTAGE:
            return True
    return False


def _closeWriting(transport: Any) -> None:
    """
    The side feeding C{transport} sent its end of file: it produces no more
    for it (a TLS transport only closes once it has no producer), so pass
    the end of file on.
    """
    transport.unregisterProducer()
    _halfClose(transport)


def _halfClose(transport: Any) -> None:
    """
    Half-close C{transport} where it can (plain TCP under it, which then
    sends what it still holds and shuts its sending side), else close it:
    TLS has no half-close, and shutting the TCP connection under a TLS
    layer would cut that layer off mid-conversation.
    """
    tcp = tcpTransport(transport)
    if tcp is not None:
        tcp.loseWriteConnection()  # type: ignore[no-untyped-call]
    else:
        transport.loseConnection()


@implementer(IHalfCloseableProtocol, IProtocolFactory)
class UpstreamProtocol(Protocol):
    """
    The relay's connection to its upstream.

    Connected with C{connectTCP} (a plain upstream named by its address),
    it is also its own connection's factory: one object fewer for every
    relayed connection, which counts when a relay holds ten thousand.

    @ivar rest: The upstreams to try next if this one does not answer.
    """

    # A TCP connection, or TLS over one.
    transport: IStreamTransport

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def startedConnecting(self, connector: IConnector) -> None:
        pass

    def buildProtocol(self, addr: IAddress) -> UpstreamProtocol:
        return self

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.client.upstreamFailed(reason, self.rest or [])

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        pass

    def readConnectionLost(self) -> None:
        # The upstream is done sending: pass the end of file on, and let
        # the client's side finish what it still has to say.
        self.client.upstreamDone = True
        _closeWriting(self.client.transport)
        self.client.closeIfBothDone()

    def writeConnectionLost(self) -> None:
        pass

    def __init__(self, client: RelayProtocol, rest: list[Upstream]) -> None:
        self.client = client
        self.rest: list[Upstream] | None = rest

    def connectionMade(self) -> None:
        self.client.upstreamConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.client.sent += len(data)
        self.client.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.client.upstreamLost(reason)
