"""
One upgraded WebSocket connection: wsproto's frame parser on the HTTP
connection's transport, with the endpoint's limits (message size), its
timers (pings, idle timeout, the closing handshake), flow control both
ways and the port's WebSocket counters.

wsproto is used directly rather than through C{twisted.web.websocket}:
see L{multiport.websocket} for why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from zope.interface import implementer

from multiport.ports.counters import HandlerCounters
from multiport.ports.websocketcounters import WebSocketCounters
from multiport.websocket.interface import (
    ABNORMAL_CLOSURE,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NORMAL_CLOSURE,
    WebSocketApp,
    WebSocketAppFactory,
)
from multiport.websocket.settings import CLOSE_TIMEOUT, WebSocketSettings

log = Logger()


@implementer(IPushProducer)
class _ClientReading:
    """
    The client's reads as a push producer (L{WebSocketConnection.readingProducer}).

    A consumer that stops (its connection gone) does not stop the client:
    the application closes it with a close frame instead.
    """

    def __init__(self, connection: WebSocketConnection) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection.pauseReading()

    def resumeProducing(self) -> None:
        self._connection.resumeReading()

    def stopProducing(self) -> None:
        pass


@implementer(IPushProducer)
class WebSocketConnection:
    """
    One WebSocket connection after its handshake: a L{WebSocketSession}
    for its application, and the push producer registered with the HTTP
    request, so that the client's full send buffer pauses the
    application's producer.

    @ivar transport: The client's connection (the port's wrapper).
    @param dropConnection: Closes the client's connection once the closing
        handshake is over; the transport's C{loseConnection} if not given.
    """

    app: WebSocketApp | None = None
    _producer: IPushProducer | None = None
    _writePaused = False
    _readPaused = False
    _closeCode: int | None = None
    _gone = False
    _pingCall: IDelayedCall | None = None
    _idleCall: IDelayedCall | None = None
    _closeCall: IDelayedCall | None = None

    def __init__(
        self,
        transport: Any,
        request: IRequest,
        settings: WebSocketSettings,
        counters: HandlerCounters,
        clock: IReactorTime,
        subprotocol: str | None = None,
        dropConnection: Callable[[], object] | None = None,
    ) -> None:
        self.transport = transport
        # The HTTP channel's loseConnection: it unregisters the channel as
        # the transport's producer first, without which TLS never closes.
        self._dropConnection = (
            transport.loseConnection if dropConnection is None else dropConnection
        )
        self._request = request
        self._settings = settings
        self._counters = WebSocketCounters(counters)
        self._clock = clock
        self._subprotocol = subprotocol
        self._ws = Connection(ConnectionType.SERVER)
        self._parts: list[bytes | str] = []
        self._size = 0
        self._lastHeard = clock.seconds()
        self._reading = _ClientReading(self)

    # WebSocketSession

    @property
    def request(self) -> IRequest:
        return self._request

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    @property
    def readingProducer(self) -> IPushProducer:
        return self._reading

    def sendMessage(self, message: bytes | str) -> None:
        if self._ws.state is not ConnectionState.OPEN or self._gone:
            return
        frame = self._ws.send(
            TextMessage(data=message)
            if isinstance(message, str)
            else BytesMessage(data=message)
        )
        self._counters.message(
            "out", len(message) if isinstance(message, bytes) else _utf8(message)
        )
        self.transport.write(bytes(frame))

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        self._closeBy("server", code, reason, wait=True)

    def registerProducer(self, producer: IPushProducer) -> None:
        self._producer = producer
        if self._writePaused:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None

    def pauseReading(self) -> None:
        """
        Stop reading from the client (flow control toward a slow consumer).
        """
        if not self._readPaused and not self._gone:
            self._readPaused = True
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Read from the client again.
        """
        if self._readPaused and not self._gone:
            self._readPaused = False
            self.transport.resumeProducing()

    # IPushProducer, registered with the HTTP request: the client's send
    # buffer is full (pause) or has room again (resume).

    def pauseProducing(self) -> None:
        self._writePaused = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._writePaused = False
        if self._producer is not None:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        pass

    # The connection's life.

    def open(self, makeApp: WebSocketAppFactory) -> None:
        """
        The handshake's answer is sent: start the timers and the
        application.
        """
        self._counters.opened()
        if self._settings.pingInterval:
            self._pingCall = self._clock.callLater(
                self._settings.pingInterval, self._ping
            )
        if self._settings.idleTimeout:
            self._idleCall = self._clock.callLater(
                self._settings.idleTimeout, self._checkIdle
            )
        try:
            self.app = makeApp(self)
        except Exception:
            log.failure("WebSocket application failed to start")
            self._closeBy("server", INTERNAL_ERROR, "", wait=True)

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the client: frames for wsproto.
        """
        if self._ws.state is ConnectionState.CLOSED or self._gone:
            return
        self._lastHeard = self._clock.seconds()
        self._ws.receive_data(data)
        for event in self._ws.events():
            self._handle(event)
            if self._gone or self._closed():
                break

    def _closed(self) -> bool:
        # A method, not an inline test: mypy narrows the state to not
        # CLOSED after the check at the top of dataReceived.
        return self._ws.state is ConnectionState.CLOSED

    def _handle(self, event: Event) -> None:
        if isinstance(event, (BytesMessage, TextMessage)):
            if self._ws.state is ConnectionState.OPEN:
                self._part(event.data, event.message_finished)
        elif isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:
                self.transport.write(bytes(self._ws.send(event.response())))
        elif isinstance(event, CloseConnection):
            self._closeReceived(event)

    def _part(self, data: bytes | bytearray | str, finished: bool) -> None:
        self._size += len(data) if not isinstance(data, str) else _utf8(data)
        if self._size > self._settings.maxMessageSize:
            self._parts = []
            self._closeBy(
                "server",
                MESSAGE_TOO_BIG,
                f"message over {self._settings.maxMessageSize} bytes",
                wait=True,
            )
            return
        self._parts.append(bytes(data) if isinstance(data, bytearray) else data)
        if not finished:
            return
        parts, size, self._parts, self._size = self._parts, self._size, [], 0
        message: bytes | str
        if isinstance(parts[0], str):
            message = "".join(parts)  # type: ignore[arg-type]
        else:
            message = b"".join(parts)  # type: ignore[arg-type]
        self._counters.message("in", size)
        if self.app is None:
            return
        try:
            self.app.messageReceived(message)
        except Exception:
            log.failure("WebSocket application failed on a message")
            self._closeBy("server", INTERNAL_ERROR, "", wait=True)

    def _closeReceived(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The client began the closing handshake: answer it, then
            # close (RFC 6455 section 7.1.1: the server closes TCP first).
            self._counted("client", event.code)
            self.transport.write(bytes(self._ws.send(event.response())))
            self._stop()
        elif state is ConnectionState.OPEN:
            # wsproto found a protocol error: its parser is done, so no
            # close frame of the client's can be read any more.
            self._closeBy("server", event.code, event.reason or "", wait=False)
        else:
            # The client's answer to our close.
            self._stop()

    def _closeBy(self, by: str, code: int, reason: str, wait: bool) -> None:
        if self._ws.state is not ConnectionState.OPEN or self._gone:
            return
        self._counted(by, code)
        self._parts, self._size = [], 0
        self.transport.write(bytes(self._ws.send(CloseConnection(code, reason))))
        self._cancelTimers()
        if not wait:
            self._stop()
            return
        # The client's close frame must still be read.
        self.resumeReading()
        self._closeCall = self._clock.callLater(CLOSE_TIMEOUT, self._stop)

    def _counted(self, by: str, code: int) -> None:
        if self._closeCode is None:
            self._closeCode = code
            self._counters.closed(code, by)

    def _stop(self) -> None:
        self._cancelTimers()
        self._dropConnection()

    def _ping(self) -> None:
        self._pingCall = None
        if self._ws.state is ConnectionState.OPEN and not self._gone:
            self.transport.write(bytes(self._ws.send(Ping())))
            self._pingCall = self._clock.callLater(
                self._settings.pingInterval, self._ping
            )

    def _checkIdle(self) -> None:
        self._idleCall = None
        quiet = self._clock.seconds() - self._lastHeard
        if quiet >= self._settings.idleTimeout:
            self._closeBy("server", GOING_AWAY, "idle", wait=True)
        else:
            self._idleCall = self._clock.callLater(
                self._settings.idleTimeout - quiet, self._checkIdle
            )

    def drain(self) -> None:
        """
        The port is going away: close with 1001 (going away).
        """
        self._closeBy("server", GOING_AWAY, "server going away", wait=True)

    def _cancelTimers(self) -> None:
        for name in ("_pingCall", "_idleCall", "_closeCall"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()

    def connectionLost(self, reason: Failure) -> None:
        """
        The client's connection is gone: count a close without handshake
        as 1006, and tell the application once.
        """
        if self._gone:
            return
        self._gone = True
        self._cancelTimers()
        self._counted("client", ABNORMAL_CLOSURE)
        self._counters.gone()
        self._producer = None
        app, self.app = self.app, None
        if app is not None:
            code = self._closeCode
            try:
                app.connectionClosed(ABNORMAL_CLOSURE if code is None else code)
            except Exception:
                log.failure("WebSocket application failed on close")


def _utf8(text: str) -> int:
    """
    The length of C{text} in UTF-8, the size a client sent it in.
    """
    return len(text.encode("utf-8", "surrogatepass"))
