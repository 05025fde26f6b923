"""
Where a client's bytes stand in HTTP/2's framing (RFC 9113 section 4):
inside a frame or a header block, or between them.

h2 keeps its frame buffer to itself, and the events it returns don't say:
a whole frame it ignores (a WINDOW_UPDATE for a stream already closed)
returns none.  The header timeout and the connection log's "ended between
messages" both need to know, so L{FrameEdges} follows the frame headers,
skipping payloads without copying them.
"""

from __future__ import annotations

#: What a client sends before its first frame.
PREAMBLE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The frames that carry a header block, which CONTINUATION frames extend
#: until one has END_HEADERS.
_HEADER_BLOCK_FRAMES = frozenset({0x1, 0x5, 0x9})  # HEADERS, PUSH_PROMISE, CONTINUATION
_END_HEADERS = 0x4
_FRAME_HEADER = 9


class FrameEdges:
    """
    Follows the frames of one client's byte stream.

    @ivar pending: Whether the bytes so far end inside the preamble, a
        frame, or a header block not yet ended.
    """

    def __init__(self) -> None:
        # Bytes still to skip: the preamble first, then each payload.
        self._skip = len(PREAMBLE)
        self._head = bytearray()
        self._kind: int | None = None
        self._flags = 0
        self._inBlock = False

    @property
    def pending(self) -> bool:
        return bool(self._skip or self._head or self._inBlock)

    def feed(self, data: bytes) -> bool:
        """
        Follow C{data}; whether it completed the preamble, or a frame outside
        a header block, or a header block.
        """
        completed = False
        size = len(data)
        offset = 0
        while offset < size:
            if self._skip:
                step = min(self._skip, size - offset)
                self._skip -= step
                offset += step
                if not self._skip:
                    completed |= self._ended()
                continue
            take = min(_FRAME_HEADER - len(self._head), size - offset)
            self._head += data[offset : offset + take]
            offset += take
            if len(self._head) == _FRAME_HEADER:
                head = self._head
                self._skip = int.from_bytes(head[:3], "big")
                self._kind, self._flags = head[3], head[4]
                self._head = bytearray()
                if not self._skip:
                    completed |= self._ended()
        return completed

    def _ended(self) -> bool:
        # The preamble or a frame ended: whether that completed anything.
        if self._kind in _HEADER_BLOCK_FRAMES:
            self._inBlock = not self._flags & _END_HEADERS
        return not self._inBlock
