"""
multiport's built-in handlers, found through twisted.plugin exactly like a
third party's.
"""

from multiport.handlers.relay import relay
from multiport.handlers.simple import chargen, daytime, discard, echo, qotd
from multiport.handlers.web import http, https
from multiport.status import status

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
