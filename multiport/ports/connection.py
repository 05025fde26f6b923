"""
One connection's passage through its port: L{PortProtocol}, the wrapper
between the listening socket (or TLS) and the handler's protocol, where a
connection is counted (connections, bytes, errors), timed (idle, handshake,
duration) and logged (one line when it closes).
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import error
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from multiport.config.model import formatAddress
from multiport.daemon.logformat import emitLine
from multiport.handlers.interface import IBetweenMessages, IDrainable
from multiport.ports.handshake import handshakeFailure

if TYPE_CHECKING:
    from multiport.ports.factory import PortFactory

# The namespace these lines had before the port module was split: log
# filters and the JSON log's "n" name it.
log = Logger(namespace="multiport.ports.port")
#: One line per closed connection, in a namespace of its own so that it can
#: be filtered or routed apart from the daemon's other lines.
connectionLog = Logger(namespace="multiport.connection")


#: How a connection ended, for the connection log, by the failure passed to
#: connectionLost; anything else is "error".
_ENDINGS = (
    (error.ConnectionDone, "clean"),
    (error.ConnectionLost, "reset"),
)


def addressText(address: IAddress) -> str:
    """
    C{host:port} of a connection's address, for the log.
    """
    return formatAddress(getattr(address, "host", "?"), getattr(address, "port", 0))


@implementer(IHandshakeListener, IHalfCloseableProtocol)
class PortProtocol(ProtocolWrapper):
    """
    One connection's wrapper: counts it and its application bytes, keeps a
    handler that raises from taking anything but its own connection down,
    and logs one line when the connection closes.

    @ivar closeReason: Set by whoever ends the connection on purpose
        (C{"error"}, and later C{"timeout"}...); else the ending decides.
    """

    factory: PortFactory
    # Set by makeConnection before anything else runs: a TCP connection,
    # or the TLS layer over one.
    transport: ITCPTransport
    #: The client's address as admission saw it (the real one behind a
    #: PROXY header); released and logged with the same value.
    peer: IAddress
    closeReason: str | None = None
    #: Why the connection failed, for the log (a TLS handshake's reason).
    failure: str | None = None

    #: The descriptors the connection holds (its handler's declared cost),
    #: released with it; set on the instance only when not 1.
    descriptors = 1
    handshaken = False
    _handshakeTimer: IDelayedCall | None = None
    # Class defaults, so that a connection without timers holds no list and
    # no attribute for them (memory per idle connection).
    _timers: tuple[IDelayedCall, ...] = ()
    _idleTimer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        self.counters = counters = factory.counters
        counters.accepted += 1
        counters.current += 1
        self.received = 0
        self.sent = 0
        self.started = factory.clock.seconds()
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)  # type: ignore[no-untyped-call]
        factory.registerProtocol(self)  # type: ignore[no-untyped-call]
        policy = factory.policy
        if policy.idleTimeout is not None:
            self._idleSeen = (0, 0)
            self._idleChecks = 0
            self._idleTimer = factory.clock.callLater(
                policy.idleTimeout / 4, self._checkIdle
            )
        if factory.handshakeTimeout is not None:
            self._handshakeTimer = factory.clock.callLater(
                factory.handshakeTimeout, self.timedOut, "handshake_timeout"
            )
            self._timers = (self._handshakeTimer,)
        if policy.maxDuration is not None:
            self._timers += (
                factory.clock.callLater(
                    policy.maxDuration, self.timedOut, "max_duration"
                ),
            )
        try:
            # The wrapper is the handler's transport: it provides the
            # transport's interfaces (directlyProvides above), which the
            # type checker can't see.
            self.wrappedProtocol.makeConnection(cast(ITransport, self))
        except Exception:
            self._handlerFailed("connectionMade")

    def _checkIdle(self) -> None:
        # No per-byte timer work: every quarter of the idle timeout, see
        # whether any byte moved since the last look.  A connection is
        # closed after between 1 and 1.25 idle timeouts without traffic.
        self._idleTimer = None
        seen = (self.received, self.sent)
        if seen != self._idleSeen:
            self._idleSeen = seen
            self._idleChecks = 0
        else:
            self._idleChecks += 1
            if self._idleChecks >= 4:
                self.timedOut("idle_timeout")
                return
        timeout = self.factory.policy.idleTimeout
        assert timeout is not None
        self._idleTimer = self.factory.clock.callLater(timeout / 4, self._checkIdle)

    def timedOut(self, which: str) -> None:
        """
        Close the connection because C{which} timeout passed (handlers with
        timeouts of their own, like http's header timeout, call this too, so
        that the connection log says C{timeout}).
        """
        if self.closeReason is None:
            self.closeReason = "timeout"
            self.timeoutKind = which
        self.transport.abortConnection()

    def protocolError(self, why: str) -> None:
        """
        The handler is ending the connection because the client broke its
        protocol (an HTTP/2 flood, say): the connection log says C{error},
        then C{why}.
        """
        if self.closeReason is None:
            self.closeReason = "error"
            self.failure = why

    def dataReceived(self, data: bytes) -> None:
        size = len(data)
        self.received += size
        self.counters.bytesReceived += size
        try:
            self.wrappedProtocol.dataReceived(data)
        except Exception:
            self._handlerFailed("dataReceived")

    def write(self, data: bytes) -> None:
        size = len(data)
        self.sent += size
        self.counters.bytesSent += size
        self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        size = sum(map(len, data))
        self.sent += size
        self.counters.bytesSent += size
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
                self._handlerFailed("drain")

    _host: IAddress | None = None

    def getHost(self) -> IAddress:
        """
        The address the client connected to, asked of the socket once: it
        can't change, and twisted.web asks for it on every request (a
        C{getsockname} system call each time).
        """
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()
        return host

    def countReceived(self, size: int) -> None:
        """
        Count C{size} bytes the handler moved from the client without
        L{dataReceived} (the relay's splice).
        """
        self.received += size
        self.counters.bytesReceived += size

    def countSent(self, size: int) -> None:
        """
        Count C{size} bytes the handler moved to the client without
        L{write}.
        """
        self.sent += size
        self.counters.bytesSent += size

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
        self.handshaken = True
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def _handlerFailed(self, where: str) -> None:
        """
        The handler raised: log it once with its traceback, count it, and
        close only this connection.
        """
        if self.closeReason is None:
            self.factory.counters.protocolErrors += 1
            self.closeReason = "error"
            log.failure(
                "handler {handler} raised in {where} on {port}; closing the connection",
                handler=self.factory.handlerName,
                where=where,
                port=self.factory.portName,
            )
        self.transport.abortConnection()

    def _ending(self, reason: Failure) -> str:
        if self.closeReason is not None:
            return self.closeReason
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
        counters = self.counters
        counters.current -= 1
        counters.closed += 1
        for timer in (*self._timers, self._idleTimer):
            if timer is not None and timer.active():
                timer.cancel()
        factory.admission.release(self.peer, self.descriptors)
        if factory.tls and not self.handshaken and self.closeReason is None:
            if getattr(self.transport, "sawBytes", False):
                counters.tlsHandshakeFailures += 1
                self.closeReason = "error"
                self.failure = "TLS handshake failed: " + (
                    getattr(self.transport, "notTLS", None) or handshakeFailure(reason)
                )
        if factory.logConnections:
            self._logClose(self._ending(reason))
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _logClose(self, ending: str) -> None:
        factory = self.factory
        address = addressText(self.peer)
        duration = factory.clock.seconds() - self.started
        # The line is formatted here, once: twisted.logger's own formatting
        # of seven fields cost as much as the rest of a connection (it
        # halved the accept rate).  The fields stay in the event for the
        # JSON log.
        line = (
            f"{factory.portName} {factory.handlerName} {address} closed {ending} "
            f"after {duration:.3f}s, received {self.received} B, sent {self.sent} B"
        )
        client = self.clientSubject() if self.handshaken else None
        if client is not None:
            line += f", client {client}"
        if self.failure is not None:
            line += f", {self.failure}"
        emitLine(
            connectionLog,
            line,
            port=factory.portName,
            handler=factory.handlerName,
            peer=address,
            reason=ending,
            duration=duration,
            received=self.received,
            sent=self.sent,
            client=client,
            detail=self.failure,
        )

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
