"""
multiport's built-in handler plugin objects, which
C{twisted/plugins/multiport_handlers.py} names for twisted.plugin exactly
as a third party's plugin module names its own.

Plugin discovery imports that module for any twistd command (C{twistd
--help} too): the handlers built on twisted.web, OpenSSL or the relay's
machinery are L{LazyHandler}s that import their module when a port first
needs it; the small ones (simple, status) are import-light already.
"""

from __future__ import annotations

from multiport.handlers.lazy import LazyHandler
from multiport.handlers.simple import chargen, daytime, discard, echo, qotd
from multiport.status import status
from multiport.status.agent import haproxyAgent

http = LazyHandler(
    "http",
    "HTTP: a folder (option root), a built-in page, or a redirect",
    "multiport.handlers.web:http",
)
https = LazyHandler(
    "https",
    "the http handler over TLS",
    "multiport.handlers.web:https",
    impliesTLS=True,
)
relay = LazyHandler(
    "relay",
    "TCP and UDP relay to configured upstreams (options upstream or upstreams)",
    "multiport.handlers.relay:relay",
    descriptorsPerConnection=2,
    protocols=("tcp", "udp"),
)
websocket = LazyHandler(
    "websocket",
    "WebSocket on an http port: echo, or a bridge to a TCP upstream (option upstream)",
    "multiport.handlers.websocket:websocket",
    descriptorsPerConnection=2,
)

#: Every built-in, in the order the plugin module names them.
BUILTINS: tuple[object, ...] = (
    chargen,
    daytime,
    discard,
    echo,
    http,
    https,
    qotd,
    relay,
    status,
    haproxyAgent,
    websocket,
)

__all__ = [
    "BUILTINS",
    "chargen",
    "daytime",
    "discard",
    "echo",
    "http",
    "https",
    "qotd",
    "relay",
    "status",
    "haproxyAgent",
    "websocket",
]
