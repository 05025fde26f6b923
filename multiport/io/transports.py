"""
C{--transport}: the class of every port's accepted connections, by name
(multiport's L{FastServer}, or Twisted's own L{tcp.Server}).
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet import tcp
from twisted.logger import Logger

from multiport.errors import ConfigError
from multiport.io.transport import FastServer

log = Logger(namespace="multiport.io.transport")


#: C{--transport}'s values: the class of every port's accepted connections.
TRANSPORTS: Mapping[str, type[tcp.Server]] = {
    "multiport": FastServer,
    "twisted": tcp.Server,
}
DEFAULT_TRANSPORT = "multiport"


def transportNamed(value: str) -> type[tcp.Server]:
    """
    The connections' class C{--transport} names: C{multiport} (L{FastServer})
    or C{twisted} (Twisted's own L{tcp.Server}, queueing each write for the
    next reactor turn).

    @raise ConfigError: naming the option and the bad value.
    """
    transport = TRANSPORTS.get(value)
    if transport is None:
        raise ConfigError(
            "--transport", f"expected {' or '.join(TRANSPORTS)}, got {value!r}"
        )
    return transport


def logTransport(name: str) -> None:
    """
    Say in the log which transport accepted connections use, when it is not
    multiport's own (as twistd says which reactor runs).
    """
    if name != DEFAULT_TRANSPORT:
        log.info(
            "accepted connections use {transport} (--transport {name})",
            transport=TRANSPORT_NAMES[name],
            name=name,
        )


#: What the log calls each transport.
TRANSPORT_NAMES: Mapping[str, str] = {
    "multiport": "multiport's FastServer",
    "twisted": "Twisted's tcp.Server",
}
