"""
Tests for L{multiport.config.portspec}: the C{--ports} grammar.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import ConfigError
from multiport.config.portspec import parsePortItem, parsePorts


class ParsePortItemTests(SynchronousTestCase):
    """
    Tests for L{parsePortItem}, one C{[HOST:]PORT[=HANDLER[+tls]]} item.
    """

    def assertItemError(self, item: str, message: str) -> None:
        """
        Parsing C{item} raises a L{ConfigError} at C{"ITEM"} with C{message}.
        """
        error = self.assertRaises(ConfigError, parsePortItem, item, "ITEM")
        self.assertEqual(error.where, "ITEM")
        self.assertEqual(error.message, message)
        self.assertEqual(str(error), f"ITEM: {message}")

    def test_barePort(self):
        """
        A bare number is a port with no host, handler or TLS said.
        """
        request = parsePortItem("8080", "ITEM")
        self.assertEqual(
            (request.where, request.port, request.host, request.handler, request.tls),
            ("ITEM", 8080, None, None, None),
        )

    def test_surroundingWhitespace(self):
        """
        Whitespace around an item is ignored.
        """
        request = parsePortItem("  7000=echo \t", "ITEM")
        self.assertEqual((request.port, request.handler), (7000, "echo"))

    def test_portZero(self):
        """
        Port 0 (pick a free port) is accepted.
        """
        self.assertEqual(parsePortItem("0=echo", "ITEM").port, 0)

    def test_highestPort(self):
        """
        Port 65535 is the highest accepted.
        """
        self.assertEqual(parsePortItem("65535=echo", "ITEM").port, 65535)

    def test_hostAndPort(self):
        """
        C{HOST:PORT} sets the host to the text before the colon.
        """
        request = parsePortItem("127.0.0.1:80", "ITEM")
        self.assertEqual((request.host, request.port), ("127.0.0.1", 80))

    def test_hostName(self):
        """
        A host name is kept as written, for the configuration to resolve.
        """
        request = parsePortItem("localhost:8080=http", "ITEM")
        self.assertEqual(
            (request.host, request.port, request.handler),
            ("localhost", 8080, "http"),
        )

    def test_bracketedIPv6(self):
        """
        C{[ADDRESS]:PORT} sets the host to the IPv6 address without brackets.
        """
        request = parsePortItem("[::1]:8443", "ITEM")
        self.assertEqual((request.host, request.port), ("::1", 8443))

    def test_bracketedIPv6WithHandlerAndTLS(self):
        """
        A bracketed IPv6 host combines with a handler and C{+tls}.
        """
        request = parsePortItem("[2001:db8::5]:9000=http+tls", "ITEM")
        self.assertEqual(
            (request.host, request.port, request.handler, request.tls),
            ("2001:db8::5", 9000, "http", True),
        )

    def test_handler(self):
        """
        C{PORT=HANDLER} names the handler and leaves TLS unsaid.
        """
        request = parsePortItem("7000=echo", "ITEM")
        self.assertEqual(
            (request.port, request.handler, request.tls), (7000, "echo", None)
        )

    def test_handlerNameCharacters(self):
        """
        Handler names may hold digits, C{-} and C{_} after the first character.
        """
        self.assertEqual(
            parsePortItem("1=my-handler_2", "ITEM").handler, "my-handler_2"
        )

    def test_tlsSuffix(self):
        """
        C{+tls} after the handler asks for TLS.
        """
        request = parsePortItem("7443=echo+tls", "ITEM")
        self.assertEqual((request.handler, request.tls), ("echo", True))

    def test_optionsBaseDefaultsToWorkingDirectory(self):
        """
        Without C{relativeTo}, handler options resolve against the working
        directory.
        """
        self.assertEqual(parsePortItem("80", "ITEM").optionsBase, Path.cwd())

    def test_optionsBaseRelativeTo(self):
        """
        C{relativeTo} becomes the folder handler options resolve against.
        """
        request = parsePortItem("80", "ITEM", relativeTo=Path("/srv/site"))
        self.assertEqual(request.optionsBase, Path("/srv/site"))

    def test_noOptions(self):
        """
        A command-line item carries no handler options.
        """
        self.assertEqual(dict(parsePortItem("80=http", "ITEM").options), {})

    def test_unknownSuffix(self):
        """
        A suffix other than C{+tls} is rejected, naming the suffix.
        """
        self.assertItemError(
            "7000=echo+ssl", "unknown suffix '+ssl'; only '+tls' is known"
        )

    def test_emptySuffix(self):
        """
        A C{+} with nothing after it is an unknown (empty) suffix.
        """
        self.assertItemError("7000=echo+", "unknown suffix '+'; only '+tls' is known")

    def test_doubledSuffix(self):
        """
        C{+tls+tls} is an unknown suffix, not TLS twice.
        """
        self.assertItemError(
            "7000=echo+tls+tls", "unknown suffix '+tls+tls'; only '+tls' is known"
        )

    def test_nonNumberPort(self):
        """
        A port that is not a number is rejected, naming it.
        """
        self.assertItemError("http", "port 'http' is not a number")

    def test_negativePort(self):
        """
        A negative port is not a number in this grammar.
        """
        self.assertItemError("-1=echo", "port '-1' is not a number")

    def test_nonASCIIDigits(self):
        """
        Digits outside ASCII are not accepted as a port number.
        """
        self.assertItemError("\u0663\u0660", "port '\u0663\u0660' is not a number")

    def test_missingPortAfterHost(self):
        """
        C{HOST:} with no port is rejected, naming the empty port.
        """
        self.assertItemError("127.0.0.1:=echo", "port '' is not a number")

    def test_missingPortBeforeHandler(self):
        """
        C{=HANDLER} with no port is rejected.
        """
        self.assertItemError("=echo", "port '' is not a number")

    def test_outOfRange(self):
        """
        A port above 65535 is rejected, naming it.
        """
        self.assertItemError("65536", "port 65536 out of range 0-65535")

    def test_unbracketedIPv6(self):
        """
        An IPv6 address without brackets is rejected with a hint.
        """
        self.assertItemError(
            "::1:80", "bad address '::1:80'; write IPv6 as [ADDRESS]:PORT"
        )

    def test_unclosedBracket(self):
        """
        An opening bracket without a closing one is rejected.
        """
        self.assertItemError(
            "[::1:80", "bad address '[::1:80'; write IPv6 as [ADDRESS]:PORT"
        )

    def test_bracketWithoutPort(self):
        """
        A bracketed address not followed by C{:PORT} is rejected.
        """
        self.assertItemError(
            "[::1]80", "bad address '[::1]80'; write IPv6 as [ADDRESS]:PORT"
        )

    def test_bracketedIPv4(self):
        """
        Brackets around an IPv4 address are rejected, naming the address.
        """
        self.assertItemError(
            "[127.0.0.1]:80", "'127.0.0.1' in brackets is not an IPv6 address"
        )

    def test_bracketedNonAddress(self):
        """
        Brackets around text that is not an IPv6 address are rejected, naming
        the text.
        """
        self.assertItemError("[zz:zz]:80", "'zz:zz' in brackets is not an IPv6 address")

    def test_missingHost(self):
        """
        A colon with no host before it is rejected.
        """
        self.assertItemError(":80", "missing host before ':' in ':80'")

    def test_emptyItem(self):
        """
        An empty item is rejected.
        """
        self.assertItemError("", "empty item")

    def test_blankItem(self):
        """
        An item of only whitespace is empty.
        """
        self.assertItemError("   ", "empty item")

    def test_emptyHandlerName(self):
        """
        C{PORT=} with no handler is a bad (empty) handler name.
        """
        self.assertItemError("80=", "bad handler name ''")

    def test_uppercaseHandlerName(self):
        """
        Handler names are lowercase; an uppercase one is rejected, naming it.
        """
        self.assertItemError("80=HTTP", "bad handler name 'HTTP'")

    def test_handlerNameStartingWithDash(self):
        """
        A handler name must not start with C{-}.
        """
        self.assertItemError("80=-echo", "bad handler name '-echo'")


class ParsePortsTests(SynchronousTestCase):
    """
    Tests for L{parsePorts}, a whole comma-separated C{--ports} value.
    """

    def test_items(self):
        """
        Each comma-separated item becomes one request, in order.
        """
        requests = parsePorts("80,[::1]:7000=echo,443=https+tls")
        self.assertEqual(
            [(r.host, r.port, r.handler, r.tls) for r in requests],
            [
                (None, 80, None, None),
                ("::1", 7000, "echo", None),
                (None, 443, "https", True),
            ],
        )

    def test_whereNumbersItemsFromOne(self):
        """
        Each request's C{where} numbers it from 1 and quotes the stripped item.
        """
        requests = parsePorts("80, 7000=echo")
        self.assertEqual(
            [r.where for r in requests],
            ["--ports item 1 '80'", "--ports item 2 '7000=echo'"],
        )

    def test_whereNumbersFromFirst(self):
        """
        C{first} numbers the items after those of earlier C{--ports} options.
        """
        requests = parsePorts("80,81=echo", first=3)
        self.assertEqual(
            [r.where for r in requests],
            ["--ports item 3 '80'", "--ports item 4 '81=echo'"],
        )

    def test_errorNamesItem(self):
        """
        An error in one item names that item's number and text.
        """
        error = self.assertRaises(ConfigError, parsePorts, "80,http,443")
        self.assertEqual(error.where, "--ports item 2 'http'")
        self.assertEqual(error.message, "port 'http' is not a number")

    def test_errorNamesItemFromFirst(self):
        """
        An error's item number counts from C{first}.
        """
        error = self.assertRaises(ConfigError, parsePorts, "80,99999", first=5)
        self.assertEqual(error.where, "--ports item 6 '99999'")
        self.assertEqual(error.message, "port 99999 out of range 0-65535")

    def test_trailingComma(self):
        """
        A trailing comma leaves an empty item, which is rejected.
        """
        error = self.assertRaises(ConfigError, parsePorts, "80,")
        self.assertEqual(error.where, "--ports item 2 ''")
        self.assertEqual(error.message, "empty item")
