"""
One connection's passage through its port: L{PortProtocol}, the wrapper
between the listening socket (or TLS) and the handler's protocol, where a
connection is counted (connections, bytes, errors), timed (idle, handshake,
duration) and logged (one line when it closes).  On multiport's own
transport it steps out of the data path (L{multiport.io.direct}): the
transport counts the bytes and reads for the handler's protocol.
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import error
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IProtocol,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.handlers.interface import IBetweenMessages, IDrainable
from multiport.io.direct import DirectDelivery
from multiport.ports.connectionparts import (
    RareState,
    TransportInterfaces,
    log,
    logClose,
)
from multiport.ports.handshake import handshakeFailure

if TYPE_CHECKING:
    from multiport.ports.factory import PortFactory

#: How a connection ended, for the connection log, by the failure passed to
#: connectionLost; anything else is "error".
_ENDINGS = (
    (error.ConnectionDone, "clean"),
    (error.ConnectionLost, "reset"),
)


#: The wrapper's own slots: never looked for on the transport.
_SLOTS = frozenset(
    {"factory", "wrappedProtocol", "transport", "received", "sent", "started"}
    | {"_rare", "_prev", "_next"}
)


@implementer(IProtocol, ILoggingContext, IHandshakeListener, IHalfCloseableProtocol)
class PortProtocol:
    """
    One connection's wrapper: counts it and its application bytes, keeps a
    handler that raises from taking anything but its own connection down,
    and logs one line when the connection closes.

    On multiport's own transport (L{FastServer}) it steps out of the data
    path (L{multiport.io.direct}): the transport counts the bytes and reads for
    the handler's protocol, which has the transport as its own.  Elsewhere
    (TLS, a PROXY header, Twisted's transport) it is the handler's
    transport, counting what passes.

    Memory per idle connection is the point of its shape: a few slots, no
    C{__dict__}, the peer's address asked of the transport when needed
    rather than kept, what few connections need in L{RareState}, its port's
    constants on the factory.

    @ivar received: The bytes read from the client.
    @ivar sent: The bytes written to it.
    @ivar started: When it opened, when the port logs connections.
    """

    __slots__ = tuple(sorted(_SLOTS))

    factory: PortFactory
    wrappedProtocol: IProtocol | None
    # Set by makeConnection before anything else runs: a TCP connection,
    # or the TLS layer over one.
    transport: ITCPTransport
    received: int
    sent: int
    started: float | None
    _rare: RareState | None
    _prev: PortProtocol | None
    _next: PortProtocol | None

    def __init__(self, factory: PortFactory, wrappedProtocol: IProtocol) -> None:
        self.factory = factory
        self.wrappedProtocol = wrappedProtocol
        self.received = 0
        self.sent = 0
        self.started = None
        self._rare = None
        self._prev = self._next = None

    def _state(self) -> RareState:
        rare = self._rare
        if rare is None:
            rare = self._rare = RareState()
        return rare

    @property
    def closeReason(self) -> str | None:
        """
        Set by whoever ends the connection on purpose (C{"error"},
        C{"timeout"}, C{"drain"}); else the ending decides.
        """
        rare = self._rare
        return None if rare is None else rare.closeReason

    @closeReason.setter
    def closeReason(self, value: str | None) -> None:
        self._state().closeReason = value

    @property
    def timeoutKind(self) -> str | None:
        """
        Which timeout closed the connection, if one did.
        """
        rare = self._rare
        return None if rare is None else rare.timeoutKind

    @property
    def failure(self) -> str | None:
        """
        Why the connection failed, for the log (a TLS handshake's reason).
        """
        rare = self._rare
        return None if rare is None else rare.failure

    @property
    def handshaken(self) -> bool:
        """
        Whether its TLS handshake completed.
        """
        rare = self._rare
        return rare is not None and rare.handshaken

    @property
    def descriptors(self) -> int:
        """
        The descriptors the connection holds (its handler's declared
        cost), released with it.
        """
        rare = self._rare
        return 1 if rare is None else rare.descriptors

    @descriptors.setter
    def descriptors(self, value: int) -> None:
        if value != 1 or self._rare is not None:
            self._state().descriptors = value

    @property
    def peer(self) -> IAddress:
        """
        The client's address: the real one behind a PROXY header (whose
        layer answers C{getPeer} with it), as admission saw it.
        """
        return self.transport.getPeer()

    def logPrefix(self) -> str:
        """
        The handler protocol's log prefix, and this wrapper's class.
        """
        wrapped = self.wrappedProtocol
        if ILoggingContext.providedBy(wrapped):
            prefix = wrapped.logPrefix()
        else:
            prefix = wrapped.__class__.__name__
        return f"{prefix} ({self.__class__.__name__})"

    def __getattr__(self, name: str) -> Any:
        # Reached only for what the wrapper lacks: the transport's own
        # attributes, which the handler's protocol asks of it as of its
        # transport.
        if name in _SLOTS:
            raise AttributeError(name)
        return getattr(self.transport, name)

    def makeConnection(self, transport: Any) -> None:
        """
        Count the connection, start its port's timers, and connect the
        handler's protocol: to the transport itself if it can deliver
        directly (L{FastServer}), else to this wrapper.
        """
        factory = self.factory
        counters = factory.counters
        counters.accepted += 1
        counters.current += 1
        self.transport = transport
        clock = factory.clock
        if factory.logConnections:
            self.started = clock.seconds()
        factory.registerProtocol(self)
        policy = factory.policy
        if policy.idleTimeout is not None:
            self._state().idleTimer = clock.callLater(
                policy.idleTimeout / 4, self._checkIdle
            )
        if factory.handshakeTimeout is not None:
            rare = self._state()
            rare.handshakeTimer = clock.callLater(
                factory.handshakeTimeout, self.timedOut, "handshake_timeout"
            )
            rare.timers = (rare.handshakeTimer,)
        if policy.maxDuration is not None:
            self._state().timers += (
                clock.callLater(policy.maxDuration, self.timedOut, "max_duration"),
            )
        handlerTransport: Any = self
        if isinstance(transport, DirectDelivery):
            transport.deliverTo(self)
            # Writes reach the transport without this wrapper, counted
            # there; a write through it must not count them twice.
            self.__class__ = DirectPortProtocol
            handlerTransport = transport
        try:
            # The wrapper is the handler's transport: it provides the
            # transport's interfaces (TransportInterfaces), which the type checker
            # can't see.
            self.wrappedProtocol.makeConnection(handlerTransport)  # type: ignore[union-attr]
        except Exception:
            self.handlerFailed("connectionMade")

    def _checkIdle(self) -> None:
        # No per-byte timer work: every quarter of the idle timeout, see
        # whether any byte moved since the last look.  A connection is
        # closed after between 1 and 1.25 idle timeouts without traffic.
        rare = self._state()
        rare.idleTimer = None
        seen = (self.received, self.sent)
        if seen != rare.idleSeen:
            rare.idleSeen = seen
            rare.idleChecks = 0
        else:
            rare.idleChecks += 1
            if rare.idleChecks >= 4:
                self.timedOut("idle_timeout")
                return
        timeout = self.factory.policy.idleTimeout
        assert timeout is not None
        rare.idleTimer = self.factory.clock.callLater(timeout / 4, self._checkIdle)

    def timedOut(self, which: str) -> None:
        """
        Close the connection because C{which} timeout passed (handlers with
        timeouts of their own, like http's header timeout, call this too, so
        that the connection log says C{timeout}).
        """
        rare = self._state()
        if rare.closeReason is None:
            rare.closeReason = "timeout"
            rare.timeoutKind = which
        self.transport.abortConnection()

    def protocolError(self, why: str) -> None:
        """
        The handler is ending the connection because the client broke its
        protocol (an HTTP/2 flood, say): the connection log says C{error},
        then C{why}.
        """
        rare = self._state()
        if rare.closeReason is None:
            rare.closeReason = "error"
            rare.failure = why

    def dataReceived(self, data: bytes) -> None:
        size = len(data)
        self.received += size
        try:
            self.wrappedProtocol.dataReceived(data)  # type: ignore[union-attr]
        except Exception:
            self.handlerFailed("dataReceived")

    def write(self, data: bytes) -> None:
        size = len(data)
        self.sent += size
        self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        size = sum(map(len, data))
        self.sent += size
        self.transport.writeSequence(data)

    def drain(self) -> None:
        """
        The port is going away: a handler protocol that can finish early
        (L{IDrainable}) is asked to.
        """
        if IDrainable.providedBy(self.wrappedProtocol):
            try:
                self.wrappedProtocol.drain()
            except Exception:
                self.handlerFailed("drain")

    def getHost(self) -> IAddress:
        """
        The address the client connected to, asked of the socket once: it
        can't change, and twisted.web asks for it on every request (a
        C{getsockname} system call each time).
        """
        rare = self._state()
        host = rare.host
        if host is None:
            host = rare.host = self.transport.getHost()
        return host

    def countReceived(self, size: int) -> None:
        """
        Count C{size} bytes the handler moved from the client without
        L{dataReceived} (the relay's splice).
        """
        self.received += size

    def countSent(self, size: int) -> None:
        """
        Count C{size} bytes the handler moved to the client without
        L{write}.
        """
        self.sent += size

    @property
    def passThrough(self) -> Any:
        """
        The transport under this wrapper (which passes bytes unchanged).
        """
        return self.transport

    def readConnectionLost(self) -> None:
        """
        The client will send no more.  A handler that handles half-close
        (the relay) is told; for any other the connection is closed once
        what it wrote has gone out.
        """
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        The write side is closed; tell a handler that handles half-close.
        """
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done (TLS ports only); tell the handler if it
        asks to know.
        """
        rare = self._state()
        rare.handshaken = True
        timer = rare.handshakeTimer
        if timer is not None and timer.active():
            timer.cancel()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def handlerFailed(self, where: str) -> None:
        """
        The handler raised: log it once with its traceback, count it, and
        close only this connection.
        """
        rare = self._state()
        if rare.closeReason is None:
            self.factory.counters.protocolErrors += 1
            rare.closeReason = "error"
            log.failure(
                "handler {handler} raised in {where} on {port}; closing the connection",
                handler=self.factory.handlerName,
                where=where,
                port=self.factory.portName,
            )
        self.transport.abortConnection()

    def _ending(self, reason: Failure) -> str:
        closeReason = self.closeReason
        if closeReason is not None:
            return closeReason
        if getattr(self.transport, "closedClean", False):
            return "clean"
        value = reason.value
        for kind, name in _ENDINGS:
            if isinstance(value, kind):
                if name == "reset" and self._betweenMessages():
                    # An HTTP client leaving between requests without a
                    # close_notify, or without reading our last bytes.
                    return "clean"
                return name
        return "error"

    def _betweenMessages(self) -> bool:
        handler = self.wrappedProtocol
        if not IBetweenMessages.providedBy(handler):
            return False
        try:
            return bool(handler.betweenMessages())
        except Exception:
            log.failure(
                "handler {handler} raised in betweenMessages on {port}",
                handler=self.factory.handlerName,
                port=self.factory.portName,
            )
            return False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        factory = self.factory
        counters = factory.counters
        counters.current -= 1
        counters.closed += 1
        rare = self._rare
        if rare is not None:
            for timer in (*rare.timers, rare.idleTimer):
                if timer is not None and timer.active():
                    timer.cancel()
        factory.admission.release(self.peer, self.descriptors)
        if factory.tls and not self.handshaken and self.closeReason is None:
            if getattr(self.transport, "sawBytes", False):
                counters.tlsHandshakeFailures += 1
                rare = self._state()
                rare.closeReason = "error"
                rare.failure = "TLS handshake failed: " + (
                    getattr(self.transport, "notTLS", None) or handshakeFailure(reason)
                )
        if factory.logConnections and self.started is not None:
            logClose(self, self._ending(reason), self.started)
        # Its bytes move to the port's totals as it leaves the open ones.
        counters.addClosed(self.received, self.sent)
        factory.unregisterProtocol(self)
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None
        if wrapped is not None:
            wrapped.connectionLost(reason)

    def clientSubject(self) -> str | None:
        """
        The verified client certificate's subject (RFC 4514), on TLS ports
        that ask for client certificates; handlers may call it too.
        """
        getPeerCertificate = getattr(self.transport, "getPeerCertificate", None)
        certificate = getPeerCertificate() if getPeerCertificate else None
        if certificate is None:
            return None
        return str(certificate.to_cryptography().subject.rfc4514_string())


# Declared again, so that the class has a __provides__ of its own (zope
# would otherwise put its own __providedBy__ on it when first asked).
@implementer(IProtocol)
class DirectPortProtocol(PortProtocol):
    """
    A L{PortProtocol} whose transport counts the bytes and reads for the
    handler's protocol (L{multiport.io.direct.DirectDelivery}): what is written
    through the wrapper is counted by the transport only.
    """

    __slots__ = ()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.transport.writeSequence(data)

    def countReceived(self, size: int) -> None:
        self.transport.countReceived(size)  # type: ignore[attr-defined]

    def countSent(self, size: int) -> None:
        self.transport.countSent(size)  # type: ignore[attr-defined]

    def getHost(self) -> IAddress:
        rare = self._state()
        host = rare.host
        if host is None:
            # The transport's own getHost asks this wrapper.
            host = rare.host = self.transport.socketHost()  # type: ignore[attr-defined]
        return host


PortProtocol.__providedBy__ = DirectPortProtocol.__providedBy__ = TransportInterfaces()  # type: ignore[attr-defined]
