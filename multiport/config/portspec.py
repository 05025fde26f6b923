"""
The C{--ports} grammar: comma-separated C{[HOST:]PORT[/udp][=HANDLER[+tls]]}.

HOST is an IPv4 address, a bracketed IPv6 address or a host name.
"""

from __future__ import annotations

import re
from pathlib import Path

from multiport.config.model import PortRequest, numericHost, parseInterface
from multiport.errors import ConfigError

_HANDLER = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def parsePortItem(item: str, where: str, relativeTo: Path | None = None) -> PortRequest:
    """
    Parse one C{--ports} item.

    @param where: How to name the item in errors.
    @raise ConfigError: if it does not follow the grammar.
    """
    text = item.strip()
    if not text:
        raise ConfigError(where, "empty item")
    address, sep, handlerPart = text.partition("=")
    address, slash, protocol = address.partition("/")
    if slash and protocol not in ("tcp", "udp"):
        raise ConfigError(
            where, f"unknown protocol {'/' + protocol!r}; only '/udp' and '/tcp'"
        )
    handler: str | None = None
    tls: bool | None = None
    if sep:
        handler, plus, suffix = handlerPart.partition("+")
        if plus:
            if suffix != "tls":
                raise ConfigError(
                    where, f"unknown suffix {'+' + suffix!r}; only '+tls' is known"
                )
            tls = True
            if protocol == "udp":
                raise ConfigError(
                    where, "'+tls' on a UDP port: there is no TLS over UDP (no DTLS)"
                )
        if not _HANDLER.match(handler):
            raise ConfigError(where, f"bad handler name {handler!r}")
    host: str | None
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise ConfigError(
                where, f"bad address {address!r}; write IPv6 as [ADDRESS]:PORT"
            )
        host = address[1:end]
        if ":" not in host or numericHost(host) is None:
            raise ConfigError(where, f"{host!r} in brackets is not an IPv6 address")
        portText = address[end + 2 :]
    elif address.count(":") > 1:
        raise ConfigError(
            where, f"bad address {address!r}; write IPv6 as [ADDRESS]:PORT"
        )
    else:
        host, colon, portText = address.rpartition(":")
        if colon and not host:
            raise ConfigError(where, f"missing host before ':' in {address!r}")
        host = parseInterface(host, where) if host else None
    if not portText.isascii() or not portText.isdigit():
        raise ConfigError(where, f"port {portText!r} is not a number")
    port = int(portText)
    if port > 65535:
        raise ConfigError(where, f"port {port} out of range 0-65535")
    return PortRequest(
        where=where,
        port=port,
        host=host,
        handler=handler,
        tls=tls,
        optionsBase=relativeTo if relativeTo is not None else Path.cwd(),
        protocol=protocol or "tcp",
    )


def parsePorts(value: str, first: int = 1) -> list[PortRequest]:
    """
    Parse a whole C{--ports} value.

    @param first: The number of its first item among all C{--ports} items.
    """
    return [
        parsePortItem(item, f"--ports item {first + i} {item.strip()!r}")
        for i, item in enumerate(value.split(","))
    ]
