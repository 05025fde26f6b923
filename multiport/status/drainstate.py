"""
The daemon's drain for its load balancer as the status port reports it:
the C{drain} object of C{/status} and the C{multiport_balancer_draining}
gauge of C{/metrics}.
"""

from __future__ import annotations

from multiport.handlers.interface import DrainState, IDaemonDrain, IDaemonView


def drainStateOf(view: IDaemonView) -> DrainState:
    """
    The daemon's drain, not drained for a view that can't drain.
    """
    drainer = IDaemonDrain(view, None)
    return DrainState() if drainer is None else drainer.drainState()


def drainReport(view: IDaemonView) -> dict[str, object]:
    """
    The C{drain} object of C{/status}.
    """
    state = drainStateOf(view)
    return {"draining": state.draining, "since": state.since}
