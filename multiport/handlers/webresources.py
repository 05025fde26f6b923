"""
What the http handler serves: a folder confined to its root
(L{ConfinedFile}), the built-in page (L{WelcomePage}), or a redirect to
HTTPS (L{RedirectToHTTPS}).
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
import errno
import html
import os
import stat
from functools import partial
from typing import IO
from urllib.parse import urlsplit

from twisted.python.filepath import FilePath
from twisted.web import resource, server, static
from twisted.web.http import OK, PARTIAL_CONTENT, REQUESTED_RANGE_NOT_SATISFIABLE
from twisted.web.iweb import IRequest

from multiport import __version__
from multiport.handlers.byteranges import (
    Segment,
    SegmentsProducer,
    abortShrunk,
    multipartEnd,
    multipartSeparator,
    planRanges,
)
from multiport.handlers.filecache import CachedPath, StatCache, restatThrough
from multiport.io.sendfile import (
    SENDFILE_AT_LEAST,
    SendfileProducer,
    sendfileConnection,
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


def confinedReal(folder: str, folderReal: str, root: str, path: str) -> str | None:
    """
    The real path of C{path}, a child of C{folder} (whose real path is
    C{folderReal}), or C{None} if it lies outside C{root} (a real path).

    A child's real path is its folder's plus its name unless the child is
    a symlink: only symlinks cost a C{realpath}, every child an C{lstat}.
    """
    parent, name = os.path.split(path)
    if parent == folder and not os.path.islink(path):
        return os.path.join(folderReal, name)
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root:
        return None
    return real


def openRegular(path: str) -> tuple[int, os.stat_result]:
    """
    Open C{path} without blocking (a FIFO would block C{open()}, and with
    it the reactor and every port) and check that what was opened is a
    regular file (the path may have changed since it was looked at), as
    nginx does.

    @return: The descriptor, non-blocking, and its C{fstat}.
    @raise NotServable: if it is not a regular file, or went away.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in _GONE:
            raise NotServable(path) from e
        raise
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise NotServable(path)
    except BaseException:
        os.close(fd)
        raise
    return fd, opened


class ConfinedFile(static.File):
    """
    A L{static.File} that never serves anything outside its root, symlinks
    pointing out of it included, and lists folders only when asked to.

    Each resource knows its real path.  A child's real path is its parent's
    plus its name unless the child is a symlink (C{FilePath.child} refuses
    C{..} and separators), so only symlinks cost a C{realpath}: one
    C{lstat} per request instead of one per path component.

    With a L{StatCache}, what a path is (folder, file, missing) is looked
    up no more than once a second; what is served (its length, its
    Last-Modified) comes from the file opened, and whether a path is a
    symlink is looked up every time.
    """

    #: What the file opened for this request was, when it was (L{fstat}).
    _opened: os.stat_result | None = None

    def __init__(
        self,
        path: str,
        root: str | None = None,
        listing: bool = False,
        real: str | None = None,
        statCache: StatCache | None = None,
    ) -> None:
        super().__init__(path)
        self.root = os.path.realpath(path) if root is None else root
        self.listing = listing
        self._real = real
        self.statCache = statCache

    def restat(self, reraise: bool = True) -> None:
        restatThrough(self, self.statCache, reraise)

    def clonePath(  # type: ignore[override]
        self, path: str, alwaysCreate: bool = False
    ) -> FilePath[str]:
        # static.File looks a child up through FilePath.child, which makes
        # it with this.
        if self.statCache is None:
            return FilePath(path)
        return CachedPath(path, self.statCache)

    def getModificationTime(self) -> float:
        # The file being served, not the path as it was up to a second ago.
        if self._opened is not None:
            return self._opened.st_mtime
        return super().getModificationTime()

    def getFileSize(self) -> int:
        # As getModificationTime: a HEAD's Content-Length.
        if self._opened is not None:
            return self._opened.st_size
        return super().getFileSize()  # type: ignore[no-any-return, no-untyped-call]

    @property
    def real(self) -> str:
        """
        The real path of this file or folder.
        """
        if self._real is None:
            self._real = os.path.realpath(self.path)
        return self._real

    def getChild(self, path: bytes, request: IRequest) -> resource.IResource:
        # No file name holds a NUL, and names that aren't UTF-8 can't be
        # ours: not found, without the traceback static.File would log.
        if b"\x00" in path:
            return self.childNotFound
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return self.childNotFound
        child: resource.IResource = super().getChild(path, request)  # type: ignore[no-untyped-call]
        if not isinstance(child, static.File):
            return child
        real = confinedReal(self.path, self.real, self.root, child.path)
        if real is None:
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
        fd, self._opened = openRegular(self.path)
        try:
            os.set_blocking(fd, True)
            # Unbuffered: the producer reads in large pieces anyway, and a
            # buffered reader costs an isatty ioctl and an lseek per open.
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def render_GET(self, request: server.Request) -> bytes | int:
        # Only regular files and folders are served: anything else is not
        # found (nginx), and is not even opened.
        self.restat(reraise=False)
        if self.exists() and not (self.isfile() or self.isdir()):
            return self.childNotFound.render(request)  # type: ignore[no-any-return, no-untyped-call]
        if self.type is None:
            # As static.File does, but from the whole path: its basename
            # alone would cost a getcwd() to make absolute.
            self.type, self.encoding = static.getTypeAndEncoding(  # type: ignore[no-untyped-call]
                self.path, self.contentTypes, self.contentEncodings, self.defaultType
            )
        try:
            return super().render_GET(request)  # type: ignore[no-any-return, no-untyped-call]
        except NotServable:
            request.responseHeaders.removeHeader(b"accept-ranges")
            return self.childNotFound.render(request)  # type: ignore[no-any-return, no-untyped-call]

    render_HEAD = render_GET

    def makeProducer(
        self, request: server.Request, fileForReading: IO[bytes]
    ) -> SegmentsProducer | SendfileProducer:
        """
        Set the status and content headers of a GET and make the producer
        of its body: the whole file, or the parts a C{Range} header asks
        for (see L{planRanges}).  One large piece on a plain connection
        is sent by the kernel (L{SendfileProducer}); anything else is read
        and written (L{SegmentsProducer}).
        """
        opened = self._opened or os.fstat(fileForReading.fileno())
        size = opened.st_size
        contentType = (self.type or "application/octet-stream").encode("latin-1")
        ranges = request.requestHeaders.getRawHeaders(b"range")
        # Only a multipart answer needs a boundary: no getrandom() for the rest.
        boundary = os.urandom(12).hex().encode("ascii") if ranges else b""
        plan = planRanges(
            ranges,
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
            request.setHeader(b"content-range", b"bytes */%d" % (size,))  # type: ignore[no-untyped-call]
            request.setHeader(b"content-length", b"0")  # type: ignore[no-untyped-call]
        elif len(plan.parts) == 1:
            [part] = plan.parts
            request.setResponseCode(PARTIAL_CONTENT)
            request.setHeader(  # type: ignore[no-untyped-call]
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
            request.setHeader(  # type: ignore[no-untyped-call]
                b"content-type",
                b'multipart/byteranges; boundary="%s"' % (boundary,),
            )
            request.setHeader(  # type: ignore[no-untyped-call]
                b"content-length",
                b"%d" % (len(trailer) + sum(len(s.prefix) + s.size for s in segments),),
            )
        if len(segments) == 1 and not trailer:
            [segment] = segments
            connection = (
                sendfileConnection(request)
                if segment.size >= SENDFILE_AT_LEAST
                else None
            )
            if connection is not None:
                return SendfileProducer(
                    request,
                    connection,
                    fileForReading,
                    segment.offset,
                    segment.size,
                    partial(abortShrunk, path=self.path),
                )
        return SegmentsProducer(request, fileForReading, segments, trailer, self.path)

    def _contentHeaders(
        self, request: server.Request, length: int, contentType: bytes
    ) -> None:
        request.setHeader(b"content-length", b"%d" % (length,))  # type: ignore[no-untyped-call]
        request.setHeader(b"content-type", contentType)  # type: ignore[no-untyped-call]
        if self.encoding:
            request.setHeader(b"content-encoding", self.encoding.encode("latin-1"))  # type: ignore[no-untyped-call]

    def directoryListing(self) -> resource.IResource:
        if not self.listing:
            return resource.ForbiddenResource("Directory listing is off.")
        listing: resource.IResource = super().directoryListing()  # type: ignore[no-untyped-call]
        return listing

    def createSimilarFile(self, path: str) -> ConfinedFile:
        similar = ConfinedFile(path, self.root, self.listing, statCache=self.statCache)
        similar.indexNames = self.indexNames[:]
        similar.childNotFound = self.childNotFound
        return similar


class WelcomePage(resource.Resource):
    """
    The page a port serves at C{/} when no root is configured; every other
    path is not found.
    """

    def __init__(self, portName: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        #: The page.
        self.body = (
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
        request.setHeader(b"content-type", b"text/html; charset=utf-8")  # type: ignore[no-untyped-call]
        return self.body

    render_HEAD = render_GET


class RedirectToHTTPS(resource.Resource):
    """
    Answer every request with a permanent redirect to HTTPS.
    """

    isLeaf = True

    def __init__(self, target: int | str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
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
        host: bytes = request.getRequestHostname()  # type: ignore[no-untyped-call]
        if b":" in host:  # an IPv6 literal
            host = b"[" + host + b"]"
        port = b"" if self._target == 443 else b":%d" % (self._target,)
        return b"https://" + host + port + path

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(301)
        request.setHeader(b"location", self.location(request))  # type: ignore[no-untyped-call]
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
        return b"Moved to HTTPS.\n"
