"""
The relay handler: TCP port forwarding to the upstreams the configuration
names (never to one a client chooses), with flow control both ways.
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.base import BaseConnector
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConnector, IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.config.model import numericHost
from multiport.handlers.interface import Handler, HandlerContext
from multiport.handlers.relayoptions import RelayOptions, Upstream, parseRelayOptions
from multiport.handlers.relayupstream import (
    IStreamTransport,
    UpstreamPool,
    UpstreamProtocol,
    _closeWriting,
    clientTLS,
    localShortage,
    proxyHeader,
)
from multiport.handlers.udprelay import buildUDPRelay, parseUDPRelayOptions
from multiport.io.splice import AVAILABLE, DEFAULT_POOL, PipePool, Splice, tcpTransport

if TYPE_CHECKING:
    from multiport.io.direct import DirectDelivery
    from multiport.ports.connection import PortProtocol

log = Logger()


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
    # The client's connection (the port's wrapper, a TCP transport).
    transport: IStreamTransport

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
            # The protocol is its own factory (IProtocolFactory, one object
            # fewer per connection), not a ClientFactory by class.
            asFactory = cast("ClientFactory[UpstreamProtocol]", protocol)
            self._connecting = self.context.reactor.connectTCP(
                upstream.host, upstream.port, asFactory, options.connectTimeout
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
        # A splice starts only under the port's wrapper (its passThrough)
        # or on the transport it delivers through: whichever counts the
        # bytes that go past.
        counting = cast("PortProtocol | DirectDelivery", self.transport)
        if fromClient:
            self.received += size
            counting.countReceived(size)
        else:
            self.sent += size
            counting.countSent(size)

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
            if reason is None or reason.check(ConnectionDone):  # type: ignore[no-untyped-call]
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
        elif (
            connecting is not None
            # connectTCP's connectors are BaseConnectors: IConnector does
            # not name the state.
            and cast(BaseConnector, connecting).state == "connecting"
        ):
            connecting.stopConnecting()
        if self.chosen is not None:
            counters = self.context.counters
            counters.add("bytes_to_upstream", self.received, upstream=str(self.chosen))
            counters.add("bytes_from_upstream", self.sent, upstream=str(self.chosen))
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class RelayFactory(Factory[RelayProtocol]):
    """
    The relay's factory for one port; it keeps the port's upstream pool.
    """

    def __init__(self, context: HandlerContext) -> None:
        self.context = context
        self.options: RelayOptions = context.options  # type: ignore[assignment]
        self.pool = UpstreamPool(self.options, context.clock)
        # Outside a daemon (no shared pool) the port has a pool of its own.
        self.pipes = context.pipes or PipePool(DEFAULT_POOL)

    # Factory's stub allows no address; a listening port always gives one.
    def buildProtocol(self, addr: IAddress) -> RelayProtocol:  # type: ignore[override]
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
    "TCP and UDP relay to configured upstreams (options upstream or upstreams)",
    buildRelay,
    parse=parseRelayOptions,
    buildDatagram=buildUDPRelay,
    parseDatagram=parseUDPRelayOptions,
    # The client's socket and the upstream's.
    descriptorsPerConnection=2,
)
