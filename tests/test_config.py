"""
Tests for L{multiport.config.model}: the validated configuration model.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.config.build import buildConfig, checkOverlaps, portConfigs
from multiport.config.model import (
    WELL_KNOWN_PORTS,
    Config,
    ConfigError,
    Defaults,
    PartialDefaults,
    PortConfig,
    PortRequest,
    TLSConfig,
    defaultStateDir,
    formatAddress,
    parseInterface,
    resolveHostName,
)
from multiport.config.tomlfile import parseConfig
from multiport.handlers.interface import IHandler
from multiport.handlers.simple import (
    QuoteOptions,
    chargen,
    daytime,
    discard,
    echo,
    qotd,
)
from multiport.handlers.web import http, https
from multiport.handlers.weboptions import WebOptions

#: The built-in handlers by name, as L{findHandlers} returns them (built here
#: so that third-party plugins on sys.path cannot change the tests).
HANDLERS: Mapping[str, IHandler] = {
    h.name: h for h in (chargen, daytime, discard, echo, http, https, qotd)
}
KNOWN = "chargen, daytime, discard, echo, http, https, qotd"
STATE = Path("/state")
DEFAULTS = Defaults()


def resolverFrom(table: Mapping[str, Sequence[str]]) -> Callable[[str], Sequence[str]]:
    """
    A resolver answering from C{table}; other names fail like getaddrinfo.
    """

    def resolve(name: str) -> Sequence[str]:
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[name]

    return resolve


def noResolver(name: str) -> Sequence[str]:
    """
    A resolver that must not be called.
    """
    raise AssertionError(f"resolver called for {name!r}")


def configsFor(
    request: PortRequest,
    defaults: Defaults = DEFAULTS,
    resolve: Callable[[str], Sequence[str]] = noResolver,
) -> list[PortConfig]:
    """
    L{portConfigs} with the built-in handlers and, by default, no resolving.
    """
    return portConfigs(request, defaults, HANDLERS, resolve)


def onePort(
    request: PortRequest,
    defaults: Defaults = DEFAULTS,
    resolve: Callable[[str], Sequence[str]] = noResolver,
) -> PortConfig:
    """
    The single L{PortConfig} C{request} gives.
    """
    (config,) = configsFor(request, defaults, resolve)
    return config


def build(*requests: PortRequest, resolve=noResolver) -> Config:
    """
    L{buildConfig} with the built-in handlers and the default defaults.
    """
    return buildConfig(requests, Defaults(), HANDLERS, STATE, resolve)


def portConfig(
    interface: str = "0.0.0.0", port: int = 80, where: str = ""
) -> PortConfig:
    """
    A plain http L{PortConfig}.
    """
    return PortConfig(
        interface=interface,
        port=port,
        handler="http",
        tls=None,
        backlog=511,
        options=WebOptions(),
        where=where,
    )


class ConfigErrorTests(SynchronousTestCase):
    """
    Tests for L{ConfigError}.
    """

    def test_strWithWhere(self):
        """
        The text is C{where: message}.
        """
        error = ConfigError("port[1].port", "bad")
        self.assertEqual(
            (str(error), error.where, error.message),
            ("port[1].port: bad", "port[1].port", "bad"),
        )

    def test_strWithoutWhere(self):
        """
        Without a C{where}, the text is the message alone.
        """
        self.assertEqual(str(ConfigError("", "bad")), "bad")


class WellKnownPortTests(SynchronousTestCase):
    """
    A bare port number gets the handler L{WELL_KNOWN_PORTS} names.
    """

    def test_port80IsHTTP(self):
        """
        Port 80 is plain http.
        """
        config = onePort(PortRequest("W", 80))
        self.assertEqual((config.handler, config.tls), ("http", None))

    def test_port8080IsHTTP(self):
        """
        Port 8080 is plain http.
        """
        config = onePort(PortRequest("W", 8080))
        self.assertEqual((config.handler, config.tls), ("http", None))

    def test_port443IsHTTPSWithTLS(self):
        """
        Port 443 is https with the default certificate.
        """
        config = onePort(PortRequest("W", 443))
        self.assertEqual((config.handler, config.tls), ("https", TLSConfig()))

    def test_port8443IsHTTPS(self):
        """
        Port 8443 is https with the default certificate.
        """
        config = onePort(PortRequest("W", 8443))
        self.assertEqual((config.handler, config.tls), ("https", TLSConfig()))

    def test_port7IsEcho(self):
        """
        Port 7 is echo, plain, with no options.
        """
        config = onePort(PortRequest("W", 7))
        self.assertEqual(
            (config.handler, config.tls, config.options), ("echo", None, None)
        )

    def test_wellKnownHandlersExist(self):
        """
        Every well-known port names a built-in handler.
        """
        self.assertEqual(set(WELL_KNOWN_PORTS.values()) - set(HANDLERS), set())

    def test_namedHandlerWins(self):
        """
        A named handler overrides the well-known one.
        """
        self.assertEqual(onePort(PortRequest("W", 80, handler="echo")).handler, "echo")

    def test_unknownBarePort(self):
        """
        A bare port with no well-known handler is rejected, naming the port
        and listing the known handlers.
        """
        where = "--ports item 1 '1234'"
        error = self.assertRaises(ConfigError, configsFor, PortRequest(where, 1234))
        self.assertEqual(error.where, where)
        self.assertEqual(
            error.message,
            "port 1234 has no well-known handler; name one (PORT=HANDLER); "
            f"known handlers: {KNOWN}",
        )

    def test_tableWithoutHandler(self):
        """
        A table (file, admin API) without a handler for a port that has no
        well-known one names the missing key.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("PUT /api/ports/x", 1234)
        )
        self.assertEqual(error.where, "PUT /api/ports/x.handler")
        self.assertEqual(
            error.message,
            "missing key 'handler' (port 1234 has no well-known handler); "
            f"known handlers: {KNOWN}",
        )

    def test_unknownHandler(self):
        """
        An unknown handler is rejected, naming it and listing the known ones.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", 80, handler="gopher")
        )
        self.assertEqual(error.where, "W")
        self.assertEqual(
            error.message, f"unknown handler 'gopher'; known handlers: {KNOWN}"
        )


class TLSTests(SynchronousTestCase):
    """
    How L{portConfigs} decides a port's certificate.
    """

    defaults = Defaults(tls=TLSConfig(cert=Path("/etc/ssl/site.pem")))

    def test_plusTLSUsesDefaultCertificate(self):
        """
        C{tls=True} (C{+tls}) uses the defaults' certificate.
        """
        config = onePort(PortRequest("W", 7, handler="echo", tls=True), self.defaults)
        self.assertEqual(config.tls, TLSConfig(cert=Path("/etc/ssl/site.pem")))

    def test_plusTLSSelfSigned(self):
        """
        C{tls=True} with default defaults uses the self-signed certificate.
        """
        config = onePort(PortRequest("W", 7000, handler="echo", tls=True))
        self.assertTrue(config.tls is not None and config.tls.selfSigned)

    def test_plainByDefault(self):
        """
        A handler that does not imply TLS gives a plain port.
        """
        self.assertIsNone(onePort(PortRequest("W", 7), self.defaults).tls)

    def test_tlsFalseOnPlainHandler(self):
        """
        C{tls=False} on a plain handler gives a plain port.
        """
        config = onePort(PortRequest("W", 80, tls=False), self.defaults)
        self.assertIsNone(config.tls)

    def test_httpsUsesDefaultCertificate(self):
        """
        A handler implying TLS gets the defaults' certificate unasked.
        """
        config = onePort(PortRequest("W", 9443, handler="https"), self.defaults)
        self.assertEqual(config.tls, TLSConfig(cert=Path("/etc/ssl/site.pem")))

    def test_ownCertificate(self):
        """
        A port's own certificate wins over the defaults'.
        """
        own = TLSConfig(cert=Path("/own.pem"), key=Path("/own.key"))
        config = onePort(PortRequest("W", 443, tls=own), self.defaults)
        self.assertEqual(config.tls, own)

    def test_httpsTLSFalse(self):
        """
        C{tls=False} with a handler that always uses TLS is rejected, naming
        the handler.
        """
        error = self.assertRaises(
            ConfigError,
            configsFor,
            PortRequest("port[3]", 8443, handler="https", tls=False),
        )
        self.assertEqual(error.where, "port[3]")
        self.assertEqual(
            error.message, "handler 'https' always uses TLS; tls cannot be false"
        )

    def test_wellKnownHTTPSTLSFalse(self):
        """
        C{tls=False} on bare port 443 is rejected: its handler is https.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", 443, tls=False)
        )
        self.assertEqual(
            str(error), "W: handler 'https' always uses TLS; tls cannot be false"
        )


class TLSConfigTests(SynchronousTestCase):
    """
    Tests for L{TLSConfig}.
    """

    def test_selfSigned(self):
        """
        A configuration without a certificate is the self-signed one.
        """
        self.assertEqual(
            (TLSConfig().selfSigned, TLSConfig(cert=Path("/c.pem")).selfSigned),
            (True, False),
        )

    def test_describe(self):
        """
        C{describe} names the certificate source.
        """
        self.assertEqual(
            [
                TLSConfig().describe(),
                TLSConfig(cert=Path("/c.pem")).describe(),
                TLSConfig(cert=Path("/c.pem"), key=Path("/k.pem")).describe(),
            ],
            ["self-signed", "/c.pem", "/c.pem (key /k.pem)"],
        )


class PrecedenceTests(SynchronousTestCase):
    """
    A port's own keys win over C{[defaults]}, which win over the command line.
    """

    commandLine = Defaults(
        interface="127.0.0.1",
        backlog=50,
        tls=TLSConfig(cert=Path("/cli.pem")),
    )

    def test_defaultsApply(self):
        """
        A request that says nothing takes every value from the defaults.
        """
        config = onePort(PortRequest("W", 443), self.commandLine)
        self.assertEqual(
            (config.interface, config.backlog, config.tls),
            ("127.0.0.1", 50, TLSConfig(cert=Path("/cli.pem"))),
        )

    def test_builtinDefaults(self):
        """
        The built-in defaults are every IPv4 address, backlog 511, and the
        self-signed certificate.
        """
        config = onePort(PortRequest("W", 443))
        self.assertEqual(
            (config.interface, config.backlog, config.tls),
            ("0.0.0.0", 511, TLSConfig()),
        )

    def test_portKeysWin(self):
        """
        A request's own host, backlog and certificate win over the defaults.
        """
        own = TLSConfig(cert=Path("/own.pem"))
        config = onePort(
            PortRequest("W", 443, host="::1", backlog=7, tls=own), self.commandLine
        )
        self.assertEqual(
            (config.interface, config.backlog, config.tls), ("::1", 7, own)
        )

    def test_partialDefaultsOver(self):
        """
        Each value a C{[defaults]} table sets replaces the base one.
        """
        partial = PartialDefaults(
            interface="::", backlog=100, tls=TLSConfig(cert=Path("/file.pem"))
        )
        self.assertEqual(
            partial.over(self.commandLine),
            Defaults(
                interface="::", backlog=100, tls=TLSConfig(cert=Path("/file.pem"))
            ),
        )

    def test_partialDefaultsUnsetKeepBase(self):
        """
        Values a C{[defaults]} table leaves out keep the base ones.
        """
        self.assertEqual(
            PartialDefaults(backlog=100).over(self.commandLine),
            Defaults(
                interface="127.0.0.1", backlog=100, tls=TLSConfig(cert=Path("/cli.pem"))
            ),
        )

    def test_emptyPartialDefaults(self):
        """
        An empty C{[defaults]} table changes nothing.
        """
        self.assertEqual(PartialDefaults().over(self.commandLine), self.commandLine)

    def test_throughFile(self):
        """
        From a file: the port's keys, then C{[defaults]}, then the command line.
        """
        fileConfig = parseConfig(
            {
                "defaults": {"backlog": 100},
                "port": [
                    {"port": 443},
                    {"port": 8443, "interface": "::1", "backlog": 7},
                    {"port": 9443, "handler": "https", "tls": {"cert": "own.pem"}},
                ],
            },
            Path("/etc/multiport"),
            "f.toml",
        )
        config = buildConfig(
            fileConfig.ports,
            fileConfig.defaults.over(self.commandLine),
            HANDLERS,
            STATE,
            noResolver,
        )
        self.assertEqual(
            [(p.interface, p.port, p.backlog, p.tls) for p in config.ports],
            [
                ("127.0.0.1", 443, 100, TLSConfig(cert=Path("/cli.pem"))),
                ("::1", 8443, 7, TLSConfig(cert=Path("/cli.pem"))),
                (
                    "127.0.0.1",
                    9443,
                    100,
                    TLSConfig(cert=Path("/etc/multiport/own.pem")),
                ),
            ],
        )


class PortConfigsTests(SynchronousTestCase):
    """
    Other checks L{portConfigs} makes.
    """

    def test_fields(self):
        """
        A valid request gives one fully filled L{PortConfig}.
        """
        self.assertEqual(
            configsFor(PortRequest("W", 17, host="127.0.0.1", handler="qotd")),
            [
                PortConfig(
                    interface="127.0.0.1",
                    port=17,
                    handler="qotd",
                    tls=None,
                    backlog=511,
                    options=QuoteOptions(),
                    where="W",
                )
            ],
        )

    def test_whereKept(self):
        """
        The L{PortConfig} keeps the request's C{where}.
        """
        self.assertEqual(
            onePort(PortRequest("f.toml: port[2]", 80)).where, "f.toml: port[2]"
        )

    def test_outOfRange(self):
        """
        A port above 65535 is rejected, naming it.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", 70000, handler="echo")
        )
        self.assertEqual(str(error), "W: port 70000 out of range 0-65535")

    def test_negativePort(self):
        """
        A negative port is rejected, naming it.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", -1, handler="echo")
        )
        self.assertEqual(str(error), "W: port -1 out of range 0-65535")

    def test_backlogBelowOne(self):
        """
        A backlog below 1 is rejected, naming it.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", 7, backlog=0)
        )
        self.assertEqual(str(error), "W: backlog 0 must be from 1 to 65535")

    def test_defaultBacklogBelowOne(self):
        """
        A default backlog below 1 is rejected at the port using it.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", 7), Defaults(backlog=-5)
        )
        self.assertEqual(str(error), "W: backlog -5 must be from 1 to 65535")

    def test_options(self):
        """
        The handler's options are parsed into its own type.
        """
        config = onePort(PortRequest("W", 17, options={"quote": "Hi"}))
        self.assertEqual(config.options, QuoteOptions("Hi\r\n"))

    def test_optionsRelativeTo(self):
        """
        Handler options resolve relative paths against the request's base.
        """
        base = Path(self.mktemp()).absolute()
        (base / "www").mkdir(parents=True)
        config = onePort(
            PortRequest("W", 80, options={"root": "www"}, optionsBase=base)
        )
        self.assertEqual(config.options, WebOptions(root=(base / "www").resolve()))

    def test_optionError(self):
        """
        A bad handler option is named as C{where.options.key}, with the value.
        """
        error = self.assertRaises(
            ConfigError,
            configsFor,
            PortRequest("f.toml: port[2]", 17, options={"quote": 5}),
        )
        self.assertEqual(error.where, "f.toml: port[2].options.quote")
        self.assertEqual(error.message, "expected a string, got integer 5")

    def test_webOptionError(self):
        """
        An http option error names the option's path and the bad value.
        """
        error = self.assertRaises(
            ConfigError,
            configsFor,
            PortRequest("port[1]", 80, options={"redirect_https": "http://x"}),
        )
        self.assertEqual(
            str(error),
            "port[1].options.redirect_https: 'http://x' is not an https:// URL "
            "with a host",
        )

    def test_optionForHandlerWithoutOptions(self):
        """
        Any option given to a handler that takes none is named.
        """
        error = self.assertRaises(
            ConfigError, configsFor, PortRequest("W", 7, options={"size": 1})
        )
        self.assertEqual(error.where, "W.options.size")
        self.assertEqual(error.message, "unknown option; 'echo' takes none")


class ResolvingTests(SynchronousTestCase):
    """
    How L{portConfigs} turns a host into interfaces.
    """

    def test_numericHostNotResolved(self):
        """
        A numeric host is used without asking the resolver.
        """
        self.assertEqual(
            onePort(PortRequest("W", 80, host="192.0.2.7")).interface, "192.0.2.7"
        )

    def test_ipv6Canonical(self):
        """
        A numeric IPv6 host is written in its compressed form.
        """
        config = onePort(PortRequest("W", 80, host="2001:DB8:0:0::0:1"))
        self.assertEqual(config.interface, "2001:db8::1")

    def test_hostNameTwoAddresses(self):
        """
        A host name resolving to two addresses gives one port per address, in
        the resolver's order.
        """
        resolve = resolverFrom({"web.example": ["192.0.2.1", "2001:db8::1"]})
        configs = configsFor(PortRequest("W", 80, host="web.example"), resolve=resolve)
        self.assertEqual(
            [(c.name, c.where) for c in configs],
            [("tcp:192.0.2.1:80", "W"), ("tcp:[2001:db8::1]:80", "W")],
        )

    def test_defaultInterfaceResolved(self):
        """
        A host name given as the default interface is resolved too.
        """
        resolve = resolverFrom({"lan.example": ["10.0.0.5"]})
        config = onePort(
            PortRequest("W", 80), Defaults(interface="lan.example"), resolve
        )
        self.assertEqual(config.interface, "10.0.0.5")

    def test_resolverFailure(self):
        """
        A name the resolver fails on is rejected, naming it and the error.
        """
        error = self.assertRaises(
            ConfigError,
            configsFor,
            PortRequest(
                "--ports item 1 'nowhere.example:80'", 80, host="nowhere.example"
            ),
            Defaults(),
            resolverFrom({}),
        )
        self.assertEqual(error.where, "--ports item 1 'nowhere.example:80'")
        self.assertEqual(
            error.message,
            "cannot resolve host name 'nowhere.example': "
            f"[Errno {socket.EAI_NONAME}] Name or service not known",
        )

    def test_resolvesToNothing(self):
        """
        A name resolving to no address is rejected, naming it.
        """
        error = self.assertRaises(
            ConfigError,
            configsFor,
            PortRequest("W", 80, host="empty.example"),
            Defaults(),
            resolverFrom({"empty.example": []}),
        )
        self.assertEqual(
            str(error), "W: host name 'empty.example' resolves to no address"
        )

    def test_resolveHostNameNumeric(self):
        """
        L{resolveHostName} gives a numeric IPv4 address back once.
        """
        self.assertEqual(list(resolveHostName("127.0.0.1")), ["127.0.0.1"])


class OverlapTests(SynchronousTestCase):
    """
    L{buildConfig} and L{checkOverlaps} refuse ports claiming the same address.
    """

    def test_buildConfig(self):
        """
        L{buildConfig} keeps the ports in order, with the state folder.
        """
        config = build(PortRequest("first", 80), PortRequest("second", 7, host="::1"))
        self.assertEqual(
            ([p.name for p in config.ports], config.stateDir),
            (["tcp:0.0.0.0:80", "tcp:[::1]:7"], STATE),
        )

    def test_duplicate(self):
        """
        The same address and port twice is rejected at the second, naming
        the first.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            PortRequest("first", 80),
            PortRequest("second", 80, handler="echo"),
        )
        self.assertEqual(error.where, "second")
        self.assertEqual(
            error.message, "0.0.0.0:80 is configured twice (also at first)"
        )

    def test_duplicateIPv6Spellings(self):
        """
        Two spellings of one IPv6 address are the same address.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            PortRequest("first", 7, host="::1"),
            PortRequest("second", 7, host="0:0::1"),
        )
        self.assertEqual(
            str(error), "second: [::1]:7 is configured twice (also at first)"
        )

    def test_overlapWildcardFirst(self):
        """
        A specific IPv4 address overlaps an earlier C{0.0.0.0} on the same port.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            PortRequest("first", 8080),
            PortRequest("second", 8080, host="127.0.0.1"),
        )
        self.assertEqual(error.where, "second")
        self.assertEqual(
            error.message, "127.0.0.1:8080 overlaps 0.0.0.0:8080 (also at first)"
        )

    def test_overlapWildcardSecond(self):
        """
        C{0.0.0.0} overlaps an earlier specific IPv4 address on the same port.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            PortRequest("first", 8080, host="127.0.0.1"),
            PortRequest("second", 8080),
        )
        self.assertEqual(
            str(error), "second: 0.0.0.0:8080 overlaps 127.0.0.1:8080 (also at first)"
        )

    def test_overlapIPv6Wildcard(self):
        """
        A specific IPv6 address overlaps C{[::]} on the same port.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            PortRequest("first", 80, host="::"),
            PortRequest("second", 80, host="::1"),
        )
        self.assertEqual(
            str(error), "second: [::1]:80 overlaps [::]:80 (also at first)"
        )

    def test_overlapThroughHostName(self):
        """
        A host name resolving onto a wildcard's port overlaps it.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            PortRequest("first", 80),
            PortRequest("second", 80, host="me.example"),
            resolve=resolverFrom({"me.example": ["::1", "127.0.0.1"]}),
        )
        self.assertEqual(
            str(error), "second: 127.0.0.1:80 overlaps 0.0.0.0:80 (also at first)"
        )

    def test_wildcardsOfBothFamilies(self):
        """
        C{[::]:P} and C{0.0.0.0:P} do not overlap.
        """
        config = build(PortRequest("first", 80, host="::"), PortRequest("second", 80))
        self.assertEqual(
            [p.name for p in config.ports], ["tcp:[::]:80", "tcp:0.0.0.0:80"]
        )

    def test_differentPorts(self):
        """
        The same address on different ports does not overlap.
        """
        config = build(PortRequest("first", 80), PortRequest("second", 8080))
        self.assertEqual(len(config.ports), 2)

    def test_differentAddresses(self):
        """
        Two specific addresses on the same port do not overlap.
        """
        config = build(
            PortRequest("first", 80, host="127.0.0.1"),
            PortRequest("second", 80, host="127.0.0.2"),
        )
        self.assertEqual(len(config.ports), 2)

    def test_portZeroTwice(self):
        """
        Port 0 twice on one address is allowed: each gets a free port.
        """
        config = build(
            PortRequest("first", 0, handler="echo"),
            PortRequest("second", 0, handler="echo"),
        )
        self.assertEqual([p.where for p in config.ports], ["first", "second"])

    def test_checkOverlapsDirect(self):
        """
        L{checkOverlaps} accepts distinct ports and rejects a repeated one.
        """
        checkOverlaps([portConfig(port=80, where="a"), portConfig(port=81, where="b")])
        error = self.assertRaises(
            ConfigError,
            checkOverlaps,
            [
                portConfig(where="a"),
                portConfig("::1", where="b"),
                portConfig(where="c"),
            ],
        )
        self.assertEqual(str(error), "c: 0.0.0.0:80 is configured twice (also at a)")

    def test_byNameSkipsPortZero(self):
        """
        L{Config.byName} names ports with a fixed number and leaves out port 0.
        """
        config = build(
            PortRequest("first", 0, handler="echo"), PortRequest("second", 7)
        )
        self.assertEqual(list(config.byName()), ["tcp:0.0.0.0:7"])


class PortConfigTests(SynchronousTestCase):
    """
    Tests for L{PortConfig}'s names and equality.
    """

    def test_nameIPv4(self):
        """
        An IPv4 port is named C{tcp:HOST:PORT}.
        """
        self.assertEqual(portConfig("127.0.0.1", 8080).name, "tcp:127.0.0.1:8080")

    def test_nameIPv6(self):
        """
        An IPv6 port's host is bracketed in its name.
        """
        self.assertEqual(portConfig("::1", 8080).name, "tcp:[::1]:8080")

    def test_address(self):
        """
        C{address} is C{HOST:PORT}, IPv6 bracketed.
        """
        self.assertEqual(
            (portConfig("0.0.0.0", 1).address, portConfig("::", 2).address),
            ("0.0.0.0:1", "[::]:2"),
        )

    def test_ipv6(self):
        """
        C{ipv6} tells an IPv6 interface from an IPv4 one.
        """
        self.assertEqual(
            (portConfig("::1").ipv6, portConfig("127.0.0.1").ipv6), (True, False)
        )

    def test_formatAddress(self):
        """
        L{formatAddress} brackets only IPv6 hosts.
        """
        self.assertEqual(
            (formatAddress("10.1.2.3", 9), formatAddress("fe80::1", 9)),
            ("10.1.2.3:9", "[fe80::1]:9"),
        )

    def test_equalityIgnoresWhere(self):
        """
        Two configurations differing only in C{where} are equal, with equal
        hashes.
        """
        a = portConfig(where="f.toml: port[1]")
        b = portConfig(where="f.toml: port[2]")
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))

    def test_inequality(self):
        """
        Two configurations differing in what they serve are not equal.
        """
        self.assertNotEqual(portConfig(port=80), portConfig(port=81))
        self.assertNotEqual(
            portConfig(),
            PortConfig("0.0.0.0", 80, "http", None, 511, WebOptions(listing=True)),
        )


class ParseInterfaceTests(SynchronousTestCase):
    """
    Tests for L{parseInterface}.
    """

    def test_ipv4(self):
        """
        An IPv4 address is kept.
        """
        self.assertEqual(parseInterface("10.0.0.1", "W"), "10.0.0.1")

    def test_bracketedIPv6(self):
        """
        Brackets around an IPv6 address are removed.
        """
        self.assertEqual(parseInterface("[::1]", "W"), "::1")

    def test_bareIPv6(self):
        """
        An IPv6 address without brackets is accepted.
        """
        self.assertEqual(parseInterface("fe80::1", "W"), "fe80::1")

    def test_hostName(self):
        """
        A host name is kept for later resolving.
        """
        self.assertEqual(parseInterface("localhost", "W"), "localhost")

    def test_notString(self):
        """
        A non-string is rejected, naming its type and value.
        """
        error = self.assertRaises(ConfigError, parseInterface, 8080, "--interface")
        self.assertEqual(str(error), "--interface: expected a string, got integer 8080")

    def test_whitespace(self):
        """
        A value holding whitespace is rejected, naming it.
        """
        error = self.assertRaises(ConfigError, parseInterface, "my host", "--interface")
        self.assertEqual(str(error), "--interface: bad interface 'my host'")

    def test_empty(self):
        """
        An empty value is rejected.
        """
        error = self.assertRaises(ConfigError, parseInterface, "", "--interface")
        self.assertEqual(str(error), "--interface: bad interface ''")

    def test_emptyBrackets(self):
        """
        Empty brackets are rejected, naming them.
        """
        error = self.assertRaises(ConfigError, parseInterface, "[]", "--interface")
        self.assertEqual(str(error), "--interface: bad interface '[]'")

    def test_badIPv6(self):
        """
        Text with a colon that is not an IPv6 address is rejected, naming it.
        """
        error = self.assertRaises(ConfigError, parseInterface, "[::zz]", "--interface")
        self.assertEqual(str(error), "--interface: '[::zz]' is not an IPv6 address")


class DefaultStateDirTests(SynchronousTestCase):
    """
    Tests for L{defaultStateDir}.
    """

    def test_root(self):
        """
        As root, the state folder is /var/lib/multiport, whatever
        C{XDG_STATE_HOME} says.
        """
        self.assertEqual(
            defaultStateDir({"XDG_STATE_HOME": "/home/u/.state"}, euid=0),
            Path("/var/lib/multiport"),
        )

    def test_thisProcess(self):
        """
        Without C{euid}, the decision is for this process's effective user.
        """
        environ = {"XDG_STATE_HOME": "/home/u/.state"}
        self.assertEqual(
            defaultStateDir(environ), defaultStateDir(environ, euid=os.geteuid())
        )

    def test_xdgStateHome(self):
        """
        As another user, C{XDG_STATE_HOME} holds the state folder.
        """
        self.assertEqual(
            defaultStateDir({"XDG_STATE_HOME": "/home/u/.state"}, euid=1000),
            Path("/home/u/.state/multiport"),
        )

    def test_homeFallback(self):
        """
        As another user without C{XDG_STATE_HOME}, the state folder is
        ~/.local/state/multiport.
        """
        self.assertEqual(
            defaultStateDir({}, euid=1000),
            Path.home() / ".local" / "state" / "multiport",
        )

    def test_emptyXDGStateHome(self):
        """
        An empty C{XDG_STATE_HOME} is treated as unset.
        """
        self.assertEqual(
            defaultStateDir({"XDG_STATE_HOME": ""}, euid=1000),
            Path.home() / ".local" / "state" / "multiport",
        )


class RelayLoopTests(SynchronousTestCase):
    """
    A relay can't forward to itself, directly or through the daemon's own
    ports; a relay to another port of the daemon is fine.
    """

    def build(self, *ports: dict[str, object]) -> Config:
        from multiport.handlers.relay import relay

        file = parseConfig({"port": list(ports)}, Path("."), "f.toml")
        return buildConfig(file.ports, DEFAULTS, {**HANDLERS, "relay": relay}, STATE)

    def relay(self, port: int, upstream: str, interface: str = "127.0.0.1"):
        return {
            "port": port,
            "interface": interface,
            "handler": "relay",
            "options": {"upstream": upstream},
        }

    def test_toItself(self):
        """
        An upstream that is the relay's own address is refused, naming the
        relay's table.
        """
        error = self.assertRaises(
            ConfigError, self.build, self.relay(7000, "127.0.0.1:7000")
        )
        self.assertEqual(error.where, "f.toml: port[1]")
        self.assertEqual(
            error.message,
            "its upstream is this daemon's own port, and it would relay to "
            "itself (tcp:127.0.0.1:7000 -> tcp:127.0.0.1:7000)",
        )

    def test_wildcard(self):
        """
        A relay on 0.0.0.0 reaches itself through loopback or localhost.
        """
        for upstream in ("127.0.0.1:7000", "127.0.0.9:7000", "localhost:7000"):
            self.assertRaises(
                ConfigError,
                self.build,
                self.relay(7000, upstream, interface="0.0.0.0"),
            )

    def test_throughAnother(self):
        """
        Two relays forwarding to each other are a loop.
        """
        error = self.assertRaises(
            ConfigError,
            self.build,
            self.relay(7000, "127.0.0.1:7001"),
            self.relay(7001, "127.0.0.1:7000"),
        )
        self.assertIn(
            "(tcp:127.0.0.1:7001 -> tcp:127.0.0.1:7000 -> tcp:127.0.0.1:7001)",
            error.message,
        )

    def test_otherPortOrFamily(self):
        """
        A relay to another port of the daemon, or to the other family's
        wildcard, is no loop.
        """
        config = self.build(
            self.relay(7000, "127.0.0.1:7001"),
            {"port": 7001, "interface": "127.0.0.1", "handler": "echo"},
            self.relay(7002, "[::1]:7002", interface="0.0.0.0"),
        )
        self.assertEqual(len(config.ports), 3)


class ImportTests(SynchronousTestCase):
    """
    The model stands on its own: handlers build on it, never the reverse.
    """

    def test_modelImportsNoHandler(self) -> None:
        """
        No module of L{multiport.config} imports L{multiport.handlers}, not
        even inside a function or for type checking only: the handler
        interface imports the model, so the reverse would be a cycle.
        """
        import ast

        import multiport.config

        folder = Path(multiport.config.__file__).parent
        found = []
        for path in sorted(folder.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                found += [
                    f"{path.name}:{node.lineno} {name}"
                    for name in names
                    if name.startswith("multiport.handlers")
                ]
        self.assertIn("model.py", {p.name for p in folder.glob("*.py")})
        self.assertEqual(found, [])

    def test_optionErrorShared(self) -> None:
        """
        The handlers' L{OptionError} is the one the model turns into a
        L{ConfigError}.
        """
        from multiport.config import handleroptions
        from multiport.handlers import OptionError

        self.assertIs(OptionError, handleroptions.OptionError)
