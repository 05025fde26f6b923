"""
WebSocket endpoints on multiport's HTTP ports.

This is the public surface for handler plugins that serve WebSocket on a
path of their HTTP port (README.rst, "WebSocket"): L{serveWebSocket}
mounts an endpoint on a twisted.web site, whose connections each get a
L{WebSocketApp} talking to the client through a L{WebSocketSession}.

The frames are wsproto's, used directly rather than through
C{twisted.web.websocket}: Twisted's module offers no subprotocol choice,
no C{Origin} check, no bound on a message (Twisted 26.10 joins fragments
without limit; 26.4 hands each fragment on as a message), no close code
received, and no way to stop reading from the client.
"""

from multiport.websocket.interface import (
    WebSocketApp,
    WebSocketAppFactory,
    WebSocketSession,
)
from multiport.websocket.mount import serveWebSocket
from multiport.websocket.settings import (
    SETTINGS_KEYS,
    WebSocketSettings,
    parseWebSocketSettings,
)

__all__ = [
    "SETTINGS_KEYS",
    "WebSocketApp",
    "WebSocketAppFactory",
    "WebSocketSession",
    "WebSocketSettings",
    "parseWebSocketSettings",
    "serveWebSocket",
]
