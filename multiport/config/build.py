"""
Building the one validated L{Config} from the requests the edges parse
(C{--ports}, the TOML file, the admin API): each port's handler chosen
and its options validated, TLS settled, host names resolved, then
overlapping addresses and relay loops refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from multiport.acme.config import AcmeConfig
from multiport.config.handleroptions import OptionError, PortHandler
from multiport.config.model import (
    MAX_BACKLOG,
    WELL_KNOWN_PORTS,
    Config,
    Defaults,
    PortConfig,
    PortRequest,
    Resolver,
    TLSConfig,
    _interfaces,
    resolveHostName,
)
from multiport.errors import ConfigError
from multiport.ports.datagrampolicy import checkOwnPolicy, forProtocol
from multiport.ports.policies import Policy, checkPolicy


def protocolsOf(handler: object) -> tuple[str, ...]:
    """
    The protocols C{handler} serves: its C{protocols}, C{("tcp",)} when it
    declares none.
    """
    protocols = getattr(handler, "protocols", ("tcp",))
    return tuple(protocols)


def _handlerFor(
    request: PortRequest, handlers: Mapping[str, PortHandler]
) -> PortHandler:
    name = request.handler
    if name is None:
        name = WELL_KNOWN_PORTS.get(request.port)
        if name is None and request.where.startswith("--"):
            raise ConfigError(
                request.where,
                f"port {request.port} has no well-known handler; name one "
                f"(PORT=HANDLER); known handlers: {', '.join(sorted(handlers))}",
            )
        if name is None:
            raise ConfigError(
                f"{request.where}.handler",
                f"missing key 'handler' (port {request.port} has no well-known "
                f"handler); known handlers: {', '.join(sorted(handlers))}",
            )
    handler = handlers.get(name)
    if handler is None:
        raise ConfigError(
            request.where,
            f"unknown handler {name!r}; known handlers: {', '.join(sorted(handlers))}",
        )
    if request.protocol not in protocolsOf(handler):
        serving = sorted(
            n for n, h in handlers.items() if request.protocol in protocolsOf(h)
        )
        raise ConfigError(
            request.where,
            f"handler {name!r} does not serve {request.protocol.upper()}; handlers "
            f"for {request.protocol.upper()}: {', '.join(serving) or 'none'}",
        )
    return handler


def _checkDatagram(request: PortRequest) -> None:
    """
    Refuse what a UDP port can't have: TLS (there is no DTLS here), a
    backlog, and the connection policies.
    """
    if request.protocol != "udp":
        checkOwnPolicy(request.policy, request.protocol, request.where)
        return
    if request.tls:
        raise ConfigError(
            f"{request.where}.tls"
            if not request.where.startswith("--")
            else request.where,
            "TLS on a UDP port: there is no TLS over UDP (no DTLS)",
        )
    if request.backlog is not None:
        raise ConfigError(
            f"{request.where}.backlog", "'backlog' does not apply to a UDP port"
        )
    checkOwnPolicy(request.policy, "udp", request.where)


def _tlsFor(
    request: PortRequest, handler: PortHandler, defaults: Defaults
) -> TLSConfig | None:
    if isinstance(request.tls, TLSConfig):
        return request.tls.over(defaults.tls)
    if request.tls is False and handler.impliesTLS:
        raise ConfigError(
            request.where,
            f"handler {handler.name!r} always uses TLS; tls cannot be false",
        )
    if request.tls or handler.impliesTLS:
        return defaults.tls
    return None


def portConfigs(
    request: PortRequest,
    defaults: Defaults,
    handlers: Mapping[str, PortHandler],
    resolve: Resolver = resolveHostName,
) -> list[PortConfig]:
    """
    The validated ports one request asks for: one per address its host
    resolves to.

    @raise ConfigError: if anything in it is wrong.
    """
    if not 0 <= request.port <= 65535:
        raise ConfigError(request.where, f"port {request.port} out of range 0-65535")
    _checkDatagram(request)
    handler = _handlerFor(request, handlers)
    tls = None if request.protocol == "udp" else _tlsFor(request, handler, defaults)
    backlog = defaults.backlog if request.backlog is None else request.backlog
    if not 1 <= backlog <= MAX_BACKLOG:
        raise ConfigError(
            request.where, f"backlog {backlog} must be from 1 to {MAX_BACKLOG}"
        )
    try:
        parse = handler.parseOptions
        if request.protocol == "udp":
            parse = getattr(handler, "parseDatagramOptions", parse)
        options = parse(request.options, request.optionsBase)
    except OptionError as e:
        raise ConfigError(f"{request.where}.options.{e.key}", e.message) from e
    policy = (
        request.policy.over(defaults.policy)
        if request.inheritPolicy
        else request.policy
    )
    # The handler's own defaults come last: an http port closes a
    # connection that stalls even when nothing is configured.
    if request.protocol == "tcp":
        policy = policy.over(getattr(handler, "defaultPolicy", Policy()))
    policy = forProtocol(policy, request.protocol)
    checkPolicy(policy, request.where)
    host = defaults.interface if request.host is None else request.host
    return [
        PortConfig(
            interface=interface,
            port=request.port,
            handler=handler.name,
            tls=tls,
            backlog=backlog,
            options=options,
            where=request.where,
            logConnections=defaults.logConnections
            if request.logConnections is None
            else request.logConnections,
            policy=policy,
            protocol=request.protocol,
            socketName=request.socketName,
        )
        for interface in _interfaces(host, request.where, resolve)
    ]


def _label(port: PortConfig) -> str:
    return port.name if port.datagram else port.address


def checkOverlaps(ports: Iterable[PortConfig]) -> None:
    """
    Refuse two ports that would claim the same address and port number.

    C{0.0.0.0:P} covers every IPv4 address on P and C{[::]:P} every IPv6
    one (multiport sets IPV6_V6ONLY, so the two families never collide).
    Port 0 never collides.  Linear in the number of ports: each port number
    and family keeps a table of the addresses claimed on it.

    @raise ConfigError: naming both places.
    """
    claimed: dict[tuple[str, int, bool], dict[str, PortConfig]] = {}
    for port in ports:
        if port.port == 0:
            continue
        group = claimed.setdefault((port.protocol, port.port, port.ipv6), {})
        wildcard = "::" if port.ipv6 else "0.0.0.0"
        other = group.get(port.interface)
        if other is None:
            if port.interface == wildcard:
                other = next(iter(group.values()), None)
            else:
                other = group.get(wildcard)
        if other is not None:
            if port.interface == other.interface:
                what = "is configured twice"
            else:
                what = f"overlaps {_label(other)}"
            raise ConfigError(
                port.where, f"{_label(port)} {what} (also at {other.where})"
            )
        group[port.interface] = port
    checkLoops(ports)


class _Forwarding(Protocol):
    """
    Handler options that send connections on to addresses (the relay's).
    """

    @property
    def upstreams(self) -> Sequence[Any]: ...


def _reaches(host: str, target: PortConfig) -> bool:
    """
    Whether connecting to C{host} (an address, or C{localhost}) on
    C{target}'s port number lands on C{target}: its own address, or an
    address of this machine in the family of a wildcard C{target}.
    """
    if host == "localhost":
        return target.interface in ("0.0.0.0", "::", "127.0.0.1", "::1")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # A name: resolved when connecting, not known here.
        return False
    if address == ipaddress.ip_address(target.interface):
        return True
    if target.interface != ("::" if address.version == 6 else "0.0.0.0"):
        return False
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    # An address a socket can be bound to is one of this machine's.
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((host, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def checkLoops(ports: Iterable[PortConfig]) -> None:
    """
    Refuse a port that forwards, directly or through other ports of the
    daemon, to itself: one client would make it connect to itself until
    the daemon runs out of descriptors.

    @raise ConfigError: naming the forwarding port and the way round.
    """
    ports = list(ports)
    byNumber: dict[int, list[PortConfig]] = {}
    for port in ports:
        if port.port != 0:
            byNumber.setdefault(port.port, []).append(port)
    # Each forwarding port's next ports, in order: a graph with at most one
    # edge per upstream.
    reaches: dict[str, list[PortConfig]] = {}
    for port in ports:
        upstreams = getattr(port.options, "upstreams", None)
        if not isinstance(upstreams, tuple):
            continue
        reaches[port.name] = [
            target
            for upstream in cast(_Forwarding, port.options).upstreams
            for target in byNumber.get(upstream.port, ())
            if target.protocol == port.protocol and _reaches(upstream.host, target)
        ]
    # The last first: a port being added or changed comes last, and the
    # error should name it.
    for start in reversed(ports):
        path = _pathBack(start, reaches)
        if path is not None:
            way = " -> ".join(p.name for p in path)
            raise ConfigError(
                start.where,
                f"its upstream is this daemon's own port, and it would relay to "
                f"itself ({way})",
            )


def _pathBack(
    start: PortConfig, reaches: Mapping[str, list[PortConfig]]
) -> list[PortConfig] | None:
    """
    The ports from C{start} back to C{start} along C{reaches}, if any.
    """
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        port, path = stack.pop()
        for target in reaches.get(port.name, ()):
            if target.name == start.name:
                return [*path, target]
            if target.name not in seen:
                seen.add(target.name)
                stack.append((target, [*path, target]))
    return None


def buildConfig(
    requests: Iterable[PortRequest],
    defaults: Defaults,
    handlers: Mapping[str, PortHandler],
    stateDir: Path,
    resolve: Resolver = resolveHostName,
    acme: AcmeConfig | None = None,
    peers: tuple[str, ...] = (),
) -> Config:
    """
    The one validated L{Config} for all C{requests}.

    @raise ConfigError: for the first thing that is wrong.
    """
    ports: list[PortConfig] = []
    for request in requests:
        ports.extend(portConfigs(request, defaults, handlers, resolve))
    checkOverlaps(ports)
    return Config(ports=tuple(ports), stateDir=stateDir, acme=acme, peers=peers)
