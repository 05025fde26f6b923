"""
What a WebSocket endpoint allows and how it keeps its connections alive:
subprotocols, the largest message, the allowed C{Origin} values, the ping
interval and the idle timeout, validated into a L{WebSocketSettings}.

The same option keys serve the C{websocket} handler and any handler plugin
that mounts a WebSocket endpoint (L{parseWebSocketSettings}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen

from multiport.errors import typeName
from multiport.handlers.interface import OptionError

#: The largest message a client may send unless max_message_size says
#: otherwise: 1 MiB, as the C{websockets} library's default.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: Seconds between the server's pings (the C{websockets} library's default).
DEFAULT_PING_INTERVAL = 20.0
#: Seconds without a message, pong or close from the client before the
#: server closes the connection (code 1001): three missed pings.
DEFAULT_IDLE_TIMEOUT = 60.0
#: Seconds a closing connection waits for the client's close frame before
#: it drops the TCP connection.
CLOSE_TIMEOUT = 5.0
#: The largest max_message_size accepted: a message is held in memory
#: whole before it is handed on.
MAX_MESSAGE_SIZE_LIMIT = 64 * 1024 * 1024

#: The option keys L{parseWebSocketSettings} reads.
SETTINGS_KEYS = frozenset(
    {"subprotocols", "max_message_size", "origins", "ping_interval", "idle_timeout"}
)

#: RFC 6455 section 4.1: a subprotocol is an RFC 7230 token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: An origin as a browser sends it (RFC 6454): scheme, host, optional port.
_ORIGIN = re.compile(
    r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)


@frozen
class WebSocketSettings:
    """
    One WebSocket endpoint's settings.

    @ivar subprotocols: The subprotocols offered, in the server's order of
        preference; empty: none (a client asking for one is refused).
    @ivar maxMessageSize: The largest message (bytes, or UTF-8 bytes of
        text) a client may send; a larger one closes the connection with
        code 1009.
    @ivar origins: The C{Origin} values allowed (lower case,
        C{scheme://host[:port]}); C{None}: the request's own host only;
        C{("*",)}: any.  A request without C{Origin} (not a browser) is
        always allowed.
    @ivar pingInterval: Seconds between pings; C{0}: no pings.
    @ivar idleTimeout: Seconds without anything from the client (a
        message, a pong, a ping) before the connection is closed with code
        1001; C{0}: never.
    """

    subprotocols: tuple[str, ...] = ()
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE
    origins: tuple[str, ...] | None = None
    pingInterval: float = DEFAULT_PING_INTERVAL
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT


def normalOrigin(value: str) -> str | None:
    """
    C{value} as an origin compares (lower case, no default port), or
    C{None} if it is not C{http(s)://host[:port]}.
    """
    match = _ORIGIN.fullmatch(value.strip())
    if match is None:
        return None
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if port is not None:
        if not 1 <= int(port) <= 65535:
            return None
        if (scheme, int(port)) in (("http", 80), ("https", 443)):
            port = None
    return f"{scheme}://{host}" + ("" if port is None else f":{int(port)}")


def _strings(options: Mapping[str, object], key: str) -> tuple[str, ...] | None:
    if key not in options:
        return None
    value = options[key]
    if type(value) is not list or any(type(item) is not str for item in value):
        raise OptionError(
            key, f"expected an array of strings, got {typeName(value)} {value!r}"
        )
    return tuple(value)


def _seconds(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if type(value) not in (int, float) or not 0 <= value <= 86400:  # type: ignore[operator]
        raise OptionError(
            key,
            f"expected seconds from 0 (off) to 86400, got {typeName(value)} {value!r}",
        )
    return float(value)  # type: ignore[arg-type]


def parseWebSocketSettings(options: Mapping[str, object]) -> WebSocketSettings:
    """
    The settings the keys of L{SETTINGS_KEYS} in C{options} give; keys
    not among them are left to the caller.

    @raise OptionError: naming the key and its bad value.
    """
    subprotocols = _strings(options, "subprotocols") or ()
    for name in subprotocols:
        if not _TOKEN.fullmatch(name):
            raise OptionError(
                "subprotocols", f"{name!r} is not a subprotocol name (an HTTP token)"
            )
    if len(set(subprotocols)) != len(subprotocols):
        raise OptionError("subprotocols", f"{list(subprotocols)!r} names one twice")
    size = options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    if type(size) is not int or not 1 <= size <= MAX_MESSAGE_SIZE_LIMIT:
        raise OptionError(
            "max_message_size",
            f"expected a whole number of bytes from 1 to {MAX_MESSAGE_SIZE_LIMIT}, "
            f"got {typeName(size)} {size!r}",
        )
    listed = _strings(options, "origins")
    origins: tuple[str, ...] | None = None
    if listed is not None:
        if listed == ("*",):
            origins = listed
        else:
            normal = []
            for origin in listed:
                value = normalOrigin(origin)
                if value is None:
                    raise OptionError(
                        "origins",
                        f"{origin!r} is not an origin like 'https://example.com' "
                        "or 'http://127.0.0.1:8080' (or give [\"*\"] for any)",
                    )
                normal.append(value)
            origins = tuple(normal)
    ping = _seconds(options, "ping_interval", DEFAULT_PING_INTERVAL)
    idle = _seconds(options, "idle_timeout", DEFAULT_IDLE_TIMEOUT)
    if ping and idle and idle <= ping:
        raise OptionError(
            "idle_timeout",
            f"{idle:g} s would close live clients: it must exceed ping_interval "
            f"({ping:g} s), or be 0 (off)",
        )
    return WebSocketSettings(
        subprotocols=subprotocols,
        maxMessageSize=size,
        origins=origins,
        pingInterval=ping,
        idleTimeout=idle,
    )
