"""
Counter snapshots added up: one port's figures over the workers that serve
it (L{mergeStatuses}), and over the processes that served it before
(L{Retired}: workers that exited, or the daemon an upgrade replaced), so
that the daemon's totals never go backwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import define, evolve, field

from multiport.config.model import PortConfig
from multiport.handlers.interface import PortStatus
from multiport.ports.counters import CURRENT_COUNTERS, PortCounters
from multiport.ports.datagramcounters import DatagramCounters

#: Gauges in a counters snapshot: what a process that is gone no longer
#: has open, so never carried over.
_GAUGES = frozenset({"sessions"})


#: A handler's published counters: (name, labels) to a count.
HandlerCounts = dict[tuple[str, tuple[tuple[str, str], ...]], int]


def _number(value: object) -> int | float:
    return value if isinstance(value, int | float) else 0


def _add(total: dict[str, object], more: Mapping[str, object]) -> None:
    """
    Add the counters snapshot C{more} into C{total}: numbers are summed,
    tables added key by key, the earliest C{listening_since} kept.
    """
    for key, value in more.items():
        if isinstance(value, Mapping):
            inner = total.setdefault(key, {})
            assert isinstance(inner, dict), f"{key} is a table in every snapshot"
            _add(inner, value)
        elif key == "listening_since":
            if value is not None:
                previous = total.get(key)
                total[key] = (
                    value
                    if previous is None
                    else min(_number(previous), _number(value))
                )
            else:
                total.setdefault(key, None)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = _number(total.get(key, 0)) + value
        else:
            total.setdefault(key, value)


def mergeStatuses(
    name: str, config: PortConfig, parts: Sequence[PortStatus]
) -> PortStatus:
    """
    One port's status summed over the workers' C{parts}.
    """
    counters: dict[str, object] = {}
    _add(
        counters,
        DatagramCounters().snapshot() if config.datagram else PortCounters().snapshot(),
    )
    handlerCounters: HandlerCounts = {}
    for part in parts:
        _add(counters, part.counters)
        for key, value in part.handlerCounters.items():
            handlerCounters[key] = handlerCounters.get(key, 0) + value
    expiries = [p.certificateExpiry for p in parts if p.certificateExpiry is not None]
    return PortStatus(
        name=name,
        config=config,
        listening=any(p.listening for p in parts),
        counters=counters,
        handlerCounters=handlerCounters,
        certificateExpiry=min(expiries) if expiries else None,
        acme=next((p.acme for p in parts if p.acme is not None), None),
        draining=bool(parts) and all(p.draining for p in parts),
    )


@define
class Retired:
    """
    What the processes that served one port before had counted (workers
    that exited, at their last report; the daemon an upgrade replaced, at
    the handover): kept so that the daemon's totals never go backwards.
    """

    counters: dict[str, object] = field(factory=dict)
    handlerCounters: HandlerCounts = field(factory=dict)

    def fold(self, status: PortStatus) -> None:
        """
        Add the last figures of a process that is gone (or going): its
        connections still open are gone with it, so they count as closed,
        and its relay sessions are no longer open here.
        """
        counters = {
            key: dict(value) if isinstance(value, Mapping) else value
            for key, value in status.counters.items()
            if key != "listening_since" and key not in _GAUGES
        }
        connections = counters.get("connections")
        if isinstance(connections, dict):
            current = _number(connections.get("current", 0))
            connections["closed"] = _number(connections.get("closed", 0)) + current
            connections["current"] = 0
        _add(self.counters, counters)
        for key, value in status.handlerCounters.items():
            # A handler's counts of what is open now (HTTP/2 streams...)
            # are gone with the process.
            if key[0] not in CURRENT_COUNTERS:
                self.handlerCounters[key] = self.handlerCounters.get(key, 0) + value

    def addedTo(self, status: PortStatus) -> PortStatus:
        """
        C{status} with these figures added.
        """
        counters: dict[str, object] = {}
        _add(counters, status.counters)
        _add(counters, self.counters)
        handlerCounters = dict(status.handlerCounters)
        for key, value in self.handlerCounters.items():
            handlerCounters[key] = handlerCounters.get(key, 0) + value
        return evolve(status, counters=counters, handlerCounters=handlerCounters)


__all__ = ["HandlerCounts", "Retired", "mergeStatuses"]
