"""
Where a connection is admitted: L{Admission} applies a port's L{Policy}
(access rules, connection limits, rates, per client address or /64) and
the daemon's descriptor limit (L{DaemonLimit}) to each new connection,
before the handler or TLS sees it.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from attrs import define, field
from twisted.internet.interfaces import IAddress, IReactorTime

from multiport.ports.policies import Address, Policy, Rate

#: Per-address rate buckets kept at most, and the table size at which full
#: ones are first forgotten.
MAX_BUCKETS = 65536
MIN_PRUNE = 4096

#: IPv6 clients are grouped by /64 for per-address limits and rates: one
#: subscriber usually gets a whole /64, so per-address limits on single
#: IPv6 addresses would be trivial to evade.
IPV6_GROUP = 64


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
