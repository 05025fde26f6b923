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
from twisted.web import static
from twisted.web.http import datetimeToString

from multiport.acme.challenges import WELL_KNOWN, ChallengeResource
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
#: Request fields after which twisted.web decides the answer.
_DECIDED_ELSEWHERE = frozenset({b"range", b"if-modified-since", b"if-range"})


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
    headers: list[bytes]
    body: bytes


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
    for name, _ in head.headers:
        if name.lower() in _DECIDED_ELSEWHERE:
            return None
    root = site.resource
    if isinstance(root, ChallengeResource):
        if path.startswith(b"/" + WELL_KNOWN):
            return None
        root = root.wrapped
    if isinstance(root, ConfinedFile):
        return _file(root, path)
    if isinstance(root, WelcomePage) and path == b"/":
        return FastAnswer(
            200,
            b"OK",
            [
                b"Content-Type: text/html; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % (len(root.body),),
            ],
            root.body,
        )
    return None


def _file(root: ConfinedFile, path: bytes) -> FastAnswer | None:
    # Percent escapes, NUL, empty and dot segments (a folder's trailing
    # slash among them) are twisted.web's to decide.
    if b"%" in path or b"\x00" in path:
        return None
    segments = path[1:].split(b"/")
    try:
        names = [segment.decode("utf-8") for segment in segments]
    except UnicodeDecodeError:
        return None
    if any(name in ("", ".", "..") for name in names):
        return None
    look = os.stat if root.statCache is None else root.statCache.stat
    folder, real = root.path, root.real
    for name in names:
        try:
            if not stat.S_ISDIR(look(folder).st_mode):
                return None
        except OSError:
            return None
        target = os.path.join(folder, name)
        childReal = confinedReal(folder, real, root.root, target)
        if childReal is None:
            return None
        folder, real = target, childReal
    # What the path is, as the resource would look (through the cache):
    # only a regular file is opened here.
    try:
        if not stat.S_ISREG(look(target).st_mode):
            return None
    except OSError:
        return None
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
    headers = [
        b"Accept-Ranges: bytes\r\n",
        b"Last-Modified: %s\r\n" % (_httpDate(math.ceil(opened.st_mtime)),),
        b"Content-Length: %d\r\n" % (size,),
        b"Content-Type: %s\r\n"
        % ((contentType or "application/octet-stream").encode("latin-1"),),
    ]
    if encoding:
        headers.append(b"Content-Encoding: %s\r\n" % (encoding.encode("latin-1"),))
    return FastAnswer(200, b"OK", headers, body)


_dates: dict[int, bytes] = {}


def _httpDate(when: int) -> bytes:
    # Files' dates repeat: each is formatted once (a bounded memo).
    date = _dates.get(when)
    if date is None:
        if len(_dates) > 1024:
            _dates.clear()
        date = _dates[when] = datetimeToString(when)  # type: ignore[no-untyped-call]
    return date
