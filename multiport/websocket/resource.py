"""
The WebSocket opening handshake (RFC 6455 section 4.2) as a twisted.web
resource: it checks the upgrade request, its C{Origin} and subprotocols,
answers 101 and hands the HTTP/1.1 connection over to a
L{WebSocketConnection}; or it refuses the request with an HTTP error,
counted by reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from multiport.ports.counters import HandlerCounters
from multiport.ports.websocketcounters import WebSocketCounters
from multiport.websocket.connection import WebSocketConnection
from multiport.websocket.interface import WebSocketAppFactory
from multiport.websocket.settings import WebSocketSettings, normalOrigin

#: RFC 6455 section 1.3.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Refusal(Exception):
    """
    An upgrade request that is refused.

    @ivar status: The HTTP status of the answer.
    @ivar reason: The counter label (C{bad_request}, C{origin}...).
    @ivar message: The answer's text, for the person reading it.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers


def acceptKey(key: bytes) -> bytes:
    """
    The C{Sec-WebSocket-Accept} answer to C{key}.
    """
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _tokens(request: Request, name: bytes) -> list[str]:
    values = request.requestHeaders.getRawHeaders(name, [])
    return [
        token.strip().lower()
        for value in values
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]


def _one(request: Request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name, [])
    if len(values) > 1:
        raise Refusal(400, "bad_request", f"More than one {name.decode()} header.")
    return values[0] if values else None


def checkUpgrade(request: Request) -> bytes:
    """
    The client's key, if C{request} is a well-formed WebSocket upgrade.

    @raise Refusal: saying what is wrong.
    """
    if request.method != b"GET":
        raise Refusal(
            405, "method", "A WebSocket opens with GET.", ((b"allow", b"GET"),)
        )
    if not isinstance(request.channel, HTTPChannel) or request.clientproto != (
        b"HTTP/1.1"
    ):
        raise Refusal(400, "bad_request", "A WebSocket opens over HTTP/1.1.")
    if "websocket" not in _tokens(request, b"upgrade") or "upgrade" not in _tokens(
        request, b"connection"
    ):
        raise Refusal(
            426,
            "not_upgrade",
            "This is a WebSocket endpoint: send Upgrade: websocket.",
            ((b"upgrade", b"websocket"), (b"connection", b"Upgrade")),
        )
    version = _one(request, b"sec-websocket-version")
    if version != b"13":
        raise Refusal(
            426,
            "version",
            "Only WebSocket version 13 is spoken.",
            ((b"sec-websocket-version", b"13"),),
        )
    key = _one(request, b"sec-websocket-key")
    try:
        decoded = base64.b64decode(key or b"", validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if key is None or len(decoded) != 16:
        raise Refusal(
            400, "bad_request", "Sec-WebSocket-Key is not 16 bytes of base64."
        )
    return key.strip()


def checkOrigin(request: Request, settings: WebSocketSettings) -> None:
    """
    Refuse a browser's request from an origin the endpoint does not allow.

    @raise Refusal: with 403.
    """
    origin = _one(request, b"origin")
    if origin is None or settings.origins == ("*",):
        return
    text = origin.decode("latin-1")
    normal = normalOrigin(text)
    if settings.origins is None:
        host = _one(request, b"host") or b""
        secure = request.isSecure()  # type: ignore[no-untyped-call]
        own = normalOrigin(
            ("https://" if secure else "http://") + host.decode("latin-1")
        )
        allowed = (
            normal is not None
            and own is not None
            and normal.partition("://")[2] == own.partition("://")[2]
        )
    else:
        allowed = normal in settings.origins
    if not allowed:
        raise Refusal(403, "origin", f"Origin {text!r} is not allowed here.")


def chooseSubprotocol(request: Request, settings: WebSocketSettings) -> str | None:
    """
    The subprotocol to agree on: the first of the endpoint's that the
    client offers; C{None} when the client offers none.

    @raise Refusal: when the client offers only others.
    """
    offered = [
        token.strip()
        for value in request.requestHeaders.getRawHeaders(b"sec-websocket-protocol", [])
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]
    if not offered:
        return None
    for name in settings.subprotocols:
        if name in offered:
            return name
    raise Refusal(
        400,
        "subprotocol",
        f"None of the subprotocols offered ({', '.join(offered)}) is spoken here"
        + (
            f"; offer one of: {', '.join(settings.subprotocols)}."
            if settings.subprotocols
            else "."
        ),
    )


def takeOver(channel: Any, connection: WebSocketConnection) -> None:
    """
    Hand the HTTP/1.1 C{channel}'s connection to C{connection}: what the
    client sends next (what followed the request in the same read too)
    goes to it, and its loss reaches it before the channel's own clean-up.
    """
    channelLost = channel.connectionLost

    def connectionLost(reason: Failure) -> None:
        try:
            connection.connectionLost(reason)
        finally:
            channelLost(reason)

    channel.dataReceived = connection.dataReceived
    # LineReceiver passes the rest of the read that held the request here.
    channel.rawDataReceived = connection.dataReceived
    channel.connectionLost = connectionLost
    # The port's drain (IDrainable) closes with 1001 rather than waiting.
    channel.drain = connection.drain


class WebSocketResource(Resource):
    """
    A WebSocket endpoint in a twisted.web tree: each accepted connection
    gets an application from C{makeApp}.
    """

    isLeaf = True

    def __init__(
        self,
        makeApp: WebSocketAppFactory,
        settings: WebSocketSettings,
        counters: HandlerCounters,
        clock: IReactorTime,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.makeApp = makeApp
        self.settings = settings
        self.counters = counters
        self.clock = clock

    def render(self, request: Request) -> bytes | int:
        try:
            key = checkUpgrade(request)
            checkOrigin(request, self.settings)
            subprotocol = chooseSubprotocol(request, self.settings)
        except Refusal as refusal:
            WebSocketCounters(self.counters).handshakeFailed(refusal.reason)
            request.setResponseCode(refusal.status)
            for name, value in refusal.headers:
                request.setHeader(name, value)  # type: ignore[no-untyped-call]
            request.setHeader(  # type: ignore[no-untyped-call]
                b"content-type", b"text/plain; charset=utf-8"
            )
            return f"{refusal.message}\n".encode()
        channel: Any = request.channel
        transport = channel.transport
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n"
            % (
                acceptKey(key),
                b""
                if subprotocol is None
                else b"Sec-WebSocket-Protocol: %s\r\n" % subprotocol.encode(),
            )
        )
        connection = WebSocketConnection(
            transport,
            request,
            self.settings,
            self.counters,
            self.clock,
            subprotocol,
            channel.loseConnection,
        )
        takeOver(channel, connection)
        request.registerProducer(connection, True)  # type: ignore[no-untyped-call]
        connection.open(self.makeApp)
        return NOT_DONE_YET
