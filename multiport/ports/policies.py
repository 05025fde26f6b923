"""
Per-port connection policies: limits, rates, access rules and timeouts.

The model (L{Policy}) is read from the configuration file's C{[[port]]} and
C{[defaults]} tables; L{Admission} applies it to each new connection before
the handler (and before TLS) sees it; the per-port wrapper applies the
timeouts.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attrs import define, evolve, field, fields, frozen
from twisted.internet.interfaces import IAddress, IReactorTime

from multiport.errors import ConfigError, typeName

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Per-address rate buckets kept at most, and the table size at which full
#: ones are first forgotten.
MAX_BUCKETS = 65536
MIN_PRUNE = 4096

#: IPv6 clients are grouped by /64 for per-address limits and rates: one
#: subscriber usually gets a whole /64, so per-address limits on single
#: IPv6 addresses would be trivial to evade.
IPV6_GROUP = 64

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


def clientAddress(address: IAddress) -> Address | None:
    """
    The client's IP address, IPv4-mapped IPv6 addresses as IPv4.
    """
    host = getattr(address, "host", None)
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def clientGroup(ip: Address) -> object:
    """
    The key per-address limits and rates count under: the IPv4 address, or
    the IPv6 /64.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        return ipaddress.IPv6Network(
            (int(ip) >> (128 - IPV6_GROUP) << (128 - IPV6_GROUP), IPV6_GROUP)
        )
    return ip


@define
class TokenBucket:
    """
    A token bucket on the injected clock.
    """

    rate: Rate
    clock: IReactorTime
    tokens: float = 0.0
    updated: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.tokens = float(self.rate.burst)
        self.updated = self.clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(
            float(self.rate.burst),
            self.tokens + (now - self.updated) * self.rate.perSecond,
        )
        self.updated = now

    def take(self) -> bool:
        """
        Take a token if there is one.
        """
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self) -> bool:
        """
        Whether the bucket has refilled completely (it can be forgotten).
        """
        self._refill()
        return self.tokens >= self.rate.burst


class SpareDescriptors(Protocol):
    """
    Descriptors held for reuse that can be closed when a connection needs
    them (the splice pipe pool's kept pipes).
    """

    def reclaim(self, descriptors: int) -> int:
        """
        Close what is kept until C{descriptors} are freed or nothing is
        kept; the descriptors freed.
        """


@define
class DaemonLimit:
    """
    The file descriptors every port's connections together may hold:
    derived from the file descriptor limit, so that accepting never runs
    the process out of descriptors.  A connection costs what its handler
    declares (one socket; a relayed connection two, with its upstream's),
    and the splice pipes in use or kept for reuse two each.

    So that a flood on one port can't take every descriptor from the
    others, each port is sure of a fair share (C{maximum / ports}); beyond
    it a port may borrow what is free, except a quarter of the maximum kept
    for ports still below their share.  Pipes are only lent from what may
    be borrowed, never from that quarter.

    @ivar current: The descriptors held now, by connections and pipes.
    @ivar spare: Where kept descriptors can be closed to make room.
    """

    maximum: int
    ports: int = 1
    current: int = 0
    spare: SpareDescriptors | None = None

    @property
    def share(self) -> int:
        """
        The descriptors each port is sure of.
        """
        return self.maximum // max(1, self.ports)

    def _borrowable(self) -> int:
        return self.maximum - self.maximum // 4

    def _room(self, cost: int, ceiling: int) -> bool:
        """
        Whether C{cost} more descriptors fit under C{ceiling}, once kept
        ones are closed if that is what it takes.
        """
        over = self.current + cost - ceiling
        if over > 0 and self.spare is not None:
            self.spare.reclaim(over)
            over = self.current + cost - ceiling
        return over <= 0

    def admits(self, portDescriptors: int, cost: int = 1) -> bool:
        """
        Whether a port whose connections hold C{portDescriptors} may take
        a connection costing C{cost} more.
        """
        if not self._room(cost, self.maximum):
            return False
        if portDescriptors + cost <= max(cost, self.share):
            return True
        return self._room(cost, self._borrowable())

    def lend(self, count: int) -> bool:
        """
        Lend C{count} descriptors for something other than a connection (a
        splice pipe), only out of what ports may borrow; whether they were.
        """
        if self.current + count > self._borrowable():
            return False
        self.current += count
        return True

    def giveBack(self, count: int) -> None:
        """
        C{count} descriptors lent by L{lend} are closed.
        """
        self.current -= count

    @classmethod
    def fromFileLimit(cls, listening: int, reserve: int = 64) -> DaemonLimit:
        """
        Raise the soft file-descriptor limit to the hard one (as nginx's
        C{worker_rlimit_nofile} or Go's runtime do) and keep C{reserve}
        descriptors, plus one per listening port, for everything else (the
        reactor's own, log files, certificates, a connection accepted only
        to be turned away).
        """
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, 1 << 20)
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        return cls(maximum=max(1, soft - listening - reserve), ports=max(1, listening))


@define
class Admission:
    """
    Decides, per new connection, whether a port lets it in; keeps the
    per-address counts and rate buckets that takes.

    @ivar descriptors: The descriptors the port's admitted connections
        hold (its part of the daemon limit).
    """

    policy: Policy
    clock: IReactorTime
    daemon: DaemonLimit | None = None
    perAddress: dict[object, int] = field(factory=dict)
    descriptors: int = 0
    _bucket: TokenBucket | None = None
    _buckets: dict[object, TokenBucket] = field(factory=dict)
    _needsAddress: bool = field(init=False, default=False)
    _pruneAt: int = field(init=False, default=4096)

    def __attrs_post_init__(self) -> None:
        policy = self.policy
        if policy.rate is not None:
            self._bucket = TokenBucket(policy.rate, self.clock)
        self._needsAddress = bool(
            policy.allow
            or policy.deny
            or policy.maxConnectionsPerIP is not None
            or policy.ratePerIP is not None
        )

    def admit(self, address: IAddress, current: int, cost: int = 1) -> str | None:
        """
        C{None} to let the connection in (it is then counted until
        L{release}), else the reason it is turned away.

        @param current: The port's connections now.
        @param cost: The descriptors the connection will hold (its
            handler's L{descriptorsPerConnection}).
        """
        policy = self.policy
        ip = clientAddress(address) if self._needsAddress else None
        if ip is not None and (policy.deny or policy.allow is not None):
            if policy.deny and any(ip in network for network in policy.deny):
                return "access"
            if policy.allow and not any(ip in network for network in policy.allow):
                return "access"
        daemon = self.daemon
        if daemon is not None and not daemon.admits(self.descriptors, cost):
            return "max_connections"
        if policy.maxConnections is not None and current >= policy.maxConnections:
            return "max_connections"
        group = clientGroup(ip) if ip is not None else None
        if policy.maxConnectionsPerIP is not None and group is not None:
            if self.perAddress.get(group, 0) >= policy.maxConnectionsPerIP:
                return "max_connections_per_ip"
        if self._bucket is not None and not self._bucket.take():
            return "rate"
        if policy.ratePerIP is not None and group is not None:
            bucket = self._buckets.get(group)
            if bucket is None:
                if len(self._buckets) >= self._pruneAt:
                    self._forgetFullBuckets()
                if len(self._buckets) >= MAX_BUCKETS:
                    # Full of clients still limited: the oldest goes (it
                    # merely gets a fresh burst if it comes back).
                    del self._buckets[next(iter(self._buckets))]
                bucket = self._buckets[group] = TokenBucket(
                    policy.ratePerIP, self.clock
                )
            if not bucket.take():
                return "rate"
        if group is not None and policy.maxConnectionsPerIP is not None:
            self.perAddress[group] = self.perAddress.get(group, 0) + 1
        self.descriptors += cost
        if daemon is not None:
            daemon.current += cost
        return None

    def release(self, address: IAddress, cost: int = 1) -> None:
        """
        A connection L{admit} let in, with the same C{cost}, has ended.
        """
        self.descriptors -= cost
        if self.daemon is not None:
            self.daemon.current -= cost
        if self.policy.maxConnectionsPerIP is None:
            return
        ip = clientAddress(address)
        if ip is None:
            return
        group = clientGroup(ip)
        count = self.perAddress.get(group, 0) - 1
        if count > 0:
            self.perAddress[group] = count
        else:
            self.perAddress.pop(group, None)

    def _forgetFullBuckets(self) -> None:
        # A full bucket is the same as no bucket: forget those.  The scan
        # runs again only once the table has doubled, so its cost per new
        # client stays constant.
        for key in [k for k, b in self._buckets.items() if b.full()]:
            del self._buckets[key]
        self._pruneAt = max(MIN_PRUNE, 2 * len(self._buckets))


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
