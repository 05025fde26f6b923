"""
multiport's built-in handlers, found through twisted.plugin exactly like a
third party's.

Plugin discovery imports this module for any twistd command: the handlers
built on twisted.web, OpenSSL or the relay's machinery are L{LazyHandler}s
that import their module when a port first needs it; the small ones
(simple, status) are import-light already.
"""

from multiport.handlers.lazy import LazyHandler
from multiport.handlers.simple import chargen, daytime, discard, echo, qotd
from multiport.status import status

http = LazyHandler(
    "http",
    "HTTP on twisted.web: a folder (option root), a built-in page, or a redirect",
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
    "TCP relay to configured upstreams (options upstream or upstreams)",
    "multiport.handlers.relay:relay",
    descriptorsPerConnection=2,
)

__all__ = [
    "chargen",
    "daytime",
    "discard",
    "echo",
    "http",
    "https",
    "qotd",
    "relay",
    "status",
]
