"""
The upgrade, seen from the daemon being started (L{multiport.daemon.tap}):
it can be upgraded itself (C{POST /api/upgrade}), and when it is an
upgrade's new daemon it carries the old one's totals and live ports on and
tells the old one once it serves every port.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, MutableMapping, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from multiport.daemon.handover import Handover, carriedTotals, reportReady
from multiport.daemon.notify import NotifyService
from multiport.daemon.pool import WorkerPool
from multiport.daemon.service import PortsService
from multiport.daemon.upgrade import Upgrader
from multiport.handlers.interface import PortStatus
from multiport.io.reactortype import ReactorLike


def prepareUpgrades(
    service: PortsService | WorkerPool,
    reactor: ReactorLike,
    timeout: float,
    twistdOptions: MutableMapping[str, object] | None,
    notify: NotifyService,
    taken: tuple[socket.socket, Handover, dict[str, int]] | None,
) -> None:
    """
    Let C{service} be upgraded; if it is itself an upgrade's new daemon
    (C{taken}: the handover socket, what came over it, the sockets), carry
    the old one's totals and live ports over and tell the old one once
    every port listens (with workers: once every worker serves).

    @param twistdOptions: twistd's own options (its pid file), if any.
    """

    def pidfile() -> str | None:
        if twistdOptions is None:
            return None
        path = twistdOptions.get("pidfile")
        return path if isinstance(path, str) else None

    def forgetPidfile() -> None:
        # twistd removes its pid file at exit: by then it is the new one's.
        if twistdOptions is not None:
            twistdOptions["pidfile"] = ""

    service.upgrader = Upgrader(
        reactor,
        # The same command line: the code now on disk is what runs.
        [sys.executable, *sys.orig_argv[1:]],
        timeout,
        notifyMainPid=notify.handOver,
        pidfile=pidfile,
        forgetPidfile=forgetPidfile,
    )
    if taken is None:
        return
    channel, handover, _ = taken

    def carry(statuses: Sequence[PortStatus]) -> None:
        totals = carriedTotals(statuses)
        service.carried = totals
        if isinstance(service, WorkerPool):
            service.status.carried = totals

    carry(handover.statuses)
    # The status pages answer once the old daemon accepts nothing more.
    settled: Deferred[None] = Deferred()
    service.countsSettled = settled
    if isinstance(service, WorkerPool):
        # The status port is the main process's own service.
        status = service.status
        status.addedLive.update(
            name for name in handover.addedLive if name in status.namedServices
        )
        service.addedLive.update(handover.addedLive - status.addedLive)
        serving: Callable[[], Deferred[None] | None] = service.whenServing
    else:
        service.addedLive.update(handover.addedLive)
        serving = lambda: None  # noqa: E731 (every port listens once started)
    ReportReady(
        lambda: reportReady(reactor, channel, os.getpid(), carry, settled), serving
    ).setServiceParent(service)  # type: ignore[no-untyped-call]


class ReportReady(Service):
    """
    Calls C{report} once started and C{serving} has fired (every port
    listens then).
    """

    def __init__(
        self, report: Callable[[], object], serving: Callable[[], Deferred[None] | None]
    ) -> None:
        self.report = report
        self.serving = serving

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        waiting = self.serving()
        if waiting is None:
            self.report()
        else:
            waiting.addCallback(lambda _: self.report())
