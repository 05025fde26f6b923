"""
The C{[cluster]} table: the other instances this daemon runs beside
(C{peers}, the URLs of their status ports), linked from the dashboard and
listed in C{/status}.  Nothing here contacts them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from multiport.errors import ConfigError, knownTable, typeName

KEYS = {"peers"}


def parsePeer(value: object, where: str) -> str:
    """
    One peer: an http or https URL with a host, and no user name or
    password (the dashboard shows it to whoever reads it).

    @raise ConfigError: naming C{where} and the URL.
    """
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a URL, got {typeName(value)} {value!r}")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(where, f"{value!r} has spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            where,
            f"expected an http or https URL of a status port, got {value!r}",
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(where, f"{value!r} has a bad port number")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            where,
            f"{value!r} holds a user name or password, which the dashboard would show",
        )
    return value


def parseClusterTable(value: object, where: str) -> tuple[str, ...]:
    """
    A C{[cluster]} table read from TOML: its peers, in order.

    @raise ConfigError: naming the bad key or entry.
    """
    listed = knownTable(value, where, KEYS).get("peers", [])
    if not isinstance(listed, list):
        raise ConfigError(
            f"{where}.peers",
            f"expected an array of URLs, got {typeName(listed)} {listed!r}",
        )
    peers: list[str] = []
    for index, entry in enumerate(listed):
        here = f"{where}.peers[{index}]"
        peer = parsePeer(entry, here)
        if peer in peers:
            raise ConfigError(here, f"{peer!r} is listed twice")
        peers.append(peer)
    return tuple(peers)
