"""
The relay handler: TCP port forwarding to the upstreams the configuration
names (never to one a client chooses), with flow control both ways.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import define, field, frozen
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.config.files import FileError, readRegularFile
from multiport.config.model import formatAddress, numericHost
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    OptionError,
    optionOf,
    rejectUnknown,
)
from multiport.io.splice import AVAILABLE, DEFAULT_POOL, PipePool, Splice, tcpTransport
from multiport.ports.tls import MAX_PEM_FILE, opensslReason

log = Logger()

BALANCES = ("round_robin", "first", "least_connections")


@frozen
class Upstream:
    """
    One upstream, C{host:port}.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return formatAddress(self.host, self.port)


@frozen
class RelayOptions:
    """
    The relay handler's options.
    """

    upstreams: tuple[Upstream, ...]
    balance: str = "round_robin"
    connectTimeout: float = 5.0
    failTimeout: float = 10.0
    tls: bool = False
    serverName: str | None = None
    ca: Path | None = None
    #: What C{ca} held when the options were read (a reload reads it again).
    caPEM: bytes | None = None
    verify: bool = True
    sendProxy: str | None = None
    splice: bool = True


def parseUpstream(value: object, key: str) -> Upstream:
    """
    C{host:port} or C{[v6]:port}.
    """
    if type(value) is not str:
        raise OptionError(key, f"expected 'host:port', got {value!r}")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if not rest.startswith(":") or numericHost(host) is None:
            raise OptionError(key, f"{value!r} is not [IPv6]:port")
        portText = rest[1:]
    else:
        host, colon, portText = value.rpartition(":")
        if not colon or not host or ":" in host:
            raise OptionError(key, f"{value!r} is not host:port")
    if (
        not portText.isascii()
        or not portText.isdigit()
        or not 1 <= int(portText) <= 65535
    ):
        raise OptionError(key, f"{value!r} has no port from 1 to 65535")
    return Upstream(host, int(portText))


def _seconds(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if type(value) not in (int, float) or not 0 < value < 86400:  # type: ignore[operator]
        raise OptionError(key, f"expected seconds above 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _readCA(name: str, path: Path) -> bytes:
    """
    The PEM certificate C{upstream_ca} names, read once with the options
    (not on each connection, where a FIFO or device would block the
    reactor).

    @raise OptionError: if it is not a readable regular file of at most
        C{MAX_PEM_FILE} bytes holding a PEM certificate.
    """
    try:
        data = readRegularFile(path, MAX_PEM_FILE, "upstream_ca")
        Certificate.loadPEM(data)
    except FileError as e:
        raise OptionError("upstream_ca", f"{name!r}: {e.reason} ({path})") from None
    except crypto.Error as e:
        raise OptionError(
            "upstream_ca",
            f"{name!r} holds no PEM certificate ({path}): {opensslReason(e)}",
        ) from None
    return data


def parseRelayOptions(options: Mapping[str, object], relativeTo: Path) -> RelayOptions:
    """
    Validate the relay's options.
    """
    rejectUnknown(
        options,
        {
            "upstream",
            "upstreams",
            "balance",
            "connect_timeout",
            "fail_timeout",
            "upstream_tls",
            "upstream_server_name",
            "upstream_ca",
            "upstream_tls_verify",
            "send_proxy_protocol",
            "splice",
        },
    )
    if ("upstream" in options) == ("upstreams" in options):
        raise OptionError(
            "upstream",
            "give exactly one of upstream = 'host:port' or upstreams = [...]",
        )
    if "upstream" in options:
        upstreams = (parseUpstream(options["upstream"], "upstream"),)
    else:
        listed = options["upstreams"]
        if type(listed) is not list or not listed:
            raise OptionError("upstreams", "expected a non-empty array of 'host:port'")
        upstreams = tuple(
            parseUpstream(item, f"upstreams[{index}]")
            for index, item in enumerate(listed)
        )
    balance = optionOf(options, "balance", str, "a string", "round_robin")
    if balance not in BALANCES:
        raise OptionError("balance", f"{balance!r} is not one of {', '.join(BALANCES)}")
    tls = optionOf(options, "upstream_tls", bool, "true or false", False)
    serverName = optionOf(options, "upstream_server_name", str, "a host name", "")
    caName = optionOf(options, "upstream_ca", str, "a PEM file path", "")
    verify = optionOf(options, "upstream_tls_verify", bool, "true or false", True)
    ca = None
    if "\x00" in caName:
        raise OptionError("upstream_ca", f"{caName!r} contains a NUL character")
    caPEM = None
    if caName:
        ca = (relativeTo / caName).resolve()
        caPEM = _readCA(caName, ca)
    if not tls:
        for key in ("upstream_server_name", "upstream_ca", "upstream_tls_verify"):
            if key in options:
                raise OptionError(key, "only with upstream_tls = true")
    sendProxy = optionOf(options, "send_proxy_protocol", str, '"v1" or "v2"', "")
    if sendProxy not in ("", "v1", "v2"):
        raise OptionError(
            "send_proxy_protocol", f'expected "v1" or "v2", got {sendProxy!r}'
        )
    return RelayOptions(
        upstreams=upstreams,
        balance=balance,
        connectTimeout=_seconds(options, "connect_timeout", 5.0),
        failTimeout=_seconds(options, "fail_timeout", 10.0),
        tls=tls,
        serverName=serverName or None,
        ca=ca,
        caPEM=caPEM,
        verify=verify,
        sendProxy=sendProxy or None,
        splice=optionOf(options, "splice", bool, "true or false", True),
    )


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
        else platformTrust()
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
        tcp.loseWriteConnection()
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


@implementer(IHalfCloseableProtocol)
class RelayProtocol(Protocol):
    """
    One client connection, relayed to an upstream.  Until the upstream
    answers, the client's reads are paused; then each side is the other's
    producer, so a side that stops reading pauses the other.  End of file
    from one side is passed on to the other (half-close).
    """

    _clientDone = False
    upstreamDone = False

    def readConnectionLost(self) -> None:
        self._clientDone = True
        if self.upstream is not None:
            _closeWriting(self.upstream.transport)
        self.closeIfBothDone()

    def writeConnectionLost(self) -> None:
        pass

    def closeIfBothDone(self) -> None:
        """
        Once both sides have sent their end of file, close both.
        """
        if self._clientDone and self.upstreamDone:
            self.transport.loseConnection()
            if self.upstream is not None:
                self.upstream.transport.loseConnection()

    upstream: UpstreamProtocol | None = None
    splice: Splice | None = None
    chosen: Upstream | None = None
    _connecting: Deferred[Any] | IConnector | None = None
    _closed = False
    #: What the client sent before the upstream answered (a class default:
    #: most clients send nothing then).
    pending: tuple[bytes, ...] = ()

    # Everything shared by the port's connections is read from the factory,
    # never copied into each connection (memory per idle connection).
    factory: RelayFactory

    def __init__(self, factory: RelayFactory) -> None:
        self.factory = factory
        self.received = 0
        self.sent = 0

    @property
    def context(self) -> HandlerContext:
        return self.factory.context

    @property
    def pool(self) -> UpstreamPool:
        return self.factory.pool

    @property
    def options(self) -> RelayOptions:
        return self.factory.options

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self._tryNext(self.pool.candidates())

    def _tryNext(self, candidates: list[Upstream]) -> None:
        if self._closed:
            return
        if not candidates:
            self.context.counters.add("no_upstream")
            log.info(
                "relay on {port}: no upstream answered; closing the client",
                port=self.context.port.name,
            )
            self.transport.loseConnection()
            return
        upstream, rest = candidates[0], candidates[1:]
        self.chosen = upstream
        options = self.options
        protocol = UpstreamProtocol(self, rest)
        if not options.tls and numericHost(upstream.host) is not None:
            # An address needs no name resolution: connect straight, without
            # the endpoint's Deferreds and wrappers (kept as long as the
            # connection lasts).
            self._connecting = self.context.reactor.connectTCP(
                upstream.host, upstream.port, protocol, options.connectTimeout
            )
            return
        endpoint: Any = HostnameEndpoint(
            self.context.reactor,
            upstream.host,
            upstream.port,
            timeout=options.connectTimeout,
        )
        if options.tls:
            endpoint = wrapClientTLS(clientTLS(options, upstream), endpoint)
        factory = Factory.forProtocol(lambda: protocol)
        # Twisted logs a factory's start and stop: two lines per upstream
        # connection saying nothing.
        factory.noisy = False
        connecting = self._connecting = endpoint.connect(factory)
        connecting.addErrback(self.upstreamFailed, rest)

    def upstreamFailed(self, reason: Failure, rest: list[Upstream]) -> None:
        """
        The upstream being tried did not answer: try the next of C{rest}.
        """
        self._connecting = None
        upstream = self.chosen
        if self._closed or upstream is None:
            return
        if localShortage(reason):
            # The daemon is out of descriptors or memory: no upstream
            # is to blame, and none would do better; close this client.
            self.context.counters.add("local_connect_failures")
            log.warn(
                "relay on {port}: cannot connect to {upstream}: {reason}",
                port=self.context.port.name,
                upstream=str(upstream),
                reason=reason.getErrorMessage(),
            )
            self.transport.loseConnection()
            return
        self.pool.failed(upstream)
        self.context.counters.add("upstream_connect_failures", upstream=str(upstream))
        self._tryNext(rest)

    def upstreamConnected(self, upstream: UpstreamProtocol) -> None:
        self._connecting = None
        # Only a connection still being made needs the upstreams after it.
        upstream.rest = None
        if self._closed:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        assert self.chosen is not None
        self.pool.active[self.chosen] = self.pool.active.get(self.chosen, 0) + 1
        # Each side produces for the other: a full buffer on one side pauses
        # reading on the other, so memory stays bounded whatever the speeds.
        prefix = b"".join(self.pending)
        self.pending = ()
        if self.options.sendProxy is not None:
            prefix = (
                proxyHeader(
                    self.options.sendProxy,
                    self.transport.getPeer(),
                    self.transport.getHost(),
                )
                + prefix
            )
        if self.options.splice and self._splice(upstream, prefix):
            return
        self.transport.registerProducer(upstream.transport, True)
        if not self._clientDone:
            upstream.transport.registerProducer(self.transport, True)
        if prefix:
            upstream.transport.write(prefix)
        if self._clientDone:
            _closeWriting(upstream.transport)
        else:
            self.transport.resumeProducing()

    def _splice(self, upstream: UpstreamProtocol, prefix: bytes) -> bool:
        """
        Relay with splice(2) when both sides are plain TCP: bytes then go
        from socket to socket without being copied into Python, through a
        pipe of the daemon's pool taken only while they are in flight (a
        direction copies while the pool has none).  False where it can't
        apply (TLS on either side, no splice); the relay then reads and
        writes through Twisted.
        """
        client = tcpTransport(self.transport)
        server = tcpTransport(upstream.transport)
        if not AVAILABLE or client is None or server is None:
            return False
        self.splice = Splice(
            self.context.reactor,
            client,
            server,
            self,
            self.factory.pipes,
        )
        self.splice.start(prefix)
        return True

    def spliceCounted(self, fromClient: bool, size: int) -> None:
        """
        The splice moved C{size} bytes from the client (C{fromClient}) or
        from the upstream: count them for the port and the relay.
        """
        if fromClient:
            self.received += size
            self.transport.countReceived(size)
        else:
            self.sent += size
            self.transport.countSent(size)

    def spliceEnded(self, error: BaseException | None) -> None:
        """
        Both sides ended (close both) or one failed (reset both).
        """
        self.splice = None
        upstream = self.upstream
        if error is None:
            self.transport.loseConnection()
            if upstream is not None:
                upstream.transport.loseConnection()
        else:
            self.transport.abortConnection()
            if upstream is not None:
                upstream.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.upstream is None:
            self.pending += (data,)
        else:
            self.upstream.transport.write(data)

    def upstreamLost(self, reason: Failure | None = None) -> None:
        if self.splice is not None:
            self.splice.stop()
            self.splice = None
        if self.chosen is not None and self.upstream is not None:
            self.pool.active[self.chosen] -= 1
        self.upstream = None
        if not self._closed:
            if reason is None or reason.check(ConnectionDone):
                self.transport.loseConnection()
            else:
                # The upstream went away mid-stream: reset the client too,
                # so that a cut stream never looks complete to it.
                self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        if self.splice is not None:
            self.splice.stop()
            self.splice = None
        connecting, self._connecting = self._connecting, None
        if isinstance(connecting, Deferred):
            connecting.cancel()
        elif connecting is not None and connecting.state == "connecting":
            connecting.stopConnecting()
        if self.chosen is not None:
            counters = self.context.counters
            counters.add("bytes_to_upstream", self.received, upstream=str(self.chosen))
            counters.add("bytes_from_upstream", self.sent, upstream=str(self.chosen))
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class RelayFactory(Factory):
    """
    The relay's factory for one port; it keeps the port's upstream pool.
    """

    def __init__(self, context: HandlerContext) -> None:
        self.context = context
        self.options: RelayOptions = context.options  # type: ignore[assignment]
        self.pool = UpstreamPool(self.options, context.clock)
        # Outside a daemon (no shared pool) the port has a pool of its own.
        self.pipes = context.pipes or PipePool(DEFAULT_POOL)

    def buildProtocol(self, addr: IAddress) -> RelayProtocol:
        return RelayProtocol(self)


def buildRelay(context: HandlerContext) -> RelayFactory:
    """
    The relay factory for one port (warning when upstream certificates go
    unchecked).
    """
    options: RelayOptions = context.options  # type: ignore[assignment]
    if options.tls and not options.verify:
        log.warn(
            "relay on {port}: upstream_tls_verify = false: the upstreams' "
            "certificates are not checked",
            port=context.port.name,
        )
    return RelayFactory(context)


relay = Handler(
    "relay",
    "TCP relay to configured upstreams (options upstream or upstreams)",
    buildRelay,
    parse=parseRelayOptions,
    # The client's socket and the upstream's.
    descriptorsPerConnection=2,
)
