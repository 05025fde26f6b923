"""
A TCP server transport that sends at once.

Twisted's L{tcp.Server} queues every C{write} and sends it on a later reactor
turn, once epoll says the socket is writable: two C{epoll_ctl} calls (arm the
write event, then disarm it) and one more trip through the reactor's
dispatch for every reply.  L{FastServer} tries the socket at once when
nothing is queued, as asyncio does, and hands whatever the kernel did not
take to Twisted's own buffer, so that ordering, flow control, half-close,
C{loseConnection} and TLS on top all behave as before.

L{FastPort} is a L{tcp.Port} whose connections are L{FastServer}s; any other
port class gets the same by setting C{transport = FastServer}.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import tcp
from twisted.internet._newtls import startTLS
from twisted.internet.abstract import FileDescriptor, _dataMustBeBytes

__all__ = ["FastPort", "FastServer"]


def _writeNow(transport: FastServer, data: bytes) -> None:
    """
    C{FileDescriptor.write}, but try the socket first when nothing is
    queued.

    The socket is tried only when Twisted's buffer is empty (so nothing can
    overtake bytes already queued), the connection is neither closing nor
    half-closing nor aborted, and no pull producer is registered (a pull
    producer is asked for more by C{doWrite} once the buffer drains, so
    its writes must go through the buffer).  A streaming producer with an
    empty buffer is never paused, so sending at once can't violate its
    state; if the rest of C{data} overfills the buffer, C{FileDescriptor.write}
    pauses it exactly as before.

    The rest goes through C{FileDescriptor.write}: queued, the write event
    armed, the producer paused if the buffer is full.  An error other than
    C{EAGAIN} queues everything, so that C{doWrite} meets the same error on
    the next turn and reports the lost connection the usual way; C{write}
    itself never raises for a socket error.
    """
    if (
        transport._tempDataLen
        or transport.dataBuffer
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnecting
        or transport._writeDisconnected
        or transport._aborting
        or transport.producerPaused
        or (transport.producer is not None and not transport.streamingProducer)
        or data.__class__ is not bytes
    ):
        # The ordinary path, which also rejects what is not bytes.
        FileDescriptor.write(transport, data)
        return
    if not data:
        return
    try:
        # send() retries EINTR by itself (PEP 475).
        sent = transport.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        # Reset, broken pipe...: leave it to doWrite to find out.
        sent = 0
    if sent < len(data):
        FileDescriptor.write(transport, data[sent:] if sent else data)


def _writeSequenceNow(transport: FastServer, iovec: Iterable[bytes]) -> None:
    """
    C{FileDescriptor.writeSequence}, joined into one L{_writeNow}.
    """
    iovec = list(iovec)
    for chunk in iovec:
        _dataMustBeBytes(chunk)
    _writeNow(transport, b"".join(iovec))


class _FastBypass:
    """
    What C{startTLS} writes its ciphertext through: L{_writeNow} rather than
    C{FileDescriptor.write}, the rest as C{FileDescriptor} does it.
    """

    write = _writeNow
    writeSequence = _writeSequenceNow
    loseConnection = FileDescriptor.loseConnection
    registerProducer = FileDescriptor.registerProducer
    unregisterProducer = FileDescriptor.unregisterProducer


class FastServer(tcp.Server):
    """
    A L{tcp.Server} whose C{write} sends at once when nothing is queued;
    see L{_writeNow}.
    """

    def write(self, data: bytes) -> None:
        if self.TLS:
            # startTLS: the TLS layer encrypts, then writes through
            # _FastBypass.
            super().write(data)
        else:
            _writeNow(self, data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        if self.TLS:
            super().writeSequence(iovec)
        else:
            _writeSequenceNow(self, iovec)

    def startTLS(self, ctx: object, normal: bool = True) -> None:
        startTLS(self, ctx, normal, _FastBypass)

    @property
    def repstr(self) -> str:
        """
        C{repr(self)}, made when asked: C{tcp.Server} keeps it as a string
        per connection, about 80 bytes of every idle connection.
        """
        return (
            f"<{self.protocol.__class__.__name__} #{self.sessionno} "
            f"on {self.server._realPortNumber}>"
        )

    @repstr.setter
    def repstr(self, value: str) -> None:
        # tcp.Server.__init__ sets it; the property makes it instead.
        pass


class FastPort(tcp.Port):
    """
    A L{tcp.Port} whose connections are L{FastServer}s.
    """

    transport = FastServer
