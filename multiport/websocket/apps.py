"""
The C{websocket} handler's two applications: L{Echo} answers each message
with itself, L{Bridge} joins each WebSocket connection to a new TCP
connection to a configured upstream (binary messages both ways, as
websockify does), with flow control both ways.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.websocket.interface import (
    BAD_GATEWAY,
    NORMAL_CLOSURE,
    WebSocketSession,
)

log = Logger()


class Echo:
    """
    Answers each message with itself.  While the client does not read the
    answers, its messages are not read either.
    """

    def __init__(self, session: WebSocketSession) -> None:
        self.session = session
        session.registerProducer(session.readingProducer)

    def messageReceived(self, message: bytes | str) -> None:
        self.session.sendMessage(message)

    def connectionClosed(self, code: int) -> None:
        self.session.unregisterProducer()


class _Upstream(Protocol):
    """
    The TCP side of one L{Bridge}: each read becomes one binary message.
    """

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def dataReceived(self, data: bytes) -> None:
        self.bridge.session.sendMessage(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.bridge.upstreamLost()


class Bridge:
    """
    One WebSocket connection joined to a TCP connection to C{endpoint}.

    Until the upstream answers, the client's reads are paused; then each
    side is the other's producer, so a side that stops reading pauses the
    other.  The upstream's end closes the WebSocket (1000), the client's
    close closes the upstream; an upstream that can't be reached closes
    the WebSocket with 1014 (bad gateway).
    """

    upstream: _Upstream | None = None
    _closed = False

    def __init__(
        self, session: WebSocketSession, endpoint: IStreamClientEndpoint, name: str
    ) -> None:
        self.session = session
        self.name = name
        self._pending: list[bytes] = []
        session.readingProducer.pauseProducing()
        self._connecting: Deferred[Any] | None = endpoint.connect(
            Factory.forProtocol(lambda: _Upstream(self))
        )
        self._connecting.addCallbacks(self._connected, self._failed)

    def _connected(self, upstream: _Upstream) -> None:
        self._connecting = None
        self.upstream = upstream
        transport: Any = upstream.transport
        transport.registerProducer(self.session.readingProducer, True)
        self.session.registerProducer(transport)
        for data in self._pending:
            transport.write(data)
        self._pending = []
        self.session.readingProducer.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        self._connecting = None
        if self._closed:
            return
        log.info(
            "websocket bridge: upstream {upstream} unreachable: {why}",
            upstream=self.name,
            why=reason.getErrorMessage(),
        )
        self.session.close(BAD_GATEWAY, "upstream unreachable")

    def messageReceived(self, message: bytes | str) -> None:
        data = message.encode("utf-8") if isinstance(message, str) else message
        if self.upstream is None:
            # Sent in the same read as the handshake, before the upstream
            # answered: the client's reads are paused, so this is bounded.
            self._pending.append(data)
            return
        transport: Any = self.upstream.transport
        transport.write(data)

    def upstreamLost(self) -> None:
        """
        The upstream closed: so does the WebSocket.
        """
        self.session.unregisterProducer()
        self.session.close(NORMAL_CLOSURE, "upstream closed")

    def connectionClosed(self, code: int) -> None:
        self._closed = True
        self.session.unregisterProducer()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.upstream is not None:
            transport: Any = self.upstream.transport
            transport.unregisterProducer()
            transport.loseConnection()
