"""
The admin API on the status port: the running daemon's ports, read and
changed over HTTP with JSON.

    - C{GET /api/ports}: every port's configuration and counters;
    - C{POST /api/ports}: add a port (a C{[[port]]} table as JSON), 201;
    - C{GET|PUT|DELETE /api/ports/NAME}: one port; change it in place;
      remove it (202: it drains);
    - C{POST /api/reload}: as SIGHUP.

Every call needs C{Authorization: Bearer TOKEN} (the admin token, see
L{multiport.status.admintoken}).  Errors are JSON C{{"error": "..."}}: 400
for bad input, 401 without the token, 404 for an unknown port, 409 for an
address in use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from multiport.errors import ConfigError
from multiport.handlers.interface import IDaemonControl, IDaemonView, PortStatus
from multiport.status.site import JSON, MAX_BODY, Page

log = Logger()


def errorPage(code: int, message: str, **extra: object) -> Page:
    """
    A JSON error answer.
    """
    body = json.dumps({"error": message, **extra}, indent=2).encode("utf-8")
    return Page(code, JSON, body + b"\n")


def answer(code: int, value: object) -> Page:
    return Page(code, JSON, json.dumps(value, indent=2).encode("utf-8") + b"\n")


def portJSON(status: PortStatus) -> dict[str, object]:
    """
    One port as the API shows it.
    """
    config = status.config
    counters: Mapping[str, Any] = status.counters
    connections = counters["connections"]
    traffic = counters["bytes"]
    number = status.name.rpartition(":")[2]
    return {
        "name": status.name,
        "interface": config.interface,
        "port": int(number) if number.isdigit() else config.port,
        "handler": config.handler,
        "tls": config.tls is not None,
        "backlog": config.backlog,
        "listening": status.listening,
        "draining": status.draining,
        "where": config.where,
        "counters": {
            "accepted": connections["accepted"],
            "current": connections["current"],
            "closed": connections["closed"],
            "rejected": connections["rejected"],
            "bytesReceived": traffic["received"],
            "bytesSent": traffic["sent"],
        },
    }


class AdminAPI:
    """
    Answers the C{/api/} paths of a status port.
    """

    def __init__(self, view: Callable[[], IDaemonView]) -> None:
        self._view = view

    def page(self, request: server.Request) -> Page:
        """
        The answer to C{request}, whose path starts with C{/api}.
        """
        path = request.path.decode("latin-1")
        method = request.method.decode("latin-1")
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
        else:
            return errorPage(404, f"no such API path {path!r}")
        if method == "HEAD" and "GET" in allowed:
            method = "GET"
        handler = allowed.get(method)
        if handler is None:
            page = errorPage(405, f"{method} is not allowed on {path}")
            page.headers[b"allow"] = ", ".join(allowed).encode("ascii")
            return page
        view = self._view()
        if not IDaemonControl.providedBy(view):
            return errorPage(404, "this daemon has no admin API")
        # Reads too: the ports' configuration names files and addresses.
        refusal = self._authorize(request, view)
        if refusal is not None:
            return refusal
        return self._outcome(lambda: handler(request, view, name), name)

    def _outcome(
        self, call: Callable[[], Any], name: str | None
    ) -> Page | Deferred[Page]:
        """
        C{call()}'s page, or the error page for what it raised; a
        L{Deferred} of either when the change is applied later (in every
        worker process).
        """
        try:
            result = call()
        except Exception as e:
            return self._error(e, name)
        if isinstance(result, Deferred):
            return result.addErrback(lambda f: self._error(f.value, name))
        return result  # type: ignore[no-any-return]

    def _error(self, error: BaseException, name: str | None) -> Page:
        from multiport.daemon.service import ReconcileError, ReloadUnavailable

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
        log.failure("admin API: the change failed", Failure(error, type(error), None))
        return errorPage(500, f"the change failed: {error}")

    def _authorize(self, request: server.Request, control: Any) -> Page | None:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not control.checkToken(token.strip()):
            log.warn(
                "admin API: refused {method} {path} from {peer}: missing or wrong "
                "token",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                peer=str(request.getClientAddress()),
            )
            page = errorPage(
                401,
                "missing or wrong admin token: send 'Authorization: Bearer TOKEN' "
                "with the token given by --admin-token-file or "
                "MULTIPORT_ADMIN_TOKEN, or else made in the state directory's "
                "admin-token file",
            )
            page.headers[b"www-authenticate"] = b"Bearer"
            return page
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

    def _status(self, view: IDaemonView, name: str) -> PortStatus | None:
        return next((s for s in view.portStatus() if s.name == name), None)

    def listPorts(self, request: server.Request, view: Any, name: None) -> Page:
        return answer(200, {"ports": [portJSON(s) for s in view.portStatus()]})

    def onePort(self, request: server.Request, view: Any, name: str) -> Page:
        status = self._status(view, name)
        if status is None:
            return errorPage(404, f"no port named {name!r}")
        return answer(200, portJSON(status))

    def addPort(self, request: server.Request, view: Any, name: None) -> Any:
        table = self._body(request, "POST /api/ports")

        def added(port: Any) -> Page:
            bound = getattr(port, "boundAddress", None)
            number = bound().port if bound is not None else port.port
            page = answer(201, {"name": port.name, "port": number})
            page.headers[b"location"] = b"/api/ports/" + quote(port.name, "").encode()
            return page

        return _then(view.addPort(table), added)

    def changePort(self, request: server.Request, view: Any, name: str) -> Any:
        table = self._body(request, f"PUT /api/ports/{name}")

        def changed(port: Any) -> Page:
            log.info("changed {name} through the admin API", name=name)
            return answer(200, {"name": port.name})

        return _then(view.changePort(name, table, request.getHost()), changed)

    def removePort(self, request: server.Request, view: Any, name: str) -> Any:
        def removed(draining: int) -> Page:
            log.info("removed {name} through the admin API", name=name)
            return answer(202, {"name": name, "draining": draining})

        return _then(view.removePort(name, request.getHost()), removed)

    def reload(self, request: server.Request, view: Any, name: None) -> Any:
        return _then(view.reload(), lambda summary: answer(200, summary))


def _then(result: Any, done: Callable[[Any], Page]) -> Page | Deferred[Page]:
    """
    C{done(result)}, now or when C{result} (a L{Deferred}) fires.
    """
    if isinstance(result, Deferred):
        return result.addCallback(done)
    return done(result)


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
