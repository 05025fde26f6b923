"""
The http and https handlers: a folder, a built-in page, or a redirect to
HTTPS, served by twisted.web's resources, over HTTP/1.x on
L{multiport.handlers.lean} and over HTTP/2 on twisted.web's own.
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
import math
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import (
    CACHED,
    NOT_MODIFIED,
    datetimeToString,
)

from multiport.daemon.logformat import emitLine
from multiport.handlers.conditional import notModified
from multiport.handlers.filecache import StatCache
from multiport.handlers.interface import Handler, HandlerContext
from multiport.handlers.lean import LeanChannel, leanServes
from multiport.handlers.leanfast import ContentCache
from multiport.handlers.webaccess import (
    AccessRecord,
    combinedLine,
    hostProblem,
)
from multiport.handlers.webchannel import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    TimedChannel,
)
from multiport.handlers.webh2 import PortChannel
from multiport.handlers.weboptions import DEFAULT_SERVER, WebOptions, parseWebOptions
from multiport.handlers.webresources import ConfinedFile, RedirectToHTTPS, WelcomePage
from multiport.ports.counters import HandlerCounters, publishHTTP2Counters
from multiport.ports.policies import Policy

#: One line per request, in the combined log format after the port's name.
accessLog = Logger(namespace="multiport.access")


class PortRequest(server.Request):
    """
    A request that says Strict-Transport-Security over TLS when the port
    asks for it (option hsts_max_age), sends the port's C{Server} header
    (option server_header), knows when its first line arrived (the access
    log's request time), refuses an HTTP/1.1 request without exactly one
    Host as nginx does, and ignores an C{If-Modified-Since} that RFC 9110
    says to ignore.
    """

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)  # type: ignore[no-untyped-call]
        site = getattr(channel, "site", None)
        clock = getattr(site, "reactor", None)
        self.receivedAt: float | None = None if clock is None else clock.seconds()

    def hostProblem(self) -> str | None:
        """
        What is wrong with this request's Host header fields, if anything:
        RFC 9112 section 3.2 asks for a 400 when HTTP/1.1 comes without
        one, and for any request with more than one.
        """
        return hostProblem(
            list(self.requestHeaders.getRawHeaders(b"host", [])), self.clientproto
        )

    def setLastModified(self, when: float) -> str | None:
        """
        As twisted.web's, but a condition RFC 9110 section 13.1.3 says to
        ignore never answers 304: a date later than now, a request that
        also carries If-None-Match, or a method other than GET and HEAD.
        """
        when = int(math.ceil(when))
        if not self.lastModified or self.lastModified < when:
            self.lastModified = when
        channel: Any = self.channel
        headers = self.requestHeaders
        if notModified(
            self.method,
            headers.getRawHeaders(b"if-modified-since", []),
            headers.hasHeader(b"if-none-match"),
            self.lastModified,
            channel.site.reactor.seconds(),
        ):
            self.setResponseCode(NOT_MODIFIED)
            return CACHED
        return None

    def process(self) -> None:
        problem = self.hostProblem()
        if problem is not None:
            # nginx answers 400 and closes; so does Twisted's own channel
            # for the request heads it refuses.
            body = f"{problem}\n".encode()
            self.channel.persistent = False
            self.setResponseCode(400)
            if self.clientproto != b"HTTP/2":
                # A connection-specific field is an error in HTTP/2.
                self.setHeader(b"connection", b"close")  # type: ignore[no-untyped-call]
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
            self.setHeader(b"content-length", b"%d" % (len(body),))  # type: ignore[no-untyped-call]
            self.write(body)  # type: ignore[no-untyped-call]
            self.finish()  # type: ignore[no-untyped-call]
            return
        # Site sets .site on the channels it builds; HTTPChannel does not
        # declare it.
        site: PortSite = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        # server.Request.process, but with the port's Server header and a
        # Date made once a second rather than once a request.
        headers = self.responseHeaders
        if site.serverHeader is not None:
            headers.setRawHeaders(b"server", [site.serverHeader])
        headers.setRawHeaders(b"date", [site.dateHeader()])
        if site.hstsMaxAge is not None and self.isSecure():  # type: ignore[no-untyped-call]
            headers.setRawHeaders(
                b"strict-transport-security", [b"max-age=%d" % (site.hstsMaxAge,)]
            )
        self.prepath = []
        self.postpath = [
            unquote_to_bytes(segment) for segment in self.path[1:].split(b"/")
        ]
        if self.path == b"*":
            self._handleStar()  # type: ignore[no-untyped-call]
            return
        try:
            found = site.getResourceFor(self)  # type: ignore[no-untyped-call]
            if resource._IEncodingResource.providedBy(found):
                encoder = found.getEncoder(self)  # type: ignore[no-untyped-call]
                if encoder is not None:
                    self._encoder = encoder
            self.render(found)  # type: ignore[no-untyped-call]
        except BaseException:
            self.processingFailed(Failure())  # type: ignore[no-untyped-call]


class PortSite(server.Site):
    """
    The twisted.web site of one http port: HTTP/1.1 on L{TimedChannel}.

    Each request leaves a line in the C{multiport.access} log namespace:
    the port's name, then the request in the combined log format
    (twisted.web's line, written through L{emitLine} rather than
    twisted.web's log file object).

    @ivar portName: The port's name, at the start of each access log line.
    @ivar accessLog: Whether requests are logged.
    """

    def __init__(
        self,
        root: resource.IResource,
        reactor: IReactorTime,
        idle: float,
        header: float,
        portName: str = "-",
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            root, requestFactory=PortRequest, reactor=reactor, timeout=idle
        )
        self.headerTimeout = header
        self.hstsMaxAge: int | None = None
        self.displayTracebacks = False
        self.portName = portName
        self.accessLog = True
        #: Whether large answers on a plain connection go by C{sendfile}.
        self.sendfile = True
        self.serverHeader: bytes | None = DEFAULT_SERVER
        #: HTTP/2 on this port (a TLS one), with its limits: None for off.
        self.http2: HTTP2Settings | None = None
        #: HTTP/1.x on L{LeanChannel} where the resources allow it, else on
        #: twisted.web's channel (L{TimedChannel}).
        self.lean = True
        #: Small files' answers, for L{LeanChannel}.
        self.contents = ContentCache(reactor)
        self._dateSecond: int | None = None
        self._date = b""

    def dateHeader(self) -> bytes:
        """
        The C{Date} header of a response sent now (by the site's clock),
        made again only when the second changes.
        """
        now = int(self.reactor.seconds())
        if now != self._dateSecond:
            self._dateSecond = now
            self._date = datetimeToString(now)  # type: ignore[no-untyped-call]
        return self._date

    def log(self, request: server.Request) -> None:  # type: ignore[override]
        if not self.accessLog:
            return
        self.logAccess(
            AccessRecord(
                clientHost(request),
                request.method,
                request.uri,
                request.clientproto,
                request.code,
                request.sentLength,
                request.getHeader(b"referer"),
                request.getHeader(b"user-agent"),
                getattr(request, "receivedAt", None),
                getattr(request.channel, "streamID", None),
            )
        )

    def logAccess(self, record: AccessRecord) -> None:
        """
        Leave C{record}'s line in the access log.
        """
        referer, agent = record.referer, record.agent
        emitLine(
            accessLog,
            f"{self.portName} "
            # A str once the factory has started (tests/test_twistedapi.py).
            + combinedLine(cast(str, self._logDateTime), record),
            port=self.portName,
            client=record.client,
            method=record.method.decode("latin-1"),
            uri=record.uri.decode("latin-1"),
            protocol=record.protocol.decode("latin-1"),
            status=record.code,
            sent=record.sent,
            referer=None if referer is None else referer.decode("latin-1"),
            user_agent=None if agent is None else agent.decode("latin-1"),
            stream=record.stream,
            request_time=(
                None
                if record.receivedAt is None
                else round(max(0.0, self.reactor.seconds() - record.receivedAt), 6)
            ),
        )

    def protocol(self) -> TimedChannel | PortChannel | LeanChannel:  # type: ignore[override]
        lean = self.lean and leanServes(self.resource)
        if lean and self.http2 is None:
            return LeanChannel(self)
        channel = TimedChannel()  # type: ignore[no-untyped-call]
        channel.headerTimeout = self.headerTimeout
        if self.http2 is None:
            return channel
        return PortChannel(
            channel,
            self.http2.counters,
            self.headerTimeout,
            self.http2.maxConcurrentStreams,
            self.http2.maxHeaderListSize,
            http1=(lambda: LeanChannel(self)) if lean else None,
        )

    def acceptableProtocols(self) -> list[bytes]:
        if self.http2 is None:
            return [b"http/1.1"]
        return [b"h2", b"http/1.1"]


@frozen
class HTTP2Settings:
    """
    HTTP/2 on one port: its limits, and where it counts.
    """

    counters: HandlerCounters
    maxConcurrentStreams: int
    maxHeaderListSize: int


def clientHost(request: server.Request) -> str:
    """
    The client's address as an access log shows it: the host alone
    (C{192.0.2.7}, C{2001:db8::7}), or C{-} for a client that has none.
    """
    address = request.getClientAddress()  # type: ignore[no-untyped-call]
    host = getattr(address, "host", None)
    return host if isinstance(host, str) and host else "-"


def buildSite(context: HandlerContext) -> server.Site:
    """
    The twisted.web site for one port.
    """
    options = context.options
    assert isinstance(options, WebOptions)
    root: resource.IResource
    if options.redirectHTTPS is not None:
        root = RedirectToHTTPS(options.redirectHTTPS)
    elif options.root is not None:
        root = ConfinedFile(
            str(options.root),
            listing=options.listing,
            statCache=StatCache(context.reactor),
        )
    else:
        root = WelcomePage(context.port.name)
    policy = context.port.policy
    site = PortSite(
        root,
        context.reactor,
        idle=policy.idleTimeout or DEFAULT_IDLE_TIMEOUT,
        header=policy.headerTimeout or DEFAULT_HEADER_TIMEOUT,
        portName=context.port.name,
    )
    site.hstsMaxAge = options.hstsMaxAge
    site.accessLog = options.accessLog
    site.sendfile = options.sendfile
    site.serverHeader = options.serverHeader
    if options.http2 and context.port.tls is not None:
        site.http2 = HTTP2Settings(
            context.counters,
            options.http2MaxConcurrentStreams,
            options.http2MaxHeaderListSize,
        )
        publishHTTP2Counters(context.counters)
    return site


#: What an http port gets when neither it nor [defaults] says otherwise: a
#: connection on which no byte moves either way for 75 s (nginx's
#: keepalive_timeout; its send_timeout, for a client that stops reading a
#: response, is 60 s) is closed.  Without it, a response the client never
#: reads holds its connection and its open file forever: twisted.web turns
#: its own idle timeout off while a request is being answered.
HTTP_POLICY = Policy(idleTimeout=DEFAULT_IDLE_TIMEOUT)

http = Handler(
    "http",
    "HTTP: a folder (option root), a built-in page, or a redirect",
    buildSite,
    parse=parseWebOptions,
    defaultPolicy=HTTP_POLICY,
)
https = Handler(
    "https",
    "the http handler over TLS",
    buildSite,
    parse=parseWebOptions,
    impliesTLS=True,
    defaultPolicy=HTTP_POLICY,
)
