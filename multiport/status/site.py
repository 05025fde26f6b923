"""
The status port's twisted.web site: one leaf resource answering a fixed set
of paths, each read from the daemon view at request time.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from attrs import field, frozen
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web import http, resource, server

from multiport import __version__
from multiport.handlers.interface import HandlerContext, IDaemonDrain, IDaemonView
from multiport.handlers.webchannel import DrainingChannel
from multiport.status import StatusOptions
from multiport.status.dashboard import dashboardPage
from multiport.status.history import History
from multiport.status.metrics import metricsRegistry
from multiport.status.report import NoDaemon, daemonReport, peersOf

if TYPE_CHECKING:
    from multiport.status.api import AdminAPI

    # twisted.web's classes as mypy sees them: the methods these subclasses
    # call on them, which twisted.web leaves unannotated.

    class _Request(server.Request):
        def gotLength(self, length: int | None) -> None: ...
        def handleContentChunk(self, data: bytes) -> None: ...

    class _Resource(resource.Resource):
        def __init__(self) -> None: ...

    class _Site(server.Site):
        def __init__(
            self, resource: resource.IResource, *, reactor: IReactorTime
        ) -> None: ...

else:
    _Request = server.Request
    _Resource = resource.Resource
    _Site = server.Site


class _Timed(Protocol):
    """
    A channel's idle timeout (L{policies.TimeoutMixin}, unannotated).
    """

    def setTimeout(self, period: float | None) -> object: ...


class _Answerable(Protocol):
    """
    What L{StatusResource} answers through: a L{server.Request}, whose
    methods twisted.web leaves unannotated.
    """

    method: bytes
    finished: int | bool
    _disconnected: bool

    def setResponseCode(self, code: int) -> None: ...
    def setHeader(self, name: bytes, value: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...


JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"
METRICS = CONTENT_TYPE_LATEST.encode("ascii")

#: The dashboard may run its own inline script and style, and talk to this
#: port only: nothing is ever loaded from elsewhere.
DASHBOARD_POLICY = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'"
)

ALLOWED_METHODS = (b"GET", b"HEAD")

#: The largest request body the status port reads (the admin API's).
MAX_BODY = 64 * 1024


class LimitedRequest(_Request):
    """
    A request whose body may not pass L{MAX_BODY}: a larger declared
    length, or a chunked body that grows past it, is answered 413 and the
    connection closed before the rest is read (twisted.web would otherwise
    spool any body to a temporary file).
    """

    _bodySeen = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._bodySeen += len(data)
        if self._bodySeen > MAX_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        transport = self.channel.transport if self.channel is not None else None
        if transport is None:
            return
        body = b'{"error": "the body is larger than %d bytes"}\n' % (MAX_BODY,)
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body),) + body
        )
        transport.loseConnection()
        self.channel.persistent = False
        channel: _Timed = self.channel
        channel.setTimeout(None)


@frozen
class Page:
    """
    A complete response.
    """

    code: int
    contentType: bytes
    body: bytes
    headers: Mapping[bytes, bytes] = field(factory=dict)


def jsonPage(value: object, code: int = 200) -> Page:
    """
    C{value} as an indented JSON response.
    """
    return Page(code, JSON, json.dumps(value, indent=2).encode("utf-8") + b"\n")


def _perWorker(request: server.Request) -> bool:
    """
    Whether the request asks for figures per worker (C{?workers=1}).
    """
    return (request.args or {}).get(b"workers") == [b"1"]


class StatusPages:
    """
    What each path of a status port answers.
    """

    def __init__(
        self,
        clock: IReactorTime,
        view: Callable[[], IDaemonView],
        history: History,
    ) -> None:
        self._clock = clock
        self._view = view
        self._history = history
        self._registry = metricsRegistry(view)
        self._workerRegistry = metricsRegistry(view, perWorker=True)

    def routes(self) -> dict[bytes, Callable[[server.Request], Page]]:
        """
        The pages by path.
        """
        return {
            b"/": self.dashboard,
            b"/status": self.status,
            b"/metrics": self.metrics,
            b"/healthz": self.healthz,
            b"/history": self.history,
        }

    def status(self, request: server.Request) -> Page:
        """
        Every port's state and figures as JSON.
        """
        return jsonPage(
            daemonReport(
                self._view(), self._clock.seconds(), perWorker=_perWorker(request)
            )
        )

    def metrics(self, request: server.Request) -> Page:
        """
        The Prometheus exposition of this status port's registry.
        """
        registry = self._workerRegistry if _perWorker(request) else self._registry
        return Page(200, METRICS, generate_latest(registry))

    def healthz(self, request: server.Request) -> Page:
        """
        C{ok} while every configured port listens; else 503 naming, one a
        line, those that don't.  While the daemon is drained for its load
        balancer (L{IDaemonDrain}), 503 C{draining}, every port serving.
        """
        view = self._view()
        drainer = IDaemonDrain(view, None)
        if drainer is not None and drainer.drainState().draining:
            return Page(503, TEXT, b"draining\n")
        down = [s.name for s in view.portStatus() if not s.listening and not s.draining]
        if down:
            return Page(503, TEXT, "".join(f"{name}\n" for name in down).encode())
        return Page(200, TEXT, b"ok\n")

    def history(self, request: server.Request) -> Page:
        """
        The sampled figures of the last minutes.
        """
        return jsonPage(self._history.report())

    def dashboard(self, request: server.Request) -> Page:
        """
        The self-contained HTML dashboard.
        """
        return Page(
            200,
            HTML,
            dashboardPage(peersOf(self._view())),
            {
                b"content-security-policy": DASHBOARD_POLICY,
                b"x-frame-options": b"DENY",
            },
        )


def hostOfHeader(value: bytes) -> str | None:
    """
    The host name or address of a C{Host} header, lower case, without its
    port, brackets or a trailing dot; L{None} if it can't be read.
    """
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if (
            not bracket
            or (rest and not rest[1:].isdigit())
            or rest[:1] not in ("", ":")
        ):
            return None
        return address
    host, colon, port = text.rpartition(":")
    if not colon:
        host = text
    elif not port.isdigit():
        return None
    return host.rstrip(".")


def hostAllowed(value: bytes | None, allowed: frozenset[str]) -> bool:
    """
    Whether a request naming C{value} in C{Host} may be answered: no
    C{Host} (HTTP/1.0: no browser), an IP address (DNS rebinding needs a
    name), C{localhost}, or a name in C{allowed}.
    """
    if value is None:
        return True
    host = hostOfHeader(value)
    if host is None:
        return False
    if host == "localhost" or host in allowed:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class StatusResource(_Resource):
    """
    The whole site: exact paths only (anything else is 404), GET and HEAD
    only (anything else is 405), and only for a C{Host} that names this
    port (anything else is 421).
    """

    isLeaf = True

    def __init__(
        self,
        routes: Mapping[bytes, Callable[[server.Request], Page]],
        api: AdminAPI,
        allowedHosts: frozenset[str] = frozenset(),
        settled: Callable[[], Deferred[None] | None] = lambda: None,
    ) -> None:
        """
        @param settled: What the pages wait for before answering, if
            anything: an upgrade's new daemon answers once the old one has
            stopped accepting and sent its counts, so that no scrape sees a
            counter go down between the two.
        """
        super().__init__()
        self._routes = dict(routes)
        self._api = api
        self._allowedHosts = allowedHosts
        self._settled = settled

    def page(self, request: server.Request) -> Page | Deferred[Page]:
        """
        The response to C{request}.
        """
        hosts = request.requestHeaders.getRawHeaders(b"host", [])
        if len(hosts) > 1:
            return Page(400, TEXT, b"more than one Host header\n")
        if not hostAllowed(hosts[0] if hosts else None, self._allowedHosts):
            return Page(
                421,
                TEXT,
                b"misdirected request: this status port answers requests for "
                b"its address, localhost, or a name in its allowed_hosts option\n",
            )
        if request.path == b"/api" or request.path.startswith(b"/api/"):
            return self._api.page(request)
        route = self._routes.get(request.path)
        if route is None:
            return Page(404, TEXT, b"not found\n")
        if request.method not in ALLOWED_METHODS:
            return Page(
                405,
                TEXT,
                b"method not allowed; use GET or HEAD\n",
                {b"allow": b", ".join(ALLOWED_METHODS)},
            )
        waiting = self._settled()
        if waiting is not None and not waiting.called:
            return _after(waiting).addCallback(lambda _: route(request))
        return route(request)

    def render(self, request: server.Request) -> bytes | int:
        page = self.page(request)
        answerable: _Answerable = request
        if isinstance(page, Deferred):
            # A change applied in every worker answers when they all have.
            def write(page: Page) -> None:
                if not answerable.finished and not answerable._disconnected:
                    body = self._respond(answerable, page)
                    if body:
                        answerable.write(body)
                    answerable.finish()

            page.addCallback(write)
            return server.NOT_DONE_YET
        return self._respond(answerable, page)

    def _respond(self, request: _Answerable, page: Page) -> bytes:
        request.setResponseCode(page.code)
        request.setHeader(b"content-type", page.contentType)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        for name, value in page.headers.items():
            request.setHeader(name, value)
        if request.method == b"HEAD":
            request.setHeader(b"content-length", b"%d" % (len(page.body),))
            return b""
        return page.body


def _after(shared: Deferred[None]) -> Deferred[None]:
    """
    A Deferred of its own that fires when C{shared} does, leaving
    C{shared}'s result alone for its other waiters.
    """
    mine: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        mine.callback(None)
        return result

    shared.addBoth(fire)
    return mine


class StatusSite(_Site):
    """
    A status port's site: it samples the history while the port listens,
    and writes no access log (dashboards poll it every second, Prometheus
    every few).
    """

    # HTTP/1.1 only.  Twisted types HTTPFactory.protocol as the maker of
    # its HTTP/2-negotiating wrapper, yet takes any HTTPChannel class
    # (buildProtocol only sets its callLater and timeOut).
    protocol = DrainingChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest

    def __init__(
        self, root: resource.IResource, history: History, reactor: IReactorTime
    ) -> None:
        super().__init__(root, reactor=reactor)
        self.history = history
        self.displayTracebacks = False

    def startFactory(self) -> None:
        """
        Start sampling (L{Factory.doStart} calls this when the first port
        using this factory starts listening).
        """
        super().startFactory()
        self.history.start()

    def stopFactory(self) -> None:
        """
        Stop sampling (L{Factory.doStop} calls this when the last port
        using this factory stops).
        """
        self.history.stop()
        super().stopFactory()

    def log(self, request: http.Request) -> None:
        """
        Write no access log line.
        """


def buildSite(context: HandlerContext) -> StatusSite:
    """
    The site of one status port, reading C{context.daemon} at request time
    and timing everything with C{context.clock}.
    """
    fallback = NoDaemon(version=__version__, started=context.clock.seconds())

    def view() -> IDaemonView:
        daemon = context.daemon
        return fallback if daemon is None else daemon

    history = History(context.clock, view)
    pages = StatusPages(context.clock, view, history)
    from multiport.status.api import AdminAPI

    options = context.options
    allowed = (
        options.allowedHosts if isinstance(options, StatusOptions) else frozenset()
    )
    return StatusSite(
        StatusResource(
            pages.routes(),
            AdminAPI(view),
            allowed,
            settled=lambda: getattr(view(), "countsSettled", None),
        ),
        history,
        context.reactor,
    )
