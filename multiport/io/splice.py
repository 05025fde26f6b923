"""
Zero-copy relaying between two plain TCP connections with Linux's
C{splice(2)}: bytes go from one socket into a pipe and from the pipe into
the other socket without ever being copied into Python.

A L{Splice} takes over two connected Twisted TCP transports: Twisted's
own reading and writing on them is stopped, and one L{_End} per socket is
registered with the reactor in their place (one object per descriptor,
since a reactor keeps one reader/writer per descriptor).  Each direction
holds at most one pipe's worth of bytes, in the kernel: a side that stops
reading stops the other side being read (flow control), exactly as with
Twisted's producers.

A direction takes a pipe from the daemon's L{PipePool} only while it has
bytes in flight and gives it back once the pipe is empty, so an idle
relayed connection holds no pipe: only its two sockets.  When the pool
has no pipe to give, that direction copies through Python (one bounded
read at a time) until its bytes are delivered; the connection never fails
for want of a pipe.

End of file is passed on as a shutdown of the other socket's sending
side (half-close).  When both directions have ended, or either socket
fails, the splice removes its descriptors, gives back its pipes and says
so; closing the connections themselves is left to their Twisted
transports.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFDSet, IReadWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from multiport.ports.admission import DaemonLimit

#: Whether this system has splice(2).
AVAILABLE = hasattr(os, "splice")

#: How many bytes each pipe holds (and each splice moves).
PIPE_SIZE = 256 * 1024

#: How many bytes a direction without a pipe reads at once (Twisted's own
#: read size): its bound on what it holds.
COPY_SIZE = 64 * 1024

#: A direction splices once a read fills the copy buffer (bulk traffic)
#: and copies again once a splice moves less than SMALL_SPLICE: for small
#: messages a splice costs four system calls (into the pipe, out of it, and
#: a readiness event each) where copying costs two.  HAProxy's
#: C{splice-auto} decides the same way, by what the traffic does.
SMALL_SPLICE = 16 * 1024

#: Pipes a pool keeps for reuse once given back, at least (it keeps as
#: many as are in use when that is more).
KEEP_AT_LEAST = 16

#: The pool's size when no descriptor limit sizes it (a relay outside a
#: daemon, in tests).
DEFAULT_POOL = 256

_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

#: A pipe: its read and write descriptors.
Pipe = tuple[int, int]


def tcpTransport(transport: object) -> tcp.Connection | None:
    """
    The Twisted TCP connection under C{transport}, through the layers that
    pass bytes unchanged (multiport's per-port wrapper, a PROXY protocol
    transport); L{None} when a layer changes them (TLS) or there is no
    socket.
    """
    for _ in range(4):
        if isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "passThrough", None)
        if transport is None:
            return None
    return None


def _pipe() -> Pipe:
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    setSize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setSize is not None:
        try:
            fcntl.fcntl(write, setSize, PIPE_SIZE)
        except OSError:
            # The per-user pipe allowance is spent: the default size works.
            pass
    return read, write


def _close(pipe: Pipe) -> None:
    os.close(pipe[0])
    os.close(pipe[1])


def poolSize(descriptors: int) -> int:
    """
    The pipes a daemon with C{descriptors} for its connections may have at
    once: as HAProxy's C{maxpipes} (a quarter of its connections), a pipe
    for a quarter of the relayed connections those descriptors could hold
    (two descriptors each), so at most a quarter of the descriptors.
    """
    return max(1, descriptors // 8)


class PipePool:
    """
    The daemon's splice pipes, shared by every relay port: a direction
    takes one while it has bytes in flight and gives it back once empty.

    Pipes are made on demand, up to C{maximum} at once (in use or kept),
    and each takes two descriptors from the daemon's L{DaemonLimit} (only
    from what the limit lends, never from the quarter kept for ports below
    their fair share).  Given-back pipes are kept for the next taker, at
    most as many as are in use (at least L{KEEP_AT_LEAST}), so that an idle
    daemon keeps at most L{KEEP_AT_LEAST}; the daemon limit may have kept
    ones closed when it needs their descriptors for a connection.

    @ivar taken: How many times a pipe was handed out.
    @ivar refused: How many times none could be (the direction copied).
    """

    def __init__(
        self,
        maximum: int,
        limit: DaemonLimit | None = None,
        makePipe: Callable[[], Pipe] = _pipe,
    ) -> None:
        if maximum < 0:
            raise ValueError(f"a pipe pool of {maximum} pipes")
        self.maximum = maximum
        self.limit = limit
        self._makePipe = makePipe
        self.kept: list[Pipe] = []
        self.inUse = 0
        self.taken = 0
        self.refused = 0
        if limit is not None:
            limit.spare = self

    @property
    def descriptors(self) -> int:
        """
        The descriptors the pool's pipes hold now, in use or kept.
        """
        return 2 * (self.inUse + len(self.kept))

    def take(self) -> Pipe | None:
        """
        An empty pipe, or L{None} when the pool is at its maximum, the
        daemon has no descriptors to lend, or the system makes none.
        """
        if self.kept:
            pipe = self.kept.pop()
        elif self.inUse >= self.maximum:
            self.refused += 1
            return None
        else:
            limit = self.limit
            if limit is not None and not limit.lend(2):
                self.refused += 1
                return None
            try:
                pipe = self._makePipe()
            except OSError:
                if limit is not None:
                    limit.giveBack(2)
                self.refused += 1
                return None
        self.inUse += 1
        self.taken += 1
        return pipe

    def give(self, pipe: Pipe) -> None:
        """
        Take back C{pipe}, which must be empty: kept for the next taker, or
        closed when enough are kept.
        """
        self.inUse -= 1
        keep = max(KEEP_AT_LEAST, self.inUse)
        kept = self.kept
        if len(kept) < keep:
            kept.append(pipe)
            return
        self._closed(pipe)
        # As the load falls, so does what is kept: after a burst an idle
        # daemon holds at most KEEP_AT_LEAST pipes.
        while len(kept) > keep:
            self._closed(kept.pop())

    def discard(self, pipe: Pipe) -> None:
        """
        Close C{pipe}, taken and not empty (its connection ended with bytes
        still in it): it can't serve another.
        """
        self.inUse -= 1
        self._closed(pipe)

    def reclaim(self, descriptors: int) -> int:
        """
        Close kept pipes until C{descriptors} are freed or none is kept;
        the descriptors freed.
        """
        freed = 0
        while freed < descriptors and self.kept:
            self._closed(self.kept.pop())
            freed += 2
        return freed

    def close(self) -> None:
        """
        Close every kept pipe (the daemon is stopping).
        """
        self.reclaim(self.descriptors)

    def _closed(self, pipe: Pipe) -> None:
        _close(pipe)
        if self.limit is not None:
            self.limit.giveBack(2)


@implementer(IReadWriteDescriptor)
class _End:
    """
    One socket of a splice: reading it fills this end's pipe (or, without
    one, its copy buffer) with bytes for the other end; its becoming
    writable lets the other end's bytes drain into it.

    @ivar pipe: The pipe holding bytes read here, while any are in flight.
    @ivar queued: How many bytes C{pipe} holds.
    @ivar buffer: Bytes read here without a pipe, not yet delivered.
    @ivar bulk: Whether reads here splice (see L{SMALL_SPLICE}); a
        direction starts copying.
    """

    # Two of these live as long as every relayed connection: slots keep
    # them small.
    __slots__ = (
        "splice",
        "connection",
        "fd",
        "other",
        "pipe",
        "queued",
        "buffer",
        "ended",
        "shut",
        "bulk",
    )

    def __init__(self, splice: Splice, connection: tcp.Connection) -> None:
        self.splice = splice
        self.connection = connection
        self.fd = connection.fileno()
        self.other: _End
        self.pipe: Pipe | None = None
        self.queued = 0
        self.buffer: memoryview | bytes = b""
        self.ended = False
        self.shut = False
        self.bulk = False

    def fileno(self) -> int:
        # Asked of the connection each time: once Twisted has closed the
        # socket this is -1, so the reactor never mistakes a reused
        # descriptor number for this end.
        return self.connection.fileno()

    def logPrefix(self) -> str:
        return "Splice"

    def doRead(self) -> None:
        # Reading is only on while this end's bytes are all delivered: it
        # holds no pipe and no buffer here.
        if not self.bulk:
            self._copyRead()
            return
        pipe = self.splice.pool.take()
        if pipe is None:
            self._copyRead()
            return
        try:
            count = os.splice(self.fd, pipe[1], PIPE_SIZE, flags=_FLAGS)
        except BlockingIOError:
            self.splice.pool.give(pipe)
            return
        except OSError as e:
            self.splice.pool.give(pipe)
            self.splice.fail(e)
            return
        if count == 0:
            self.splice.pool.give(pipe)
            self._readEnded()
        else:
            self.pipe = pipe
            self.queued = count
            self.bulk = count >= SMALL_SPLICE
            self.splice.counted(self, count)
        self.flush()

    def _copyRead(self) -> None:
        try:
            data = self.connection.socket.recv(COPY_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self.splice.fail(e)
            return
        if data:
            self.buffer = data
            # A full buffer: more is waiting, so splice from now on (when a
            # pipe can be had).
            self.bulk = len(data) == COPY_SIZE
            self.splice.counted(self, len(data))
        else:
            self._readEnded()
        self.flush()

    def _readEnded(self) -> None:
        self.ended = True
        self.splice.reactor.removeReader(self)

    def doWrite(self) -> None:
        self.other.flush()

    def flush(self) -> None:
        """
        Move what this end read into the other socket; stop reading this
        socket while the other can't take it all, give the pipe back once
        it is empty.
        """
        other, reactor = self.other, self.splice.reactor
        pipe = self.pipe
        try:
            if pipe is not None:
                while self.queued:
                    count = os.splice(pipe[0], other.fd, self.queued, flags=_FLAGS)
                    self.queued -= count
            while self.buffer:
                sent = other.connection.socket.send(self.buffer)
                self.buffer = memoryview(self.buffer)[sent:]
        except BlockingIOError:
            pass
        except OSError as e:
            self.splice.fail(e)
            return
        if self.queued or self.buffer:
            reactor.removeReader(self)
            reactor.addWriter(other)
            return
        if pipe is not None:
            self.pipe = None
            self.splice.pool.give(pipe)
        self.buffer = b""
        reactor.removeWriter(other)
        if not self.ended:
            reactor.addReader(self)
        elif not other.shut:
            other.shut = True
            try:
                other.connection.socket.shutdown(socket.SHUT_WR)
            except OSError as e:
                self.splice.fail(e)
                return
            self.splice.checkDone()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the socket hang up or fail.  A Failure holds the
        # exception it was made from; Twisted types its value as optional.
        self.splice.fail(cast(BaseException, reason.value))

    def close(self) -> None:
        reactor = self.splice.reactor
        reactor.removeReader(self)
        reactor.removeWriter(self)
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            if self.queued:
                self.splice.pool.discard(pipe)
            else:
                self.splice.pool.give(pipe)
        self.buffer = b""


class _Stoppable(Protocol):
    """
    What a L{Splice} asks of the transports it takes over
    (L{FileDescriptor}'s methods, which Twisted leaves unannotated).
    """

    def stopReading(self) -> None: ...
    def stopWriting(self) -> None: ...


class SpliceOwner(Protocol):
    """
    What a L{Splice} reports to (the relayed connection).
    """

    def spliceCounted(self, fromFirst: bool, count: int) -> None:
        """
        C{count} bytes were read from the first connection (C{fromFirst})
        or from the second.
        """

    def spliceEnded(self, error: BaseException | None) -> None:
        """
        The splice is over: with L{None} when both sides sent their end of
        file and everything was delivered, else with the error.  Its
        descriptors are gone by then (its pipes given back), the sockets
        still open.
        """


class Splice:
    """
    Relay two plain TCP connections with splice(2) until both directions
    end or either fails, telling C{owner} (L{SpliceOwner}) what moved and
    when it is over.

    @param pool: Where each direction takes a pipe while it has bytes in
        flight.
    """

    __slots__ = ("reactor", "pool", "owner", "done", "first", "second")

    def __init__(
        self,
        reactor: IReactorFDSet,
        first: tcp.Connection,
        second: tcp.Connection,
        owner: SpliceOwner,
        pool: PipePool,
    ) -> None:
        self.reactor = reactor
        self.pool = pool
        self.owner = owner
        self.done = False
        self.first = _End(self, first)
        self.second = _End(self, second)
        self.first.other, self.second.other = self.second, self.first
        for transport in (first, second):
            # What a FastServer holds for the reactor's write batch goes
            # first: from now on its socket is written behind its back.
            flushWrites = getattr(transport, "flushWrites", None)
            if flushWrites is not None:
                flushWrites()
            stoppable: _Stoppable = transport
            stoppable.stopReading()
            stoppable.stopWriting()

    def start(self, toSecond: bytes = b"") -> None:
        """
        Start relaying; C{toSecond} goes to the second connection first.
        """
        # The prefix (bytes that came before the upstream answered, a PROXY
        # header) is delivered from memory: no pipe is needed for it.
        self.first.buffer = toSecond
        self.first.flush()
        if not self.done:
            self.second.flush()

    def counted(self, end: _End, count: int) -> None:
        self.owner.spliceCounted(end is self.first, count)

    def checkDone(self) -> None:
        """
        Finish once both directions ended and were delivered.
        """
        if self.first.other.shut and self.second.other.shut:
            self._finish(None)

    def fail(self, error: BaseException) -> None:
        self._finish(error)

    def stop(self) -> None:
        """
        Stop splicing without a word (the connections are being closed).
        """
        if not self.done:
            self.done = True
            self.first.close()
            self.second.close()

    def _finish(self, error: BaseException | None) -> None:
        if not self.done:
            self.stop()
            self.owner.spliceEnded(error)
