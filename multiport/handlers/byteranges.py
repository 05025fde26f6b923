"""
Byte ranges for the http handler's files: what a C{Range} header asks of a
file of a given size, and the producer that sends exactly those bytes.

twisted.web's own range handling answers C{Range: bytes=} with 500, sends
nothing (a traceback, and the connection held) for many parts, and serves
any number of overlapping parts (C{bytes=0-,0-,...} returns the file a
hundred times over).  This follows nginx instead: parts that add up to
more than the file, or too many parts, and the header is ignored (200, the
whole file); overlapping and adjacent parts are merged; 416 only when no
part is satisfiable.  Beyond nginx, a multipart answer is never larger
than the file itself: the whole file is then cheaper for both sides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import IO, Protocol, cast

from attrs import frozen
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IProducer, IPullProducer, ITransport
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

log = Logger()

#: At most this many parts (after merging) in a multipart answer; more and
#: the whole file is sent.  Real clients (PDF viewers, download resumers)
#: ask for a handful; Apache's MaxRanges defaults to 200, nginx's
#: max_ranges to no limit.
MAX_PARTS = 64

_SPEC = re.compile(rb"([0-9]*)-([0-9]*)")
_OWS = b" \t"


@frozen
class Part:
    """
    C{size} bytes of a file from C{offset}; never empty.
    """

    offset: int
    size: int


@frozen
class RangePlan:
    """
    How to answer a request for a file: the whole file (C{parts} is
    C{None}), 416 (C{parts} is empty), or 206 with one part or a multipart
    body of several.
    """

    parts: tuple[Part, ...] | None

    @property
    def whole(self) -> bool:
        """
        Whether the whole file is sent with 200.
        """
        return self.parts is None

    @property
    def unsatisfiable(self) -> bool:
        """
        Whether the answer is 416.
        """
        return self.parts == ()


WHOLE = RangePlan(None)


def parseRangeHeader(value: bytes) -> list[tuple[int | None, int | None]] | None:
    """
    The byte-range-specs of a C{Range} header value (RFC 9110 section
    14.1.1) as C{(first, last)} pairs, C{(None, n)} for a suffix of C{n}
    bytes; C{None} if the value is not a valid bytes range set, which the
    caller ignores (RFC 9110 section 14.2 lets a server ignore an invalid
    Range; nginx answers 416 to some invalid sets, 200 to others).
    """
    unit, equals, rangeSet = value.partition(b"=")
    if not equals or unit.lower() != b"bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    # 1#range-spec: a list, in which empty elements are allowed and ignored.
    for element in rangeSet.split(b","):
        element = element.strip(_OWS)
        if not element:
            continue
        match = _SPEC.fullmatch(element)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if first:
            if last and int(last) < int(first):
                return None
            specs.append((int(first), int(last) if last else None))
        elif last:
            specs.append((None, int(last)))
        else:
            return None
    return specs or None


def _resolve(spec: tuple[int | None, int | None], size: int) -> Part | None:
    first, last = spec
    if first is None:
        assert last is not None
        if last == 0:
            return None
        start = max(0, size - last)
        return Part(start, size - start)
    if first >= size:
        return None
    end = size if last is None else min(last + 1, size)
    return Part(first, end - first)


def _merge(parts: Sequence[Part]) -> tuple[Part, ...]:
    # Overlapping and adjacent parts become one (RFC 9110 section 14.2 lets
    # a server coalesce them); the merged parts keep the order in which
    # their first piece was asked for, as the RFC asks of a multipart answer.
    order = sorted(range(len(parts)), key=lambda i: parts[i].offset)
    groups: list[tuple[int, int, int]] = []  # (first asked index, start, end)
    for index in order:
        part = parts[index]
        end = part.offset + part.size
        if groups and part.offset <= groups[-1][2]:
            asked, start, groupEnd = groups[-1]
            groups[-1] = (min(asked, index), start, max(groupEnd, end))
        else:
            groups.append((index, part.offset, end))
    groups.sort()
    return tuple(Part(start, end - start) for _, start, end in groups)


def multipartSeparator(
    boundary: bytes, contentType: bytes, part: Part, size: int
) -> bytes:
    """
    What comes before C{part} in a multipart/byteranges body.
    """
    return b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n" % (
        boundary,
        contentType,
        part.offset,
        part.offset + part.size - 1,
        size,
    )


def multipartEnd(boundary: bytes) -> bytes:
    """
    What ends a multipart/byteranges body.
    """
    return b"\r\n--%s--\r\n" % (boundary,)


def planRanges(
    headers: Sequence[bytes] | None,
    size: int,
    boundary: bytes,
    contentType: bytes,
    maxParts: int = MAX_PARTS,
) -> RangePlan:
    """
    How to answer a GET for a file of C{size} bytes with these C{Range}
    header values (C{None}: no header).

    @param boundary: The multipart boundary that would be used, and
    @param contentType: the type of the file, to weigh a multipart answer
        against the whole file.
    """
    # A second Range header makes the request ambiguous: ignore both.
    if not headers or len(headers) != 1:
        return WHOLE
    specs = parseRangeHeader(headers[0])
    # An empty file has no byte to range over: nginx sends it whole (200).
    if specs is None or size == 0:
        return WHOLE
    parts = [p for p in (_resolve(spec, size) for spec in specs) if p is not None]
    if not parts:
        return RangePlan(())
    # nginx: parts that together ask for more than the file (bytes=0-,0-
    # ...) are an amplification attempt, not a real client's need.
    if sum(p.size for p in parts) > size:
        return WHOLE
    merged = _merge(parts)
    if len(merged) == 1:
        return RangePlan(merged)
    if len(merged) > maxParts:
        return WHOLE
    body = len(multipartEnd(boundary)) + sum(
        len(multipartSeparator(boundary, contentType, p, size)) + p.size for p in merged
    )
    if body > size:
        return WHOLE
    return RangePlan(merged)


@frozen
class Segment:
    """
    C{prefix}, then C{size} bytes of the file from C{offset}.
    """

    prefix: bytes
    offset: int
    size: int


class _Abortable(Protocol):
    """
    A connection that can be reset: a request's transport, which
    twisted.web types as an L{ITransport}, is a TCP or TLS connection, or
    multiport's per-port wrapper of one.
    """

    def abortConnection(self) -> None: ...


class _Response(Protocol):
    """
    What L{SegmentsProducer} writes to: a L{Request}, whose methods
    twisted.web leaves unannotated.
    """

    @property
    def transport(self) -> ITransport | None: ...

    def registerProducer(self, producer: IProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...


def abortShrunk(request: _Response, path: str) -> None:
    """
    The file being served to C{request} shrank below the promised
    Content-Length: say so, and abort the connection (as nginx does) rather
    than leave the client waiting for bytes that will never come.
    """
    log.warn("{path} shrank while being served: connection aborted", path=path)
    # Stop being pulled now, not when the connection is gone.
    request.unregisterProducer()
    cast(_Abortable, request.transport).abortConnection()


@implementer(IPullProducer)
class SegmentsProducer:
    """
    Writes segments of an open file to a request, then C{trailer}, then
    finishes it: exactly the bytes its Content-Length promised, whatever
    happens to the file meanwhile.  A file that grows is cut at the promised
    size; one that shrinks can no longer keep the promise, so the connection
    is aborted (as nginx does) rather than left waiting for bytes that will
    never come.

    Replaces twisted.web's three static producers: the multi-part one
    raises (a negative read length) once part headers fill its buffer, and
    all of them hang or loop when the file shrinks.
    """

    bufferSize = FileDescriptor.bufferSize

    def __init__(
        self,
        request: Request,
        fileObject: IO[bytes],
        segments: Sequence[Segment],
        trailer: bytes = b"",
        path: str = "",
    ) -> None:
        self.request: _Response | None = request
        self.fileObject = fileObject
        self._segments = list(reversed(segments))
        self._trailer = trailer
        self._path = path
        self._prefix = b""
        self._left = 0
        # The file is fresh, at its start: a segment that starts where the
        # file is needs no seek (an lseek a request for a whole file).
        self._position = 0

    def start(self) -> None:
        """
        Register with the request, which then pulls.
        """
        assert self.request is not None
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        request = self.request
        if request is None:
            return
        chunk = bytearray()
        while len(chunk) < self.bufferSize:
            if self._left == 0:
                if not self._segments:
                    chunk += self._trailer
                    if chunk:
                        request.write(bytes(chunk))
                    self._finish()
                    return
                segment = self._segments.pop()
                chunk += segment.prefix
                self._left = segment.size
                if segment.offset != self._position:
                    self.fileObject.seek(segment.offset)
                    self._position = segment.offset
                continue
            want = min(self._left, self.bufferSize - len(chunk))
            data = self.fileObject.read(want)
            chunk += data
            self._left -= len(data)
            self._position += len(data)
            if len(data) < want:
                self._shrank()
                return
        request.write(bytes(chunk))

    def _finish(self) -> None:
        request, self.request = self.request, None
        assert request is not None
        request.unregisterProducer()
        request.finish()
        self.fileObject.close()

    def _shrank(self) -> None:
        request, self.request = self.request, None
        assert request is not None
        self.fileObject.close()
        abortShrunk(request, self._path)

    def stopProducing(self) -> None:
        """
        The connection went away: close the file.
        """
        self.request = None
        self.fileObject.close()
