"""
Tests for UDP ports in the configuration: the C{/udp} grammar, the
C{protocol} key, overlaps per protocol and the keys a UDP port refuses.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.portspec import parsePortItem, parsePorts
from multiport.config.tomlfile import parseConfig
from multiport.daemon.plan import claims, overlaps, plan
from multiport.errors import ConfigError
from tests.support import HANDLERS, configFor

BASE = Path("/etc/multiport")


def fileConfig(*tables: dict[str, object]):
    """
    The configuration a file of C{[[port]]} C{tables} gives.
    """
    parsed = parseConfig({"port": list(tables)}, BASE, "f.toml")
    return buildConfig(parsed.ports, Defaults(), HANDLERS, Path("/tmp/state"))


class GrammarTests(SynchronousTestCase):
    """
    C{[HOST:]PORT/udp[=HANDLER]} on the command line.
    """

    def test_udpItem(self):
        """
        C{/udp} after the port makes a UDP request.
        """
        request = parsePortItem("127.0.0.1:5353/udp=echo", "ITEM")
        self.assertEqual(
            (request.host, request.port, request.protocol, request.handler),
            ("127.0.0.1", 5353, "udp", "echo"),
        )

    def test_ipv6UdpItem(self):
        """
        A bracketed IPv6 host takes C{/udp} too.
        """
        request = parsePortItem("[::1]:7/udp", "ITEM")
        self.assertEqual((request.host, request.protocol), ("::1", "udp"))

    def test_tcpByDefault(self):
        """
        Without C{/udp} a port is TCP.
        """
        self.assertEqual(parsePortItem("7=echo", "ITEM").protocol, "tcp")

    def test_unknownProtocol(self):
        """
        Only C{/udp} and C{/tcp} are known.
        """
        error = self.assertRaises(ConfigError, parsePortItem, "7/sctp=echo", "ITEM")
        self.assertIn("unknown protocol '/sctp'", str(error))

    def test_tlsOnUdp(self):
        """
        C{+tls} on a UDP port is refused with the reason.
        """
        error = self.assertRaises(ConfigError, parsePortItem, "7/udp=echo+tls", "ITEM")
        self.assertEqual(
            str(error),
            "ITEM: '+tls' on a UDP port: there is no TLS over UDP (no DTLS)",
        )

    def test_nameIsUdp(self):
        """
        A UDP port is named C{udp:HOST:PORT}.
        """
        config = configFor("127.0.0.1:7/udp,[::1]:9/udp=discard", "/tmp/state")
        self.assertEqual(
            [p.name for p in config.ports], ["udp:127.0.0.1:7", "udp:[::1]:9"]
        )

    def test_wellKnownUdp(self):
        """
        A bare well-known number with C{/udp} gets its small service.
        """
        (port,) = configFor("13/udp", "/tmp/state").ports
        self.assertEqual((port.handler, port.protocol), ("daytime", "udp"))


class OverlapTests(SynchronousTestCase):
    """
    TCP and UDP on one number coexist; overlaps are per protocol.
    """

    def test_tcpAndUdpCoexist(self):
        """
        C{53} and C{53/udp} are two ports.
        """
        config = configFor("7=echo,7/udp=echo", "/tmp/state")
        self.assertEqual(
            [p.name for p in config.ports], ["tcp:0.0.0.0:7", "udp:0.0.0.0:7"]
        )

    def test_udpTwice(self):
        """
        The same UDP address twice is refused, named as UDP.
        """
        error = self.assertRaises(
            ConfigError, configFor, "7/udp=echo,127.0.0.1:7/udp=echo", "/tmp/state"
        )
        self.assertIn("udp:127.0.0.1:7 overlaps udp:0.0.0.0:7", str(error))

    def test_planOverlapsPerProtocol(self):
        """
        L{overlaps} and L{claims} never match a TCP and a UDP port.
        """
        tcp, udp = configFor("7=echo,7/udp=echo", "/tmp/state").ports
        self.assertFalse(overlaps(tcp, udp))
        self.assertFalse(claims(tcp, udp))
        self.assertTrue(claims(udp, udp))

    def test_planKeepsProtocolsApart(self):
        """
        Going from a TCP port to a UDP port on the same number adds one and
        removes the other.
        """
        (tcp,) = configFor("7=echo", "/tmp/state").ports
        (udp,) = configFor("7/udp=echo", "/tmp/state").ports
        result = plan([("running", tcp)], [udp])
        self.assertEqual((result.add, result.remove), ((udp,), ("running",)))


class FileTests(SynchronousTestCase):
    """
    C{protocol = "udp"} in the file, and the keys a UDP port refuses.
    """

    def test_protocolKey(self):
        """
        C{protocol = "udp"} makes a UDP port.
        """
        (port,) = fileConfig({"port": 7, "protocol": "udp", "handler": "echo"}).ports
        self.assertEqual(port.name, "udp:0.0.0.0:7")

    def test_badProtocol(self):
        """
        An unknown protocol is named with its path.
        """
        error = self.assertRaises(ConfigError, fileConfig, {"port": 7, "protocol": "x"})
        self.assertEqual(
            str(error), "f.toml: port[1].protocol: unknown protocol 'x'; 'tcp' or 'udp'"
        )

    def test_tcpOnlyKeys(self):
        """
        Each TCP-only policy key is an error on a UDP port, naming the key.
        """
        for key, value in [
            ("max_connections", 5),
            ("max_connections_per_ip", 5),
            ("idle_timeout", 5),
            ("max_duration", 5),
            ("header_timeout", 5),
            ("proxy_protocol", "v1"),
        ]:
            error = self.assertRaises(
                ConfigError,
                fileConfig,
                {"port": 7, "protocol": "udp", "handler": "echo", key: value},
            )
            self.assertEqual(error.where, f"f.toml: port[1].{key}")
            self.assertIn(f"{key!r} does not apply to a UDP port", error.message)

    def test_tlsKey(self):
        """
        A C{tls} table on a UDP port is refused.
        """
        error = self.assertRaises(
            ConfigError,
            fileConfig,
            {"port": 7, "protocol": "udp", "handler": "echo", "tls": {"cert": "c"}},
        )
        self.assertEqual(error.where, "f.toml: port[1].tls")
        self.assertIn("no DTLS", error.message)

    def test_backlogKey(self):
        """
        C{backlog} on a UDP port is refused.
        """
        error = self.assertRaises(
            ConfigError,
            fileConfig,
            {"port": 7, "protocol": "udp", "handler": "echo", "backlog": 5},
        )
        self.assertEqual(error.where, "f.toml: port[1].backlog")

    def test_datagramKeys(self):
        """
        A UDP port takes allow, deny, rate, rate_per_ip, max_datagram_size.
        """
        (port,) = fileConfig(
            {
                "port": 7,
                "protocol": "udp",
                "handler": "echo",
                "allow": ["127.0.0.0/8"],
                "rate_per_ip": {"per_second": 100, "burst": 10},
                "max_datagram_size": 512,
            }
        ).ports
        self.assertEqual(port.policy.maxDatagramSize, 512)
        self.assertIsNotNone(port.policy.ratePerIP)

    def test_datagramSizeOnTcp(self):
        """
        C{max_datagram_size} on a TCP port is refused.
        """
        error = self.assertRaises(
            ConfigError, fileConfig, {"port": 7, "max_datagram_size": 512}
        )
        self.assertEqual(error.where, "f.toml: port[1].max_datagram_size")

    def test_defaultsOfTheOtherKind(self):
        """
        C{[defaults]} TCP keys do not reach a UDP port.
        """
        parsed = parseConfig(
            {
                "defaults": {"max_connections": 10, "idle_timeout": 5},
                "port": [{"port": 7, "protocol": "udp", "handler": "echo"}],
            },
            BASE,
        )
        defaults = parsed.defaults.over(Defaults())
        (port,) = buildConfig(parsed.ports, defaults, HANDLERS, Path("/s")).ports
        self.assertIsNone(port.policy.maxConnections)
        self.assertIsNone(port.policy.idleTimeout)

    def test_handlerWithoutUdp(self):
        """
        A handler that does not serve UDP is refused on a UDP port, with
        the handlers that do.
        """
        error = self.assertRaises(ConfigError, configFor, "80/udp=http", "/tmp/s")
        self.assertIn("handler 'http' does not serve UDP", str(error))
        self.assertIn("chargen, daytime, discard, echo, qotd", str(error))


class CommandLineTests(SynchronousTestCase):
    """
    A whole C{--ports} value with UDP items.
    """

    def test_mixed(self):
        """
        TCP and UDP items mix in one value.
        """
        requests = parsePorts("8080,7/udp=echo,9/udp")
        self.assertEqual([r.protocol for r in requests], ["tcp", "udp", "udp"])
