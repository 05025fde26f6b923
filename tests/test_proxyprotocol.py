"""
Tests for L{multiport.ports.proxyprotocol}: parsing PROXY protocol v1 and v2
headers from reads split anywhere, and the factory that reads them in front
of a port's own factory (and TLS).
"""

from __future__ import annotations

import datetime
from ipaddress import ip_address, ip_network

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer, providedBy

from multiport.ports.proxyheader import (
    V2_SIGNATURE,
    HeaderParser,
    ProxyInfo,
    ProxyProtocolError,
)
from multiport.ports.proxyprotocol import (
    ProxiedTransport,
    ProxyProtocolFactory,
    ProxyProtocolWrapper,
)
from multiport.ports.tls import makeSelfSigned

#: The client as the headers below name it, and the address it connected to.
SOURCE4 = IPv4Address("TCP", "192.0.2.10", 56324)
DEST4 = IPv4Address("TCP", "198.51.100.1", 443)
SOURCE6 = IPv6Address("TCP", "2001:db8::10", 56324)
DEST6 = IPv6Address("TCP", "2001:db8::1", 443)

#: The load balancer's connection to the port, and the port's own address.
BALANCER = IPv4Address("TCP", "10.0.0.2", 40000)
PORT = IPv4Address("TCP", "10.0.0.1", 8443)
TRUSTED = [ip_network("10.0.0.0/8"), ip_network("2001:db8:ffff::/48")]
TIMEOUT = 5.0


def v2(versionCommand: int, familyProtocol: int, block: bytes) -> bytes:
    """
    A v2 header with the address block (and TLVs) C{block}.
    """
    return (
        V2_SIGNATURE
        + bytes([versionCommand, familyProtocol])
        + len(block).to_bytes(2, "big")
        + block
    )


def addresses(source: str, destination: str, sport: int, dport: int) -> bytes:
    """
    A v2 INET or INET6 address block.
    """
    return (
        ip_address(source).packed
        + ip_address(destination).packed
        + sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
    )


def tlv(kind: int, value: bytes) -> bytes:
    """
    One v2 TLV.
    """
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


TLVS = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x04, b"")

V1_TCP4 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::10 2001:0db8:0:0:0:0:0:1 56324 443\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
#: The longest v1 line there is: 107 bytes.
V1_LONGEST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
V2_IPV4 = v2(0x21, 0x11, addresses("192.0.2.10", "198.51.100.1", 56324, 443))
V2_IPV6 = v2(0x21, 0x21, addresses("2001:db8::10", "2001:db8::1", 56324, 443))
V2_IPV4_TLVS = v2(
    0x21, 0x11, addresses("192.0.2.10", "198.51.100.1", 56324, 443) + TLVS
)
V2_IPV6_TLVS = v2(
    0x21, 0x21, addresses("2001:db8::10", "2001:db8::1", 56324, 443) + TLVS
)
V2_LOCAL = v2(0x20, 0x00, b"")
V2_LOCAL_ADDRESSES = v2(
    0x20, 0x11, addresses("192.0.2.10", "198.51.100.1", 56324, 443) + TLVS
)
V2_UNSPEC = v2(0x21, 0x00, TLVS)
V2_UNIX = v2(0x21, 0x31, b"/run/client.sock".ljust(216, b"\x00"))

PROXY4_V1 = ProxyInfo(1, "proxy", SOURCE4, DEST4)
PROXY6_V1 = ProxyInfo(1, "proxy", SOURCE6, DEST6)
PROXY4_V2 = ProxyInfo(2, "proxy", SOURCE4, DEST4)
PROXY6_V2 = ProxyInfo(2, "proxy", SOURCE6, DEST6)

#: Every valid header with what it says.
VALID: list[tuple[bytes, ProxyInfo]] = [
    (V1_TCP4, PROXY4_V1),
    (V1_TCP6, PROXY6_V1),
    (V1_UNKNOWN, ProxyInfo(1, "local")),
    (V1_LONGEST, ProxyInfo(1, "local")),
    (V2_IPV4, PROXY4_V2),
    (V2_IPV6, PROXY6_V2),
    (V2_IPV4_TLVS, PROXY4_V2),
    (V2_IPV6_TLVS, PROXY6_V2),
    (V2_LOCAL, ProxyInfo(2, "local")),
    (V2_LOCAL_ADDRESSES, ProxyInfo(2, "local")),
    (V2_UNSPEC, ProxyInfo(2, "proxy")),
    (V2_UNIX, ProxyInfo(2, "proxy")),
]

#: The client's first bytes after the header.
AFTER = b"GET / HTTP/1.1\r\n"


class HeaderParserValidTests(SynchronousTestCase):
    """
    Tests for L{HeaderParser} given valid headers.
    """

    def parse(self, data: bytes) -> tuple[ProxyInfo | None, bytes]:
        parser = HeaderParser("any")
        return parser.feed(data), parser.rest

    def test_v1TCP4(self) -> None:
        """
        A v1 TCP4 line gives both IPv4 addresses and ports.
        """
        self.assertEqual(self.parse(V1_TCP4), (PROXY4_V1, b""))

    def test_v1TCP6(self) -> None:
        """
        A v1 TCP6 line gives both IPv6 addresses, canonical, and ports.
        """
        self.assertEqual(self.parse(V1_TCP6), (PROXY6_V1, b""))

    def test_v1Unknown(self) -> None:
        """
        A v1 UNKNOWN line is a local connection without addresses.
        """
        self.assertEqual(self.parse(V1_UNKNOWN), (ProxyInfo(1, "local"), b""))

    def test_v1UnknownLongest(self) -> None:
        """
        A v1 line of exactly 107 bytes is accepted, and UNKNOWN's addresses
        are ignored.
        """
        self.assertEqual(len(V1_LONGEST), 107)
        self.assertEqual(self.parse(V1_LONGEST), (ProxyInfo(1, "local"), b""))

    def test_v1PortZeroAndMaximum(self) -> None:
        """
        Ports 0 and 65535 are in range.
        """
        info, _ = self.parse(b"PROXY TCP4 192.0.2.10 198.51.100.1 0 65535\r\n")
        self.assertEqual(
            info,
            ProxyInfo(
                1,
                "proxy",
                IPv4Address("TCP", "192.0.2.10", 0),
                IPv4Address("TCP", "198.51.100.1", 65535),
            ),
        )

    def test_v2IPv4(self) -> None:
        """
        A v2 PROXY header over INET STREAM gives both IPv4 addresses and
        ports.
        """
        self.assertEqual(self.parse(V2_IPV4), (PROXY4_V2, b""))

    def test_v2IPv6(self) -> None:
        """
        A v2 PROXY header over INET6 STREAM gives both IPv6 addresses and
        ports.
        """
        self.assertEqual(self.parse(V2_IPV6), (PROXY6_V2, b""))

    def test_v2TLVsSkipped(self) -> None:
        """
        TLVs after a v2 header's addresses are skipped, not left in C{rest}.
        """
        self.assertEqual(self.parse(V2_IPV4_TLVS + AFTER), (PROXY4_V2, AFTER))

    def test_v2Local(self) -> None:
        """
        A v2 LOCAL header is a local connection without addresses.
        """
        self.assertEqual(self.parse(V2_LOCAL), (ProxyInfo(2, "local"), b""))

    def test_v2LocalIgnoresAddresses(self) -> None:
        """
        A v2 LOCAL header's addresses and TLVs are skipped.
        """
        self.assertEqual(
            self.parse(V2_LOCAL_ADDRESSES + AFTER), (ProxyInfo(2, "local"), AFTER)
        )

    def test_v2LocalAnyFamily(self) -> None:
        """
        A v2 LOCAL header's family is not checked (the specification says to
        discard it).
        """
        self.assertEqual(self.parse(v2(0x20, 0x12, b"")), (ProxyInfo(2, "local"), b""))

    def test_v2Unspec(self) -> None:
        """
        A v2 PROXY header of family UNSPEC has no addresses.
        """
        self.assertEqual(self.parse(V2_UNSPEC + AFTER), (ProxyInfo(2, "proxy"), AFTER))

    def test_v2Unix(self) -> None:
        """
        A v2 PROXY header of family UNIX counts as one without addresses.
        """
        self.assertEqual(self.parse(V2_UNIX + AFTER), (ProxyInfo(2, "proxy"), AFTER))

    def test_v2LengthLimit(self) -> None:
        """
        A v2 header with exactly 4096 bytes after its fixed part is accepted.
        """
        block = addresses("192.0.2.10", "198.51.100.1", 56324, 443)
        header = v2(0x21, 0x11, block + tlv(0x04, bytes(4096 - 12 - 3)))
        self.assertEqual(len(header), 16 + 4096)
        self.assertEqual(self.parse(header + AFTER), (PROXY4_V2, AFTER))

    def test_restPreservedV1(self) -> None:
        """
        The bytes after a v1 header are left in C{rest}, exactly.
        """
        self.assertEqual(self.parse(V1_TCP4 + AFTER), (PROXY4_V1, AFTER))

    def test_restPreservedV2(self) -> None:
        """
        The bytes after a v2 header are left in C{rest}, exactly, even when
        they look like another header.
        """
        self.assertEqual(self.parse(V2_IPV6 + V2_IPV4), (PROXY6_V2, V2_IPV4))

    def test_restEmptyUntilComplete(self) -> None:
        """
        C{rest} stays empty while the header is incomplete.
        """
        parser = HeaderParser("any")
        self.assertIsNone(parser.feed(V1_TCP4[:-1]))
        self.assertEqual((parser.rest, parser.info), (b"", None))

    def test_emptyFeed(self) -> None:
        """
        Feeding no bytes needs more.
        """
        self.assertEqual(self.parse(b""), (None, b""))

    def test_splitAtEveryPosition(self) -> None:
        """
        Every valid header, followed by more bytes, split into two reads at
        every position gives the same header and the same bytes after it.
        """
        for header, expected in VALID:
            data = header + AFTER
            for split in range(len(data) + 1):
                parser = HeaderParser("any")
                first = parser.feed(data[:split])
                if split < len(header):
                    self.assertIsNone(first, f"{header!r} split at {split}")
                    second = parser.feed(data[split:])
                    self.assertEqual(
                        (second, parser.rest),
                        (expected, AFTER),
                        f"{header!r} split at {split}",
                    )
                else:
                    self.assertEqual(
                        (first, parser.rest),
                        (expected, data[len(header) : split]),
                        f"{header!r} split at {split}",
                    )

    def test_oneByteAtATime(self) -> None:
        """
        Every valid header fed one byte at a time is complete at its last
        byte, and not before.
        """
        for header, expected in VALID:
            parser = HeaderParser("any")
            results = [parser.feed(header[i : i + 1]) for i in range(len(header))]
            self.assertEqual(
                results, [None] * (len(header) - 1) + [expected], repr(header)
            )
            self.assertEqual(parser.rest, b"")

    def test_v1Only(self) -> None:
        """
        A parser for v1 only reads v1 headers.
        """
        self.assertEqual(HeaderParser("v1").feed(V1_TCP6), PROXY6_V1)

    def test_v2Only(self) -> None:
        """
        A parser for v2 only reads v2 headers.
        """
        self.assertEqual(HeaderParser("v2").feed(V2_IPV6), PROXY6_V2)

    def test_feedAfterComplete(self) -> None:
        """
        Feeding a parser whose header is complete is a programming error.
        """
        parser = HeaderParser("any")
        parser.feed(V1_UNKNOWN)
        error = self.assertRaises(RuntimeError, parser.feed, b"x")
        self.assertEqual(str(error), "the PROXY protocol header is already complete")

    def test_unknownVersions(self) -> None:
        """
        Versions other than v1, v2 and any are refused.
        """
        error = self.assertRaises(ValueError, HeaderParser, "v3")
        self.assertEqual(
            str(error),
            "PROXY protocol versions must be 'v1', 'v2' or 'any', not 'v3'",
        )


class HeaderParserErrorTests(SynchronousTestCase):
    """
    Tests for L{HeaderParser} given bytes that are not an acceptable header.
    """

    def assertRejected(self, data: bytes, message: str, versions: str = "any") -> None:
        """
        Feeding C{data} whole raises L{ProxyProtocolError} with C{message}.
        """
        parser = HeaderParser(versions)  # type: ignore[arg-type]
        error = self.assertRaises(ProxyProtocolError, parser.feed, data)
        self.assertEqual(str(error), message)

    def assertRejectedAtLastByte(self, data: bytes, message: str) -> None:
        """
        Feeding C{data} one byte at a time raises L{ProxyProtocolError} with
        C{message} at its last byte, not before.
        """
        parser = HeaderParser("any")
        for i in range(len(data) - 1):
            self.assertIsNone(parser.feed(data[i : i + 1]), f"byte {i}")
        error = self.assertRaises(ProxyProtocolError, parser.feed, data[-1:])
        self.assertEqual(str(error), message)

    def test_garbageAtFirstByte(self) -> None:
        """
        A first byte that starts neither signature is refused at once.
        """
        self.assertRejected(b"G", "not a PROXY protocol header: starts with b'G'")

    def test_garbageAfterV1Prefix(self) -> None:
        """
        Bytes that leave the v1 signature are refused at the first one.
        """
        self.assertRejectedAtLastByte(
            b"PROXX", "not a PROXY protocol header: starts with b'PROXX'"
        )

    def test_garbageAfterV2Prefix(self) -> None:
        """
        Bytes that leave the v2 signature are refused at the first one.
        """
        self.assertRejectedAtLastByte(
            b"\r\n\r\n\x00\r\nQUIX",
            "not a PROXY protocol header: starts with b'\\r\\n\\r\\n\\x00\\r\\nQUIX'",
        )

    def test_garbageShownTruncated(self) -> None:
        """
        The message shows at most the first 16 bytes.
        """
        self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
            "not a PROXY protocol header: starts with b'GET / HTTP/1.1\\r\\n'",
        )

    def test_v2WhereOnlyV1(self) -> None:
        """
        A parser for v1 only refuses a v2 header at its first byte.
        """
        self.assertRejected(
            b"\r", "PROXY protocol v2 header where only v1 is accepted", "v1"
        )

    def test_v1WhereOnlyV2(self) -> None:
        """
        A parser for v2 only refuses a v1 header at its first byte.
        """
        self.assertRejected(
            b"P", "PROXY protocol v1 header where only v2 is accepted", "v2"
        )

    def test_wholeV2WhereOnlyV1(self) -> None:
        """
        A parser for v1 only refuses a whole v2 header.
        """
        self.assertRejected(
            V2_IPV4, "PROXY protocol v2 header where only v1 is accepted", "v1"
        )

    def test_v1TooLong(self) -> None:
        """
        A v1 line without CRLF in its first 107 bytes is refused at the
        107th byte.
        """
        self.assertRejectedAtLastByte(
            b"PROXY UNKNOWN " + b"x" * 93,
            "PROXY protocol v1 header longer than 107 bytes without CRLF",
        )

    def test_v1CRLFAt108(self) -> None:
        """
        A v1 line of 108 bytes is refused though it ends in CRLF.
        """
        self.assertRejected(
            b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",
            "PROXY protocol v1 header longer than 107 bytes without CRLF",
        )

    def test_v1UnknownProtocol(self) -> None:
        """
        A v1 protocol other than TCP4, TCP6 and UNKNOWN is refused.
        """
        self.assertRejected(
            b"PROXY UDP4 192.0.2.10 198.51.100.1 56324 443\r\n",
            "bad PROXY protocol v1 header b'PROXY UDP4 192.0.2.10 198.51.100.1 "
            "56324 443': unknown protocol 'UDP4' (expected TCP4, TCP6 or UNKNOWN)",
        )

    def test_v1NoProtocol(self) -> None:
        """
        A v1 line with nothing after C{PROXY } is refused.
        """
        self.assertRejected(
            b"PROXY \r\n",
            "bad PROXY protocol v1 header b'PROXY ': unknown protocol '' "
            "(expected TCP4, TCP6 or UNKNOWN)",
        )

    def test_v1MissingField(self) -> None:
        """
        A v1 TCP4 line with a field missing is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10 198.51.100.1 "
            "56324': expected protocol, source and destination addresses and "
            "ports, separated by single spaces",
        )

    def test_v1DoubleSpace(self) -> None:
        """
        A v1 line with two spaces between fields is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10  198.51.100.1 56324 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10  198.51.100.1 "
            "56324 443': expected protocol, source and destination addresses and "
            "ports, separated by single spaces",
        )

    def test_v1BadAddress(self) -> None:
        """
        A v1 address that does not parse is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.256 198.51.100.1 56324 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.256 198.51.100.1 "
            "56324 443': '192.0.2.256' is not an IP address",
        )

    def test_v1IPv6InTCP4(self) -> None:
        """
        An IPv6 address in a v1 TCP4 line is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10 2001:db8::1 56324 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10 2001:db8::1 "
            "56324 443': '2001:db8::1' is not an IPv4 address (protocol TCP4)",
        )

    def test_v1IPv4InTCP6(self) -> None:
        """
        An IPv4 address in a v1 TCP6 line is refused.
        """
        self.assertRejected(
            b"PROXY TCP6 192.0.2.10 2001:db8::1 56324 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP6 192.0.2.10 2001:db8::1 "
            "56324 443': '192.0.2.10' is not an IPv6 address (protocol TCP6)",
        )

    def test_v1ScopedAddress(self) -> None:
        """
        A v1 IPv6 address with a scope is refused.
        """
        self.assertRejected(
            b"PROXY TCP6 fe80::1%eth0 2001:db8::1 56324 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP6 fe80::1%eth0 2001:db8::1 "
            "56324 443': 'fe80::1%eth0' has a scope",
        )

    def test_v1PortOutOfRange(self) -> None:
        """
        A v1 port above 65535 is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 65536\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10 198.51.100.1 "
            "56324 65536': port '65536' is not a number from 0 to 65535",
        )

    def test_v1PortNegative(self) -> None:
        """
        A negative v1 port is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10 198.51.100.1 "
            "-1 443': port '-1' is not a number from 0 to 65535",
        )

    def test_v1PortNotANumber(self) -> None:
        """
        A v1 port that is not a decimal number is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10 198.51.100.1 https 443\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10 198.51.100.1 "
            "https 443': port 'https' is not a number from 0 to 65535",
        )

    def test_v1NotASCII(self) -> None:
        """
        A v1 line with bytes outside ASCII is refused.
        """
        self.assertRejected(
            b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 44\xb3\r\n",
            "bad PROXY protocol v1 header b'PROXY TCP4 192.0.2.10 198.51.100.1 "
            "56324 44\\xb3': not ASCII",
        )

    def test_v2BadVersion(self) -> None:
        """
        A v2 signature followed by version 1 is refused once the fixed 16
        bytes are in.
        """
        self.assertRejectedAtLastByte(
            v2(0x11, 0x11, b"")[:16],
            "PROXY protocol v2 header with version 1 (expected 2)",
        )

    def test_v2BadCommand(self) -> None:
        """
        A v2 command other than LOCAL and PROXY is refused.
        """
        self.assertRejectedAtLastByte(
            v2(0x22, 0x11, bytes(12))[:16],
            "PROXY protocol v2 header with unknown command 0x2",
        )

    def test_v2Datagram(self) -> None:
        """
        A v2 PROXY header for UDP is refused.
        """
        self.assertRejected(
            v2(0x21, 0x12, bytes(12)),
            "PROXY protocol v2 header for INET DGRAM; only STREAM (TCP) is supported",
        )

    def test_v2UnspecifiedProtocol(self) -> None:
        """
        A v2 PROXY header over INET6 without a transport protocol is refused.
        """
        self.assertRejected(
            v2(0x21, 0x20, bytes(36)),
            "PROXY protocol v2 header for INET6 UNSPEC; only STREAM (TCP) is supported",
        )

    def test_v2UnknownFamily(self) -> None:
        """
        A v2 PROXY header of an unknown address family is refused.
        """
        self.assertRejected(
            v2(0x21, 0x41, bytes(12)),
            "PROXY protocol v2 header with unknown address family 0x4",
        )

    def test_v2UnknownProtocol(self) -> None:
        """
        A v2 PROXY header of an unknown transport protocol is refused.
        """
        self.assertRejected(
            v2(0x21, 0x13, bytes(12)),
            "PROXY protocol v2 header with unknown transport protocol 0x3",
        )

    def test_v2TooLong(self) -> None:
        """
        A v2 header announcing more than 4096 bytes is refused once the fixed
        16 bytes are in, before any of them arrive.
        """
        self.assertRejectedAtLastByte(
            V2_SIGNATURE + b"\x21\x11" + (4097).to_bytes(2, "big"),
            "PROXY protocol v2 header of 4097 bytes after the fixed part (the "
            "limit is 4096)",
        )

    def test_v2ShortIPv4(self) -> None:
        """
        A v2 INET address block shorter than 12 bytes is refused once the
        fixed 16 bytes are in.
        """
        self.assertRejectedAtLastByte(
            v2(0x21, 0x11, bytes(8))[:16],
            "PROXY protocol v2 address block of 8 bytes, too short for INET (needs 12)",
        )

    def test_v2ShortIPv6(self) -> None:
        """
        A v2 INET6 address block shorter than 36 bytes is refused.
        """
        self.assertRejected(
            v2(0x21, 0x21, bytes(12)),
            "PROXY protocol v2 address block of 12 bytes, too short for INET6 "
            "(needs 36)",
        )

    def test_v2ShortUnix(self) -> None:
        """
        A v2 UNIX address block shorter than 216 bytes is refused.
        """
        self.assertRejected(
            v2(0x21, 0x31, bytes(108)),
            "PROXY protocol v2 address block of 108 bytes, too short for UNIX "
            "(needs 216)",
        )


class _Recorder(Protocol):
    """
    An inner protocol that records what it sees.
    """

    peerAtConnect: IAddress | None = None
    hostAtConnect: IAddress | None = None
    lostReason: Failure | None = None
    greeting = b""
    closeAtOnce = False

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def connectionMade(self) -> None:
        self.peerAtConnect = self.transport.getPeer()
        self.hostAtConnect = self.transport.getHost()
        if self.greeting:
            self.transport.write(self.greeting)
        if self.closeAtOnce:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason


@implementer(IHalfCloseableProtocol)
class _HalfCloseRecorder(_Recorder):
    """
    An inner protocol that takes half-closes.
    """

    halfClosed = ""

    def readConnectionLost(self) -> None:
        self.halfClosed += "read"

    def writeConnectionLost(self) -> None:
        self.halfClosed += "write"


class _InnerFactory(Factory):
    """
    The port's own factory: records the addresses it is asked to build
    protocols for, and can refuse.
    """

    def __init__(
        self, refuse: bool = False, protocol: type[_Recorder] = _Recorder
    ) -> None:
        self.refuse = refuse
        self.recorder = protocol
        self.addresses: list[IAddress] = []
        self.built: list[_Recorder] = []

    def buildProtocol(self, addr: IAddress) -> _Recorder | None:
        self.addresses.append(addr)
        if self.refuse:
            return None
        protocol = self.recorder()
        protocol.factory = self
        self.built.append(protocol)
        return protocol


class ProxyProtocolFactoryTests(SynchronousTestCase):
    """
    Tests for L{ProxyProtocolFactory} and its L{ProxyProtocolWrapper}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.errors: list[tuple[str, IAddress]] = []
        self.inner = _InnerFactory()

    def factory(self, versions: str = "any") -> ProxyProtocolFactory:
        return ProxyProtocolFactory(
            self.inner,
            versions,  # type: ignore[arg-type]
            TRUSTED,
            self.clock,
            TIMEOUT,
            lambda kind, address: self.errors.append((kind, address)),
        )

    def connect(
        self, versions: str = "any", transport: StringTransport | None = None
    ) -> tuple[ProxyProtocolWrapper, StringTransport]:
        """
        A connection from the trusted load balancer.
        """
        protocol = self.factory(versions).buildProtocol(BALANCER)
        assert protocol is not None
        if transport is None:
            transport = StringTransportWithDisconnection(PORT, BALANCER)
            transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_untrustedPeerRefused(self) -> None:
        """
        A connection from outside the trusted networks gets no protocol and is
        reported as a C{proxy_protocol} error.
        """
        stranger = IPv4Address("TCP", "192.0.2.99", 1234)
        self.assertIsNone(self.factory().buildProtocol(stranger))
        self.assertEqual(self.errors, [("proxy_protocol", stranger)])
        self.assertEqual(self.inner.addresses, [])

    def test_untrustedRefusalLogged(self) -> None:
        """
        Refusing an untrusted sender is logged at info with its address.
        """
        with capturedLogs() as events:
            self.factory().buildProtocol(IPv6Address("TCP", "2001:db8::99", 1234))
        self.assertEqual(
            [(e["log_level"], formatEvent(e)) for e in events],
            [
                (
                    LogLevel.info,
                    "PROXY protocol: refusing the connection from "
                    "[2001:db8::99]:1234: not a trusted sender",
                )
            ],
        )

    def test_trustedIPv6Peer(self) -> None:
        """
        A connection from a trusted IPv6 network gets a wrapper.
        """
        protocol = self.factory().buildProtocol(
            IPv6Address("TCP", "2001:db8:ffff:1::2", 1234)
        )
        self.assertIsInstance(protocol, ProxyProtocolWrapper)
        self.assertEqual(self.errors, [])

    def test_ipv4MappedPeerTrusted(self) -> None:
        """
        An IPv4-mapped IPv6 peer is matched as its IPv4 address.
        """
        protocol = self.factory().buildProtocol(
            IPv6Address("TCP", "::ffff:10.1.2.3", 1234)
        )
        self.assertIsInstance(protocol, ProxyProtocolWrapper)
        self.assertEqual(self.errors, [])

    def test_ipv4MappedPeerUntrusted(self) -> None:
        """
        An IPv4-mapped IPv6 peer outside the trusted IPv4 networks is refused.
        """
        peer = IPv6Address("TCP", "::ffff:192.0.2.1", 1234)
        self.assertIsNone(self.factory().buildProtocol(peer))
        self.assertEqual(self.errors, [("proxy_protocol", peer)])

    def test_realPeerInConnectionMade(self) -> None:
        """
        The inner protocol's C{getPeer} and C{getHost} are the header's
        addresses already in C{connectionMade}, and its factory is asked for
        a protocol for the header's source.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_TCP4)
        [recorder] = self.inner.built
        self.assertEqual(
            (self.inner.addresses, recorder.peerAtConnect, recorder.hostAtConnect),
            ([SOURCE4], SOURCE4, DEST4),
        )

    def test_realIPv6PeerFromV2(self) -> None:
        """
        A v2 IPv6 header's addresses are the inner protocol's peer and host.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V2_IPV6_TLVS)
        [recorder] = self.inner.built
        self.assertEqual(
            (recorder.peerAtConnect, recorder.hostAtConnect), (SOURCE6, DEST6)
        )

    def test_unknownKeepsConnectionAddresses(self) -> None:
        """
        After a v1 UNKNOWN header the inner protocol sees the connection's own
        addresses.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_UNKNOWN)
        [recorder] = self.inner.built
        self.assertEqual(
            (self.inner.addresses, recorder.peerAtConnect, recorder.hostAtConnect),
            ([BALANCER], BALANCER, PORT),
        )

    def test_localKeepsConnectionAddresses(self) -> None:
        """
        After a v2 LOCAL header (a health check) the inner protocol sees the
        connection's own addresses.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V2_LOCAL_ADDRESSES)
        [recorder] = self.inner.built
        self.assertEqual(
            (recorder.peerAtConnect, recorder.hostAtConnect), (BALANCER, PORT)
        )

    def test_nothingBeforeHeaderCompletes(self) -> None:
        """
        The inner factory is not asked for a protocol until the header's last
        byte arrives.
        """
        protocol, _ = self.connect()
        for byte in range(len(V2_IPV4_TLVS) - 1):
            protocol.dataReceived(V2_IPV4_TLVS[byte : byte + 1])
        self.assertEqual(self.inner.addresses, [])
        protocol.dataReceived(V2_IPV4_TLVS[-1:])
        self.assertEqual(self.inner.addresses, [SOURCE4])

    def test_restDelivered(self) -> None:
        """
        The bytes that arrived with the end of the header go to the inner
        protocol.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_TCP4[:10])
        protocol.dataReceived(V1_TCP4[10:] + AFTER)
        self.assertEqual(self.inner.built[0].chunks, [AFTER])

    def test_noEmptyDelivery(self) -> None:
        """
        A header that ends a read delivers no empty bytes to the inner
        protocol.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_TCP4)
        self.assertEqual(self.inner.built[0].chunks, [])

    def test_laterDataPassesThrough(self) -> None:
        """
        After the header each read goes to the inner protocol as it is.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V2_IPV4)
        protocol.dataReceived(b"PROXY ")
        protocol.dataReceived(b"abc")
        self.assertEqual(self.inner.built[0].chunks, [b"PROXY ", b"abc"])

    def test_innerWrites(self) -> None:
        """
        What the inner protocol writes reaches the connection.
        """
        self.inner.recorder = type("Greeter", (_Recorder,), {"greeting": b"hi\r\n"})
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4)
        self.inner.built[0].transport.writeSequence([b"a", b"b"])
        self.assertEqual(transport.value(), b"hi\r\nab")

    def test_transportIsProxied(self) -> None:
        """
        The inner protocol's transport is a L{ProxiedTransport} providing the
        connection's interfaces.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4)
        proxied = self.inner.built[0].transport
        self.assertIsInstance(proxied, ProxiedTransport)
        self.assertEqual(list(providedBy(proxied)), list(providedBy(transport)))

    def test_producerCallsDelegated(self) -> None:
        """
        Producer and consumer calls on the inner protocol's transport reach
        the connection.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4)
        proxied = self.inner.built[0].transport
        producer = object()
        proxied.registerProducer(producer, True)
        self.assertEqual((transport.producer, transport.streaming), (producer, True))
        proxied.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        proxied.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        proxied.unregisterProducer()
        self.assertIsNone(transport.producer)
        proxied.stopProducing()
        self.assertEqual(transport.producerState, "stopped")

    def test_attributesLive(self) -> None:
        """
        Attributes of the connection are read through at the time they are
        asked for.
        """
        protocol, transport = self.connect(transport=StringTransport(PORT, BALANCER))
        protocol.dataReceived(V1_TCP4)
        proxied = self.inner.built[0].transport
        self.assertFalse(proxied.disconnecting)
        transport.loseConnection()
        self.assertTrue(proxied.disconnecting)

    def test_innerAborts(self) -> None:
        """
        The inner protocol can abort the connection.
        """
        protocol, transport = self.connect(transport=StringTransport(PORT, BALANCER))
        protocol.dataReceived(V1_TCP4)
        self.inner.built[0].transport.abortConnection()
        self.assertTrue(transport.disconnected)

    def test_innerClosesConnection(self) -> None:
        """
        The inner protocol closing the connection gets its C{connectionLost}.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4)
        recorder = self.inner.built[0]
        recorder.transport.loseConnection()
        self.assertFalse(transport.connected)
        assert recorder.lostReason is not None
        self.assertIsInstance(recorder.lostReason.value, ConnectionDone)

    def test_innerClosingAtOnceGetsNoRest(self) -> None:
        """
        An inner protocol that closes the connection in C{connectionMade} is
        not given the bytes after the header.
        """
        self.inner.recorder = type("Closer", (_Recorder,), {"closeAtOnce": True})
        protocol, _ = self.connect(transport=StringTransport(PORT, BALANCER))
        protocol.dataReceived(V1_TCP4 + AFTER)
        self.assertEqual(self.inner.built[0].chunks, [])

    def test_connectionLostReachesInner(self) -> None:
        """
        The connection's loss after the header reaches the inner protocol
        with its reason.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_TCP4)
        reason = Failure(ConnectionLost("reset"))
        protocol.connectionLost(reason)
        self.assertIs(self.inner.built[0].lostReason, reason)

    def test_halfCloseDelegated(self) -> None:
        """
        The wrapper takes half-closes when its inner protocol does, and passes
        them on.
        """
        self.inner.recorder = _HalfCloseRecorder
        protocol, _ = self.connect()
        self.assertFalse(IHalfCloseableProtocol.providedBy(protocol))
        protocol.dataReceived(V1_TCP4)
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.readConnectionLost()
        protocol.writeConnectionLost()
        self.assertEqual(self.inner.built[0].halfClosed, "readwrite")

    def test_noHalfCloseWithoutInnerSupport(self) -> None:
        """
        The wrapper does not take half-closes when its inner protocol does
        not.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_TCP4)
        self.assertFalse(IHalfCloseableProtocol.providedBy(protocol))

    def test_innerFactoryRefuses(self) -> None:
        """
        A connection the inner factory refuses is closed without an error
        report.
        """
        self.inner.refuse = True
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4 + AFTER)
        self.assertEqual(
            (self.inner.addresses, transport.connected, transport.disconnected),
            ([SOURCE4], False, False),
        )
        self.assertEqual(self.errors, [])

    def test_badHeaderAborts(self) -> None:
        """
        A bad header aborts the connection and is reported with the
        connection's peer; the inner factory never hears of it.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual(self.errors, [("proxy_protocol", BALANCER)])
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.inner.addresses, [])

    def test_badHeaderLogged(self) -> None:
        """
        A bad header is logged at info with the parser's message.
        """
        protocol, _ = self.connect()
        with capturedLogs() as events:
            protocol.dataReceived(b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c")
        self.assertEqual(
            [(e["log_level"], formatEvent(e)) for e in events],
            [
                (
                    LogLevel.info,
                    "PROXY protocol: closing the connection from 10.0.0.2:40000: "
                    "PROXY protocol v2 header for INET DGRAM; only STREAM (TCP) "
                    "is supported",
                )
            ],
        )

    def test_dataAfterErrorIgnored(self) -> None:
        """
        Bytes arriving after a bad header are dropped, and reported only once.
        """
        protocol, _ = self.connect(transport=StringTransport(PORT, BALANCER))
        protocol.dataReceived(b"X")
        protocol.dataReceived(V1_TCP4)
        self.assertEqual(self.errors, [("proxy_protocol", BALANCER)])
        self.assertEqual(self.inner.addresses, [])

    def test_versionsFilter(self) -> None:
        """
        A port for v2 only refuses a v1 header.
        """
        protocol, transport = self.connect("v2")
        protocol.dataReceived(V1_TCP4)
        self.assertEqual(self.errors, [("proxy_protocol", BALANCER)])
        self.assertTrue(transport.disconnected)

    def test_timeout(self) -> None:
        """
        A header not complete within the timeout aborts the connection, which
        is reported as a C{timeout}.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4[:-1])
        self.clock.advance(TIMEOUT - 0.001)
        self.assertEqual((self.errors, transport.disconnected), ([], False))
        self.clock.advance(0.001)
        self.assertEqual(self.errors, [("timeout", BALANCER)])
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.inner.addresses, [])

    def test_timeoutLogged(self) -> None:
        """
        A timeout is logged at info.
        """
        self.connect()
        with capturedLogs() as events:
            self.clock.advance(TIMEOUT)
        self.assertEqual(
            [(e["log_level"], formatEvent(e)) for e in events],
            [
                (
                    LogLevel.info,
                    "PROXY protocol: closing the connection from 10.0.0.2:40000: "
                    "no complete PROXY protocol header within 5s",
                )
            ],
        )

    def test_timeoutCancelledOnCompletion(self) -> None:
        """
        The timeout is cancelled once the header is read.
        """
        protocol, _ = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.dataReceived(V1_TCP4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutCancelledOnError(self) -> None:
        """
        The timeout is cancelled when the header is bad.
        """
        protocol, _ = self.connect(transport=StringTransport(PORT, BALANCER))
        protocol.dataReceived(b"X")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostBeforeHeader(self) -> None:
        """
        A connection lost before its header is complete cancels the timeout,
        reaches no inner factory and reports no error.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V2_IPV6[:20])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            (self.clock.getDelayedCalls(), self.inner.addresses, self.errors),
            ([], [], []),
        )

    def test_startAndStopWrappedFactory(self) -> None:
        """
        Starting and stopping the factory starts and stops the wrapped one.
        """
        factory = self.factory()
        factory.doStart()
        self.assertEqual(self.inner.numPorts, 1)
        factory.doStop()
        self.assertEqual(self.inner.numPorts, 0)

    def test_badVersions(self) -> None:
        """
        The factory refuses versions other than v1, v2 and any.
        """
        self.assertRaises(ValueError, self.factory, "2")

    def test_badTimeout(self) -> None:
        """
        The factory refuses a timeout that is not above 0.
        """
        error = self.assertRaises(
            ValueError,
            ProxyProtocolFactory,
            self.inner,
            "any",
            TRUSTED,
            self.clock,
            0,
            lambda kind, address: None,
        )
        self.assertEqual(str(error), "the PROXY header timeout must be above 0, not 0")


_KEYS: dict[str, tuple[bytes, bytes]] = {}


def _selfSigned() -> tuple[bytes, bytes]:
    """
    A self-signed certificate and key for localhost, made once.
    """
    if not _KEYS:
        _KEYS["localhost"] = makeSelfSigned(
            datetime.datetime.now(datetime.UTC), "localhost"
        )
    return _KEYS["localhost"]


class _Reporter(Protocol):
    """
    A TLS server's application: tells the client who it is and where it
    connected to, and closes after the client's first line.
    """

    def __init__(self, lost: Deferred[None]) -> None:
        self.lost = lost
        self.received = b""

    def connectionMade(self) -> None:
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.transport.write(
            f"you are {peer.host}:{peer.port} on {host.host}:{host.port}\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received.endswith(b"\n"):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class _Client(Protocol):
    """
    A client application: says a line, keeps what it receives.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"hello\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(self.received)


class _HeaderFirst(ProtocolWrapper):
    """
    A client connection that sends a PROXY header before its wrapped
    protocol (TLS) speaks.
    """

    factory: _HeaderFirstFactory

    def makeConnection(self, transport: object) -> None:
        transport.write(self.factory.header)  # type: ignore[attr-defined]
        super().makeConnection(transport)


class _HeaderFirstFactory(WrappingFactory):
    protocol = _HeaderFirst

    def __init__(self, header: bytes, wrappedFactory: Factory) -> None:
        super().__init__(wrappedFactory)
        self.header = header


class _TLSStack:
    """
    A port's factories with PROXY outside TLS (one connection), and a
    client's with its header sent before TLS.
    """

    def __init__(
        self,
        header: bytes,
        clock: object,
        trusted: list[object],
        versions: str = "any",
    ) -> None:
        certPEM, keyPEM = _selfSigned()
        self.errors: list[tuple[str, IAddress]] = []
        self.serverLost: Deferred[None] = Deferred()
        self.servers: list[_Reporter] = []
        self.client = _Client()
        serverTLS = TLSMemoryBIOFactory(
            PrivateCertificate.loadPEM(certPEM + keyPEM).options(),
            False,
            Factory.forProtocol(self._server),
            clock,  # type: ignore[arg-type]
        )
        self.portFactory = ProxyProtocolFactory(
            serverTLS,
            versions,  # type: ignore[arg-type]
            trusted,  # type: ignore[arg-type]
            clock,  # type: ignore[arg-type]
            TIMEOUT,
            lambda kind, address: self.errors.append((kind, address)),
        )
        clientTLS = TLSMemoryBIOFactory(
            optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(certPEM)),
            True,
            Factory.forProtocol(lambda: self.client),
            clock,  # type: ignore[arg-type]
        )
        self.clientFactory = _HeaderFirstFactory(header, clientTLS)

    def _server(self) -> _Reporter:
        self.servers.append(_Reporter(self.serverLost))
        return self.servers[-1]


class ProxyProtocolTLSTests(SynchronousTestCase):
    """
    Tests for L{ProxyProtocolFactory} outside TLS, in memory.
    """

    def test_tlsHandshakeAfterHeader(self) -> None:
        """
        After a v1 header, a TLS handshake through the wrapper completes, and
        the TLS server's application sees the header's addresses.
        """
        clock = Clock()
        stack = _TLSStack(V1_TCP4, clock, TRUSTED)
        server = stack.portFactory.buildProtocol(BALANCER)
        client = stack.clientFactory.buildProtocol(PORT)
        assert server is not None
        pump = connect(
            server,
            FakeTransport(server, True, PORT, BALANCER),
            client,
            FakeTransport(client, False, BALANCER, PORT),
            clock=clock,
        )
        pump.flush()
        [reporter] = stack.servers
        tlsServer = reporter.transport
        self.assertIsInstance(tlsServer, TLSMemoryBIOProtocol)
        self.assertIsInstance(tlsServer.transport, ProxiedTransport)
        self.assertEqual(
            (
                stack.client.received,
                reporter.received,
                stack.errors,
                self.successResultOf(stack.serverLost),
            ),
            (b"you are 192.0.2.10:56324 on 198.51.100.1:443\n", b"hello\n", [], None),
        )
        self.assertEqual((tlsServer.getPeer(), tlsServer.getHost()), (SOURCE4, DEST4))


class ProxyProtocolReactorTests(TestCase):
    """
    Tests for L{ProxyProtocolFactory} on a real listening port.
    """

    def listen(self, factory: ProxyProtocolFactory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    def test_tlsOverTCP(self) -> None:
        """
        Over real TCP, a v2 header then a TLS handshake reach the TLS
        server's application with the header's IPv6 client.
        """
        stack = _TLSStack(V2_IPV6_TLVS, reactor, [ip_network("127.0.0.0/8")], "v2")
        portNumber = self.listen(stack.portFactory)
        connected = TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber).connect(
            stack.clientFactory
        )

        def connectedThen(_: IProtocol) -> Deferred[list[object]]:
            return gatherResults([stack.client.lost, stack.serverLost])

        def check(_: object) -> None:
            self.assertEqual(
                (stack.client.received, stack.servers[0].received, stack.errors),
                (b"you are 2001:db8::10:56324 on 2001:db8::1:443\n", b"hello\n", []),
            )

        return connected.addCallback(connectedThen).addCallback(check)  # type: ignore[return-value]

    def test_garbageOverTCP(self) -> None:
        """
        Over real TCP, a connection that does not start with a header is
        closed and reported with its TCP peer.
        """
        errors: list[tuple[str, IAddress]] = []
        inner = _InnerFactory()
        portNumber = self.listen(
            ProxyProtocolFactory(
                inner,
                "any",
                [ip_network("127.0.0.0/8")],
                reactor,  # type: ignore[arg-type]
                TIMEOUT,
                lambda kind, address: errors.append((kind, address)),
            )
        )
        client = _Client()
        connected = TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber).connect(
            Factory.forProtocol(lambda: client)
        )

        def connectedThen(_: IProtocol) -> Deferred[bytes]:
            self.clientAddress = client.transport.getHost()
            return client.lost

        def check(received: bytes) -> None:
            self.assertEqual(
                (received, errors, inner.addresses),
                (
                    b"",
                    [
                        (
                            "proxy_protocol",
                            IPv4Address("TCP", "127.0.0.1", self.clientAddress.port),
                        )
                    ],
                    [],
                ),
            )

        return connected.addCallback(connectedThen).addCallback(check)  # type: ignore[return-value]
