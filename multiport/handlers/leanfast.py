"""
The answers the http handler's L{LeanChannel} sends without twisted.web: a
GET or HEAD of a small regular file under the port's root, or of the
built-in page.

Anything else (a folder, a range, a conditional request, a file that is
missing or large, a path with escapes or dot segments, other methods) is
left to the port's twisted.web resources: they alone decide those answers,
so there is one place where each decision is made.  What is decided here
is decided by the same functions the resources use
(L{confinedReal}, L{openRegular}).
"""

from __future__ import annotations

import math
import os
import stat
from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.web import static
from twisted.web.http import datetimeToString

from multiport.acme.challenges import WELL_KNOWN, ChallengeResource
from multiport.handlers.conditional import notModified
from multiport.handlers.webresources import (
    ConfinedFile,
    NotServable,
    WelcomePage,
    confinedReal,
    openRegular,
)

if TYPE_CHECKING:
    from multiport.handlers.web import PortSite

#: Files up to this size are read and sent in one write; larger ones are
#: streamed by twisted.web's resource.
FAST_FILE_SIZE = 256 * 1024
#: How long ago a file must have changed for its answer to be kept.
SETTLED = 1.0
#: Request fields after which twisted.web decides the answer.
_DECIDED_ELSEWHERE = frozenset({b"range", b"if-range"})


class Head:
    """
    One request as received: what is needed to answer and log it.
    """

    __slots__ = ("method", "uri", "version", "headers", "keepAlive", "receivedAt")

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        keepAlive: bool,
        receivedAt: float,
    ) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.keepAlive = keepAlive
        self.receivedAt = receivedAt

    def values(self, name: bytes) -> list[bytes]:
        """
        The values of header C{name} (lower case), in order.
        """
        return [v for n, v in self.headers if n.lower() == name]


@frozen
class FastAnswer:
    """
    A whole answer: its status, its own header lines (each ending in CRLF),
    its body (not sent to a HEAD).
    """

    code: int
    reason: bytes
    headers: bytes
    body: bytes
    #: A file's C{Last-Modified}, in whole seconds.
    lastModified: int | None = None


class ContentCache:
    """
    Small files' answers by path, each reused while the path's C{lstat}
    says it is the same file, unchanged (L{sameFile}): a request for a hot
    file costs one C{lstat} rather than an C{open}, C{fstat}, C{read} and
    C{close}, and a file changed is served as it is now.

    A file changed less than L{SETTLED} seconds ago (by C{clock}) is not
    kept: file times are only as fine as the kernel's clock tick, and two
    writes within one tick leave the same times.

    Holds at most C{maxBytes} of bodies; past that it starts over.
    """

    def __init__(self, clock: IReactorTime, maxBytes: int = 16 << 20) -> None:
        self._clock = clock
        self._maxBytes = maxBytes
        self._bytes = 0
        self._entries: dict[str, tuple[os.stat_result, FastAnswer]] = {}

    def get(self, path: str, seen: os.stat_result) -> FastAnswer | None:
        """
        The answer kept for C{path} if it is still the file C{seen}.
        """
        entry = self._entries.get(path)
        if entry is None or not sameFile(entry[0], seen):
            return None
        return entry[1]

    def put(self, path: str, seen: os.stat_result, answer: FastAnswer) -> None:
        """
        Keep C{answer} for C{path}, the file C{seen}, unless it changed
        too recently to tell a later change by its times.
        """
        if seen.st_ctime_ns > (self._clock.seconds() - SETTLED) * 1e9:
            return
        if self._bytes + len(answer.body) > self._maxBytes:
            self._entries.clear()
            self._bytes = 0
        old = self._entries.pop(path, None)
        if old is not None:
            self._bytes -= len(old[1].body)
        self._entries[path] = (seen, answer)
        self._bytes += len(answer.body)


def sameFile(one: os.stat_result, other: os.stat_result) -> bool:
    """
    Whether two C{stat} results are of the same file, unchanged: its
    device, inode, size, and modification and change times to the
    nanosecond (any write moves the change time).
    """
    return (
        one.st_ino == other.st_ino
        and one.st_dev == other.st_dev
        and one.st_size == other.st_size
        and one.st_mtime_ns == other.st_mtime_ns
        and one.st_ctime_ns == other.st_ctime_ns
    )


def fastAnswer(site: PortSite, head: Head) -> FastAnswer | None:
    """
    The answer to C{head} if it is one of the module's, else C{None}.
    """
    if head.method not in (b"GET", b"HEAD"):
        return None
    uri = head.uri
    if not uri.startswith(b"/"):
        return None
    path = uri.split(b"?", 1)[0]
    ifModifiedSince: list[bytes] = []
    ifNoneMatch = False
    for name, value in head.headers:
        lower = name.lower()
        if lower in _DECIDED_ELSEWHERE:
            return None
        if lower == b"if-modified-since":
            ifModifiedSince.append(value)
        elif lower == b"if-none-match":
            ifNoneMatch = True
    root = site.resource
    if isinstance(root, ChallengeResource):
        if path.startswith(b"/" + WELL_KNOWN):
            return None
        root = root.wrapped
    if isinstance(root, ConfinedFile):
        answer = _file(root, path, site.contents)
        if (
            answer is not None
            and ifModifiedSince
            and answer.lastModified is not None
            and notModified(
                head.method,
                ifModifiedSince,
                ifNoneMatch,
                answer.lastModified,
                site.reactor.seconds(),
            )
        ):
            return _notModified(answer, head.method)
        return answer
    if isinstance(root, WelcomePage) and path == b"/":
        return FastAnswer(
            200,
            b"OK",
            b"Content-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
            % (len(root.body),),
            root.body,
        )
    return None


def _notModified(answer: FastAnswer, method: bytes) -> FastAnswer:
    # As twisted.web's request sends it: the file's dates, and a length
    # of 0 to a GET.
    assert answer.lastModified is not None
    return FastAnswer(
        304,
        b"Not Modified",
        b"Accept-Ranges: bytes\r\nLast-Modified: %s\r\n%s"
        % (
            datetimeToString(answer.lastModified),  # type: ignore[no-untyped-call]
            b"Content-Length: 0\r\n" if method == b"GET" else b"",
        ),
        b"",
    )


def _file(root: ConfinedFile, path: bytes, contents: ContentCache) -> FastAnswer | None:
    # Percent escapes, NUL, empty and dot segments (a folder's trailing
    # slash among them) are twisted.web's to decide.
    if b"%" in path or b"\x00" in path:
        return None
    try:
        names = path[1:].decode("utf-8").split("/")
    except UnicodeDecodeError:
        return None
    if any(name in ("", ".", "..") for name in names):
        return None
    look = os.stat if root.statCache is None else root.statCache.stat
    folder, real = root.path, root.real
    try:
        for name in names[:-1]:
            if not stat.S_ISDIR(look(folder).st_mode):
                return None
            child = os.path.join(folder, name)
            childReal = confinedReal(folder, real, root.root, child)
            if childReal is None:
                return None
            folder, real = child, childReal
        if not stat.S_ISDIR(look(folder).st_mode):
            return None
        target = os.path.join(folder, names[-1])
        # What the path is, as the resource would look (through the
        # cache), then what it is now: a symlink (whose confinement is
        # the resource's to check) or anything but a regular file is not
        # answered here.
        if not stat.S_ISREG(look(target).st_mode):
            return None
        seen = os.lstat(target)
    except OSError:
        return None
    if not stat.S_ISREG(seen.st_mode):
        return None
    cached = contents.get(target, seen)
    if cached is not None:
        return cached
    try:
        fd, opened = openRegular(target)
    except (NotServable, OSError):
        return None
    try:
        size = opened.st_size
        if size > FAST_FILE_SIZE:
            return None
        body = os.read(fd, size) if size else b""
    finally:
        os.close(fd)
    if len(body) != size:
        return None
    contentType, encoding = static.getTypeAndEncoding(  # type: ignore[no-untyped-call]
        target, root.contentTypes, root.contentEncodings, root.defaultType
    )
    lastModified = math.ceil(opened.st_mtime)
    headers = (
        b"Accept-Ranges: bytes\r\nLast-Modified: %s\r\nContent-Length: %d\r\n"
        b"Content-Type: %s\r\n"
        % (
            datetimeToString(lastModified),  # type: ignore[no-untyped-call]
            size,
            (contentType or "application/octet-stream").encode("latin-1"),
        )
    )
    if encoding:
        headers += b"Content-Encoding: %s\r\n" % (encoding.encode("latin-1"),)
    answer = FastAnswer(200, b"OK", headers, body, lastModified)
    if sameFile(opened, seen):
        contents.put(target, seen, answer)
    return answer
