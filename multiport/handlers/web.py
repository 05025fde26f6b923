"""
The http and https handlers: twisted.web serving a folder, a built-in page,
or a redirect to HTTPS.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server, static
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from zope.interface import implementer

from multiport import __version__
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    IDrainable,
    OptionError,
    optionOf,
    rejectUnknown,
)
from multiport.logformat import emitLine
from multiport.transport import coalesceWrites

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
    """

    root: Path | None = None
    listing: bool = False
    redirectHTTPS: int | str | None = None
    hstsMaxAge: int | None = None
    accessLog: bool = True


def parseWebOptions(options: Mapping[str, object], relativeTo: Path) -> WebOptions:
    """
    Validate the http handler's options.
    """
    rejectUnknown(
        options, {"root", "listing", "redirect_https", "hsts_max_age", "access_log"}
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
    redirect = options.get("redirect_https")
    if redirect is None:
        pass
    elif isinstance(redirect, int) and not isinstance(redirect, bool):
        if not 1 <= redirect <= 65535:
            raise OptionError("redirect_https", f"port {redirect} out of range 1-65535")
    elif isinstance(redirect, str):
        parts = urlsplit(redirect)
        if parts.scheme != "https" or not parts.hostname:
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
    )


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
#: sets no idle_timeout: nginx's keepalive_timeout.
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


class TimedChannel(DrainingChannel):
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
    asks for it (option hsts_max_age).
    """

    def process(self) -> None:
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

    def log(self, request: server.Request) -> None:  # type: ignore[override]
        if not self.accessLog:
            return
        emitLine(
            accessLog,
            f"{self.portName} {self._logFormatter(self._logDateTime, request)}",
            port=self.portName,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            status=request.code,
            sent=request.sentLength,
        )

    def protocol(self) -> TimedChannel:  # type: ignore[override]
        channel = TimedChannel()
        channel.headerTimeout = self.headerTimeout
        return channel

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


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
    return site


http = Handler(
    "http",
    "HTTP on twisted.web: a folder (option root), a built-in page, or a redirect",
    buildSite,
    parse=parseWebOptions,
)
https = Handler(
    "https",
    "the http handler over TLS",
    buildSite,
    parse=parseWebOptions,
    impliesTLS=True,
)
