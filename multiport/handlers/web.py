"""
The http and https handlers: twisted.web serving a folder, a built-in page,
or a redirect to HTTPS.
"""

from __future__ import annotations

import errno
import html
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server, static
from twisted.web.http import (
    CACHED,
    NOT_MODIFIED,
    OK,
    PARTIAL_CONTENT,
    REQUESTED_RANGE_NOT_SATISFIABLE,
    HTTPChannel,
    stringToDatetime,
)
from twisted.web.iweb import IRequest
from zope.interface import implementer

from multiport import __version__
from multiport.daemon.logformat import emitLine
from multiport.errors import typeName
from multiport.handlers.byteranges import (
    Segment,
    SegmentsProducer,
    multipartEnd,
    multipartSeparator,
    planRanges,
)
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    IDrainable,
    OptionError,
    optionOf,
    rejectUnknown,
)
from multiport.io.transport import coalesceWrites
from multiport.ports.policies import Policy

#: One line per request, in the combined log format after the port's name.
accessLog = Logger(namespace="multiport.access")


@frozen
class WebOptions:
    """
    The http handler's options.

    @ivar root: The folder to serve, or C{None} for the built-in page.
    @ivar listing: Whether folders without an index are listed.
    @ivar redirectHTTPS: Redirect every request to HTTPS: a port number on
        the same host, or a base URL.
    @ivar hstsMaxAge: Over TLS, the Strict-Transport-Security max-age.
    @ivar accessLog: Whether each request leaves a line in the access log.
    @ivar serverHeader: The C{Server} header of every response: twisted.web's
        (C{TwistedWeb/VERSION}) when L{DEFAULT_SERVER}, none when C{None}.
    """

    root: Path | None = None
    listing: bool = False
    redirectHTTPS: int | str | None = None
    hstsMaxAge: int | None = None
    accessLog: bool = True
    serverHeader: bytes | None = server.version


#: The C{Server} header unless a port sets server_header: twisted.web's.
DEFAULT_SERVER = server.version
#: What a server_header may hold: visible ASCII and spaces (no CR or LF to
#: split a response with), at most this long.
SERVER_HEADER = re.compile(r"[!-~]+( [!-~]+)*")
MAX_SERVER_HEADER = 256


def parseServerHeader(value: object) -> bytes | None:
    """
    The http option server_header: C{true} (twisted.web's header), C{false}
    (none) or the header's text.

    @raise OptionError: naming the bad value.
    """
    if value is True:
        return DEFAULT_SERVER
    if value is False:
        return None
    if not isinstance(value, str):
        raise OptionError(
            "server_header",
            f"expected true, false or a string, got {typeName(value)} {value!r}",
        )
    if len(value) > MAX_SERVER_HEADER or not SERVER_HEADER.fullmatch(value):
        raise OptionError(
            "server_header",
            f"{value!r} is not 1 to {MAX_SERVER_HEADER} visible ASCII characters "
            "(single spaces between words)",
        )
    return value.encode("ascii")


#: C{redirect_https} as a URL: https, a host name or address, a port, a
#: path of URL characters; no space or control character (the value goes
#: into a Location header, where one would split the response).
_REDIRECT_URL = re.compile(
    r"https://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?"
)


def parseWebOptions(options: Mapping[str, object], relativeTo: Path) -> WebOptions:
    """
    Validate the http handler's options.
    """
    rejectUnknown(
        options,
        {
            "root",
            "listing",
            "redirect_https",
            "hsts_max_age",
            "access_log",
            "server_header",
        },
    )
    hsts = options.get("hsts_max_age")
    if hsts is not None and (type(hsts) is not int or hsts < 0):
        raise OptionError(
            "hsts_max_age", f"expected a whole number of seconds, got {hsts!r}"
        )
    rootOption = optionOf(options, "root", str, "a folder path (string)", "")
    root = None
    if "\x00" in rootOption:
        raise OptionError("root", f"{rootOption!r} contains a NUL character")
    if rootOption:
        root = (relativeTo / rootOption).resolve()
        if not root.is_dir():
            raise OptionError("root", f"{rootOption!r} is not a folder ({root})")
        if not os.access(root, os.R_OK | os.X_OK):
            raise OptionError("root", f"{root} is not readable")
    listing = optionOf(options, "listing", bool, "true or false", False)
    accessLog = optionOf(options, "access_log", bool, "true or false", True)
    serverHeader = parseServerHeader(options.get("server_header", True))
    redirect = options.get("redirect_https")
    if redirect is None:
        pass
    elif isinstance(redirect, int) and not isinstance(redirect, bool):
        if not 1 <= redirect <= 65535:
            raise OptionError("redirect_https", f"port {redirect} out of range 1-65535")
    elif isinstance(redirect, str):
        match = _REDIRECT_URL.fullmatch(redirect)
        port = match.group("port") if match else None
        if match is None or (port is not None and not 1 <= int(port) <= 65535):
            raise OptionError(
                "redirect_https",
                f"{redirect!r} is not an https:// URL with a host",
            )
        redirect = redirect.rstrip("/")
    else:
        raise OptionError(
            "redirect_https",
            f"expected a port number or an https:// URL, got {redirect!r}",
        )
    if redirect is not None and root is not None:
        raise OptionError("redirect_https", "cannot be combined with root")
    return WebOptions(
        root=root,
        listing=listing,
        redirectHTTPS=redirect,
        hstsMaxAge=hsts,
        accessLog=accessLog,
        serverHeader=serverHeader,
    )


#: Opening never blocks (a FIFO), never makes a terminal ours, and the
#: descriptor is not inherited by anything the daemon starts.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: What open() says of a path that went away or can't be read as a file
#: (ENXIO: a socket, or a FIFO's peer; ENODEV: a device without a driver).
_GONE = {errno.ENOENT, errno.ENOTDIR, errno.ENXIO, errno.ENODEV, errno.ELOOP}


class NotServable(Exception):
    """
    The path is not a regular file (any more): it answers 404.
    """


class ConfinedFile(static.File):
    """
    A L{static.File} that never serves anything outside its root, symlinks
    pointing out of it included, and lists folders only when asked to.

    Each resource knows its real path.  A child's real path is its parent's
    plus its name unless the child is a symlink (C{FilePath.child} refuses
    C{..} and separators), so only symlinks cost a C{realpath}: one
    C{lstat} per request instead of one per path component.
    """

    def __init__(
        self,
        path: str,
        root: str | None = None,
        listing: bool = False,
        real: str | None = None,
    ) -> None:
        super().__init__(path)
        self.root = os.path.realpath(path) if root is None else root
        self.listing = listing
        self._real = real

    @property
    def real(self) -> str:
        """
        The real path of this file or folder.
        """
        if self._real is None:
            self._real = os.path.realpath(self.path)
        return self._real

    def _inside(self, real: str) -> bool:
        return os.path.commonpath([real, self.root]) == self.root

    def getChild(self, path: bytes, request: IRequest) -> resource.IResource:
        # No file name holds a NUL, and names that aren't UTF-8 can't be
        # ours: not found, without the traceback static.File would log.
        if b"\x00" in path:
            return self.childNotFound
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return self.childNotFound
        child = super().getChild(path, request)
        if not isinstance(child, static.File):
            return child
        folder, name = os.path.split(child.path)
        if folder == self.path and not os.path.islink(child.path):
            real = os.path.join(self.real, name)
        else:
            real = os.path.realpath(child.path)
            if not self._inside(real):
                return self.childNotFound
        if isinstance(child, ConfinedFile):
            child._real = real
        return child

    def openForReading(self) -> IO[bytes]:
        """
        Open this file for reading if it is a regular file.

        A FIFO would block C{open()}, and with it the reactor and every
        port, until something writes to it; a device or a socket is no
        file to serve either.  So open without blocking and check what was
        opened (the path may have changed since it was looked at), as nginx
        does.

        @raise NotServable: if it is not a regular file, or went away.
        """
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except OSError as e:
            if e.errno in _GONE:
                raise NotServable(self.path) from e
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotServable(self.path)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def render_GET(self, request: server.Request) -> bytes | int:
        # Only regular files and folders are served: anything else is not
        # found (nginx), and is not even opened.
        self.restat(reraise=False)
        if self.exists() and not (self.isfile() or self.isdir()):
            return self.childNotFound.render(request)  # type: ignore[no-any-return]
        try:
            return super().render_GET(request)  # type: ignore[no-any-return]
        except NotServable:
            request.responseHeaders.removeHeader(b"accept-ranges")
            return self.childNotFound.render(request)  # type: ignore[no-any-return]

    render_HEAD = render_GET

    def makeProducer(
        self, request: server.Request, fileForReading: IO[bytes]
    ) -> SegmentsProducer:
        """
        Set the status and content headers of a GET and make the producer
        of its body: the whole file, or the parts a C{Range} header asks
        for (see L{planRanges}).
        """
        size = os.fstat(fileForReading.fileno()).st_size
        contentType = (self.type or "application/octet-stream").encode("latin-1")
        boundary = os.urandom(12).hex().encode("ascii")
        plan = planRanges(
            request.requestHeaders.getRawHeaders(b"range"),
            size,
            boundary,
            contentType,
        )
        segments: list[Segment] = []
        trailer = b""
        if plan.parts is None:
            request.setResponseCode(OK)
            self._contentHeaders(request, size, contentType)
            segments.append(Segment(b"", 0, size))
        elif not plan.parts:
            request.setResponseCode(REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            request.setHeader(b"content-length", b"0")
        elif len(plan.parts) == 1:
            [part] = plan.parts
            request.setResponseCode(PARTIAL_CONTENT)
            request.setHeader(
                b"content-range",
                b"bytes %d-%d/%d" % (part.offset, part.offset + part.size - 1, size),
            )
            self._contentHeaders(request, part.size, contentType)
            segments.append(Segment(b"", part.offset, part.size))
        else:
            request.setResponseCode(PARTIAL_CONTENT)
            segments.extend(
                Segment(
                    multipartSeparator(boundary, contentType, part, size),
                    part.offset,
                    part.size,
                )
                for part in plan.parts
            )
            trailer = multipartEnd(boundary)
            request.setHeader(
                b"content-type",
                b'multipart/byteranges; boundary="%s"' % (boundary,),
            )
            request.setHeader(
                b"content-length",
                b"%d" % (len(trailer) + sum(len(s.prefix) + s.size for s in segments),),
            )
        return SegmentsProducer(request, fileForReading, segments, trailer, self.path)

    def _contentHeaders(
        self, request: server.Request, length: int, contentType: bytes
    ) -> None:
        request.setHeader(b"content-length", b"%d" % (length,))
        request.setHeader(b"content-type", contentType)
        if self.encoding:
            request.setHeader(b"content-encoding", self.encoding.encode("latin-1"))

    def directoryListing(self) -> resource.IResource:
        if not self.listing:
            return resource.ForbiddenResource("Directory listing is off.")
        return super().directoryListing()

    def createSimilarFile(self, path: str) -> ConfinedFile:
        similar = ConfinedFile(path, self.root, self.listing)
        similar.indexNames = self.indexNames[:]
        similar.childNotFound = self.childNotFound
        return similar


class WelcomePage(resource.Resource):
    """
    The page a port serves at C{/} when no root is configured; every other
    path is not found.
    """

    def __init__(self, portName: str) -> None:
        super().__init__()
        self._body = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            "<title>multiport</title></head><body style='font-family:sans-serif;"
            "max-width:40em;margin:4em auto'>"
            "<h1>multiport is running</h1>"
            f"<p>This is the built-in page of {html.escape(portName)}. "
            "Set the <code>root</code> option of this port to serve a folder."
            f"</p><p><small>multiport {__version__}</small></p></body></html>"
        ).encode()

    def getChild(self, path: bytes, request: IRequest) -> resource.IResource:
        if path == b"" and not request.postpath:
            return self
        return resource.NoResource()

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self._body

    render_HEAD = render_GET


class RedirectToHTTPS(resource.Resource):
    """
    Answer every request with a permanent redirect to HTTPS.
    """

    isLeaf = True

    def __init__(self, target: int | str) -> None:
        super().__init__()
        self._target = target

    def location(self, request: server.Request) -> bytes:
        """
        Where C{request} is sent.
        """
        # The request's path and query, also from an absolute-form target
        # ("GET http://host/path HTTP/1.1").
        if request.uri.startswith(b"/"):
            path = request.uri
        else:
            try:
                parts = urlsplit(request.uri)
            except ValueError:  # "GET http://[x/": no path worth keeping
                parts = urlsplit(b"/")
            path = parts.path if parts.path.startswith(b"/") else b"/"
            if parts.query:
                path += b"?" + parts.query
        if isinstance(self._target, str):
            return self._target.encode() + path
        host = request.getRequestHostname()
        if b":" in host:  # an IPv6 literal
            host = b"[" + host + b"]"
        port = b"" if self._target == 443 else b":%d" % (self._target,)
        return b"https://" + host + port + path

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(301)
        request.setHeader(b"location", self.location(request))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Moved to HTTPS.\n"


#: How long an http connection may sit idle between requests when the port
#: sets no idle_timeout: nginx's keepalive_timeout.  It is also the http
#: handlers' default idle_timeout (L{HTTP_POLICY}).
DEFAULT_IDLE_TIMEOUT = 75.0
#: How long a request's headers may take to arrive (slowloris) when the
#: port sets no header_timeout.
DEFAULT_HEADER_TIMEOUT = 20.0


@implementer(IDrainable)
class DrainingChannel(HTTPChannel):
    """
    An HTTP channel that, when its port goes away, closes at once between
    requests and otherwise after answering the request in flight (with
    C{Connection: close}), as nginx does at a graceful stop.
    """

    _draining = False

    def drain(self) -> None:
        self._draining = True
        self.persistent = False
        if not self.requests:
            self.loseConnection()

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        if self._draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))


#: Reason phrases of the answers a channel gives on its own (RFC 9110 and
#: RFC 6585 names).
_PHRASES = {
    400: b"Bad Request",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class StrictChannel(DrainingChannel):
    """
    An HTTP/1.1 channel that parses request heads as nginx does where
    twisted.web's L{HTTPChannel} is looser, and that answers every request
    it can't take with a status line and a close, never with silence:

      - a bare LF ends a line, as CRLF does (RFC 9112 section 2.2 allows
        it; nginx does it), instead of waiting for a CR until
        C{header_timeout};
      - a line folded onto the one before (obs-fold, or whitespace before
        the first header) is refused with 400 rather than joined (RFC 9112
        section 5.2 lets a server do either; nginx refuses);
      - a request line over L{MAX_LENGTH} answers 414, header lines over it
        or a head over L{totalHeadersSize} 431, where twisted.web closes
        without a word (nginx: 414, and 400 for headers).
    """

    delimiter = b"\n"
    _refused = False
    _headSize = 0

    def refuse(self, status: int, why: str) -> None:
        """
        Answer C{status} with C{why} as a plain text body, and close.
        """
        body = f"{why}\n".encode()
        transport: Any = self.transport
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, _PHRASES[status], len(body), body)
        )
        self._refused = True
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not self.requests:
            # No request line yet: a new head starts.
            self._headSize = 0
        elif line[:1] in (b" ", b"\t"):
            self.refuse(400, "Folded header lines (obs-fold) are not accepted.")
            return
        self._headSize += len(line)
        if self._headSize > self.totalHeadersSize:
            self.refuse(431, "The request's header fields are too large.")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self.requests:
            self.refuse(431, "A request header field is too large.")
        else:
            self.refuse(414, "The request line is too long.")


class TimedChannel(StrictChannel):
    """
    An HTTP/1.1 channel that closes a connection whose request headers take
    longer than C{headerTimeout} to arrive, counted from the request's first
    byte (a slowloris client trickles headers forever), and whose writes
    are sent once per event (L{coalesceWrites}).
    """

    headerTimeout: float = DEFAULT_HEADER_TIMEOUT
    _headerDeadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        # twisted.web writes a response's headers, then its body: held and
        # sent together, they leave in one TCP segment.
        coalesceWrites(self.transport)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._headerDeadline is None and self.line_mode:
            self._headerDeadline = self.callLater(
                self.headerTimeout, self._headersTooSlow
            )
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancelHeaderDeadline()
        super().allHeadersReceived()

    def _cancelHeaderDeadline(self) -> None:
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
        timedOut = getattr(self.transport, "timedOut", None)
        if timedOut is not None:
            timedOut("header_timeout")
        else:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._cancelHeaderDeadline()
        super().connectionLost(reason)


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
        super().__init__(channel, *args, **kwargs)
        site = getattr(channel, "site", None)
        clock = getattr(site, "reactor", None)
        self.receivedAt: float | None = None if clock is None else clock.seconds()

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        # process() sets twisted.web's Server header (the very object
        # server.version) on every response: the port's choice replaces it.
        if value is DEFAULT_SERVER:
            serverHeader = getattr(self.channel.site, "serverHeader", DEFAULT_SERVER)
            if serverHeader is None:
                return
            value = serverHeader
        super().setHeader(name, value)

    def hostProblem(self) -> str | None:
        """
        What is wrong with this request's Host header fields, if anything:
        RFC 9112 section 3.2 asks for a 400 when HTTP/1.1 comes without
        one, and for any request with more than one.
        """
        hosts = self.requestHeaders.getRawHeaders(b"host", [])
        if len(hosts) > 1:
            return "More than one Host header field."
        if self.clientproto == b"HTTP/1.1" and not (hosts and hosts[0]):
            return "HTTP/1.1 requires a Host header field."
        return None

    def setLastModified(self, when: float) -> str | None:
        """
        As twisted.web's, but a condition RFC 9110 section 13.1.3 says to
        ignore never answers 304: a date later than now, a request that
        also carries If-None-Match, or a method other than GET and HEAD.
        """
        when = int(math.ceil(when))
        if not self.lastModified or self.lastModified < when:
            self.lastModified = when  # type: ignore[assignment]
        if self.method not in (b"GET", b"HEAD") or self.requestHeaders.hasHeader(
            b"if-none-match"
        ):
            return None
        values = self.requestHeaders.getRawHeaders(b"if-modified-since", [])
        if len(values) != 1:
            return None
        try:
            since = stringToDatetime(values[0].split(b";", 1)[0])
        except ValueError:
            return None
        # Rounded up as Last-Modified is: a file changed this very second
        # is sent with a date up to a second ahead, which a client may
        # send back at once.
        channel: Any = self.channel
        if since > math.ceil(channel.site.reactor.seconds()):
            return None
        if since >= self.lastModified:
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
            self.setHeader(b"connection", b"close")
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"content-length", b"%d" % (len(body),))
            self.write(body)
            self.finish()
            return
        maxAge = getattr(self.channel.site, "hstsMaxAge", None)
        if maxAge is not None and self.isSecure():
            self.setHeader(b"strict-transport-security", b"max-age=%d" % (maxAge,))
        super().process()


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
        reactor: Any,
        idle: float,
        header: float,
        portName: str = "-",
    ) -> None:
        super().__init__(
            root, requestFactory=PortRequest, reactor=reactor, timeout=idle
        )
        self.headerTimeout = header
        self.hstsMaxAge: int | None = None
        self.displayTracebacks = False
        self.portName = portName
        self.accessLog = True
        self.serverHeader: bytes | None = DEFAULT_SERVER

    def log(self, request: server.Request) -> None:  # type: ignore[override]
        if not self.accessLog:
            return
        client = clientHost(request)
        referer = request.getHeader(b"referer")
        agent = request.getHeader(b"user-agent")
        receivedAt = getattr(request, "receivedAt", None)
        emitLine(
            accessLog,
            f"{self.portName} "
            + combinedLine(self._logDateTime, request, client, referer, agent),
            port=self.portName,
            client=client,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            protocol=request.clientproto.decode("latin-1"),
            status=request.code,
            sent=request.sentLength,
            referer=None if referer is None else referer.decode("latin-1"),
            user_agent=None if agent is None else agent.decode("latin-1"),
            request_time=(
                None
                if receivedAt is None
                else round(max(0.0, self.reactor.seconds() - receivedAt), 6)
            ),
        )

    def protocol(self) -> TimedChannel:  # type: ignore[override]
        channel = TimedChannel()
        channel.headerTimeout = self.headerTimeout
        return channel

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


def clientHost(request: server.Request) -> str:
    """
    The client's address as an access log shows it: the host alone
    (C{192.0.2.7}, C{2001:db8::7}), or C{-} for a client that has none.
    """
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return host if isinstance(host, str) and host else "-"


def escapeLogText(value: bytes | str) -> str:
    """
    C{value} for a quoted part of an access log line: what a client sent
    can't end the part (C{"} becomes C{\\"}) or the line (control bytes and
    bytes above 127 become C{\\xNN}), as twisted.web writes it.
    """
    if isinstance(value, str):
        value = value.encode("latin-1", "backslashreplace")
    text = repr(value)[1:]
    if text.startswith("'"):
        return text[1:-1].replace('"', '\\"').replace("\\'", "'")
    return text[1:-1]


def combinedLine(
    timestamp: str,
    request: server.Request,
    client: str,
    referer: bytes | None,
    agent: bytes | None,
) -> str:
    """
    C{request} in nginx's "combined" log format, which goaccess, fail2ban
    and the like parse: unlike twisted.web's line, the client address is not
    quoted.  Quoted parts are escaped as twisted.web escapes them.
    """
    return (
        f'{escapeLogText(client)} - - {timestamp} "{escapeLogText(request.method)} '
        f'{escapeLogText(request.uri)} {escapeLogText(request.clientproto)}" '
        f"{request.code} {request.sentLength or '-'} "
        f'"{escapeLogText(referer or b"-")}" "{escapeLogText(agent or b"-")}"'
    )


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
        root = ConfinedFile(str(options.root), listing=options.listing)
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
    site.serverHeader = options.serverHeader
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
    "HTTP on twisted.web: a folder (option root), a built-in page, or a redirect",
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
