"""
The status handler: one port that reports on the whole daemon.

It serves, over twisted.web:

    - C{/}: a live HTML dashboard (self-contained, polls C{/status});
    - C{/status}: every port's figures as JSON;
    - C{/metrics}: the same figures in the Prometheus text format;
    - C{/healthz}: 200 while every configured port listens, else 503;
    - C{/history}: the last minutes of per-port samples, for the dashboard.

Its one option, C{allowed_hosts}, lists the host names besides
C{localhost} that requests may name in C{Host} (an IP address always may):
any other name is answered 421, so that a web page whose name was made to
resolve to 127.0.0.1 (DNS rebinding) can't read the port.

This module stays import-light (twistd imports it while looking for
plugins): the site and its dependencies (C{prometheus_client}) are imported
when a status port is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from attrs import frozen

from multiport.errors import typeName
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    OptionError,
    rejectUnknown,
)

if TYPE_CHECKING:
    from multiport.status.site import StatusSite


#: A host name as C{Host} may carry it: labels of letters, digits and
#: hyphens.
_HOST_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


@frozen
class StatusOptions:
    """
    A status port's options.

    @ivar allowedHosts: Host names, lower case, that requests may name
        besides C{localhost} and IP addresses.
    """

    allowedHosts: frozenset[str] = frozenset()


def parseStatusOptions(options: Mapping[str, object], relativeTo: Path) -> object:
    """
    Validate a status port's options (C{allowed_hosts}, a list of names).

    @raise OptionError: naming the key and the bad value.
    """
    rejectUnknown(options, {"allowed_hosts"})
    names = options.get("allowed_hosts", [])
    if not isinstance(names, list):
        raise OptionError(
            "allowed_hosts",
            f"expected an array of host names, got {typeName(names)} {names!r}",
        )
    allowed = set()
    for name in names:
        text = name.lower().rstrip(".") if isinstance(name, str) else None
        if text is None or len(text) > 253 or not _HOST_NAME.fullmatch(text):
            raise OptionError("allowed_hosts", f"{name!r} is not a host name")
        allowed.add(text)
    return StatusOptions(frozenset(allowed))


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
    parse=parseStatusOptions,
    servedByMainProcess=True,
)

__all__ = ["StatusOptions", "buildStatusSite", "parseStatusOptions", "status"]
