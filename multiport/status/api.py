"""
The admin API on the status port: the running daemon's ports, read and
changed over HTTP with JSON.

    - C{GET /api/ports}: every port's configuration and counters;
    - C{POST /api/ports}: add a port (a C{[[port]]} table as JSON), 201;
    - C{GET|PUT|DELETE /api/ports/NAME}: one port; change it in place;
      remove it (202: it drains);
    - C{POST /api/reload}: as SIGHUP;
    - C{POST /api/drain}, C{POST /api/undrain}: C{/healthz} answers 503
      C{draining} for a load balancer, or no longer (L{drainapi}).
    - C{POST /api/upgrade}: start a new daemon and hand the ports over.

Every call needs C{Authorization: Bearer TOKEN} (the admin token, see
L{multiport.status.admintoken}).  Errors are JSON C{{"error": "..."}}: 400
for bad input, 401 without the token, 404 for an unknown port, 409 for an
address in use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from multiport.errors import ConfigError, ReconcileError, ReloadUnavailable
from multiport.handlers.interface import (
    ChangeSummary,
    IDaemonControl,
    IDaemonView,
    PortRef,
    PortStatus,
)
from multiport.status.drainapi import DRAIN_PATHS, drainCall
from multiport.status.site import JSON, MAX_BODY, Page

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

log = Logger()


def errorPage(
    code: int,
    message: str,
    headers: Mapping[bytes, bytes] | None = None,
    **extra: object,
) -> Page:
    """
    A JSON error answer: C{{"error": message}} and any C{extra} fields.
    """
    body = json.dumps({"error": message, **extra}, indent=2).encode("utf-8")
    return Page(code, JSON, body + b"\n", dict(headers or {}))


def answer(
    code: int, value: object, headers: Mapping[bytes, bytes] | None = None
) -> Page:
    """
    C{value} as an indented JSON answer.
    """
    body = json.dumps(value, indent=2).encode("utf-8") + b"\n"
    return Page(code, JSON, body, dict(headers or {}))


def portJSON(status: PortStatus) -> dict[str, object]:
    """
    One port as the API shows it.
    """
    config = status.config
    counters: Mapping[str, Any] = status.counters
    traffic = counters["bytes"]
    number = status.name.rpartition(":")[2]
    figures: dict[str, object]
    if config.datagram:
        datagrams = counters["datagrams"]
        figures = {
            "datagramsReceived": datagrams["received"],
            "datagramsSent": datagrams["sent"],
            "dropped": datagrams["dropped"],
            "sessions": counters["sessions"],
        }
    else:
        connections = counters["connections"]
        figures = {
            "accepted": connections["accepted"],
            "current": connections["current"],
            "closed": connections["closed"],
            "rejected": connections["rejected"],
        }
    return {
        "name": status.name,
        "interface": config.interface,
        "port": int(number) if number.isdigit() else config.port,
        "handler": config.handler,
        "protocol": config.protocol,
        "tls": config.tls is not None,
        "backlog": config.backlog,
        "listening": status.listening,
        "draining": status.draining,
        "where": config.where,
        "counters": {
            **figures,
            "bytesReceived": traffic["received"],
            "bytesSent": traffic["sent"],
        },
    }


class _Daemon(Protocol):
    """
    What the admin API is given: a daemon providing both L{IDaemonView}
    and L{IDaemonControl} (zope interfaces, which a type can't intersect:
    this names the pair's methods for the type checker).
    """

    def portStatus(self) -> list[PortStatus]: ...

    def checkToken(self, token: str) -> bool: ...

    def addPort(self, table: Mapping[str, object]) -> Deferred[PortRef]: ...

    def changePort(
        self,
        name: str,
        table: Mapping[str, object],
        servingFrom: IAddress | None = None,
    ) -> Deferred[PortRef]: ...

    def removePort(
        self, name: str, servingFrom: IAddress | None = None
    ) -> Deferred[int]: ...

    def reload(self) -> Deferred[ChangeSummary]: ...

    def upgrade(self) -> Deferred[dict[str, int]]: ...


#: One API call's method: the request, the daemon, the port's name if the
#: path has one.
_Call = Callable[[server.Request, _Daemon, str | None], Page | Deferred[Page]]


class AdminAPI:
    """
    Answers the C{/api/} paths of a status port.
    """

    def __init__(self, view: Callable[[], IDaemonView]) -> None:
        self._view = view

    def page(self, request: server.Request) -> Page | Deferred[Page]:
        """
        The answer to C{request}, whose path starts with C{/api}.
        """
        path = request.path.decode("latin-1")
        method = request.method.decode("latin-1")
        allowed: dict[str, _Call]
        name: str | None
        if path == "/api/ports":
            allowed = {"GET": self.listPorts, "POST": self.addPort}
            name = None
        elif path.startswith("/api/ports/"):
            name = unquote(path[len("/api/ports/") :])
            allowed = {"GET": self.onePort, "PUT": self.changePort}
            allowed["DELETE"] = self.removePort
        elif path == "/api/reload":
            allowed = {"POST": self.reload}
            name = None
        elif path in DRAIN_PATHS:
            allowed = {"POST": drainCall(path)}
            name = None
        elif path == "/api/upgrade":
            allowed = {"POST": self.upgrade}
            name = None
        else:
            return errorPage(404, f"no such API path {path!r}")
        if method == "HEAD" and "GET" in allowed:
            method = "GET"
        handler = allowed.get(method)
        if handler is None:
            return errorPage(
                405,
                f"{method} is not allowed on {path}",
                {b"allow": ", ".join(allowed).encode("ascii")},
            )
        view = self._view()
        if not IDaemonControl.providedBy(view):
            return errorPage(404, "this daemon has no admin API")
        control = cast(_Daemon, view)
        # Reads too: the ports' configuration names files and addresses.
        refusal = self._authorize(request, control)
        if refusal is not None:
            return refusal
        return self._outcome(lambda: handler(request, control, name), name)

    def _outcome(
        self, call: Callable[[], Page | Deferred[Page]], name: str | None
    ) -> Page | Deferred[Page]:
        """
        C{call()}'s page, or the error page for what it raised; a
        L{Deferred} of either for a change (applied at once in one
        process, later in every worker process).
        """
        try:
            result = call()
        except Exception as e:
            return self._error(e, name)
        if not isinstance(result, Deferred):
            return result

        def failed(reason: Failure) -> Page:
            error = reason.value
            assert error is not None, "a failure has its exception"
            return self._error(error, name)

        page = result.addErrback(failed)
        # A change this process applied has its answer already: answer now
        # (with a Content-Length), not on a later write.
        ready: list[Page] = []

        def keep(answer: Page) -> Page:
            ready.append(answer)
            return answer

        page.addCallback(keep)
        return ready[0] if ready else page

    def _error(self, error: BaseException, name: str | None) -> Page:
        if isinstance(error, _TooLarge):
            return errorPage(413, f"the body is larger than {MAX_BODY} bytes")
        if isinstance(error, KeyError):
            return errorPage(404, f"no port named {name!r}")
        if isinstance(error, ConfigError):
            return errorPage(400, str(error), field=error.where)
        if isinstance(error, ReconcileError):
            return errorPage(409 if error.conflict else 400, error.message)
        if isinstance(error, ReloadUnavailable):
            return errorPage(409, str(error))
        log.failure("admin API: the change failed", Failure(error, type(error), None))  # type: ignore[no-untyped-call]
        return errorPage(500, f"the change failed: {error}")

    def _authorize(self, request: server.Request, control: _Daemon) -> Page | None:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not control.checkToken(token.strip()):
            log.warn(
                "admin API: refused {method} {path} from {peer}: missing or wrong "
                "token",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                peer=str(request.getClientAddress()),  # type: ignore[no-untyped-call]
            )
            return errorPage(
                401,
                "missing or wrong admin token: send 'Authorization: Bearer TOKEN' "
                "with the token given by --admin-token-file or "
                "MULTIPORT_ADMIN_TOKEN, or else made in the state directory's "
                "admin-token file",
                {b"www-authenticate": b"Bearer"},
            )
        return None

    def _body(self, request: server.Request, where: str) -> dict[str, object]:
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise _TooLarge()
        content = request.content
        data = content.read(MAX_BODY + 1) if content is not None else b""
        if len(data) > MAX_BODY:
            raise _TooLarge()
        try:
            value = json.loads(data.decode("utf-8"), object_pairs_hook=_uniqueKeys)
        except _DuplicateKey as e:
            raise ConfigError(
                f"{where}.{e.key}", f"the key {e.key!r} is given twice"
            ) from None
        except RecursionError:
            raise ConfigError(where, "the body is nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise ConfigError(where, f"the body is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise ConfigError(
                where, "the body must be a JSON object (a [[port]] table)"
            )
        return value

    def _status(self, view: _Daemon, name: str) -> PortStatus | None:
        return next((s for s in view.portStatus() if s.name == name), None)

    def listPorts(
        self, request: server.Request, view: _Daemon, name: str | None
    ) -> Page:
        return answer(200, {"ports": [portJSON(s) for s in view.portStatus()]})

    def onePort(self, request: server.Request, view: _Daemon, name: str | None) -> Page:
        assert name is not None, "/api/ports/NAME"
        status = self._status(view, name)
        if status is None:
            return errorPage(404, f"no port named {name!r}")
        return answer(200, portJSON(status))

    def addPort(
        self, request: server.Request, view: _Daemon, name: str | None
    ) -> Deferred[Page]:
        table = self._body(request, "POST /api/ports")

        def added(port: PortRef) -> Page:
            location = b"/api/ports/" + quote(port.name, "").encode()
            return answer(
                201, {"name": port.name, "port": port.port}, {b"location": location}
            )

        return view.addPort(table).addCallback(added)

    def changePort(
        self, request: server.Request, view: _Daemon, name: str | None
    ) -> Deferred[Page]:
        assert name is not None, "/api/ports/NAME"
        table = self._body(request, f"PUT /api/ports/{name}")

        def changed(port: PortRef) -> Page:
            log.info("changed {name} through the admin API", name=name)
            return answer(200, {"name": port.name})

        return view.changePort(name, table, request.getHost()).addCallback(changed)  # type: ignore[no-untyped-call]

    def removePort(
        self, request: server.Request, view: _Daemon, name: str | None
    ) -> Deferred[Page]:
        assert name is not None, "/api/ports/NAME"

        def removed(draining: int) -> Page:
            log.info("removed {name} through the admin API", name=name)
            return answer(202, {"name": name, "draining": draining})

        return view.removePort(name, request.getHost()).addCallback(removed)  # type: ignore[no-untyped-call]

    def reload(
        self, request: server.Request, view: _Daemon, name: str | None
    ) -> Deferred[Page]:
        return view.reload().addCallback(lambda summary: answer(200, summary))

    def upgrade(
        self, request: server.Request, view: _Daemon, name: str | None
    ) -> Deferred[Page]:
        def upgraded(pid: dict[str, int]) -> Page:
            log.info("upgraded through the admin API: pid {pid}", pid=pid["pid"])
            return answer(200, pid)

        return view.upgrade().addCallback(upgraded)


class _DuplicateKey(ValueError):
    """
    A JSON object names one key twice.
    """

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _uniqueKeys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """
    A JSON object as a dict, refusing a key given twice (C{json} would keep
    the last one, silently).
    """
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _TooLarge(Exception):
    """
    The request body is over L{MAX_BODY}.
    """
