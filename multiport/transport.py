"""
A TCP server transport that sends without waiting for another reactor turn,
in one system call for what is written during one event.

Twisted's L{tcp.Server} queues every C{write} and sends it on a later reactor
turn, once epoll says the socket is writable: two C{epoll_ctl} calls (arm the
write event, then disarm it) and one more trip through the reactor's
dispatch for every reply.  L{FastServer} tries the socket at once when
nothing is queued, as asyncio does, and hands whatever the kernel did not
take to Twisted's own buffer, so that ordering, flow control, half-close,
C{loseConnection} and TLS on top all behave as before.

Sending each C{write} at once would send a twisted.web response (its
headers, then its body) as two TCP segments and two system calls, and over
a real network the second small segment can wait for the first one's ACK
(Nagle's algorithm against the peer's delayed ACK).  So when the reactor
offers a L{WriteBatch} (multiport's, L{multiport.reactor}, does), the
writes made while one event is handled (or one round of timed calls runs)
are held and sent together, in one C{send}, when it ends: still within the
same reactor turn, so an echo's reply goes out as soon as before.  With
writes coalesced, Nagle's algorithm only adds delay, so L{FastServer} sets
C{TCP_NODELAY} on every connection, as nginx does.

L{FastPort} is a L{tcp.Port} whose connections are L{FastServer}s; any other
port class gets the same by setting C{transport = FastServer}.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from twisted.internet import tcp
from twisted.internet._newtls import startTLS
from twisted.internet.abstract import FileDescriptor, _dataMustBeBytes
from twisted.internet.interfaces import IProtocol, IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["HOLD_LIMIT", "FastPort", "FastServer", "WriteBatch"]

log = Logger()

#: Held writes are sent as soon as they add up to this many bytes: one
#: segment on loopback holds about this much, and past it coalescing saves
#: nothing worth a copy.  No more than Twisted's own buffer size, so a
#: streaming producer is paused at the same point as before.
HOLD_LIMIT = 65536


class WriteBatch:
    """
    The connections written to while one event is handled or one round of
    timed calls runs, each holding what was written to it; a reactor that
    has one as its C{writeBatch} attribute opens it around each event and
    each round of timed calls and calls L{flush} when they end.

    @ivar open: Whether writes are being held now.
    @ivar pending: The connections holding writes, in the order of their
        first held write.
    """

    __slots__ = ("open", "pending")

    def __init__(self) -> None:
        self.open = False
        self.pending: list[FastServer] = []

    def flush(self) -> None:
        """
        Send what each pending connection holds, in one system call each.
        """
        pending = self.pending
        while pending:
            # Sending can call a producer's pauseProducing, which may write
            # to another connection: what that holds is sent by the next
            # pass.
            self.pending = []
            for transport in pending:
                try:
                    transport.flushWrites()
                except Exception:
                    log.failure(
                        "sending held writes on {transport}", transport=transport
                    )
            pending = self.pending


def _sendable(transport: FastServer) -> bool:
    """
    Whether bytes written to C{transport} now may go to its socket at once.

    Only when Twisted's buffer is empty (so nothing can overtake bytes
    already queued), the connection is neither closing nor half-closing
    nor aborted, and no pull producer is registered (a pull producer is
    asked for more by C{doWrite} once the buffer drains, so its writes
    must go through the buffer).  A streaming producer with an empty
    buffer is never paused, so sending at once can't violate its state.
    """
    return not (
        transport._tempDataLen
        or transport.dataBuffer
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnecting
        or transport._writeDisconnected
        or transport._aborting
        or transport.producerPaused
        or (transport.producer is not None and not transport.streamingProducer)
    )


def _writeNow(transport: FastServer, data: bytes) -> None:
    """
    C{FileDescriptor.write}, but try the socket first when L{_sendable}.

    If the rest of C{data} overfills the buffer, C{FileDescriptor.write}
    pauses a streaming producer exactly as before.  The rest goes through
    C{FileDescriptor.write}: queued, the write event armed, the producer
    paused if the buffer is full.  An error other than C{EAGAIN} queues
    everything, so that C{doWrite} meets the same error on the next turn
    and reports the lost connection the usual way; C{write} itself never
    raises for a socket error.
    """
    if data.__class__ is not bytes or not _sendable(transport):
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


def _hold(transport: FastServer, held: list[bytes], chunks: list[bytes]) -> None:
    """
    Add C{chunks} to what C{transport} holds; send it all now if it has
    reached L{HOLD_LIMIT}.
    """
    held.extend(chunks)
    size = transport._heldSize
    for chunk in chunks:
        size += len(chunk)
    transport._heldSize = size
    if size >= HOLD_LIMIT:
        transport.flushWrites()


def _write(transport: FastServer, data: bytes) -> None:
    """
    What L{FastServer.write} does without TLS: hold C{data} if the reactor's
    L{WriteBatch} is open (or the connection already holds writes, which
    later ones must not overtake), else L{_writeNow}.

    Only what could go to the socket at once is held: if Twisted's buffer
    already has bytes, C{data} joins them there, and they go out together
    on the next writable event anyway.
    """
    held = transport._held
    if held is not None:
        _dataMustBeBytes(data)
        if data:
            _hold(transport, held, [data])
        return
    batch: WriteBatch | None = getattr(transport.reactor, "writeBatch", None)
    if (
        batch is not None
        and batch.open
        and data.__class__ is bytes
        and 0 < len(data) < HOLD_LIMIT
        and _sendable(transport)
    ):
        transport._held = [data]
        transport._heldSize = len(data)
        batch.pending.append(transport)
        return
    _writeNow(transport, data)


def _writeSequence(transport: FastServer, iovec: Iterable[bytes]) -> None:
    """
    What L{FastServer.writeSequence} does without TLS: L{_write}, the chunks
    joined unless they join held ones.
    """
    iovec = list(iovec)
    for chunk in iovec:
        _dataMustBeBytes(chunk)
    held = transport._held
    if held is not None:
        _hold(transport, held, iovec)
    else:
        _write(transport, b"".join(iovec))


def _loseConnection(transport: FastServer) -> None:
    """
    C{FileDescriptor.loseConnection}, after sending what is held.
    """
    transport.flushWrites()
    FileDescriptor.loseConnection(transport)


class _FastBypass:
    """
    What C{startTLS} writes its ciphertext through: L{_write} rather than
    C{FileDescriptor.write}, the rest as C{FileDescriptor} does it.
    """

    write = _write
    writeSequence = _writeSequence
    loseConnection = _loseConnection
    registerProducer = FileDescriptor.registerProducer
    unregisterProducer = FileDescriptor.unregisterProducer


class FastServer(tcp.Server):
    """
    A L{tcp.Server} whose C{write} sends at once when nothing is queued
    (see L{_writeNow}), or, while its reactor's L{WriteBatch} is open, when
    the batch is flushed (see L{_write}); with C{TCP_NODELAY} set.
    """

    #: The writes held for the open L{WriteBatch} (none: L{None}), and
    #: their size.  Class attributes until first used, since most of the
    #: connections of a busy daemon are idle.
    _held: list[bytes] | None = None
    _heldSize = 0

    def __init__(
        self,
        sock: socket.socket,
        protocol: IProtocol,
        client: tuple[object, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: IReactorFDSet,
    ) -> None:
        super().__init__(sock, protocol, client, server, sessionno, reactor)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            # Not a TCP socket after all (a test's socketpair): nothing
            # waits for ACKs there.
            pass

    def write(self, data: bytes) -> None:
        if self.TLS:
            # startTLS: the TLS layer encrypts, then writes through
            # _FastBypass.
            super().write(data)
        else:
            _write(self, data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        if self.TLS:
            super().writeSequence(iovec)
        else:
            _writeSequence(self, iovec)

    def flushWrites(self) -> None:
        """
        Send what this connection holds for the open L{WriteBatch} now, in
        one system call (what the kernel does not take goes to Twisted's
        buffer, as with any write).
        """
        held = self._held
        if held is None:
            return
        self._held = None
        _writeNow(self, held[0] if len(held) == 1 else b"".join(held))

    # Whatever changes how later bytes go (closing, half-closing, TLS)
    # first sends what is held, so that nothing written later overtakes it.

    def loseConnection(self) -> None:
        self.flushWrites()
        super().loseConnection()

    def loseWriteConnection(self) -> None:
        self.flushWrites()
        super().loseWriteConnection()

    def abortConnection(self) -> None:
        # As before writes were held: what was written before the abort
        # has gone to the kernel, which may deliver it before the reset.
        self.flushWrites()
        super().abortConnection()

    def startTLS(self, ctx: object, normal: bool = True) -> None:
        self.flushWrites()
        startTLS(self, ctx, normal, _FastBypass)

    def connectionLost(self, reason: Failure) -> None:
        if self._held is not None:
            self._held = None
        super().connectionLost(reason)

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
