"""
One port: the wrapper every connection passes through, and the
C{TCPServer}/C{SSLServer} children that listen for it.

The wrapper (L{PortFactory}) sits between the listening socket (or TLS) and
the handler's factory.  It is where a connection is counted now, and where
limits, access rules and timeouts will be applied: handlers never count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from multiport.config.model import formatAddress
from multiport.daemon.logformat import emitLine
from multiport.handlers.interface import HandlerContext, IDrainable
from multiport.ports.counters import PortCounters
from multiport.ports.handshake import (
    Plain,
    classifyPlain,
    handshakeFailure,
    notTLSReason,
    plainHTTPAnswer,
    startsTLS,
)
from multiport.ports.policies import Admission, DaemonLimit
from multiport.text import plural

log = Logger()
#: Seconds a TLS client has to finish its handshake unless the port's tls
#: table sets handshake_timeout.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: How long a PROXY protocol header may take to arrive when the port sets
#: no header_timeout.
PROXY_HEADER_TIMEOUT = 10.0
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
        Protocol.makeConnection(self, transport)
        factory.registerProtocol(self)
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
            self.wrappedProtocol.makeConnection(self)
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
                return name
        return "error"

    def connectionLost(self, reason: Failure) -> None:
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
        super().connectionLost(reason)

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


@implementer(IProtocolNegotiationFactory)
class PortFactory(WrappingFactory):
    """
    The per-port wrapper around the handler's factory.

    It keeps every open connection (C{protocols}) so the port can be
    drained, and the port's L{PortCounters}.  It passes on the ALPN
    protocols the handler's factory declares (C{Site}: C{http/1.1}).
    """

    noisy = False

    protocol = PortProtocol

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        counters: PortCounters,
        handlerContext: HandlerContext,
        daemonLimit: DaemonLimit | None = None,
        descriptors: int = 1,
    ) -> None:
        """
        @param descriptors: The descriptors each connection of the handler
            holds (L{IHandler}'s C{descriptorsPerConnection}): what
            admission reserves for it in the daemon limit.
        """
        super().__init__(wrappedFactory)
        self.counters = counters
        self.portName = handlerContext.port.name
        self.daemonLimit = daemonLimit
        self._drainWaiters: list[Deferred[None]] = []
        self._drainTimer: IDelayedCall | None = None
        self._configure(handlerContext, descriptors)
        self.admission = Admission(self.policy, self.clock, daemonLimit)

    def _configure(self, handlerContext: HandlerContext, descriptors: int) -> None:
        self.descriptors = descriptors
        self.handlerContext = handlerContext
        self.clock = handlerContext.clock
        config = handlerContext.port
        self.handlerName = config.handler
        self.tls = config.tls is not None
        self.logConnections = config.logConnections
        self.policy = config.policy
        self.handshakeTimeout = (
            None
            if config.tls is None
            else config.tls.handshakeTimeout or DEFAULT_HANDSHAKE_TIMEOUT
        )

    def reconfigure(
        self,
        wrappedFactory: IProtocolFactory,
        handlerContext: HandlerContext,
        descriptors: int = 1,
    ) -> None:
        """
        Serve new connections with C{wrappedFactory} and the settings of
        C{handlerContext.port}, each holding C{descriptors}; open
        connections keep the handler protocol they have (and release what
        they took).  The counters, and the per-address and descriptor
        counts of open connections, go on.
        """
        old = self.wrappedFactory
        if self.numPorts:
            wrappedFactory.doStart()
        self.wrappedFactory = wrappedFactory
        self._configure(handlerContext, descriptors)
        admission = Admission(self.policy, self.clock, self.daemonLimit)
        admission.perAddress = self.admission.perAddress
        admission.descriptors = self.admission.descriptors
        self.admission = admission
        if self.numPorts:
            old.doStop()

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Ask every open connection to finish (handlers that can, like http,
        close once their request in flight is answered); fires once none
        is left.  Those still open after C{timeout} seconds are closed.
        """
        if not self.protocols:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drainWaiters.append(waiter)
        for protocol in list(self.protocols):
            protocol.drain()
        if self._drainTimer is None:
            self._drainTimer = self.clock.callLater(timeout, self._closeRemaining)
        return waiter

    def closeNow(self) -> int:
        """
        Close every open connection now, without waiting for a drain to
        finish or its timeout to pass (a second SIGTERM); how many there
        were.  A drain waiting on them fires once they are gone.
        """
        timer, self._drainTimer = self._drainTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        remaining = list(self.protocols)
        self._abort(remaining)
        return len(remaining)

    def _closeRemaining(self) -> None:
        self._drainTimer = None
        remaining = list(self.protocols)
        if remaining:
            log.info(
                "{port}: closing {connections} still open after the drain timeout",
                port=self.portName,
                count=len(remaining),
                connections=plural(len(remaining), "connection"),
            )
        self._abort(remaining)

    def _abort(self, remaining: list[Any]) -> None:
        for protocol in remaining:
            if protocol.closeReason is None:
                protocol.closeReason = "drain"
            protocol.transport.abortConnection()

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        if not self.protocols and self._drainWaiters:
            timer, self._drainTimer = self._drainTimer, None
            if timer is not None and timer.active():
                timer.cancel()
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        Admit the connection (access rules, limits, rates) or turn it away
        before the handler, and TLS, see anything of it.
        """
        cost = self.descriptors
        reason = self.admission.admit(addr, self.counters.current, cost)
        if reason is not None:
            self.rejected(reason, addr)
            return None
        try:
            inner = self.wrappedFactory.buildProtocol(addr)
        except Exception:
            self.admission.release(addr, cost)
            self.counters.protocolErrors += 1
            log.failure(
                "handler {handler} raised in buildProtocol on {port}",
                handler=self.handlerName,
                port=self.portName,
            )
            return None
        if inner is None:
            self.admission.release(addr, cost)
            return None
        protocol = self.protocol(self, inner)
        protocol.peer = addr
        if cost != 1:
            protocol.descriptors = cost
        return protocol

    def rejected(self, reason: str, addr: IAddress) -> None:
        """
        Count and log a connection turned away before the handler saw it
        (by admission, or by the PROXY protocol layer in front of the port).
        """
        self.counters.reject(reason)
        if self.logConnections:
            address = addressText(addr)
            emitLine(
                connectionLog,
                f"{self.portName} {self.handlerName} {address} closed "
                f"rejected ({reason})",
                port=self.portName,
                handler=self.handlerName,
                peer=address,
                reason="rejected",
                rejected=reason,
            )

    def listeningFactory(self, tls: Any = None) -> IProtocolFactory:
        """
        What the listening socket hands connections to: this wrapper, inside
        TLS for a TLS port (C{tls} is its context factory), inside a PROXY
        protocol reader when the port takes one (outside TLS: the header
        comes before the handshake).
        """
        factory: IProtocolFactory = self
        if tls is not None:
            factory = TLSFactory(tls, False, self)
        policy = self.policy
        if policy.proxyProtocol is not None:
            from multiport.ports.proxyprotocol import ProxyProtocolFactory

            factory = ProxyProtocolFactory(
                factory,
                policy.proxyProtocol,  # type: ignore[arg-type]
                policy.proxyProtocolFrom or (),
                self.clock,
                policy.headerTimeout or PROXY_HEADER_TIMEOUT,
                self.rejected,
            )
        return factory

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocols of the handler's factory, if it declares any.
        """
        negotiation = IProtocolNegotiationFactory(self.wrappedFactory, None)
        if negotiation is None:
            return []
        return list(negotiation.acceptableProtocols())

    def logPrefix(self) -> str:
        return self.wrappedFactory.logPrefix()  # type: ignore[attr-defined,no-any-return]


class TLSProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's TLS protocol, noting whether the client sent anything: a
    connection that ends before its handshake is a handshake failure only
    if it did (a load balancer's bare TCP check is not).  A client whose
    first byte can't begin TLS never reaches OpenSSL: plain HTTP gets
    nginx's 400, anything else is closed.

    @ivar notTLS: Why the handshake failed, when the client did not speak
        TLS at all.
    @ivar closedClean: Whether TLS ended with a close_notify (the client's,
        or ours answered by an end of file): what TCP does next, such as
        curl closing with our close_notify unread (its kernel answers that
        with a reset), is then no failure.
    """

    sawBytes = False
    notTLS: str | None = None
    closedClean = False
    _plain = b""
    _answered = False

    def dataReceived(self, data: bytes) -> None:
        if not self.sawBytes and data:
            self.sawBytes = True
            if not startsTLS(data[0]):
                self.notTLS = notTLSReason(data)
        if self.notTLS is not None:
            self._plainReceived(data)
            return
        super().dataReceived(data)

    def _plainReceived(self, data: bytes) -> None:
        if self._answered:
            return
        self._plain += data
        kind = classifyPlain(self._plain)
        if kind is Plain.MORE:
            return
        self._answered = True
        self.notTLS = notTLSReason(self._plain)
        if kind is Plain.HTTP:
            self.transport.write(plainHTTPAnswer(self._plain))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        connection = self._tlsConnection
        if connection is not None and self._handshakeDone:
            state = connection.get_shutdown()
            self.closedClean = bool(state & SSL.RECEIVED_SHUTDOWN) or bool(
                state & SSL.SENT_SHUTDOWN and reason.check(error.ConnectionDone)
            )
        super().connectionLost(reason)


class TLSFactory(TLSMemoryBIOFactory):
    """
    Twisted's TLS factory, building L{TLSProtocol}s, and none at all for a
    connection the port's wrapper turns away: a rejected client costs no
    TLS state.
    """

    protocol = TLSProtocol
    noisy = False

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)  # type: ignore[no-any-return]


__all__ = [
    "PortFactory",
    "PortProtocol",
]
