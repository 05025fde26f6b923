"""
Draining for a load balancer (L{IDaemonDrain}): a flag the status port's
C{/healthz} reads.  It closes nothing and stops no port: the balancer's
health check sees 503 C{draining} and sends its new connections elsewhere,
while the connections it already made here finish.  The flag lives where
the status port is served (the main process under C{--workers}), so the
workers need not know.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from multiport.handlers.interface import DrainState
from multiport.io.reactortype import ReactorLike

log = Logger()


class BalancerDrain:
    """
    The drain flag and its two changes; a mixin of the daemon's service
    (L{multiport.daemon.service.PortsService}, or the worker pool), which
    must provide C{_reactor}.
    """

    _reactor: ReactorLike
    _drainState = DrainState()

    def drainState(self) -> DrainState:
        """
        Whether the daemon is drained, and since when.
        """
        return self._drainState

    def drain(self) -> Deferred[DrainState]:
        """
        From now on C{/healthz} answers 503 C{draining}; every port keeps
        serving.
        """
        if not self._drainState.draining:
            self._drainState = DrainState(True, self._reactor.seconds())
            log.info(
                "draining for the load balancer: /healthz answers 503 draining, "
                "every port keeps serving"
            )
        return succeed(self._drainState)

    def undrain(self) -> Deferred[DrainState]:
        """
        C{/healthz} answers as before the drain.
        """
        if self._drainState.draining:
            self._drainState = DrainState()
            log.info("drain ended: /healthz answers as usual again")
        return succeed(self._drainState)
