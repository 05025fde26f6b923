"""
The TLS layer of a TLS port: Twisted's memory-BIO TLS, which notes whether
a client sent anything (a bare TCP check is no handshake failure), answers
a client that speaks plain text instead of TLS, and builds no TLS state for
a connection the port turns away.
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from multiport.ports.handshake import (
    Plain,
    classifyPlain,
    notTLSReason,
    plainHTTPAnswer,
    startsTLS,
)


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

    # The TCP connection under TLS, set by makeConnection.
    transport: ITCPTransport
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
        super().dataReceived(data)  # type: ignore[no-untyped-call]

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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        connection = self._tlsConnection
        if connection is not None and self._handshakeDone:
            state = connection.get_shutdown()
            self.closedClean = bool(state & SSL.RECEIVED_SHUTDOWN) or bool(
                state & SSL.SENT_SHUTDOWN and reason.check(error.ConnectionDone)  # type: ignore[no-untyped-call]
            )
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class TLSFactory(TLSMemoryBIOFactory):
    """
    Twisted's TLS factory, building L{TLSProtocol}s, and none at all for a
    connection the port's wrapper turns away: a rejected client costs no
    TLS state.
    """

    protocol = TLSProtocol
    noisy = False

    # WrappingFactory's stub promises a protocol for every address; the
    # listening port calling this takes None as a refusal (as Factory's
    # does).
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress
    ) -> TLSMemoryBIOProtocol | None:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)  # type: ignore[no-untyped-call]
