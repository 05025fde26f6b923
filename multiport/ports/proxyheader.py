"""
Reading a PROXY protocol header (v1 and v2): L{HeaderParser} takes the
bytes a load balancer sends before the client's, from reads split
anywhere, and gives the client's real address (L{ProxyInfo}) or a
L{ProxyProtocolError}.  See
U{https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Literal

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

from multiport.config.model import formatAddress

#: Which header versions a port accepts.
Versions = Literal["v1", "v2", "any"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = IPv4Address | IPv6Address

#: What a v1 header starts with.
V1_SIGNATURE = b"PROXY "
#: What a v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 line, CRLF included (the specification's limit).
V1_MAX_LENGTH = 107
#: The largest v2 address block (addresses and TLVs) accepted: the
#: specification allows 65535 bytes, but a block that large is no use here
#: and would only cost memory per connection.
V2_MAX_LENGTH = 4096
#: The fixed part of a v2 header: signature, version and command, family
#: and protocol, and the length of the rest.
_V2_FIXED = 16

_VERSIONS: dict[str, frozenset[int]] = {
    "v1": frozenset({1}),
    "v2": frozenset({2}),
    "any": frozenset({1, 2}),
}

# v2 commands, families and transport protocols.
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM, _DGRAM = 0x1, 0x2
_FAMILY_NAMES = {_UNSPEC: "UNSPEC", _INET: "INET", _INET6: "INET6", _UNIX: "UNIX"}
_PROTOCOL_NAMES = {_UNSPEC: "UNSPEC", _STREAM: "STREAM", _DGRAM: "DGRAM"}
#: Bytes of the address block each family needs (two addresses, and two
#: ports for INET and INET6).
_FAMILY_SIZES = {_UNSPEC: 0, _INET: 12, _INET6: 36, _UNIX: 216}


def _describe(address: IAddress) -> str:
    """
    C{host:port} of a TCP address, for the log.
    """
    host = getattr(address, "host", None)
    if host is None:
        return repr(address)
    return formatAddress(host, getattr(address, "port", 0))


class ProxyProtocolError(Exception):
    """
    The bytes a connection started with are not an acceptable PROXY
    protocol header; the message says why.
    """


@frozen
class ProxyInfo:
    """
    What a PROXY protocol header said.

    @ivar version: 1 or 2.
    @ivar command: C{"proxy"}: the connection was relayed for C{source};
        C{"local"}: the sender's own connection (a health check), or a v1
        C{UNKNOWN}; use the connection's own addresses.
    @ivar source: The client's address, or C{None} for C{"local"} and for a
        v2 C{"proxy"} header without usable addresses (family UNSPEC or
        UNIX).
    @ivar destination: The address the client connected to, or C{None}
        when C{source} is.
    """

    version: int
    command: Literal["proxy", "local"]
    source: Address | None = None
    destination: Address | None = None


def _acceptedVersions(versions: str) -> frozenset[int]:
    try:
        return _VERSIONS[versions]
    except (KeyError, TypeError):
        raise ValueError(
            f"PROXY protocol versions must be 'v1', 'v2' or 'any', not {versions!r}"
        ) from None


class HeaderParser:
    """
    An incremental parser of one PROXY protocol header.

    Feed it the connection's bytes as they arrive until L{feed} returns the
    L{ProxyInfo}; the bytes after the header are then in L{rest}.  A
    parser that raised L{ProxyProtocolError} is spent.

    Memory is bounded: it never buffers more than a v1 line (107 bytes) or
    a v2 header (16 + 4096 bytes), plus the bytes of the read that
    completed it.

    @ivar rest: The bytes after the header (empty until it is complete).
    @ivar info: The header, once complete, else C{None}.
    """

    def __init__(self, versions: Versions) -> None:
        self._accepted = _acceptedVersions(versions)
        self._buffer = bytearray()
        self._version: int | None = None
        self.rest = b""
        self.info: ProxyInfo | None = None

    def feed(self, data: bytes) -> ProxyInfo | None:
        """
        Take the next bytes of the connection.

        @return: The header once complete, else C{None} (more bytes are
            needed).
        @raise ProxyProtocolError: The bytes so far cannot start an
            acceptable header; decided as soon as they show it.
        @raise RuntimeError: The header was already complete.
        """
        if self.info is not None:
            raise RuntimeError("the PROXY protocol header is already complete")
        buffer = self._buffer
        buffer += data
        if self._version is None:
            self._version = self._signature(buffer)
            if self._version is None:
                return None
        if self._version == 1:
            parsed = _parseV1(buffer)
        else:
            parsed = _parseV2(buffer)
        if parsed is None:
            return None
        self.info, end = parsed
        self.rest = bytes(buffer[end:])
        self._buffer = bytearray()
        return self.info

    def _signature(self, buffer: bytearray) -> int | None:
        """
        The version whose signature C{buffer} starts with, or C{None} if it
        could still be either.
        """
        if not buffer:
            return None
        for version, signature in ((1, V1_SIGNATURE), (2, V2_SIGNATURE)):
            seen = min(len(buffer), len(signature))
            if buffer[:seen] == signature[:seen]:
                if version not in self._accepted:
                    (other,) = self._accepted
                    raise ProxyProtocolError(
                        f"PROXY protocol v{version} header where only v{other} "
                        "is accepted"
                    )
                return version if len(buffer) >= len(signature) else None
        raise ProxyProtocolError(
            f"not a PROXY protocol header: starts with {bytes(buffer[:16])!r}"
        )


def _parseV1(buffer: bytearray) -> tuple[ProxyInfo, int] | None:
    """
    The v1 header at the start of C{buffer} and where it ends, or C{None}
    if its CRLF has not arrived yet.
    """
    end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(buffer) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(
                f"PROXY protocol v1 header longer than {V1_MAX_LENGTH} bytes "
                "without CRLF"
            )
        return None
    return _parseV1Line(bytes(buffer[:end])), end + 2


def _parseV1Line(line: bytes) -> ProxyInfo:
    def bad(why: str) -> ProxyProtocolError:
        return ProxyProtocolError(f"bad PROXY protocol v1 header {line!r}: {why}")

    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise bad("not ASCII") from None
    fields = text.split(" ")
    protocol = fields[1]
    if protocol == "UNKNOWN":
        # The specification: ignore whatever follows, use the real addresses.
        return ProxyInfo(1, "local")
    if protocol not in ("TCP4", "TCP6"):
        raise bad(f"unknown protocol {protocol!r} (expected TCP4, TCP6 or UNKNOWN)")
    if len(fields) != 6:
        raise bad(
            "expected protocol, source and destination addresses and ports, "
            "separated by single spaces"
        )
    family = 4 if protocol == "TCP4" else 6
    make = IPv4Address if family == 4 else IPv6Address
    source = make("TCP", _v1Host(fields[2], family, bad), _v1Port(fields[4], bad))
    destination = make("TCP", _v1Host(fields[3], family, bad), _v1Port(fields[5], bad))
    return ProxyInfo(1, "proxy", source, destination)


def _v1Host(text: str, family: int, bad: Callable[[str], ProxyProtocolError]) -> str:
    """
    The address C{text} of a v1 header, canonical.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise bad(f"{text!r} is not an IP address") from None
    if ip.version != family:
        raise bad(f"{text!r} is not an IPv{family} address (protocol TCP{family})")
    if getattr(ip, "scope_id", None):
        raise bad(f"{text!r} has a scope")
    return str(ip)


def _v1Port(text: str, bad: Callable[[str], ProxyProtocolError]) -> int:
    """
    The port C{text} of a v1 header.
    """
    if not (0 < len(text) <= 5 and text.isdigit()) or int(text) > 65535:
        raise bad(f"port {text!r} is not a number from 0 to 65535")
    return int(text)


#: v2 address families: the size of one address, its ipaddress type and
#: Twisted's address type.
_V2_ADDRESSES: dict[int, tuple[int, Any, Any]] = {
    _INET: (4, ipaddress.IPv4Address, IPv4Address),
    _INET6: (16, ipaddress.IPv6Address, IPv6Address),
}


def _parseV2(buffer: bytearray) -> tuple[ProxyInfo, int] | None:
    """
    The v2 header at the start of C{buffer} and where it ends, or C{None}
    if it has not all arrived yet.  Everything that can be checked is
    checked as soon as the fixed 16 bytes are in.
    """
    if len(buffer) < _V2_FIXED:
        return None
    versionCommand, familyProtocol = buffer[12], buffer[13]
    length = int.from_bytes(buffer[14:16], "big")
    version, command = versionCommand >> 4, versionCommand & 0xF
    if version != 2:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header with version {version} (expected 2)"
        )
    if command not in (_LOCAL, _PROXY):
        raise ProxyProtocolError(
            f"PROXY protocol v2 header with unknown command 0x{command:x}"
        )
    if length > V2_MAX_LENGTH:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header of {length} bytes after the fixed part "
            f"(the limit is {V2_MAX_LENGTH})"
        )
    family, protocol = familyProtocol >> 4, familyProtocol & 0xF
    if command == _PROXY:
        # A LOCAL header's family and addresses are to be ignored.
        _checkV2Family(family, protocol, length)
    end = _V2_FIXED + length
    if len(buffer) < end:
        return None
    if command == _LOCAL:
        return ProxyInfo(2, "local"), end
    block = bytes(buffer[_V2_FIXED:end])
    # Whatever follows the addresses (TLVs) is skipped.
    if family in _V2_ADDRESSES:
        size, ip, address = _V2_ADDRESSES[family]
        ports = block[2 * size : 2 * size + 4]
        return ProxyInfo(
            2,
            "proxy",
            address("TCP", str(ip(block[:size])), int.from_bytes(ports[:2], "big")),
            address(
                "TCP", str(ip(block[size : 2 * size])), int.from_bytes(ports[2:], "big")
            ),
        ), end
    # UNSPEC or UNIX: no address to use; the connection's own stand.
    return ProxyInfo(2, "proxy"), end


def _checkV2Family(family: int, protocol: int, length: int) -> None:
    """
    Check the family, transport protocol and address block length of a v2
    PROXY header.
    """
    if family not in _FAMILY_NAMES:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header with unknown address family 0x{family:x}"
        )
    if protocol not in _PROTOCOL_NAMES:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header with unknown transport protocol 0x{protocol:x}"
        )
    if family in (_INET, _INET6) and protocol != _STREAM:
        raise ProxyProtocolError(
            f"PROXY protocol v2 header for {_FAMILY_NAMES[family]} "
            f"{_PROTOCOL_NAMES[protocol]}; only STREAM (TCP) is supported"
        )
    needed = _FAMILY_SIZES[family]
    if length < needed:
        raise ProxyProtocolError(
            f"PROXY protocol v2 address block of {length} bytes, too short for "
            f"{_FAMILY_NAMES[family]} (needs {needed})"
        )
