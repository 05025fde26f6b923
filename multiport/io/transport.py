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

Sending each C{write} at once sends a twisted.web response (its headers,
then its body) as two TCP segments and two system calls, and over a real
network the second small segment can wait for the first one's ACK (Nagle's
algorithm against the peer's delayed ACK).  So a connection whose protocol
writes in pieces asks for its writes to be held (L{coalesceWrites}; the
http handler does): when the reactor offers a L{WriteBatch} (multiport's,
L{multiport.io.reactor}, does), what is written to it while one event is
handled (or one round of timed calls runs) is sent when that ends, in one
C{send}: still within the same reactor turn.  Holding is not the default:
for a protocol that answers each read with one write (an echo) it would
only cost, 14% to 22% more instructions for each round trip.  Either way
Nagle's
algorithm only adds delay, so L{FastServer} sets C{TCP_NODELAY} on every
connection, as nginx does.

L{FastPort} is a L{tcp.Port} whose connections are L{FastServer}s; any other
port class gets the same by setting C{transport = FastServer}.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet._newtls import startTLS as _untypedStartTLS
from twisted.internet.abstract import FileDescriptor
from twisted.internet.abstract import _dataMustBeBytes as _untypedDataMustBeBytes
from twisted.internet.interfaces import IProtocol, IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.io.direct import DirectDelivery

__all__ = ["HOLD_LIMIT", "FastPort", "FastServer", "WriteBatch", "coalesceWrites"]

log = Logger()

# Twisted's functions used here that it leaves unannotated, with the
# signatures they have (the same objects: nothing changes at run time).
#: Raise TypeError for what is not bytes, as every Twisted write does.
_dataMustBeBytes: Callable[[object], None] = _untypedDataMustBeBytes
#: C{FileDescriptor.loseConnection}, called on a L{FastServer}.
_fileDescriptorLoseConnection: Callable[[FileDescriptor], None] = (
    FileDescriptor.loseConnection
)
#: Start TLS on a connection whose ciphertext goes out through C{bypass}.
_startTLS: Callable[[tcp.Server, object, bool, type], None] = _untypedStartTLS

if TYPE_CHECKING:

    class _Server(tcp.Server):
        """
        L{tcp.Server} as mypy sees it: the methods L{FastServer} overrides
        and calls, which Twisted (C{_newtls.ConnectionMixin}, C{tcp}) leaves
        unannotated, with their L{ITCPTransport} signatures.
        """

        def write(self, data: bytes) -> None: ...
        def writeSequence(self, iovec: Iterable[bytes]) -> None: ...
        def loseConnection(self) -> None: ...
        def loseWriteConnection(self) -> None: ...
        def abortConnection(self) -> None: ...

else:
    _Server = tcp.Server

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
        if len(pending) == 1:
            # The common case: one connection was written to.
            transport = pending.pop()
            try:
                transport.flushWrites()
            except Exception:
                log.failure("sending held writes on {transport}", transport=transport)
            if not pending:
                return
        # By index: sending can call a producer's pauseProducing, which may
        # write to another connection, appending it here.
        index = 0
        while index < len(pending):
            transport = pending[index]
            index += 1
            try:
                transport.flushWrites()
            except Exception:
                log.failure("sending held writes on {transport}", transport=transport)
        pending.clear()


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
    # One function, no helpers: every reply goes through here, and a
    # Python call costs about as much as one of these checks.
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


def _hold(
    transport: FastServer, held: bytes | list[bytes], chunks: list[bytes]
) -> None:
    """
    Add C{chunks} to what C{transport} holds; send it all now if it has
    reached L{HOLD_LIMIT}.
    """
    if isinstance(held, bytes):
        # The second write: from now on a list, and its size kept.
        transport._heldSize = len(held)
        transport._held = held = [held]
    size = transport._heldSize
    for chunk in chunks:
        size += len(chunk)
    held.extend(chunks)
    transport._heldSize = size
    if size >= HOLD_LIMIT:
        transport.flushWrites()


def _write(transport: FastServer, data: bytes) -> None:
    """
    What L{FastServer.write} does without TLS: hold C{data} if the reactor's
    L{WriteBatch} is open (or the connection already holds writes, which
    later ones must not overtake), else L{_writeNow}.

    Whether held bytes may go to the socket at once (see L{_writeNow}) is
    asked when they are sent, once for all of them: asking costs about as
    much as the rest of an echo's write.  Meanwhile nothing else reaches the
    socket or Twisted's buffer, so the order holds either way.
    """
    held = transport._held
    if held is not None:
        _dataMustBeBytes(data)
        if data:
            _hold(transport, held, [data])
        return
    batch = transport._batch
    if (
        batch is not None
        and batch.open
        and data.__class__ is bytes
        and 0 < len(data) < HOLD_LIMIT
    ):
        # Most events write once: the bytes themselves, no list yet.
        transport._held = data
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
    _fileDescriptorLoseConnection(transport)


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


class FastServer(DirectDelivery, _Server):
    """
    A L{tcp.Server} whose C{write} sends at once when nothing is queued
    (see L{_writeNow}), or, once L{holdWrites} was called and while its
    reactor's L{WriteBatch} is open, when the batch is flushed (see
    L{_write}); with C{TCP_NODELAY} set.  It can count its bytes and read
    for the handler's protocol itself (L{DirectDelivery}).
    """

    #: The size of the writes held, once there are several.
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
        # Instance attributes, read on every write (a class attribute read
        # through an instance costs several times as much), and free: the
        # instance's dict has room for them.
        #: The reactor's write batch once L{holdWrites} was called (and the
        #: reactor has one).
        self._batch: WriteBatch | None = None
        #: The writes held for it: L{None}, the bytes of one write, or a
        #: list of several.
        self._held: bytes | list[bytes] | None = None
        self._direct = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            # Not a TCP socket after all (a test's socketpair): nothing
            # waits for ACKs there.
            pass

    #: Whether TCP_NODELAY was turned off since __init__ turned it on (a
    #: class default, so that a connection pays nothing for it).
    _noDelayOff = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        # Already on, or not to be had on this socket (see __init__):
        # twisted.web's HTTPChannel asks again on every connection, a
        # setsockopt each time.
        if enabled and not self._noDelayOff:
            return
        super().setTcpNoDelay(enabled)
        self._noDelayOff = not enabled

    def write(self, data: bytes) -> None:
        if self.TLS:
            # startTLS: the TLS layer encrypts, then writes through
            # _FastBypass.
            super().write(data)
            return
        direct = self._direct
        if direct is not None:
            # The per-port layer's count (DirectDelivery), inline.
            size = len(data)
            direct.sent += size
        batch = self._batch
        if batch is None:
            # A reactor without a write batch: send at once.
            _writeNow(self, data)
        elif (
            self._held is None
            and batch.open
            and data.__class__ is bytes
            and len(data) < HOLD_LIMIT
        ):
            # _write's common case (an echo's reply), inline: a Python
            # call costs about a tenth of that reply's way through here.
            self._held = data
            batch.pending.append(self)
        else:
            _write(self, data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        if self.TLS:
            super().writeSequence(iovec)
            return
        direct = self._direct
        if direct is not None:
            iovec = list(iovec)
            size = sum(map(len, iovec))
            direct.sent += size
        _writeSequence(self, iovec)

    def holdWrites(self) -> bool:
        """
        From now on, hold what is written to this connection while one
        event is handled or one round of timed calls runs, and send it in
        one system call when that ends.

        @return: Whether writes will be held: only on a reactor with a
            L{WriteBatch} (else they keep going out at once).
        """
        self._batch = getattr(self.reactor, "writeBatch", None)
        return self._batch is not None

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
        # __class__ rather than isinstance, the cheaper test on this path;
        # mypy narrows only by isinstance or type(), hence the ignore.
        _writeNow(self, held if held.__class__ is bytes else b"".join(held))  # type: ignore[arg-type]

    # Whatever changes how later bytes go (closing, half-closing, TLS)
    # first sends what is held, so that it goes out now, and as plaintext.

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
        _startTLS(self, ctx, normal, _FastBypass)

    def connectionLost(self, reason: Failure) -> None:
        if self._held is not None:
            self._held = None
        super().connectionLost(reason)
        # The layer is gone with the connection.
        self._direct = None

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

    @property
    def logstr(self) -> str:
        """
        The log prefix (C{logPrefix}), made when asked: C{tcp.Server}
        keeps it as a string per connection, about 80 bytes of every idle
        connection, and multiport's reactor asks only when an event logs.
        """
        protocol = getattr(self, "protocol", None)
        return f"{protocol.__class__.__name__},{self.sessionno},{self.hostname}"

    @logstr.setter
    def logstr(self, value: str) -> None:
        pass


class FastPort(tcp.Port):
    """
    A L{tcp.Port} whose connections are L{FastServer}s.
    """

    transport = FastServer


def coalesceWrites(transport: object) -> bool:
    """
    Have the L{FastServer} under C{transport} hold writes (see
    L{FastServer.holdWrites}), through the layers a handler's protocol sees
    it through: multiport's per-port wrapper, a PROXY protocol header
    reader, TLS (whose records are then held too).

    @return: Whether writes will be held; not when no L{FastServer} is
        found (Twisted's own transport, C{--transport twisted},
        already sends once per reactor turn) or its reactor has no
        L{WriteBatch}.
    """
    for _ in range(8):
        if isinstance(transport, FastServer):
            return transport.holdWrites()
        # Each layer keeps the one under it as its own attribute; asking
        # with getattr would reach past a ProtocolWrapper into the
        # protocol it wraps.  A layer without a __dict__ (the per-port
        # one) names the one under it as its passThrough.
        attributes: dict[str, object] | None = getattr(transport, "__dict__", None)
        if attributes is None:
            transport = getattr(transport, "passThrough", None)
        else:
            transport = attributes.get("transport", attributes.get("_transport"))
        if transport is None:
            break
    return False
