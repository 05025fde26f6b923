"""
The pieces of C{--workers N} the main process keeps per worker: how many
workers, which ports they serve, each worker's slot and process, and the
sums of their counters.  The pool itself is L{multiport.daemon.pool}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from attrs import define, evolve, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.config.model import Config, PortConfig
from multiport.daemon.ipc import Channel
from multiport.daemon.logformat import emitLine, eventFromWorker
from multiport.errors import ConfigError
from multiport.handlers.interface import IHandler, PortStatus, servedByMainProcess
from multiport.ports.counters import CURRENT_COUNTERS, PortCounters
from multiport.ports.datagram import DatagramCounters

if TYPE_CHECKING:
    from multiport.daemon.pool import WorkerPool

log = Logger()
#: What workers write that is not one of their log events, after
#: "worker N: ", written once per reactor turn.
workerOutput = Logger(namespace="multiport.worker")

#: How often the main process asks the workers for their counters.
REFRESH_SECONDS = 1.0
#: Restart delays after a worker dies: doubling from the first to the last;
#: back to the first once a worker has run for RESET_AFTER seconds.
FIRST_RESTART = 0.5
LAST_RESTART = 30.0
RESET_AFTER = 60.0


def workerCount(value: str, cores: int | None = None) -> int:
    """
    C{--workers}: a whole number of at least 1, or C{auto} (one per core).

    @raise ConfigError: naming the bad value.
    """
    if value == "auto":
        return max(1, cores if cores is not None else (os.cpu_count() or 1))
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise ConfigError("--workers", f"expected 1 to 256 or auto, got {value!r}")
    return int(value)


#: The values of C{--worker-sockets}.
WORKER_SOCKETS = ("shared", "reuseport")


def workerSockets(value: str) -> str:
    """
    C{--worker-sockets}: C{shared} (one listening socket per port, every
    worker accepting on it) or C{reuseport} (an SO_REUSEPORT socket of its
    own per worker, for the ports configured at start).

    @raise ConfigError: naming the bad value.
    """
    if value not in WORKER_SOCKETS:
        raise ConfigError(
            "--worker-sockets", f"expected shared or reuseport, got {value!r}"
        )
    return value


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
    What the workers that exited had counted on one port, at their last
    report: kept so that the daemon's totals never go backwards.
    """

    counters: dict[str, object] = field(factory=dict)
    handlerCounters: HandlerCounts = field(factory=dict)

    def fold(self, status: PortStatus) -> None:
        """
        Add the last figures of a worker that exited: its connections still
        open are gone with it, so they count as closed, and its handler's
        counts of what is open now (L{CURRENT_COUNTERS}) are dropped.
        """
        counters = {
            key: dict(value) if isinstance(value, Mapping) else value
            for key, value in status.counters.items()
            if key != "listening_since"
        }
        connections = counters.get("connections")
        if isinstance(connections, dict):
            current = _number(connections.get("current", 0))
            connections["closed"] = _number(connections.get("closed", 0)) + current
            connections["current"] = 0
        _add(self.counters, counters)
        for key, value in status.handlerCounters.items():
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


@define
class Slot:
    """
    One worker: its process, its channel, and what it last reported.
    """

    index: int
    process: IProcessTransport | None = None
    channel: Channel | None = None
    pid: int | None = None
    ready: bool = False
    started: float = 0.0
    delay: float = FIRST_RESTART
    statuses: list[PortStatus] = field(factory=list)
    ended: Deferred[None] | None = None


class WorkerProcess(ProcessProtocol):
    """
    The main process's side of one worker process: its output is logged
    line by line with its number.  The worker writes its log events as
    L{workerRecord} lines, logged again here with their namespace, level
    and fields (L{eventFromWorker}); anything else it writes (Python's own
    last words) is logged as it is, in the C{multiport.worker} namespace.
    """

    def __init__(self, pool: WorkerPool, slot: Slot) -> None:
        self.pool = pool
        self.slot = slot
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        index = self.slot.index
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if not text:
                continue
            event = eventFromWorker(text, index) if childFD == 1 else None
            if event is not None:
                workerOutput.observer(event)
            else:
                emitLine(workerOutput, f"worker {index}: {text}", worker=index)

    def processEnded(self, reason: Failure) -> None:
        self.pool.workerEnded(self.slot, reason)


def split(config: Config, handlers: Mapping[str, IHandler]) -> tuple[Config, Config]:
    """
    The workers' ports and the main process's own: those whose handler is
    L{servedByMainProcess} (the status port).
    """
    own = tuple(p for p in config.ports if mainProcessPort(p, handlers))
    workers = tuple(p for p in config.ports if p not in own)
    return (
        Config(workers, config.stateDir, config.acme),
        Config(own, config.stateDir, config.acme),
    )


def mainProcessPort(port: PortConfig, handlers: Mapping[str, IHandler]) -> bool:
    """
    Whether C{port} runs in the main process under C{--workers}.
    """
    return servedByMainProcess(handlers.get(port.handler))


__all__ = [
    "Retired",
    "Slot",
    "WorkerProcess",
    "mergeStatuses",
    "split",
    "workerCount",
]
