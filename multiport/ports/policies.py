"""
Per-port connection policies: limits, rates, access rules and timeouts.

The model (L{Policy}) is read from the configuration file's C{[[port]]} and
C{[defaults]} tables; L{multiport.ports.admission} applies it to each new
connection before the handler (and before TLS) sees it; the per-port
wrapper applies the timeouts.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import evolve, fields, frozen

from multiport.errors import ConfigError, typeName

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


#: Seconds the open connections of a port being removed (admin API, reload)
#: or of a stopping daemon get to finish before they are closed, unless its
#: policy sets C{drain_timeout}.
DEFAULT_DRAIN_TIMEOUT = 30.0


@frozen
class Rate:
    """
    A token bucket: C{perSecond} new connections a second on average, up to
    C{burst} at once.
    """

    perSecond: float
    burst: int


@frozen
class Policy:
    """
    A port's policies; C{None} means "not set here".
    """

    maxConnections: int | None = None
    maxConnectionsPerIP: int | None = None
    rate: Rate | None = None
    ratePerIP: Rate | None = None
    idleTimeout: float | None = None
    maxDuration: float | None = None
    headerTimeout: float | None = None
    drainTimeout: float | None = None
    proxyProtocol: str | None = None
    proxyProtocolFrom: tuple[Network, ...] | None = None
    allow: tuple[Network, ...] | None = None
    deny: tuple[Network, ...] | None = None
    maxDatagramSize: int | None = None

    def over(self, base: Policy) -> Policy:
        """
        These settings laid over C{base}: each one set here wins.
        """
        return Policy(
            **{
                f.name: getattr(base, f.name)
                if getattr(self, f.name) is None
                else getattr(self, f.name)
                for f in fields(Policy)
            }
        )


#: TOML key to Policy field.
KEYS = {
    "max_connections": "maxConnections",
    "max_connections_per_ip": "maxConnectionsPerIP",
    "rate": "rate",
    "rate_per_ip": "ratePerIP",
    "idle_timeout": "idleTimeout",
    "max_duration": "maxDuration",
    "header_timeout": "headerTimeout",
    "drain_timeout": "drainTimeout",
    "proxy_protocol": "proxyProtocol",
    "proxy_protocol_from": "proxyProtocolFrom",
    "allow": "allow",
    "deny": "deny",
    "max_datagram_size": "maxDatagramSize",
}


def _positiveInt(value: object, where: str) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(
            where,
            f"expected a whole number of at least 1, got {typeName(value)} {value!r}",
        )
    return value


def _seconds(value: object, where: str) -> float:
    if (
        type(value) not in (int, float)
        or not value > 0  # type: ignore[operator]
        or not math.isfinite(value)  # type: ignore[arg-type]
    ):
        raise ConfigError(
            where,
            f"expected a number of seconds above 0, got {typeName(value)} {value!r}",
        )
    return float(value)  # type: ignore[arg-type]


def _drainSeconds(value: object, where: str) -> float:
    # Unlike the other timeouts, 0 makes sense: close at once.
    if (
        type(value) not in (int, float)
        or not value >= 0  # type: ignore[operator]
        or not math.isfinite(value)  # type: ignore[arg-type]
    ):
        raise ConfigError(
            where,
            f"expected a number of seconds, 0 or more, got {typeName(value)} {value!r}",
        )
    return float(value)  # type: ignore[arg-type]


def _rate(value: object, where: str) -> Rate:
    if type(value) is not dict:
        raise ConfigError(
            where,
            "expected a table { per_second = N, burst = M }, got "
            f"{typeName(value)} {value!r}",
        )
    for key in value:
        if key not in ("per_second", "burst"):
            raise ConfigError(
                f"{where}.{key}", "unknown key (known: burst, per_second)"
            )
    if "per_second" not in value:
        raise ConfigError(where, "missing key 'per_second'")
    perSecond = value["per_second"]
    if (
        type(perSecond) not in (int, float)
        or not perSecond > 0
        or not math.isfinite(perSecond)
    ):
        raise ConfigError(
            f"{where}.per_second",
            "expected a number of connections a second above 0, got "
            f"{typeName(perSecond)} {perSecond!r}",
        )
    perSecond = float(perSecond)
    burst = (
        _positiveInt(value["burst"], f"{where}.burst")
        if "burst" in value
        else max(1, int(perSecond))
    )
    return Rate(perSecond, burst)


def _networks(value: object, where: str) -> tuple[Network, ...]:
    if type(value) is not list:
        raise ConfigError(
            where, f"expected an array of networks, got {typeName(value)} {value!r}"
        )
    networks = []
    for index, item in enumerate(value):
        if type(item) is not str:
            raise ConfigError(f"{where}[{index}]", f"expected a string, got {item!r}")
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError as e:
            raise ConfigError(
                f"{where}[{index}]", f"{item!r} is not a network: {e}"
            ) from None
        address = ipaddress.ip_interface(item).ip
        if address != network.network_address:
            # 10.0.0.1/8 would silently mean 10.0.0.0/8: a typo for one
            # address, or for a narrower network, opens far more than meant.
            single = "32" if network.version == 4 else "128"
            raise ConfigError(
                f"{where}[{index}]",
                f"{item!r} has host bits set: write {str(network)!r} for the "
                f"network, or '{address}/{single}' for the one address",
            )
        networks.append(network)
    return tuple(networks)


def _proxyVersions(value: object, where: str) -> str:
    if value not in ("v1", "v2", "any"):
        raise ConfigError(
            where, f'expected "v1", "v2" or "any", got {typeName(value)} {value!r}'
        )
    return str(value)


def checkPolicy(policy: Policy, where: str) -> None:
    """
    Check what only the merged policy of a port can show.

    @raise ConfigError: for C{proxy_protocol} without C{proxy_protocol_from}.
    """
    if policy.proxyProtocol is not None and not policy.proxyProtocolFrom:
        raise ConfigError(
            f"{where}.proxy_protocol_from",
            "required with proxy_protocol: the networks of the load balancers "
            "trusted to send the header (anyone else could claim any address)",
        )


_PARSERS = {
    "max_connections": _positiveInt,
    "max_connections_per_ip": _positiveInt,
    "rate": _rate,
    "rate_per_ip": _rate,
    "idle_timeout": _seconds,
    "max_duration": _seconds,
    "header_timeout": _seconds,
    "drain_timeout": _drainSeconds,
    "proxy_protocol": _proxyVersions,
    "proxy_protocol_from": _networks,
    "allow": _networks,
    "deny": _networks,
    "max_datagram_size": _positiveInt,
}


def parsePolicy(table: Mapping[str, object], where: str) -> Policy:
    """
    The policy keys of a C{[[port]]} or C{[defaults]} table (others are
    left to the caller).

    @raise ConfigError: naming the key path of a bad value.
    """
    values: dict[str, Any] = {}
    for key, attribute in KEYS.items():
        if key in table:
            values[attribute] = _PARSERS[key](table[key], f"{where}.{key}")
    return Policy(**values)


def drainTimeoutOf(policy: Policy) -> float:
    """
    The seconds a port's open connections get to finish when it is removed
    or the daemon stops: the policy's C{drain_timeout}, else
    L{DEFAULT_DRAIN_TIMEOUT}.  0 means they are closed at once.
    """
    if policy.drainTimeout is None:
        return DEFAULT_DRAIN_TIMEOUT
    return policy.drainTimeout


def networksText(networks: Sequence[Network]) -> str:
    """
    Networks as the configuration would write them.
    """
    return ", ".join(str(n) for n in networks)


def sharePolicy(policy: Policy, workers: int) -> Policy:
    """
    One worker's share of C{policy} when C{workers} processes serve the
    port: connection limits and rates divided among them (rounded up, so a
    limit never drops to 0), timeouts and access rules unchanged.
    """
    if workers <= 1:
        return policy

    def share(value: int | None) -> int | None:
        return None if value is None else max(1, math.ceil(value / workers))

    def shareRate(rate: Rate | None) -> Rate | None:
        if rate is None:
            return None
        return Rate(rate.perSecond / workers, max(1, math.ceil(rate.burst / workers)))

    return evolve(
        policy,
        maxConnections=share(policy.maxConnections),
        maxConnectionsPerIP=share(policy.maxConnectionsPerIP),
        rate=shareRate(policy.rate),
        ratePerIP=shareRate(policy.ratePerIP),
    )
