"""
The drain for a load balancer on the status port: the admin API's C{POST
/api/drain} and C{POST /api/undrain} (L{IDaemonDrain}), both answering 200
with C{{"draining", "since", "connections"}} (the state now and the
connections open on every port but status ports, which a rolling restart
waits on: C{multiport-ctl roll}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import server

from multiport.handlers.interface import DrainState, IDaemonDrain, IDaemonView
from multiport.status.site import JSON, Page

log = Logger(namespace="multiport.status.api")

#: The paths, and whether each drains (True) or ends the drain.
DRAIN_PATHS = {"/api/drain": True, "/api/undrain": False}


def openConnections(view: IDaemonView) -> int:
    """
    The connections open now on every port but status ports: those a
    load balancer sent, which a drain waits on.
    """
    total = 0
    for status in view.portStatus():
        if status.config.handler == "status":
            continue
        connections: Mapping[str, Any] = cast(
            Mapping[str, Any], status.counters["connections"]
        )
        total += int(connections["current"])
    return total


def drainJSON(state: DrainState, view: IDaemonView) -> dict[str, object]:
    """
    The answer to a drain or an undrain.
    """
    return {
        "draining": state.draining,
        "since": state.since,
        "connections": openConnections(view),
    }


#: An admin API call: the request, the daemon, the port's name if any.
DrainCall = Callable[[server.Request, object, str | None], Page | Deferred[Page]]


def drainCall(path: str) -> DrainCall:
    """
    The admin API call for C{path} (one of L{DRAIN_PATHS}): it drains or
    ends the drain of the daemon it is given, then answers with
    L{drainJSON}.
    """
    draining = DRAIN_PATHS[path]

    def call(
        request: server.Request, daemon: object, name: str | None
    ) -> Page | Deferred[Page]:
        if not (IDaemonDrain.providedBy(daemon) and IDaemonView.providedBy(daemon)):
            body = {"error": "this daemon can't drain"}
            return Page(404, JSON, json.dumps(body).encode() + b"\n")
        view = cast(IDaemonView, daemon)
        drainer = cast(IDaemonDrain, daemon)
        changed = drainer.drain() if draining else drainer.undrain()

        def answer(state: DrainState) -> Page:
            log.info(
                "{path} through the admin API from {peer}",
                path=path,
                peer=str(request.getClientAddress()),  # type: ignore[no-untyped-call]
            )
            body = json.dumps(drainJSON(state, view), indent=2).encode("utf-8")
            return Page(200, JSON, body + b"\n")

        return changed.addCallback(answer)

    return call
