"""
One port: the wrapper every connection passes through, and the
C{TCPServer}/C{SSLServer} children that listen for it.

The wrapper (L{PortFactory}) sits between the listening socket (or TLS) and
the handler's factory.  It is where a connection is counted now, and where
limits, access rules and timeouts will be applied: handlers never count.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from OpenSSL import SSL
from twisted.application.internet import SSLServer, TCPServer
from twisted.internet import error, tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from multiport.config.model import PortConfig, formatAddress
from multiport.daemon.logformat import PORT_START_SYSTEM, emitLine
from multiport.handlers.interface import HandlerContext, IDrainable
from multiport.io.transport import FastServer
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


@implementer(IOpenSSLServerConnectionCreator)
class SwitchableCreator:
    """
    What a TLS port asks for each new connection's TLS state: the current
    certificate's context, which a live change may replace without
    touching the listening socket or the connections already open.
    """

    def __init__(self, contextFactory: Any) -> None:
        self.contextFactory = contextFactory

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.contextFactory.getContext(), None)


class ListeningPort(tcp.Port):
    """
    Twisted's TCP port, with IPV6_V6ONLY set on IPv6 sockets, whose
    connections are L{FastServer}s (a write goes to the socket at once when
    nothing is queued, rather than on a later reactor turn).

    Twisted leaves V6ONLY off, so C{[::]:P} would also take C{0.0.0.0:P};
    with it on (as nginx does) the two can be configured side by side.
    """

    #: MULTIPORT_TRANSPORT=twisted falls back to Twisted's own transport.
    transport = (
        tcp.Server if os.environ.get("MULTIPORT_TRANSPORT") == "twisted" else FastServer
    )

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return skt

    def startListening(self) -> None:
        # tcp.Port logs "<factory> starting on N" as it starts; multiport's
        # "listening on" line says that and more: the daemon's observers
        # leave out Twisted's line, known by this log system.
        legacyLog.callWithContext({"system": PORT_START_SYSTEM}, super().startListening)

    def _logConnectionLostMsg(self) -> None:
        # Twisted's "(TCP Port N Closed)": multiport's own "stopped listening
        # on" line says it.
        pass

    def closeNow(self) -> None:
        """
        Close the socket at once, not on the next reactor turn, so that a
        failed start leaves nothing bound even if the reactor never runs.
        """
        self.stopReading()
        self.connectionLost(Failure(Exception("closed by multiport")))


def listenTCP(
    reactor: Any,
    port: int,
    factory: IProtocolFactory,
    backlog: int,
    interface: str,
    adopt: int | None = None,
) -> IListeningPort:
    """
    Listen with L{ListeningPort} on a real reactor, or with the reactor's own
    C{listenTCP} on a test double (a C{MemoryReactor}).

    @param adopt: A descriptor of a socket already bound and listening (a
        worker's copy of the main process's socket): listen on it instead
        of binding.  It is duplicated; the caller closes its own.
    """
    if adopt is not None:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        adopted = ListeningPort._fromListeningDescriptor(
            reactor, adopt, family, factory
        )
        adopted.startListening()
        return adopted  # type: ignore[no-any-return]
    if isinstance(reactor, PosixReactorBase):
        listening = ListeningPort(port, factory, backlog, interface, reactor)
        listening.startListening()
        return listening
    return reactor.listenTCP(port, factory, backlog, interface)  # type: ignore[no-any-return]


class _PortServerMixin:
    """
    What the plain and TLS port services share.
    """

    config: PortConfig
    factory: PortFactory
    _port: IListeningPort | None
    #: A listening socket's descriptor to adopt instead of binding (in a
    #: worker process); used once.
    adoptDescriptor: int | None = None

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        adopt, self.adoptDescriptor = self.adoptDescriptor, None
        return listenTCP(
            self.reactor,  # type: ignore[attr-defined]
            self.config.port,
            factory,
            self.config.backlog,
            self.config.interface,
            adopt,
        )

    def boundAddress(self) -> IAddress | None:
        """
        The address the port listens on (with its real number), or C{None}.
        """
        if self._port is None:
            return None
        return self._port.getHost()

    def stopService(self) -> Any:
        """
        Stop listening; the port no longer counts as listening.
        """
        self.factory.counters.listeningSince = None
        return super().stopService()  # type: ignore[misc]

    def listeningFactory(self) -> IProtocolFactory:
        """
        What the listening socket hands new connections to.
        """
        raise NotImplementedError

    def takeOver(self, other: PortServer) -> None:
        """
        Listen on C{other}'s socket from now on (a live change of a port
        that keeps its address): new connections reach this service's
        factory chain, the socket never closes, and C{other} is left with
        nothing to stop.
        """
        port, other._port = other._port, None
        assert port is not None, "the port being replaced is listening"
        self._port = port
        port.factory = self.listeningFactory()  # type: ignore[attr-defined]
        backlog = self.config.backlog
        if backlog != other.config.backlog:
            # listen() again on a listening socket only changes its backlog.
            socketObject = getattr(port, "socket", None)
            if socketObject is not None:
                socketObject.listen(backlog)
        self.name = other.name
        self.factory.portName = other.factory.portName
        self.factory.counters.listeningSince = other.factory.counters.listeningSince

    def unbindNow(self) -> None:
        """
        Stop listening at once (after a failed start).
        """
        port, self._port = self._port, None
        if isinstance(port, ListeningPort):
            port.closeNow()
        elif port is not None:
            port.stopListening()


class PortTCPServer(_PortServerMixin, TCPServer):
    """
    A plain port: a L{TCPServer} with its L{PortConfig} and L{PortFactory}.
    """

    def __init__(self, config: PortConfig, factory: PortFactory, reactor: Any) -> None:
        TCPServer.__init__(
            self,
            config.port,
            factory,
            backlog=config.backlog,
            interface=config.interface,
            reactor=reactor,
        )
        self.config = config
        self.factory = factory

    def listeningFactory(self) -> IProtocolFactory:
        return self.factory.listeningFactory()

    def _getPort(self) -> IListeningPort:
        return self._listen(self.listeningFactory())


class PortSSLServer(_PortServerMixin, SSLServer):
    """
    A TLS port: an L{SSLServer}; the L{PortFactory} sits inside TLS, so it
    sees a connection at once (before the handshake) and counts decrypted
    application bytes.
    """

    def __init__(
        self,
        config: PortConfig,
        factory: PortFactory,
        contextFactory: Any,
        reactor: Any,
    ) -> None:
        SSLServer.__init__(
            self,
            config.port,
            factory,
            contextFactory,
            backlog=config.backlog,
            interface=config.interface,
            reactor=reactor,
        )
        self.config = config
        self.factory = factory
        self.contextFactory = contextFactory
        self.creator = SwitchableCreator(contextFactory)

    def listeningFactory(self) -> IProtocolFactory:
        return self.factory.listeningFactory(self.creator)

    def _getPort(self) -> IListeningPort:
        # A PROXY header comes before the TLS handshake, so with one the TLS
        # layer is composed here rather than by listenSSL, on any reactor.
        if (
            isinstance(self.reactor, PosixReactorBase)
            or self.config.policy.proxyProtocol is not None
            or self.adoptDescriptor is not None
        ):
            return self._listen(self.listeningFactory())
        return self.reactor.listenSSL(  # type: ignore[no-any-return]
            self.config.port,
            self.factory,
            self.contextFactory,
            self.config.backlog,
            self.config.interface,
        )


PortServer = PortTCPServer | PortSSLServer

__all__ = [
    "ListeningPort",
    "PortFactory",
    "PortProtocol",
    "PortSSLServer",
    "PortServer",
    "PortTCPServer",
    "listenTCP",
]
