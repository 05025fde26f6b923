"""
What a live change does, decided in one place: L{plan} compares the
running ports with the wanted configuration and sorts them into added,
removed, changed and unchanged.  It is pure (no sockets, no services), so
the single process and the worker pool's main process decide alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from attrs import frozen

from multiport.config.model import PortConfig
from multiport.handlers.interface import ChangeSummary


class Named(Protocol):
    """
    A running port as a plan holds it: anything with a name (a port
    service, or the worker pool's reference to a port).
    """

    @property
    def name(self) -> str | None: ...


T = TypeVar("T", bound=Named)


@frozen
class Plan(Generic[T]):
    """
    What one live change does: ports to add, to remove (they drain), to
    change in place (new settings for new connections, same socket) and
    those left alone.

    @ivar kept: Each wanted port that keeps a running one's socket, in the
        wanted order, with that running port.
    """

    add: tuple[PortConfig, ...] = ()
    remove: tuple[T, ...] = ()
    change: tuple[tuple[T, PortConfig], ...] = ()
    unchanged: tuple[T, ...] = ()
    kept: tuple[tuple[PortConfig, T], ...] = ()

    def summary(self) -> ChangeSummary:
        """
        The names each part touches, for logs and the admin API.
        """
        return {
            "added": [c.name for c in self.add],
            "removed": [s.name for s in self.remove],
            "changed": [s.name for s, _ in self.change],
            "unchanged": len(self.unchanged),
        }


def _never(running: object, wanted: PortConfig) -> bool:
    return False


def plan(
    running: Sequence[tuple[T, PortConfig]],
    wanted: Sequence[PortConfig],
    renewed: Callable[[T, PortConfig], bool] = _never,
) -> Plan[T]:
    """
    What it takes to go from the C{running} ports (each with its
    configuration as given: port 0 stays 0) to the C{wanted} ones.  A port
    is the same port when its address and number are (port 0 entries:
    when their whole configuration is); it is unchanged when its
    configuration is equal and C{renewed} (a new certificate, say) is
    false for it.
    """
    byAddress = {(c.protocol, c.interface, c.port): s for s, c in running if c.port}
    configOf = {id(s): c for s, c in running}
    anyPort = [s for s, c in running if c.port == 0]
    add: list[PortConfig] = []
    change: list[tuple[T, PortConfig]] = []
    unchanged: list[T] = []
    kept: list[tuple[PortConfig, T]] = []
    matched: set[int] = set()
    for new in wanted:
        if new.port == 0:
            same = next(
                (
                    s
                    for s in anyPort
                    if id(s) not in matched
                    and configOf[id(s)] == new
                    and not renewed(s, new)
                ),
                None,
            )
            if same is None:
                add.append(new)
            else:
                matched.add(id(same))
                unchanged.append(same)
                kept.append((new, same))
            continue
        server = byAddress.get((new.protocol, new.interface, new.port))
        if server is None:
            add.append(new)
            continue
        matched.add(id(server))
        kept.append((new, server))
        if configOf[id(server)] == new and not renewed(server, new):
            unchanged.append(server)
        else:
            change.append((server, new))
    remove = [s for s, _ in running if id(s) not in matched]
    return Plan(tuple(add), tuple(remove), tuple(change), tuple(unchanged), tuple(kept))


def overlaps(a: PortConfig, b: PortConfig) -> bool:
    """
    Whether C{a} and C{b} claim the same protocol, address and port number
    (a wildcard address covers its whole family).
    """
    if a.port == 0 or a.port != b.port or a.ipv6 != b.ipv6 or a.protocol != b.protocol:
        return False
    wildcard = "::" if a.ipv6 else "0.0.0.0"
    return a.interface == b.interface or wildcard in (a.interface, b.interface)


def claims(a: PortConfig, b: PortConfig) -> bool:
    """
    Whether C{a} takes C{b}'s place: the same address and number, or an
    overlapping one.
    """
    return (a.protocol, a.interface, a.port) == (
        b.protocol,
        b.interface,
        b.port,
    ) or overlaps(a, b)


class Blockers(Generic[T]):
    """
    The ports a plan removes that hold the number a new port wants (an
    overlapping address): that new port can only bind once they closed.
    Linear in the number of ports.
    """

    def __init__(self, removed: Sequence[tuple[T, PortConfig]]) -> None:
        self._byNumber: dict[tuple[str, int, bool], list[tuple[T, PortConfig]]] = {}
        for handle, config in removed:
            if config.port:
                key = (config.protocol, config.port, config.ipv6)
                self._byNumber.setdefault(key, []).append((handle, config))

    def of(self, new: PortConfig) -> list[T]:
        """
        The removed ports C{new} overlaps.
        """
        key = (new.protocol, new.port, new.ipv6)
        return [h for h, c in self._byNumber.get(key, ()) if overlaps(new, c)]


__all__ = ["Blockers", "Plan", "claims", "overlaps", "plan"]
