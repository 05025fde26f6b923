"""
The per-port factory, L{PortFactory}: where a connection is admitted
(access rules, limits, rates, before the handler or TLS sees it), where
the port's open connections are kept so that it can be drained, and what
the listening socket is handed (TLS and a PROXY header reader composed
around it).
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolFactory,
    IProtocolNegotiationFactory,
)
from twisted.protocols.policies import WrappingFactory
from zope.interface import implementer

from multiport.daemon.logformat import emitLine
from multiport.handlers.interface import HandlerContext
from multiport.ports.admission import Admission, DaemonLimit
from multiport.ports.connection import PortProtocol
from multiport.ports.connectionparts import addressText, connectionLog, log
from multiport.ports.counters import PortCounters
from multiport.ports.registry import Connections
from multiport.ports.tlslayer import TLSFactory
from multiport.text import plural

#: Seconds a TLS client has to finish its handshake unless the port's tls
#: table sets handshake_timeout.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: How long a PROXY protocol header may take to arrive when the port sets
#: no header_timeout.
PROXY_HEADER_TIMEOUT = 10.0


@implementer(IProtocolNegotiationFactory)
class PortFactory(WrappingFactory[Any]):
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
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        #: The open connections (L{Connections} rather than Twisted's
        #: dict: memory per idle connection).
        self.protocols: Connections[PortProtocol] = Connections()  # type: ignore[assignment]
        self.counters = counters
        # The open connections count their own bytes; the port's totals
        # sum them when asked.
        counters.openConnections = self.protocols
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

    def registerProtocol(self, protocol: PortProtocol) -> None:
        """
        Keep C{protocol} among the open connections.
        """
        self.protocols.add(protocol)

    def unregisterProtocol(self, protocol: PortProtocol) -> None:
        """
        C{protocol} closed: forget it, and fire the drain's waiters once
        none is left.
        """
        self.protocols.remove(protocol)
        if not self.protocols and self._drainWaiters:
            timer, self._drainTimer = self._drainTimer, None
            if timer is not None and timer.active():
                timer.cancel()
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    # WrappingFactory's stub promises a protocol for every address; the
    # listening port calling this takes None as a refusal (as Factory's
    # does).
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress
    ) -> PortProtocol | None:
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
        return self.wrappedFactory.logPrefix()  # type: ignore[no-any-return]
