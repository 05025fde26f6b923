"""
Property tests (Hypothesis) for every edge that reads untrusted input: the
C{--ports} grammar, the configuration file and its validation, the PROXY
protocol header, the admin API's bodies, and raw HTTP thrown at the http and
status handlers.

Two Hypothesis profiles: C{ci} (the default: derandomized, 100 examples, no
example database, so every run tries the same inputs) and C{thorough}
(5000 examples), chosen with C{HYPOTHESIS_PROFILE=thorough}.  Two
properties depart from the profile's count: the admin API's (50 examples in
C{ci}, each a request to a live service; a tenth of the count otherwise)
and raw HTTP's (500 in C{ci}: cheap, and its input space is wide).

L{FoundTests} and the C{test_*} methods marked C{BUG} pin, one input each,
what these properties found mishandled.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import traceback
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import _producer_helpers, reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import (
    Config,
    Defaults,
    PortConfig,
    PortRequest,
    numericHost,
)
from multiport.config.portspec import parsePortItem, parsePorts
from multiport.config.tomlfile import parseConfig, readConfigFile
from multiport.daemon.service import PortsService
from multiport.errors import ConfigError
from multiport.handlers.interface import HandlerContext
from multiport.handlers.relayupstream import proxyHeader
from multiport.handlers.web import http
from multiport.handlers.weboptions import parseWebOptions
from multiport.ports.proxyheader import HeaderParser, ProxyInfo, ProxyProtocolError
from multiport.status import status as statusHandler
from tests.support import HANDLERS, configFor
from tests.test_live import freePort

settings.register_profile(
    "ci", derandomize=True, max_examples=100, deadline=None, database=None
)
settings.register_profile("thorough", max_examples=5000, deadline=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def fewer(ci: int) -> settings:
    """
    Settings for an expensive property: C{ci} examples in the C{ci}
    profile, a tenth of the profile's count otherwise.
    """
    count = ci if PROFILE == "ci" else max(ci, settings.default.max_examples // 10)
    return settings(
        max_examples=count,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def readable(test):
    """
    Re-raise a Hypothesis failure with its falsifying example and every
    distinct failure in the message: trial shows neither exception notes
    (where Hypothesis puts the example) nor the members of an
    C{ExceptionGroup} (how it reports several distinct failures).
    """

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        try:
            return test(*args, **kwargs)
        except BaseException as e:
            if not (getattr(e, "__notes__", None) or isinstance(e, BaseExceptionGroup)):
                raise
            raise AssertionError(
                "".join(traceback.format_exception(e, chain=False))
            ) from None

    return wrapper


#: For a cheap property with a wide input space (raw HTTP): 500 examples
#: in the C{ci} profile, the profile's count otherwise.
CHEAP = settings(max_examples=500 if PROFILE == "ci" else settings.default.max_examples)


# --------------------------------------------------------------------------
# 1. The --ports item grammar.

#: Pieces of the grammar and its near misses, so that random items reach
#: every branch of the parser rather than failing on the first character.
GRAMMAR_PIECES = st.sampled_from(
    [
        "[",
        "]",
        ":",
        "=",
        "+",
        "tls",
        "+tls",
        "+TLS",
        ".",
        "::1",
        "::",
        "127.0.0.1",
        "0",
        "7",
        "65535",
        "65536",
        "99999999999999999999",
        "8080",
        "http",
        "echo",
        "Echo",
        "-",
        "_",
        " ",
        "\t",
        "localhost",
        "fe80::1%eth0",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: isdigit() but not ASCII
        "\u00b2",  # SUPERSCRIPT TWO: isdigit() but int() refuses it
        "%",
        "\x00",
        "\n",
    ]
)
PORT_ITEMS = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(GRAMMAR_PIECES, st.text(max_size=3)), max_size=8).map("".join),
)
HANDLER_NAMES = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,12}\Z")
HOST_NAMES = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,6}){0,2}\Z")


@st.composite
def validItems(draw):
    """
    A valid C{[HOST:]PORT[=HANDLER[+tls]]} item and the fields it means:
    (text, host, port, handler, tls).
    """
    kind = draw(st.sampled_from(["none", "ipv4", "ipv6", "name"]))
    if kind == "ipv4":
        host = str(draw(st.ip_addresses(v=4)))
        hostText = host + ":"
    elif kind == "ipv6":
        host = str(draw(st.ip_addresses(v=6)))
        hostText = f"[{host}]:"
    elif kind == "name":
        host = draw(HOST_NAMES)
        hostText = host + ":"
    else:
        host = None
        hostText = ""
    port = draw(st.integers(0, 65535))
    portText = "0" * draw(st.integers(0, 2)) + str(port)
    handler = draw(st.none() | HANDLER_NAMES)
    tls = draw(st.booleans()) if handler is not None else False
    handlerText = "" if handler is None else "=" + handler + ("+tls" if tls else "")
    space = draw(st.sampled_from(["", " ", "\t "]))
    text = space + hostText + portText + handlerText + space
    return text, host, port, handler, (True if tls else None)


class PortItemProperties(SynchronousTestCase):
    """
    The C{--ports} grammar (L{multiport.config.portspec}) on any text.
    """

    @readable
    @given(PORT_ITEMS)
    @example("x:\u00b2")
    @example("[::1]")
    @example("[]:80")
    def test_anyItem(self, text):
        """
        Any text is either a L{PortRequest} with sane fields or one
        L{ConfigError} that names the item; never another exception.
        """
        where = "--ports item 1 'X'"
        try:
            request = parsePortItem(text, where)
        except ConfigError as e:
            self.assertEqual(e.where, where)
            self.assertTrue(str(e).startswith(where + ": "), str(e))
            return
        self.assertIsInstance(request, PortRequest)
        self.assertTrue(0 <= request.port <= 65535)
        self.assertIn(request.tls, (None, True))
        if request.handler is not None:
            self.assertRegex(request.handler, r"\A[a-z0-9][a-z0-9_-]*\Z")
        if request.host is not None:
            self.assertTrue(request.host)
            self.assertFalse(any(c.isspace() for c in request.host))

    @readable
    @given(st.lists(PORT_ITEMS, min_size=1, max_size=4).map(",".join))
    def test_anyValue(self, text):
        """
        A whole C{--ports} value gives one request per comma-separated item,
        or a L{ConfigError} naming the item by its number.
        """
        try:
            requests = parsePorts(text, first=3)
        except ConfigError as e:
            self.assertRegex(e.where, r"\A--ports item \d+ ")
            number = int(e.where.split()[2])
            self.assertTrue(3 <= number < 3 + len(text.split(",")), e.where)
            return
        self.assertEqual(len(requests), len(text.split(",")))
        self.assertEqual(
            [r.where.split()[2] for r in requests],
            [str(3 + i) for i in range(len(requests))],
        )

    @readable
    @given(validItems())
    @example(
        (" [::ffff:1.2.3.4]:0443=https+tls ", "::ffff:1.2.3.4", 443, "https", True)
    )
    def test_roundTrip(self, item):
        """
        A valid item (IPv4, bracketed IPv6, a host name or no host; any
        port; any handler name, with or without C{+tls}) parses to exactly
        the fields it was made of.
        """
        text, host, port, handler, tls = item
        request = parsePortItem(text, "W")
        self.assertEqual(
            (request.host, request.port, request.handler, request.tls),
            (host, port, handler, tls),
        )
        self.assertEqual(request.where, "W")


# --------------------------------------------------------------------------
# 2. The configuration file and its validation.
#
# A document is mostly made of tables whose keys are the real ones with
# values the key takes (edge cases among them: host names the resolver
# refuses, NULs in paths, non-ASCII digits), each now and then spoiled:
# one key given a wrong or random value, or an unknown key added.  Purely
# random documents fail on their first key and never reach the handlers'
# option parsers or the resolver; these do.

TOML_LEAVES = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.integers(-3, 70000),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
JSON_LEAVES = st.one_of(
    st.none(), st.text(max_size=12), st.integers(), st.floats(), st.booleans()
)
POLICY_KEYS = [
    "max_connections",
    "max_connections_per_ip",
    "rate",
    "rate_per_ip",
    "idle_timeout",
    "max_duration",
    "header_timeout",
    "drain_timeout",
    "proxy_protocol",
    "proxy_protocol_from",
    "allow",
    "deny",
]
PORT_KEYS = [
    "port",
    "handler",
    "interface",
    "backlog",
    "tls",
    "options",
    "log_connections",
    *POLICY_KEYS,
]
TLS_KEYS = [
    "cert",
    "key",
    "min_version",
    "ciphers",
    "alpn",
    "handshake_timeout",
    "sni",
    "cert_dir",
    "client_ca",
    "client_auth",
]
OPTION_KEYS = [
    "root",
    "listing",
    "sendfile",
    "redirect_https",
    "hsts_max_age",
    "quote",
    "upstream",
    "upstreams",
    "balance",
    "connect_timeout",
    "fail_timeout",
    "upstream_tls",
    "upstream_server_name",
    "upstream_ca",
    "upstream_tls_verify",
    "send_proxy_protocol",
    "splice",
]
KEYS = st.one_of(
    st.sampled_from(["defaults", "port", *PORT_KEYS, *TLS_KEYS, *OPTION_KEYS]),
    st.text(max_size=8),
)


def nested(leaves: st.SearchStrategy) -> st.SearchStrategy:
    """
    Any value made of C{leaves}, arrays and tables.
    """
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3)
        ),
        max_leaves=8,
    )


TOML_VALUES = nested(TOML_LEAVES)
JSON_VALUES = nested(JSON_LEAVES)

#: Paths, relative to the test's base folder (see L{ConfigProperties}).
PATHS = ["www", "www/index.html", "ca.pem", ".", "/", "missing", "", "a\x00b"]
SECONDS = st.sampled_from([0.001, 1, 2.5, 30, 86399]) | st.floats(0.001, 1e6)
NETWORKS = st.lists(
    st.sampled_from(["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32", "0.0.0.0/0"]),
    max_size=3,
)
#: Interfaces: addresses, names the fake resolver knows or not, and names
#: the real resolver refuses before asking anyone (see L{fakeResolve}).
INTERFACES = [
    "127.0.0.1",
    "::1",
    "[::1]",
    "0.0.0.0",
    "::",
    "localhost",
    "no-such-host.test",
    "bad.junk",
    "a..b",
    "x" * 64 + ".test",
    "fe80::1%eth0",
    "a\x00b",
]
UPSTREAMS = [
    "127.0.0.1:5432",
    "[::1]:5432",
    "db.internal:5432",
    "x:\u00b2",
    "x:\u0663",
    "x:0",
    "[::1]",
    "x:65536",
]


def _subset(draw, strategies: dict, required: tuple = ()) -> dict:
    """
    A table of some of C{strategies}' keys (all of C{required}).
    """
    keys = set(required) | draw(
        st.sets(st.sampled_from(sorted(strategies)), max_size=4)
    )
    return {key: draw(strategies[key]) for key in sorted(keys)}


@st.composite
def spoiled(draw, table: dict, wrong: dict, chaos: st.SearchStrategy) -> dict:
    """
    C{table} as it is (seven times in ten), with one key given a wrong or
    random value, one key left out, or a key added that may not exist.
    """
    mode = draw(st.integers(0, 9))
    table = dict(table)
    if mode == 0 and table:
        key = draw(st.sampled_from(sorted(table)))
        table[key] = draw(st.one_of(wrong.get(key, chaos), chaos))
    elif mode == 1:
        table[draw(KEYS)] = draw(chaos)
    elif mode == 2 and table:
        del table[draw(st.sampled_from(sorted(table)))]
    return table


@st.composite
def tlsTables(draw, chaos: st.SearchStrategy = TOML_VALUES) -> dict:
    """
    A C{tls} table.
    """
    valid = {
        "cert": st.sampled_from(PATHS),
        "key": st.sampled_from(PATHS),
        "min_version": st.sampled_from(["1.2", "1.3"]),
        "ciphers": st.sampled_from(["ECDHE+AESGCM", "DEFAULT"]),
        "alpn": st.lists(st.sampled_from(["http/1.1", "h2", "x"]), max_size=2),
        "handshake_timeout": SECONDS,
        "sni": st.dictionaries(
            st.sampled_from(["example.com", "*.example.org", "Upper.example", ""]),
            st.fixed_dictionaries(
                {"cert": st.sampled_from(PATHS)},
                optional={"key": st.sampled_from(PATHS)},
            ),
            max_size=2,
        ),
        "cert_dir": st.sampled_from(PATHS),
        "client_ca": st.sampled_from(PATHS),
        "client_auth": st.sampled_from(["required", "optional"]),
    }
    wrong = {
        "min_version": st.sampled_from(["1.1", "1.0", 1.2]),
        "alpn": st.sampled_from([[""], [1], ["\u00e9"], "http/1.1"]),
        "handshake_timeout": st.sampled_from([0, -1, float("nan"), True]),
        "client_auth": st.just("never"),
    }
    return draw(spoiled(_subset(draw, valid), wrong, chaos))


@st.composite
def handlerOptions(draw, handler: str, chaos: st.SearchStrategy = TOML_VALUES):
    """
    An C{options} table for C{handler}: its own keys mostly, values mostly
    of the right type, edge cases included.
    """
    web = {
        "root": st.sampled_from(PATHS),
        "listing": st.booleans(),
        "sendfile": st.booleans(),
        "hsts_max_age": st.integers(0, 10**9),
        "redirect_https": st.sampled_from(
            [443, 8443, "https://example.com", "https://example.com/x/", "https://"]
        ),
    }
    upstreams = draw(st.sampled_from(["upstream", "upstreams"]))
    relay = {
        upstreams: st.sampled_from(UPSTREAMS)
        if upstreams == "upstream"
        else st.lists(st.sampled_from(UPSTREAMS), max_size=3),
        "balance": st.sampled_from(["round_robin", "first", "least_connections"]),
        "connect_timeout": SECONDS,
        "fail_timeout": SECONDS,
        "upstream_tls": st.booleans(),
        "upstream_server_name": st.sampled_from(["db.internal", ""]),
        "upstream_ca": st.sampled_from(PATHS),
        "upstream_tls_verify": st.booleans(),
        "send_proxy_protocol": st.sampled_from(["v1", "v2", ""]),
        "splice": st.booleans(),
    }
    valid = {
        "http": web,
        "https": web,
        "relay": relay,
        "qotd": {"quote": st.text(max_size=20) | st.just("x" * 511)},
    }.get(handler, {})
    required = (upstreams,) if handler == "relay" else ()
    options = _subset(draw, valid, required) if valid else {}
    wrong = {
        "hsts_max_age": st.sampled_from([-1, True, 1.5]),
        "redirect_https": st.sampled_from([0, 70000, "http://x", True]),
        "balance": st.just("random"),
        "send_proxy_protocol": st.just("v3"),
        "connect_timeout": st.sampled_from([0, -1, 86400, float("nan"), True]),
    }
    return draw(spoiled(options, wrong, chaos))


POLICY_VALUES = {
    "max_connections": st.integers(1, 10**6),
    "max_connections_per_ip": st.integers(1, 1000),
    "rate": st.fixed_dictionaries(
        {"per_second": SECONDS}, optional={"burst": st.integers(1, 1000)}
    ),
    "rate_per_ip": st.fixed_dictionaries(
        {"per_second": SECONDS}, optional={"burst": st.integers(1, 1000)}
    ),
    "idle_timeout": SECONDS,
    "max_duration": SECONDS,
    "header_timeout": SECONDS,
    "drain_timeout": st.just(0) | SECONDS,
    "proxy_protocol": st.sampled_from(["v1", "v2", "any"]),
    "proxy_protocol_from": NETWORKS,
    "allow": NETWORKS,
    "deny": NETWORKS,
}
POLICY_WRONG = {
    "max_connections": st.sampled_from([0, -1, True, 1.5]),
    "rate": st.sampled_from(
        [{"burst": 2}, {"per_second": 1, "burst": 0}, {"per_second": 1, "x": 1}]
    ),
    "idle_timeout": st.sampled_from([0, -1, float("nan"), float("inf"), True]),
    "drain_timeout": st.sampled_from([-1, float("nan"), float("inf")]),
    "proxy_protocol": st.just("v3"),
    "allow": st.sampled_from([["10.0.0.1/33"], ["not a network"], [5], "10/8"]),
}


@st.composite
def portTables(draw, chaos: st.SearchStrategy = TOML_VALUES) -> dict:
    """
    A C{[[port]]} table.
    """
    handler = draw(st.sampled_from(sorted(HANDLERS)))
    valid = {
        "port": st.sampled_from([0, 7, 80, 443, 7000, 8080]) | st.integers(0, 65535),
        "handler": st.just(handler),
        "interface": st.sampled_from(INTERFACES),
        "backlog": st.integers(1, 65535),
        "tls": st.booleans() | tlsTables(chaos),
        "options": handlerOptions(handler, chaos),
        "log_connections": st.booleans(),
        **POLICY_VALUES,
    }
    wrong = {
        "handler": st.sampled_from(["nope", "HTTP", ""]),
        "port": st.sampled_from([-1, 65536, True, "80", 80.0]),
        "backlog": st.sampled_from([0, 65536, -1, True]),
        "interface": st.sampled_from(["", "bad host", "[", "1.2.3:4", "::1]", 5]),
        "tls": st.sampled_from(["yes", 1]),
        **POLICY_WRONG,
    }
    table = _subset(draw, valid, ("port", "handler"))
    return draw(spoiled(table, wrong, chaos))


@st.composite
def defaultsTables(draw, chaos: st.SearchStrategy = TOML_VALUES) -> dict:
    """
    A C{[defaults]} table.
    """
    valid = {
        "interface": st.sampled_from(INTERFACES),
        "backlog": st.integers(1, 65535),
        "tls": tlsTables(chaos),
        "log_connections": st.booleans(),
        **POLICY_VALUES,
    }
    return draw(spoiled(_subset(draw, valid), POLICY_WRONG, chaos))


_DOCUMENTS = st.fixed_dictionaries(
    {"port": st.lists(portTables(), min_size=1, max_size=3)},
    optional={"defaults": defaultsTables()},
)
DOCUMENTS = st.one_of(
    _DOCUMENTS,
    _DOCUMENTS,
    _DOCUMENTS.flatmap(lambda d: spoiled(d, {}, TOML_VALUES)),
    st.dictionaries(KEYS, TOML_VALUES, max_size=3),
)


def fakeResolve(name: str) -> list[str]:
    """
    Resolve C{name} without the network, failing as
    C{socket.getaddrinfo} does: a name the idna codec refuses (an empty or
    over-long label, a lone surrogate) raises C{UnicodeError} before any
    query; C{localhost} is 127.0.0.1 and ::1; C{*.junk} resolves to
    garbage; anything else is not found.
    """
    name.encode("idna")
    if "\x00" in name:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    if name == "localhost":
        return ["127.0.0.1", "::1"]
    if name.endswith(".junk"):
        return ["not an address"]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class ConfigProperties(SynchronousTestCase):
    """
    The configuration file's reader and the model's validation on any
    TOML-shaped document.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        (self.base / "www").mkdir(parents=True)
        (self.base / "www" / "index.html").write_text("hi")
        (self.base / "ca.pem").write_text("not really a certificate\n")
        self.stateDir = self.base / "state"

    def build(self, data) -> Config | None:
        """
        Read C{data} as C{tap.py} does (the file's defaults over the command
        line's, then validation); the L{Config}, or C{None} after checking
        the L{ConfigError}.
        """
        try:
            fileConfig = parseConfig(data, self.base, "multiport.toml")
            defaults = fileConfig.defaults.over(Defaults(interface="127.0.0.1"))
            return buildConfig(
                fileConfig.ports,
                defaults,
                HANDLERS,
                self.stateDir,
                resolve=fakeResolve,
            )
        except ConfigError as e:
            self.assertTrue(str(e).startswith(e.where), str(e))
            self.assertIn("multiport.toml", e.where)
            return None

    @readable
    @given(DOCUMENTS)
    def test_anyDocument(self, data):
        """
        Any TOML-shaped document, with keys drawn partly from the real ones
        and values partly plausible, gives a valid L{Config} or one
        L{ConfigError} naming the file; never another exception.
        """
        self.check(data)

    @readable
    @given(portTables(), st.none() | defaultsTables())
    def test_anyPortTable(self, table, defaults):
        """
        The same for a document of one C{[[port]]} table (and perhaps
        C{[defaults]}): every key of it is reached more often.
        """
        data = {"port": [table]}
        if defaults is not None:
            data["defaults"] = defaults
        self.check(data)

    @readable
    @given(
        st.sampled_from(["http", "https", "relay", "qotd", "echo"]).flatmap(
            lambda handler: st.tuples(st.just(handler), handlerOptions(handler))
        )
    )
    def test_anyHandlerOptions(self, handlerAndOptions):
        """
        The same for a valid port whose handler options vary: each
        handler's option parser turns whatever it gets into options or an
        option error, never another exception.
        """
        handler, options = handlerAndOptions
        table = {"port": 7000, "handler": handler, "options": options}
        self.check({"port": [table]})

    def check(self, data) -> None:
        """
        C{data} gives a L{Config} of sane ports, or one L{ConfigError}.
        """
        config = self.build(data)
        if config is None:
            return
        self.assertIsInstance(config, Config)
        for port in config.ports:
            self.assertIsInstance(port, PortConfig)
            self.assertIsNotNone(numericHost(port.interface), port)
            self.assertIn(port.handler, HANDLERS)
            self.assertTrue(0 <= port.port <= 65535)
            self.assertTrue(1 <= port.backlog <= 65535)

    def test_resolverFailures(self):
        """
        The fake resolver fails as the real one does before any query, so
        the property above meets the real resolver's failure modes.
        """
        self.assertRaises(UnicodeError, fakeResolve, "a..b")
        self.assertRaises(UnicodeError, fakeResolve, "x" * 64 + ".test")
        self.assertRaises(OSError, fakeResolve, "no-such-host.test")
        self.assertEqual(fakeResolve("localhost"), ["127.0.0.1", "::1"])

    @readable
    @given(
        st.one_of(
            st.binary(max_size=200),
            st.lists(
                st.sampled_from(
                    [
                        "[[port]]\n",
                        "[defaults]\n",
                        "[port]\n",
                        "port = 7000\n",
                        "port = 99999\n",
                        'handler = "echo"\n',
                        'interface = "a..b"\n',
                        "tls = true\n",
                        "tls = { cert = 'x' }\n",
                        "[port.options]\n",
                        'root = "a\\u0000"\n',
                        'upstream = "x:\u00b2"\n',
                        "max_connections = 0\n",
                        "= \n",
                        '"\n',
                        "x = 1979-05-27T07:32:00Z\n",
                        "x = nan\n",
                        "[[port]]\n[[port]]\n",
                        "\xff",
                        "\ufeff",
                    ]
                ),
                max_size=8,
            ).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")),
            st.text(alphabet="[]=.\"'\n #{},abc01tlsport", max_size=60).map(str.encode),
        )
    )
    @example(b"\xff\xfe")
    @example(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[")
    def test_anyFile(self, data):
        """
        Any bytes as a configuration file are read into a configuration or
        refused with one L{ConfigError} naming the file; never another
        exception, whatever C{tomllib} or the reader meet.
        """
        path = self.base / "multiport.toml"
        path.write_bytes(data)
        try:
            fileConfig = readConfigFile(path)
        except ConfigError as e:
            self.assertTrue(e.where.startswith(str(path)), str(e))
            return
        try:
            buildConfig(
                fileConfig.ports,
                fileConfig.defaults.over(Defaults(interface="127.0.0.1")),
                HANDLERS,
                self.stateDir,
                resolve=fakeResolve,
            )
        except ConfigError as e:
            self.assertTrue(e.where.startswith(str(path)), str(e))


# --------------------------------------------------------------------------
# 3. The PROXY protocol header parser.

VERSIONS = st.sampled_from(["v1", "v2", "any"])
V1 = b"PROXY "
V2 = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_BYTES = st.one_of(
    st.binary(max_size=120),
    st.binary(max_size=40).map(lambda b: V1 + b),
    st.lists(
        st.sampled_from(
            [
                "TCP4 ",
                "TCP6 ",
                "UNKNOWN ",
                "1.2.3.4 ",
                "::1 ",
                "fe80::1%eth0 ",
                "65535 ",
                "65536 ",
                "0 ",
                "\u00b2 ",
                " ",
                "\r\n",
                "\r",
                "\n",
            ]
        ),
        max_size=8,
    ).map(lambda parts: V1 + "".join(parts).encode()),
    st.tuples(
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 0xFFFF) | st.integers(0, 300),
        st.binary(max_size=80),
    ).map(lambda t: V2 + bytes([t[0], t[1]]) + t[2].to_bytes(2, "big") + t[3]),
    st.binary(max_size=20).map(lambda b: V2[: len(b) % 13] + b),
)


def splits(data: bytes, points: list[int]) -> list[bytes]:
    """
    C{data} cut at C{points} (taken modulo its length), in order.
    """
    cuts = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def feedAll(parser: HeaderParser, chunks: list[bytes]):
    """
    Feed C{chunks} until the header is complete or refused: C{("info",
    info, rest)} with the bytes after the header (the read that completed
    it and every later one), C{("error",)} or C{("more",)}.
    """
    for index, chunk in enumerate(chunks):
        try:
            info = parser.feed(chunk)
        except ProxyProtocolError:
            return ("error",)
        if info is not None:
            return ("info", info, parser.rest + b"".join(chunks[index + 1 :]))
    return ("more",)


@st.composite
def headers(draw):
    """
    A valid PROXY header made by the relay's own writer, and the
    L{ProxyInfo} it carries: (version, header, info).
    """
    version = draw(st.sampled_from(["v1", "v2"]))
    family = draw(st.sampled_from([4, 6]))
    make = IPv4Address if family == 4 else IPv6Address
    source = make(
        "TCP", str(draw(st.ip_addresses(v=family))), draw(st.integers(0, 65535))
    )
    destination = make(
        "TCP", str(draw(st.ip_addresses(v=family))), draw(st.integers(0, 65535))
    )
    info = ProxyInfo(int(version[1]), "proxy", source, destination)
    return version, proxyHeader(version, source, destination), info


class ProxyHeaderProperties(SynchronousTestCase):
    """
    L{HeaderParser} on any bytes, and on valid headers split anywhere.
    """

    @readable
    @given(VERSIONS, PROXY_BYTES, st.lists(st.integers(0, 200), max_size=6))
    @example("any", b"PROXY \r\n", [])
    @example("any", b"PROXY TCP4\r\n", [])
    @example("v1", V2 + b"\x21\x11\x00\x0c", [])
    def test_anyBytes(self, versions, data, points):
        """
        Any bytes, in any chunks, give a header, "more needed" or one
        L{ProxyProtocolError}; never another exception.  The outcome does
        not depend on how the bytes were split, and neither do the header
        nor the bytes after it.
        """
        whole = feedAll(HeaderParser(versions), [data])
        chunked = feedAll(HeaderParser(versions), splits(data, points))
        self.assertEqual(whole, chunked)
        if whole[0] == "info":
            info = whole[1]
            self.assertIsInstance(info, ProxyInfo)
            self.assertIn(info.version, {"v1": {1}, "v2": {2}, "any": {1, 2}}[versions])
            self.assertTrue(data.endswith(whole[2]))

    @readable
    @given(headers(), st.binary(max_size=64), VERSIONS)
    def test_everySplit(self, header, payload, versions):
        """
        A valid v1 or v2 header (IPv4 or IPv6) followed by a payload, cut in
        two at every position, gives the header's addresses and exactly the
        payload after it.
        """
        version, data, info = header
        data += payload
        if versions not in (version, "any"):
            self.assertEqual(feedAll(HeaderParser(versions), [data]), ("error",))
            return
        for cut in range(len(data) + 1):
            outcome = feedAll(HeaderParser(versions), [data[:cut], data[cut:]])
            self.assertEqual(outcome, ("info", info, payload), cut)

    @readable
    @given(headers(), st.binary(max_size=64), st.lists(st.integers(0, 200)))
    def test_anyChunking(self, header, payload, points):
        """
        The same, cut into any number of pieces (one byte each included).
        """
        version, data, info = header
        data += payload
        outcome = feedAll(HeaderParser("any"), splits(data, points))
        self.assertEqual(outcome, ("info", info, payload))
        bytewise = feedAll(HeaderParser(version), [bytes([b]) for b in data])
        self.assertEqual(bytewise, ("info", info, payload))


# --------------------------------------------------------------------------
# 4. The admin API's request bodies.

TOKEN = "property-token"
#: Interfaces a body may name: loopback ones, one the machine lacks, and
#: invalid ones that fail before any DNS query (see L{fakeResolve}); never
#: a name to resolve, nor a wildcard address.
SAFE_INTERFACES = [
    "127.0.0.1",
    "::1",
    "[::1]",
    "192.0.2.1",
    "",
    "bad host",
    "a..b",
    "x" * 64 + ".test",
    "\udcff",
    "::1]",
    "1.2.3",
]


def sanitize(body, numbers: list[int]):
    """
    C{body} made safe to send to a daemon on this machine: an C{interface}
    that would be resolved or would bind a wildcard, and a port number
    other than 0 and C{numbers}, are replaced; everything else is kept.
    """
    if not isinstance(body, dict):
        return body
    body = dict(body)
    interface = body.get("interface")
    if isinstance(interface, str) and interface not in SAFE_INTERFACES:
        body["interface"] = "127.0.0.1"
    port = body.get("port")
    if type(port) is int and 1 <= port <= 65535 and port not in numbers:
        body["port"] = 0
    return body


def adminBodies(numbers: list[int], ports: list[object]) -> st.SearchStrategy:
    """
    Bodies for POST and PUT: any JSON value, or a C{[[port]]} table as in
    the configuration properties (its values JSON), on a safe interface
    and with its C{port} (if any) drawn from C{ports}; all made safe for
    a daemon whose ports are C{numbers} (see L{sanitize}).
    """
    absent = object()

    def safe(table):
        return st.fixed_dictionaries(
            {
                "interface": st.sampled_from(SAFE_INTERFACES),
                "port": st.sampled_from([*ports, absent]),
            }
        ).map(lambda values: place(table, values))

    def place(table, values):
        table = dict(table)
        if "interface" in table:
            table["interface"] = values["interface"]
        table.pop("port", None)
        if values["port"] is not absent:
            table["port"] = values["port"]
        return table

    tables = portTables(JSON_VALUES).flatmap(safe)
    return st.one_of(JSON_VALUES, tables, tables, tables).map(
        lambda body: sanitize(body, numbers)
    )


class AdminAPIProperties(TestCase):
    """
    Any JSON body to the admin API of a real service on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.echo = freePort()
        self.target = freePort()
        self.status = freePort()
        self.stateDir = self.mktemp()
        config = configFor(
            f"127.0.0.1:{self.echo}=echo,127.0.0.1:{self.target}=discard,"
            f"127.0.0.1:{self.status}=status",
            self.stateDir,
        )
        self.service = PortsService(
            config,
            HANDLERS,
            {},
            reactor,
            defaults=Defaults(interface="127.0.0.1"),
            adminToken=TOKEN,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.numbers = [self.echo, self.target, self.status]

    def call(self, method: bytes, path: str, data: bytes):
        """
        One request to the status port's site, as it arrived on it (see
        tests/test_api.py); the parsed response.
        """
        from tests.test_status import parseResponse

        site = self.service.namedServices[
            f"tcp:127.0.0.1:{self.status}"
        ].factory.wrappedFactory
        channel = site.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", self.status)
        )
        channel.makeConnection(transport)
        channel.dataReceived(
            method + b" " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(data),) + data
        )
        self.assertTrue(transport.disconnecting, transport.value())
        response = parseResponse(transport.value())
        self.assertEqual(response.header(b"content-type"), b"application/json")
        return response

    def checkAnswer(self, response, body) -> None:
        """
        A 2xx, or a 4xx with a JSON C{error}; never a 5xx, nor an error
        logged.
        """
        logged = self.flushLoggedErrors()
        self.assertTrue(
            200 <= response.status < 300 or 400 <= response.status < 500,
            (body, response.status, response.body),
        )
        if response.status >= 400:
            self.assertIsInstance(json.loads(response.body)["error"], str)
        self.assertEqual(logged, [])

    @inlineCallbacks
    def stillServes(self):
        """
        The echo port still echoes, through a real client.
        """
        from tests.test_endtoend import Collector

        client = Collector(b"still here", expected=10)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.echo).connect(
            Factory.forProtocol(lambda: client)
        )
        self.assertEqual((yield client.done), b"still here")
        self.assertEqual(
            [s.name for s in self.service.ports()],
            [f"tcp:127.0.0.1:{n}" for n in self.numbers],
        )

    @inlineCallbacks
    def test_post(self):
        """
        Any JSON value POSTed to /api/ports gets a 2xx or a 4xx with a JSON
        error, never a 500; a port it added is removed again; the echo
        port serves throughout.
        """

        @readable
        @fewer(50)
        @given(adminBodies(self.numbers, [0, 0, self.echo, self.status]))
        @example({"port": 0, "handler": "echo", "tls": True})
        @example([])
        def post(body):
            data = json.dumps(body).encode()
            response = self.call(b"POST", "/api/ports", data)
            self.checkAnswer(response, body)
            if response.status == 201:
                name = json.loads(response.body)["name"]
                removed = self.call(b"DELETE", f"/api/ports/{quote(name, '')}", b"")
                self.assertEqual(removed.status, 202, removed.body)

        post()
        yield self.stillServes()

    @inlineCallbacks
    def test_put(self):
        """
        Any JSON value PUT to /api/ports/NAME of a port (or of one that
        does not exist) gets a 2xx or a 4xx with a JSON error, never a 500;
        the echo port beside it serves throughout.
        """
        name = quote(f"tcp:127.0.0.1:{self.target}", "")

        @readable
        @fewer(50)
        @given(
            adminBodies(self.numbers, [self.target, self.target, 0]),
            st.sampled_from([True, True, True, False]),
        )
        @example({"handler": "echo", "port": "x"}, False)
        def put(body, exists):
            data = json.dumps(body).encode()
            path = f"/api/ports/{name if exists else 'tcp%3A127.0.0.1%3A1'}"
            response = self.call(b"PUT", path, data)
            self.checkAnswer(response, body)

        put()
        yield self.stillServes()

    # Fixed bug: the host name "a..b" raises UnicodeError in the service's
    # resolver (see FoundTests.test_hostNameRefusedByIDNA); the admin API
    # answers 500 "the change failed" and logs a traceback, where a bad
    # interface is a 400 naming the field.  Fixed with that bug.
    def test_hostNameRefusedByIDNA(self):
        """
        POST and PUT naming an interface the resolver refuses before any
        query answer 400, and nothing changes.
        """
        target = quote(f"tcp:127.0.0.1:{self.target}", "")
        for method, path, body in (
            (b"POST", "/api/ports", {"port": 0, "handler": "echo"}),
            (b"PUT", f"/api/ports/{target}", {"handler": "echo"}),
        ):
            body["interface"] = "a..b"
            response = self.call(method, path, json.dumps(body).encode())
            self.checkAnswer(response, body)
            self.assertEqual(response.status, 400, response.body)
        self.assertEqual(
            [(s.name, s.config.handler) for s in self.service.ports()],
            [
                (f"tcp:127.0.0.1:{self.echo}", "echo"),
                (f"tcp:127.0.0.1:{self.target}", "discard"),
                (f"tcp:127.0.0.1:{self.status}", "status"),
            ],
        )


# --------------------------------------------------------------------------
# 5. Raw HTTP thrown at the http and status handlers.

SECRET = b"TOP-SECRET-MARKER-7f3a9c"
SEGMENTS = st.sampled_from(
    [
        "",
        ".",
        "..",
        "...",
        "%2e%2e",
        "%2E%2E",
        "%2e%2e%2f",
        "..%2f",
        "..%5c",
        "%252e%252e",
        "..\\",
        "\\..\\",
        "%00",
        "%2f",
        "secret.txt",
        "outside",
        "link",
        "linkdir",
        "sub",
        "index.html",
        "etc",
        "passwd",
        "~",
        "%ff",
        ";",
        "?x=..",
        "#",
        "*",
    ]
)
_ABSOLUTE_PATHS = st.lists(SEGMENTS, min_size=1, max_size=5).map(
    lambda s: "/" + "/".join(s)
)
TARGETS = st.one_of(
    _ABSOLUTE_PATHS,
    _ABSOLUTE_PATHS,
    _ABSOLUTE_PATHS,
    st.lists(SEGMENTS, max_size=6).map("/".join),
    st.lists(SEGMENTS, max_size=4).map(lambda s: "http://example.com/" + "/".join(s)),
    st.sampled_from(["*", "", "//", "///etc/passwd", "/" + "a" * 5000]),
    st.text(max_size=20),
).map(lambda text: text.encode("utf-8", "surrogatepass"))
METHODS = st.one_of(
    st.sampled_from(
        [
            b"GET",
            b"HEAD",
            b"POST",
            b"PUT",
            b"DELETE",
            b"OPTIONS",
            b"TRACE",
            b"CONNECT",
            b"get",
            b"",
        ]
    ),
    st.binary(max_size=6),
)
HTTP_VERSIONS = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1", b""]
)
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"Range",
            b"If-Modified-Since",
            b"Authorization",
            b"Expect",
            b"Cookie",
            b"X-Forwarded-For",
        ]
    ),
    st.binary(max_size=8),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"example.com",
            b"0",
            b"5",
            b"-1",
            b"99999999999999999999",
            b"chunked",
            b"gzip, chunked",
            b"close",
            b"keep-alive",
            b"bytes=0-3",
            b"bytes=-1",
            b"bytes=9999999-",
            b"100-continue",
            b"Bearer x",
            b"",
        ]
    ),
    st.binary(max_size=12),
)


@st.composite
def rawRequests(draw):
    """
    The bytes of one or two HTTP requests: mostly well-formed ones with a
    fuzzed target (paths that try to leave the folder), else ones with a
    fuzzed method, version and headers, or any bytes at all.
    """
    mode = draw(st.integers(0, 9))
    if mode == 0:
        return draw(st.binary(max_size=200))
    requests = []
    for _ in range(draw(st.integers(1, 2))):
        target = draw(TARGETS)
        if mode < 6:
            method = draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST"]))
            version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
            headers = [(b"Host", b"example.com")]
            if method == b"POST":
                headers.append((b"Content-Length", b"2"))
            body = b"{}" if method == b"POST" else b""
            newline = b"\r\n"
        else:
            method = draw(METHODS)
            version = draw(HTTP_VERSIONS)
            headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4))
            if draw(st.booleans()):
                headers.insert(0, (b"Host", b"example.com"))
            body = draw(st.binary(max_size=10))
            newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
        head = method + b" " + target + b" " + version + newline
        for name, value in headers:
            head += name + b": " + value + newline
        requests.append(head + newline + body)
    return b"".join(requests)


class HTTPProperties(SynchronousTestCase):
    """
    Raw HTTP at the http handler (folder, built-in page, listing, redirect)
    and the status handler, through C{site.buildProtocol} and a
    L{StringTransport} on a memory reactor.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        cooperator = Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        self.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        base = Path(self.mktemp()).absolute()
        root = base / "www"
        (root / "sub").mkdir(parents=True)
        (root / "index.html").write_bytes(b"<p>the index</p>")
        (root / "sub" / "page.txt").write_bytes(b"inside")
        (base / "secret.txt").write_bytes(SECRET)
        (base / "outside").mkdir()
        (base / "outside" / "secret.txt").write_bytes(SECRET)
        (root / "link").symlink_to(base / "secret.txt")
        (root / "linkdir").symlink_to(base / "outside")
        self.root = root
        self.sites = {
            "folder": self.webSite({"root": str(root)}),
            "listing": self.webSite({"root": str(root), "listing": True}),
            "welcome": self.webSite({}),
            "redirect": self.webSite({"redirect_https": 8443}),
            "status": self.statusSite(),
        }

    def webSite(self, options):
        port = PortConfig(
            interface="127.0.0.1",
            port=8080,
            handler="http",
            tls=None,
            backlog=50,
            options=parseWebOptions(options, self.root),
        )
        context = HandlerContext(reactor=self.clock, clock=self.clock, port=port)
        return http.buildFactory(context)

    def statusSite(self):
        from tests.test_status import FakeDaemon, FakePort, portConfig

        context = HandlerContext(
            reactor=self.clock,
            clock=self.clock,
            port=portConfig("status", 9100),
            daemon=FakeDaemon([FakePort(portConfig("echo", 7))]),
        )
        return statusHandler.buildFactory(context)

    def settle(self) -> None:
        """
        Run what the memory reactor has due now (file streaming, deferred
        writes), a bounded number of turns.
        """
        for _ in range(200):
            now = self.clock.seconds()
            if not any(c.getTime() <= now for c in self.clock.getDelayedCalls()):
                return
            self.clock.advance(0)

    def quietly(self, site, data: bytes, points: list[int]) -> tuple[bytes, list]:
        """
        L{exchange}, and what it logged that it should not have: events
        with a traceback or at error level, and errors trial caught.
        """
        self.flushLoggedErrors()
        with capturedLogs() as events:
            output = self.exchange(site, data, points)
        problems = [
            formatEvent(e) or repr(e.get("log_failure"))
            for e in events
            if "log_failure" in e
            or e.get("isError")
            or e.get("log_level") in (LogLevel.error, LogLevel.critical)
        ]
        problems.extend(self.flushLoggedErrors())
        return output, problems

    def exchange(self, site, data: bytes, points: list[int]) -> bytes:
        """
        Feed C{data} in pieces to a new connection of C{site}, let the
        memory reactor run what it scheduled, then close the connection;
        everything written back.
        """
        channel = site.buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 53422),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        )
        channel.makeConnection(transport)
        for chunk in splits(data, points):
            if transport.disconnecting:
                break
            channel.dataReceived(chunk)
            self.settle()
        # Past the header timeout, then the idle one: whatever they do must
        # be clean.  Once the channel closed its transport, a real one would
        # call connectionLost next, as is done here.
        for timeout in (25, 100):
            if transport.disconnecting:
                break
            self.clock.advance(timeout)
            self.settle()
        channel.connectionLost(Failure(ConnectionDone()))
        for call in list(self.clock.getDelayedCalls()):
            if call.active():
                call.cancel()
        return transport.value()

    @readable
    @CHEAP
    @given(
        st.sampled_from(["folder", "listing", "welcome", "redirect", "status"]),
        rawRequests(),
        st.lists(st.integers(0, 300), max_size=4),
    )
    @example("folder", b"GET /link HTTP/1.1\r\nHost: x\r\n\r\n", [])
    @example("folder", b"GET /linkdir/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n", [])
    @example("folder", b"GET /%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n", [])
    @example("folder", b"GET /..%2fsecret.txt HTTP/1.0\r\n\r\n", [])
    @example("status", b"POST /api/ports HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", [])
    @example("welcome", b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n", [3])
    def test_anyRequest(self, which, data, points):
        """
        Whatever bytes arrive, in whatever pieces: nothing is logged at
        error level or with a traceback; the answer, if any, starts with an
        HTTP/1.x status line with a 3-digit code (HTTP/1.1, or the
        client's HTTP/1.0: Twisted answers in the version asked); and the
        marker file outside the served folder never appears in it.
        """
        output, problems = self.quietly(self.sites[which], data, points)
        self.assertEqual(problems, [])
        self.assertNotIn(SECRET, output)
        if output:
            self.assertRegex(output[:16], rb"\AHTTP/1\.[01] [1-5][0-9][0-9] ")
            if output.startswith(b"HTTP/1.0 "):
                self.assertIn(b" HTTP/1.0", data)

    # Fixed bug: a NUL in a request path ("GET /%00", "/index.html%00") reaches
    # twisted.web.static.File.getChild, whose FilePath.exists() raises
    # ValueError("embedded null byte"): every such request is a 500 and a
    # logged traceback (any client can flood the log).  Fix: in
    # multiport.handlers.webresources.ConfinedFile.getChild, answer
    # self.childNotFound (404) for a path segment holding b"\x00" before
    # calling super().getChild.
    def test_nulInPath(self):
        """
        A request path with a percent-encoded NUL is a clean 404, logged
        as nothing but the access line.
        """
        for target in (b"/%00", b"/sub/%00", b"/index.html%00", b"/a%00b"):
            output, problems = self.quietly(
                self.sites["folder"],
                b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                [],
            )
            self.assertEqual((output[:13], problems), (b"HTTP/1.1 404 ", []), target)

    # Fixed bug: a path segment that is not UTF-8 ("GET /%ff") makes
    # twisted.web.static.File.getChild log a traceback ("Could not decode
    # path segment as utf-8") before its 404: one traceback in the log per
    # request, for any client.  Fix: in
    # multiport.handlers.webresources.ConfinedFile.getChild, answer
    # self.childNotFound when path.decode("utf-8") fails, before calling
    # super().getChild (with the NUL check above).
    def test_nonUTF8Path(self):
        """
        A request path that is not UTF-8 is a 404 with no traceback
        logged.
        """
        for target in (b"/%ff", b"/sub/%c3", b"/%ff/index.html"):
            output, problems = self.quietly(
                self.sites["folder"],
                b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                [],
            )
            self.assertEqual((output[:13], problems), (b"HTTP/1.1 404 ", []), target)

    def test_insideIsServed(self):
        """
        The positive control: the folder site does serve its own files, so
        the marker's absence above is not an empty site's.
        """
        output = self.exchange(
            self.sites["folder"],
            b"GET /sub/page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            [],
        )
        self.assertTrue(output.startswith(b"HTTP/1.1 200 "), output)
        self.assertTrue(output.endswith(b"inside"), output)
        (self.root / "sub" / "secret.txt").write_bytes(SECRET)
        output = self.exchange(
            self.sites["folder"],
            b"GET /sub/secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            [],
        )
        self.assertIn(SECRET, output)


# --------------------------------------------------------------------------
# What the properties found, pinned one input each.


class FoundTests(SynchronousTestCase):
    """
    Inputs the properties above found mishandled, each pinned by itself so
    that its failure reads plainly.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()

    def build(self, table, resolve=fakeResolve):
        fileConfig = parseConfig({"port": [table]}, self.base, "multiport.toml")
        return buildConfig(
            fileConfig.ports, Defaults(), HANDLERS, self.base, resolve=resolve
        )

    # Fixed bug: a host name the idna codec refuses ("a..b", a label over 63
    # characters, a lone surrogate from the admin API's JSON) makes
    # socket.getaddrinfo raise UnicodeError before any query, and
    # multiport.config.model._interfaces catches only OSError: the name ends in
    # a traceback (`twistd multiport --ports a..b:7000=echo`, a file's
    # `interface = "a..b"`) or a 500 from the admin API.  Fix: catch
    # UnicodeError (and ValueError) in _interfaces too, as "cannot resolve
    # host name".
    def test_hostNameRefusedByIDNA(self):
        """
        A host name the resolver refuses before asking anyone is a
        L{ConfigError}, with the real resolver (no query is sent: the idna
        codec refuses it first).
        """
        from multiport.config.model import resolveHostName

        for name in ("a..b", "x" * 64 + ".test"):
            requests = parsePorts(f"{name}:7000=echo")
            error = self.assertRaises(
                ConfigError,
                buildConfig,
                requests,
                Defaults(),
                HANDLERS,
                self.base,
                resolveHostName,
            )
            self.assertIn(name, str(error))

    # Fixed bug: a NUL in a path option reaches Path.resolve(), which raises
    # ValueError("embedded null byte") instead of an OptionError (TOML and
    # JSON can both carry "\u0000").  Fix: refuse "\x00" in
    # multiport.handlers.weboptions.parseWebOptions (root) and
    # multiport.handlers.relayoptions.parseRelayOptions (upstream_ca) with an
    # OptionError.
    def test_nulInPathOptions(self):
        """
        A NUL in C{root} or C{upstream_ca} is a L{ConfigError} naming the
        option.
        """
        for handler, options, key in (
            ("http", {"root": "a\x00b"}, "root"),
            (
                "relay",
                {
                    "upstream": "127.0.0.1:1",
                    "upstream_tls": True,
                    "upstream_ca": "a\x00b",
                },
                "upstream_ca",
            ),
        ):
            table = {"port": 7000, "handler": handler, "options": options}
            error = self.assertRaises(ConfigError, self.build, table)
            self.assertTrue(error.where.endswith(f".options.{key}"), error.where)

    # Fixed bug: multiport.handlers.relayoptions.parseUpstream takes str.isdigit() for
    # a port number: "x:\u00b2" (superscript two) passes it and int()
    # raises ValueError; "x:\u0663" (an Arabic-Indic three) is quietly
    # taken as port 3, where the --ports grammar refuses non-ASCII digits.
    # Fix: `portText.isascii() and portText.isdigit()`, as portspec does.
    def test_nonASCIIUpstreamPort(self):
        """
        An upstream port written with non-ASCII digits is a L{ConfigError}
        naming C{options.upstream}.
        """
        for upstream in ("x:\u00b2", "x:\u0663"):
            table = {
                "port": 7000,
                "handler": "relay",
                "options": {"upstream": upstream},
            }
            error = self.assertRaises(ConfigError, self.build, table)
            self.assertTrue(error.where.endswith(".options.upstream"), error.where)

    # Fixed bug: multiport.config.tomlfile._expect looks its article up in
    # _ARTICLES, which has no entry for list: `tls = { alpn = "h2" }` (a
    # string where an array belongs, an easy slip) raises KeyError instead
    # of a ConfigError.  Fix: add `list: "an array"` to _ARTICLES.
    def test_alpnNotAnArray(self):
        """
        C{alpn} given as a string is a L{ConfigError} naming
        C{tls.alpn}.
        """
        for tls in ({"alpn": "http/1.1"}, {"alpn": ""}):
            table = {"port": 7000, "handler": "echo", "tls": tls}
            error = self.assertRaises(ConfigError, self.build, table)
            self.assertTrue(error.where.endswith(".tls.alpn"), error.where)

    # Fixed bug: tomllib recurses once per nesting level, so a file with arrays
    # (or inline tables) nested about 500 deep raises RecursionError, which
    # multiport.config.tomlfile.readConfigFile does not catch: a traceback
    # instead of one line naming the file.  Fix: catch RecursionError
    # around tomllib.loads and raise ConfigError(path, "nested too
    # deeply").
    def test_deeplyNestedFile(self):
        """
        A file nested deeper than the parser can follow is a L{ConfigError}
        naming the file.
        """
        path = self.base / "multiport.toml"
        for text in (
            "x = " + "[" * 1200 + "]" * 1200,
            "x = " + "{a = " * 1200 + "1" + "}" * 1200,
        ):
            path.write_text(text)
            error = self.assertRaises(ConfigError, readConfigFile, path)
            self.assertTrue(error.where.startswith(str(path)), str(error))
