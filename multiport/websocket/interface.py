"""
The WebSocket application interface: what a handler plugin writes to
serve WebSocket on a path of its HTTP port (L{WebSocketApp}, made per
connection by a L{WebSocketAppFactory}), and what it gets to talk to the
client with (L{WebSocketSession}).

Third-party packages code against this module (re-exported by
L{multiport.websocket}); keep it stable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest

#: Close codes (RFC 6455 section 7.4.1, and 1014 from IANA's registry).
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
BAD_GATEWAY = 1014


class WebSocketSession(Protocol):
    """
    One open WebSocket connection, as its application sees it.

    Writes are never refused: an application that may send faster than
    the client reads registers a producer (L{registerProducer}), which is
    paused while the client's connection can't take more.
    """

    @property
    def request(self) -> IRequest:
        """
        The HTTP request that opened the connection (its headers, cookies,
        C{getClientAddress()}).
        """

    @property
    def subprotocol(self) -> str | None:
        """
        The subprotocol agreed in the handshake, or C{None}.
        """

    @property
    def readingProducer(self) -> IPushProducer:
        """
        A push producer for the client's side: pausing it stops reading
        from the client (register it with a consumer that can't keep up,
        e.g. an upstream connection's transport).
        """

    def sendMessage(self, message: bytes | str) -> None:
        """
        Send one message: C{bytes} as a binary message, C{str} as text.
        Once the connection is closing, messages are dropped.
        """

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """
        Begin the closing handshake with C{code} (C{reason}: at most 123
        bytes of UTF-8 are sent); no message is delivered after it.
        """

    def registerProducer(self, producer: IPushProducer) -> None:
        """
        Pause C{producer} while the client's connection can't take more,
        resume it when it can (one producer at a time).
        """

    def unregisterProducer(self) -> None:
        """
        Forget the producer L{registerProducer} registered.
        """


class WebSocketApp(Protocol):
    """
    What serves one WebSocket connection; a L{WebSocketAppFactory} makes
    one per connection, once the handshake succeeded.
    """

    def messageReceived(self, message: bytes | str) -> None:
        """
        A whole message arrived: C{bytes} for a binary one, C{str} for
        text.  It is never larger than the endpoint's C{max_message_size}.
        """

    def connectionClosed(self, code: int) -> None:
        """
        The connection is gone, with close C{code} (1006: the connection
        dropped without a closing handshake).  Called once.
        """


#: Makes the application of one connection, given its session.
WebSocketAppFactory = Callable[[WebSocketSession], WebSocketApp]
