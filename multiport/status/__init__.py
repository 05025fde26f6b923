"""
The status handler: one port that reports on the whole daemon.

It serves, over twisted.web:

    - C{/}: a live HTML dashboard (self-contained, polls C{/status});
    - C{/status}: every port's figures as JSON;
    - C{/metrics}: the same figures in the Prometheus text format;
    - C{/healthz}: 200 while every configured port listens, else 503;
    - C{/history}: the last minutes of per-port samples, for the dashboard.

This module stays import-light (twistd imports it while looking for
plugins): the site and its dependencies (C{prometheus_client}) are imported
when a status port is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiport.handlers.interface import Handler, HandlerContext

if TYPE_CHECKING:
    from multiport.status.site import StatusSite


def buildStatusSite(context: HandlerContext) -> StatusSite:
    """
    The twisted.web site of one status port.
    """
    from multiport.status.site import buildSite

    return buildSite(context)


status = Handler(
    "status",
    "daemon status: dashboard, JSON, Prometheus metrics, health check",
    buildStatusSite,
)

__all__ = ["buildStatusSite", "status"]
