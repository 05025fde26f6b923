"""
Zero-copy relaying between two plain TCP connections with Linux's
C{splice(2)}: bytes go from one socket into a pipe and from the pipe into
the other socket without ever being copied into Python.

A L{Splice} takes over two connected Twisted TCP transports: Twisted's
own reading and writing on them is stopped, and one L{_End} per socket is
registered with the reactor in their place (one object per descriptor,
since a reactor keeps one reader/writer per descriptor).  Each direction
has its own pipe, so at most one pipe's worth of bytes per direction is
held, in the kernel: a side that stops reading stops the other side being
read (flow control), exactly as with Twisted's producers.

End of file is passed on as a shutdown of the other socket's sending
side (half-close).  When both directions have ended, or either socket
fails, the splice removes its descriptors, closes its pipes and says so;
closing the connections themselves is left to their Twisted transports.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFDSet, IReadWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

#: Whether this system has splice(2).
AVAILABLE = hasattr(os, "splice")

#: How many bytes each direction's pipe holds (and each splice moves).
PIPE_SIZE = 256 * 1024

_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


def tcpTransport(transport: Any) -> tcp.Connection | None:
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


def _pipe() -> tuple[int, int]:
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    setSize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setSize is not None:
        try:
            fcntl.fcntl(write, setSize, PIPE_SIZE)
        except OSError:
            # The per-user pipe allowance is spent: the default size works.
            pass
    return read, write


@implementer(IReadWriteDescriptor)
class _End:
    """
    One socket of a splice: reading it fills its own pipe (bytes for the
    other end); its becoming writable lets the other end's pipe drain into
    it.
    """

    def __init__(self, splice: Splice, connection: tcp.Connection) -> None:
        self.splice = splice
        self.connection = connection
        self.fd = connection.fileno()
        self.pipeRead, self.pipeWrite = _pipe()
        self.queued = 0
        self.ended = False
        self.shut = False
        self.other: _End

    def fileno(self) -> int:
        # Asked of the connection each time: once Twisted has closed the
        # socket this is -1, so the reactor never mistakes a reused
        # descriptor number for this end.
        return self.connection.fileno()

    def logPrefix(self) -> str:
        return "Splice"

    def doRead(self) -> None:
        try:
            count = os.splice(self.fd, self.pipeWrite, PIPE_SIZE, flags=_FLAGS)
        except BlockingIOError:
            return
        except OSError as e:
            self.splice.fail(e)
            return
        if count == 0:
            self.ended = True
            self.splice.reactor.removeReader(self)
        else:
            self.queued += count
            self.splice.counted(self, count)
        self.flush()

    def doWrite(self) -> None:
        self.other.flush()

    def flush(self) -> None:
        """
        Move what this end's pipe holds into the other socket; stop reading
        this socket while the other can't take it all.
        """
        other, reactor = self.other, self.splice.reactor
        while self.queued:
            try:
                count = os.splice(self.pipeRead, other.fd, self.queued, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                self.splice.fail(e)
                return
            self.queued -= count
        if self.queued:
            reactor.removeReader(self)
            reactor.addWriter(other)
            return
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
        # The reactor saw the socket hang up or fail.
        self.splice.fail(reason.value)

    def close(self) -> None:
        reactor = self.splice.reactor
        reactor.removeReader(self)
        reactor.removeWriter(self)
        os.close(self.pipeRead)
        os.close(self.pipeWrite)


class Splice:
    """
    Relay two plain TCP connections with splice(2) until both directions
    end or either fails.

    @param counted: Called with C{(True, n)} when C{n} bytes were read from
        C{first} and with C{(False, n)} for bytes read from C{second}.
    @param finished: Called once, with L{None} when both sides sent their
        end of file and everything was delivered, else with the error; the
        splice's descriptors are gone by then, the sockets still open.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        first: tcp.Connection,
        second: tcp.Connection,
        counted: Callable[[bool, int], None],
        finished: Callable[[BaseException | None], None],
    ) -> None:
        self.reactor = reactor
        self._counted = counted
        self._finished = finished
        self.done = False
        self.first = _End(self, first)
        try:
            self.second = _End(self, second)
        except OSError:
            # No descriptors left for the pipes: the caller relays the
            # ordinary way.
            os.close(self.first.pipeRead)
            os.close(self.first.pipeWrite)
            raise
        self.first.other, self.second.other = self.second, self.first
        for transport in (first, second):
            # What a FastServer holds for the reactor's write batch goes
            # first: from now on its socket is written behind its back.
            flushWrites = getattr(transport, "flushWrites", None)
            if flushWrites is not None:
                flushWrites()
            transport.stopReading()
            transport.stopWriting()

    def start(self, toSecond: bytes = b"") -> None:
        """
        Start relaying; C{toSecond} goes to the second connection first
        (it must fit in a pipe).
        """
        if toSecond:
            written = os.write(self.first.pipeWrite, toSecond)
            if written != len(toSecond):
                raise ValueError("the prefix does not fit in the pipe")
            self.first.queued = written
        self.first.flush()
        if not self.done:
            self.second.flush()

    def counted(self, end: _End, count: int) -> None:
        self._counted(end is self.first, count)

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
            self._finished(error)
