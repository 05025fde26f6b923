"""
The relay handler: TCP port forwarding to the upstreams the configuration
names (never to one a client chooses), with flow control both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.config import formatAddress, numericHost
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    OptionError,
    optionOf,
    rejectUnknown,
)

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
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise OptionError(key, f"{value!r} has no port from 1 to 65535")
    return Upstream(host, int(portText))


def _seconds(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if type(value) not in (int, float) or not 0 < value < 86400:  # type: ignore[operator]
        raise OptionError(key, f"expected seconds above 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def parseRelayOptions(options: Mapping[str, object], relativeTo: Path) -> RelayOptions:
    """
    Validate the relay's options.
    """
    rejectUnknown(
        options, {"upstream", "upstreams", "balance", "connect_timeout", "fail_timeout"}
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
    return RelayOptions(
        upstreams=upstreams,
        balance=balance,
        connectTimeout=_seconds(options, "connect_timeout", 5.0),
        failTimeout=_seconds(options, "fail_timeout", 10.0),
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


class UpstreamProtocol(Protocol):
    """
    The relay's connection to its upstream.
    """

    def __init__(self, client: RelayProtocol) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.upstreamConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.client.sent += len(data)
        self.client.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.client.upstreamLost()


class RelayProtocol(Protocol):
    """
    One client connection, relayed to an upstream.  Until the upstream
    answers, the client's reads are paused; then each side is the other's
    producer, so a side that stops reading pauses the other.
    """

    upstream: UpstreamProtocol | None = None
    chosen: Upstream | None = None
    _connecting: Deferred[Any] | None = None
    _closed = False

    def __init__(self, context: HandlerContext, pool: UpstreamPool) -> None:
        self.context = context
        self.pool = pool
        self.options: RelayOptions = context.options  # type: ignore[assignment]
        self.received = 0
        self.sent = 0
        self.pending: list[bytes] = []

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
        endpoint = HostnameEndpoint(
            self.context.reactor,
            upstream.host,
            upstream.port,
            timeout=self.options.connectTimeout,
        )
        self.chosen = upstream
        self._connecting = endpoint.connect(
            Factory.forProtocol(lambda: UpstreamProtocol(self))
        )

        def failed(reason: Failure) -> None:
            self._connecting = None
            if self._closed:
                return
            self.pool.failed(upstream)
            self.context.counters.add(
                "upstream_connect_failures", upstream=str(upstream)
            )
            self._tryNext(rest)

        self._connecting.addErrback(failed)

    def upstreamConnected(self, upstream: UpstreamProtocol) -> None:
        self._connecting = None
        if self._closed:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        assert self.chosen is not None
        self.pool.active[self.chosen] = self.pool.active.get(self.chosen, 0) + 1
        # Each side produces for the other: a full buffer on one side pauses
        # reading on the other, so memory stays bounded whatever the speeds.
        self.transport.registerProducer(upstream.transport, True)
        upstream.transport.registerProducer(self.transport, True)
        for data in self.pending:
            upstream.transport.write(data)
        self.pending = []
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def upstreamLost(self) -> None:
        if self.chosen is not None and self.upstream is not None:
            self.pool.active[self.chosen] -= 1
        self.upstream = None
        if not self._closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
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
        self.pool = UpstreamPool(context.options, context.clock)  # type: ignore[arg-type]

    def buildProtocol(self, addr: IAddress) -> RelayProtocol:
        protocol = RelayProtocol(self.context, self.pool)
        protocol.factory = self
        return protocol


relay = Handler(
    "relay",
    "TCP relay to configured upstreams (options upstream or upstreams)",
    RelayFactory,
    parse=parseRelayOptions,
)
