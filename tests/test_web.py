"""
Tests for the http and https handlers (L{multiport.handlers.web}), driven
through the real C{twisted.web} site with raw HTTP requests.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from unittest import SkipTest

from attrs import frozen
from twisted.internet import _producer_helpers
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server

from benchmarks.profiles import topSyscalls
from multiport import __version__
from multiport.config.model import PortConfig
from multiport.handlers.byteranges import (
    Part,
    RangePlan,
    parseRangeHeader,
    planRanges,
)
from multiport.handlers.filecache import StatCache
from multiport.handlers.interface import HandlerContext, OptionError
from multiport.handlers.leanfast import SETTLED
from multiport.handlers.web import http, https
from multiport.handlers.weboptions import WebOptions, parseWebOptions
from multiport.handlers.webresources import ConfinedFile
from tests.support import configuredDaemon, dataSegmentsIn

#: nginx's "combined" log format as log parsers read it (fail2ban's and
#: goaccess's COMBINED): the client address is a bare token.
COMBINED = re.compile(
    r"(?P<client>[0-9A-Fa-f.:]+|-) - - \[(?P<time>[^\]]+)\] "
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"'
)


@frozen
class _Response:
    """
    One parsed HTTP response.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """
        The only value of header C{name}, or C{None} if absent.
        """
        values = self.headers.get(name.lower(), [])
        assert len(values) <= 1, values
        return values[0] if values else None


def _parse(data: bytes) -> _Response:
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, data
    statusLine, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return _Response(int(statusLine.split(b" ")[1]), headers, body)


class _WebTestCase(SynchronousTestCase):
    """
    Builds http ports on a memory reactor and sends them requests.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        # twisted.web streams files with a pull producer that Twisted drives
        # with the global cooperator (the global reactor); drive it with
        # this test's clock instead.
        cooperator = Cooperator(scheduler=lambda f: self.reactor.callLater(0, f))
        self.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()

    def site(
        self, options: dict[str, object], interface: str = "127.0.0.1"
    ) -> server.Site:
        """
        The site an http port with C{options} serves.
        """
        port = PortConfig(
            interface=interface,
            port=8080,
            handler="http",
            tls=None,
            backlog=50,
            options=parseWebOptions(options, self.base),
        )
        context = HandlerContext(reactor=self.reactor, clock=self.reactor, port=port)
        return http.buildFactory(context)

    def request(
        self,
        site: server.Site,
        target: bytes,
        method: bytes = b"GET",
        host: bytes = b"example.com",
    ) -> _Response:
        """
        Send one request to C{site} and return its complete response.
        """
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        for _ in range(1000):
            if transport.disconnecting:
                break
            self.reactor.advance(0)
        else:
            self.fail(f"no complete response: {transport.value()!r}")
        return _parse(transport.value())


class WelcomePageTests(_WebTestCase):
    """
    Tests for the built-in page served without a root.
    """

    def test_get(self) -> None:
        """
        GET / answers 200 with the built-in HTML page naming the port.
        """
        response = self.request(self.site({}), b"/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertIn(b"<h1>multiport is running</h1>", response.body)
        self.assertIn(b"built-in page of tcp:127.0.0.1:8080.", response.body)
        self.assertIn(f"multiport {__version__}".encode(), response.body)
        self.assertEqual(response.header(b"content-length"), b"%d" % len(response.body))

    def test_ipv6PortName(self) -> None:
        """
        An IPv6 port name is shown bracketed.
        """
        response = self.request(self.site({}, interface="::1"), b"/")
        self.assertIn(b"built-in page of tcp:[::1]:8080.", response.body)

    def test_head(self) -> None:
        """
        HEAD / answers 200 with the GET response's headers and no body.
        """
        site = self.site({})
        get = self.request(site, b"/")
        head = self.request(site, b"/", method=b"HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertEqual(head.header(b"content-length"), b"%d" % len(get.body))
        self.assertEqual(head.header(b"content-type"), b"text/html; charset=utf-8")

    def test_otherPathNotFound(self) -> None:
        """
        Any other path is not found.
        """
        site = self.site({})
        self.assertEqual(self.request(site, b"/index.html").status, 404)
        self.assertEqual(self.request(site, b"/a/b").status, 404)

    def test_query(self) -> None:
        """
        A query string on / still gets the page.
        """
        response = self.request(self.site({}), b"/?x=1")
        self.assertEqual(response.status, 200)
        self.assertIn(b"multiport is running", response.body)


class RootTests(_WebTestCase):
    """
    Tests for serving a folder.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = self.base / "root"
        self.outside = self.base / "outside"
        self.root.mkdir()
        self.outside.mkdir()
        (self.root / "hello.txt").write_bytes(b"hello, world\n")
        (self.root / "empty").mkdir()
        (self.root / "indexed").mkdir()
        (self.root / "indexed" / "index.html").write_bytes(b"<p>index</p>\n")
        (self.root / "listed").mkdir()
        (self.root / "listed" / "a-file.txt").write_bytes(b"a\n")
        (self.outside / "secret.txt").write_bytes(b"the secret\n")

    def assertNotServed(self, response: _Response) -> None:
        """
        C{response} is a 404 that does not hold the outside file.
        """
        self.assertTrue((self.outside / "secret.txt").is_file())
        self.assertEqual(response.status, 404)
        self.assertNotIn(b"the secret", response.body)

    def test_file(self) -> None:
        """
        A file in the root is served with its contents.
        """
        response = self.request(self.site({"root": "root"}), b"/hello.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello, world\n")
        self.assertEqual(response.header(b"content-type"), b"text/plain")

    def test_missingFile(self) -> None:
        """
        A file that does not exist is not found.
        """
        response = self.request(self.site({"root": "root"}), b"/nope.txt")
        self.assertEqual(response.status, 404)

    def test_index(self) -> None:
        """
        A folder with an index.html serves it, listing off or not.
        """
        response = self.request(self.site({"root": "root"}), b"/indexed/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"<p>index</p>\n")

    def test_listingOff(self) -> None:
        """
        Without listing, a folder without an index is forbidden.
        """
        response = self.request(self.site({"root": "root"}), b"/listed/")
        self.assertEqual(response.status, 403)
        self.assertIn(b"Directory listing is off.", response.body)
        self.assertNotIn(b"a-file.txt", response.body)

    def test_listingOffAtRoot(self) -> None:
        """
        Without listing, the root folder itself (no index) is forbidden.
        """
        response = self.request(self.site({"root": "root"}), b"/")
        self.assertEqual(response.status, 403)

    def test_listingOn(self) -> None:
        """
        With listing, a folder without an index is listed.
        """
        site = self.site({"root": "root", "listing": True})
        response = self.request(site, b"/listed/")
        self.assertEqual(response.status, 200)
        self.assertIn(b"Directory listing for /listed/", response.body)
        self.assertIn(b"a-file.txt", response.body)

    def test_listingOnInSubfolders(self) -> None:
        """
        The listing setting carries down to nested folders.
        """
        (self.root / "listed" / "deeper").mkdir()
        site = self.site({"root": "root", "listing": True})
        response = self.request(site, b"/listed/deeper/")
        self.assertEqual(response.status, 200)
        self.assertIn(b"Directory listing for /listed/deeper/", response.body)

    def test_folderRedirect(self) -> None:
        """
        A folder asked for without its slash is redirected to it.
        """
        response = self.request(self.site({"root": "root"}), b"/indexed")
        self.assertEqual(response.status, 302)
        self.assertEqual(response.header(b"location"), b"/indexed/")

    def test_dotDot(self) -> None:
        """
        A literal .. segment does not leave the root.
        """
        site = self.site({"root": "root"})
        self.assertNotServed(self.request(site, b"/../outside/secret.txt"))
        self.assertNotServed(self.request(site, b"/empty/../../outside/secret.txt"))

    def test_percentEncodedDotDot(self) -> None:
        """
        A percent-encoded .. segment does not leave the root.
        """
        site = self.site({"root": "root"})
        self.assertNotServed(self.request(site, b"/%2e%2e/outside/secret.txt"))
        self.assertNotServed(self.request(site, b"/%2E%2E/outside/secret.txt"))
        self.assertNotServed(
            self.request(site, b"/empty/%2e%2e/%2e%2e/outside/secret.txt")
        )

    def test_percentEncodedSlash(self) -> None:
        """
        A segment hiding slashes as %2f does not leave the root.
        """
        site = self.site({"root": "root"})
        self.assertNotServed(self.request(site, b"/..%2foutside%2fsecret.txt"))
        self.assertNotServed(self.request(site, b"/%2e%2e%2foutside%2fsecret.txt"))

    def test_absolutePathSegment(self) -> None:
        """
        A segment that is an absolute path does not leave the root.
        """
        site = self.site({"root": "root"})
        secret = str(self.outside / "secret.txt").encode()
        self.assertNotServed(self.request(site, b"/" + secret.replace(b"/", b"%2f")))

    def test_symlinkToOutsideFile(self) -> None:
        """
        A symlink in the root to a file outside it is not found.
        """
        os.symlink(self.outside / "secret.txt", self.root / "link.txt")
        self.assertNotServed(self.request(self.site({"root": "root"}), b"/link.txt"))

    def test_symlinkToOutsideFolder(self) -> None:
        """
        A symlink in the root to a folder outside it is not followed.
        """
        os.symlink(self.outside, self.root / "linked")
        site = self.site({"root": "root", "listing": True})
        self.assertNotServed(self.request(site, b"/linked/secret.txt"))
        self.assertNotServed(self.request(site, b"/linked/"))

    def test_indexSymlinkToOutside(self) -> None:
        """
        An index.html that is a symlink to a file outside the root is not
        served.
        """
        os.symlink(self.outside / "secret.txt", self.root / "empty" / "index.html")
        self.assertNotServed(self.request(self.site({"root": "root"}), b"/empty/"))

    def test_symlinkInside(self) -> None:
        """
        A symlink to a file inside the root is served.
        """
        os.symlink(self.root / "hello.txt", self.root / "empty" / "alias.txt")
        response = self.request(self.site({"root": "root"}), b"/empty/alias.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello, world\n")

    def test_rootThroughSymlink(self) -> None:
        """
        A root given through a symlink serves its files.
        """
        os.symlink(self.root, self.base / "alias")
        response = self.request(self.site({"root": "alias"}), b"/hello.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello, world\n")

    def test_filesystemRoot(self) -> None:
        """
        With C{/} as the root, a file anywhere is served.
        """
        response = self.request(
            self.site({"root": "/"}), str(self.root / "hello.txt").encode()
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello, world\n")


class RedirectTests(_WebTestCase):
    """
    Tests for redirect_https.
    """

    def test_port(self) -> None:
        """
        A port number redirects permanently to that port on the requested
        host, keeping the path and query.
        """
        site = self.site({"redirect_https": 8443})
        response = self.request(site, b"/a/b?q=1&r=2", host=b"example.com:8080")
        self.assertEqual(response.status, 301)
        self.assertEqual(
            response.header(b"location"), b"https://example.com:8443/a/b?q=1&r=2"
        )
        self.assertEqual(response.body, b"Moved to HTTPS.\n")

    def test_port443(self) -> None:
        """
        Port 443 is left out of the location.
        """
        site = self.site({"redirect_https": 443})
        response = self.request(site, b"/path?q", host=b"example.com:8080")
        self.assertEqual(response.status, 301)
        self.assertEqual(response.header(b"location"), b"https://example.com/path?q")

    def test_ipv6Host(self) -> None:
        """
        An IPv6 literal host is bracketed in the location.
        """
        site = self.site({"redirect_https": 8443})
        response = self.request(site, b"/x", host=b"[::1]:8080")
        self.assertEqual(response.header(b"location"), b"https://[::1]:8443/x")

    def test_url(self) -> None:
        """
        A URL redirects to it with the request's path and query appended.
        """
        site = self.site({"redirect_https": "https://secure.example/base/"})
        response = self.request(site, b"/a/b?q=1")
        self.assertEqual(response.status, 301)
        self.assertEqual(
            response.header(b"location"), b"https://secure.example/base/a/b?q=1"
        )

    def test_anyMethod(self) -> None:
        """
        Methods other than GET are redirected too.
        """
        site = self.site({"redirect_https": 443})
        response = self.request(site, b"/form", method=b"POST")
        self.assertEqual(response.status, 301)
        self.assertEqual(response.header(b"location"), b"https://example.com/form")


class AccessLogTests(_WebTestCase):
    """
    Each request leaves a line in the C{multiport.access} namespace: the
    port's name, then the combined log format.
    """

    def logged(self, options: dict[str, object]) -> list[dict[str, object]]:
        site = self.site(options)
        site.startFactory()
        self.addCleanup(site.stopFactory)
        with capturedLogs() as events:
            self.request(site, b"/missing?q=1", method=b"HEAD")
        return [e for e in events if e["log_namespace"] == "multiport.access"]

    def test_line(self) -> None:
        """
        The port's name, then the request in nginx's combined format with
        the client address unquoted.
        """
        [event] = self.logged({})
        port, line = formatEvent(event).split(" ", 1)
        self.assertEqual(port, "tcp:127.0.0.1:8080")
        match = COMBINED.fullmatch(line)
        assert match is not None, line
        self.assertEqual(
            match.groupdict(),
            {
                "client": "192.168.1.1",
                "time": match["time"],
                "request": "HEAD /missing?q=1 HTTP/1.1",
                "status": "404",
                "size": "-",
                "referer": "-",
                "agent": "-",
            },
        )
        self.assertRegex(match["time"], r"^\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000$")

    def test_fields(self) -> None:
        """
        The JSON log's fields: client address, method, target, protocol,
        status, bytes sent, referer, user agent, and the request time from
        its first line to its log line.
        """
        site = self.site({})
        site.startFactory()
        self.addCleanup(site.stopFactory)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        with capturedLogs() as events:
            channel.dataReceived(b"GET / HTTP/1.1\r\n")
            self.reactor.advance(0.25)
            channel.dataReceived(
                b"Host: example.com\r\nReferer: http://example.com/a?b=1\r\n"
                b'User-Agent: curl/8.5.0 "quoted"\r\nConnection: close\r\n\r\n'
            )
        [event] = [e for e in events if e["log_namespace"] == "multiport.access"]
        wanted = {
            "port",
            "client",
            "method",
            "uri",
            "protocol",
            "status",
            "sent",
            "referer",
            "user_agent",
            "request_time",
        }
        fields = {k: v for k, v in event.items() if k in wanted}
        self.assertEqual(
            fields,
            {
                "port": "tcp:127.0.0.1:8080",
                "client": "192.168.1.1",
                "method": "GET",
                "uri": "/",
                "protocol": "HTTP/1.1",
                "status": 200,
                "sent": fields["sent"],
                "referer": "http://example.com/a?b=1",
                "user_agent": 'curl/8.5.0 "quoted"',
                "request_time": 0.25,
            },
        )
        self.assertGreater(fields["sent"], 0)
        match = COMBINED.fullmatch(event["line"].split(" ", 1)[1])
        assert match is not None, event["line"]
        self.assertEqual(match["referer"], "http://example.com/a?b=1")
        self.assertEqual(match["agent"], 'curl/8.5.0 \\"quoted\\"')
        self.assertEqual(match["size"], str(fields["sent"]))

    def test_off(self) -> None:
        """
        access_log = false: no line.
        """
        self.assertEqual(self.logged({"access_log": False}), [])


class ParseWebOptionsTests(SynchronousTestCase):
    """
    Tests for L{parseWebOptions}.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        (self.base / "site").mkdir(parents=True)
        (self.base / "file.txt").write_bytes(b"x")

    def assertOptionError(
        self, options: dict[str, object], key: str, message: str
    ) -> None:
        """
        Parsing C{options} raises L{OptionError} for C{key} with C{message}.
        """
        error = self.assertRaises(OptionError, parseWebOptions, options, self.base)
        self.assertEqual((error.key, error.message), (key, message))

    def test_defaults(self) -> None:
        """
        No options: no root, no listing, no redirect.
        """
        self.assertEqual(parseWebOptions({}, self.base), WebOptions(None, False, None))

    def test_relativeRoot(self) -> None:
        """
        A relative root resolves against the base folder.
        """
        options = parseWebOptions({"root": "site", "listing": True}, self.base)
        self.assertEqual(
            options, WebOptions((self.base / "site").resolve(), True, None)
        )

    def test_absoluteRoot(self) -> None:
        """
        An absolute root is kept, resolved.
        """
        root = (self.base / "site").resolve()
        options = parseWebOptions({"root": str(root)}, Path("/elsewhere"))
        self.assertEqual(options.root, root)

    def test_equalParsesEqual(self) -> None:
        """
        Two parses of the same options compare equal.
        """
        self.assertEqual(
            parseWebOptions({"root": "site"}, self.base),
            parseWebOptions({"root": "./site/"}, self.base),
        )

    def test_rootNotFolder(self) -> None:
        """
        A root that is a file is refused.
        """
        self.assertOptionError(
            {"root": "file.txt"},
            "root",
            f"'file.txt' is not a folder ({(self.base / 'file.txt').resolve()})",
        )

    def test_rootMissing(self) -> None:
        """
        A root that does not exist is refused.
        """
        self.assertOptionError(
            {"root": "nope"},
            "root",
            f"'nope' is not a folder ({(self.base / 'nope').resolve()})",
        )

    def test_rootNotString(self) -> None:
        """
        A root that is not a string is refused.
        """
        error = self.assertRaises(OptionError, parseWebOptions, {"root": 5}, self.base)
        self.assertEqual(error.key, "root")

    def test_listingNotBool(self) -> None:
        """
        A listing that is not a boolean is refused.
        """
        error = self.assertRaises(
            OptionError, parseWebOptions, {"listing": "yes"}, self.base
        )
        self.assertEqual(error.key, "listing")

    def test_unknownKey(self) -> None:
        """
        An unknown option is refused under its own key.
        """
        self.assertOptionError(
            {"roots": "site"},
            "roots",
            "unknown option; known: access_log, hsts_max_age, http2, "
            "http2_max_concurrent_streams, http2_max_header_list_size, listing, "
            "redirect_https, root, sendfile, server_header",
        )

    def test_http2Options(self) -> None:
        """
        http2 is a boolean; the HTTP/2 limits are whole numbers from 1.
        """
        self.assertOptionError(
            {"http2": "yes"}, "http2", "expected true or false, got string 'yes'"
        )
        self.assertOptionError(
            {"http2_max_concurrent_streams": 0},
            "http2_max_concurrent_streams",
            "expected a whole number from 1 to 2147483647, got 0",
        )

    def test_redirectPort(self) -> None:
        """
        A port number in range is kept.
        """
        self.assertEqual(
            parseWebOptions({"redirect_https": 1}, self.base).redirectHTTPS, 1
        )
        self.assertEqual(
            parseWebOptions({"redirect_https": 65535}, self.base).redirectHTTPS, 65535
        )

    def test_redirectPortOutOfRange(self) -> None:
        """
        Ports 0 and 65536 are refused.
        """
        self.assertOptionError(
            {"redirect_https": 0}, "redirect_https", "port 0 out of range 1-65535"
        )
        self.assertOptionError(
            {"redirect_https": 65536},
            "redirect_https",
            "port 65536 out of range 1-65535",
        )

    def test_redirectURLTrailingSlash(self) -> None:
        """
        An https URL is kept without its trailing slashes.
        """
        options = parseWebOptions(
            {"redirect_https": "https://a.example/x//"}, self.base
        )
        self.assertEqual(options.redirectHTTPS, "https://a.example/x")

    def test_redirectNotHTTPS(self) -> None:
        """
        A URL that is not https is refused.
        """
        self.assertOptionError(
            {"redirect_https": "http://a.example"},
            "redirect_https",
            "'http://a.example' is not an https:// URL with a host",
        )

    def test_redirectNoHost(self) -> None:
        """
        An https URL without a host is refused.
        """
        self.assertOptionError(
            {"redirect_https": "https:///path"},
            "redirect_https",
            "'https:///path' is not an https:// URL with a host",
        )

    def test_redirectInjection(self) -> None:
        """
        A URL with a control character, a space, a user, a query or a bad
        port is refused: it would go into the Location header.
        """
        for value in [
            "https://a\r\nX: y",
            "https://a.example/x y",
            "https://a.example/\x00",
            "https://user@a.example",
            "https://a.example?x=1",
            "https://a.example:0",
            "https://a.example:70000",
            "https://a..b:x",
        ]:
            error = self.assertRaises(
                OptionError, parseWebOptions, {"redirect_https": value}, Path(".")
            )
            self.assertEqual(
                (error.key, error.message),
                ("redirect_https", f"{value!r} is not an https:// URL with a host"),
            )

    def test_redirectBool(self) -> None:
        """
        A boolean is neither a port nor a URL.
        """
        self.assertOptionError(
            {"redirect_https": True},
            "redirect_https",
            "expected a port number or an https:// URL, got True",
        )

    def test_accessLogNotBool(self) -> None:
        """
        access_log must be a boolean.
        """
        self.assertOptionError(
            {"access_log": "no"},
            "access_log",
            "expected true or false, got string 'no'",
        )

    def test_rootAndRedirect(self) -> None:
        """
        A root and a redirect together are refused.
        """
        self.assertOptionError(
            {"root": "site", "redirect_https": 443},
            "redirect_https",
            "cannot be combined with root",
        )


class HandlersTests(SynchronousTestCase):
    """
    Tests for the http and https handler objects.
    """

    def context(self) -> HandlerContext:
        """
        A context for an https port on a memory reactor.
        """
        reactor = MemoryReactorClock()
        port = PortConfig(
            interface="0.0.0.0",
            port=8443,
            handler="https",
            tls=None,
            backlog=50,
            options=WebOptions(),
        )
        return HandlerContext(reactor=reactor, clock=reactor, port=port)

    def test_names(self) -> None:
        """
        The handlers are named http and https; only https implies TLS.
        """
        self.assertEqual((http.name, http.impliesTLS), ("http", False))
        self.assertEqual((https.name, https.impliesTLS), ("https", True))

    def test_sameOptions(self) -> None:
        """
        https takes the same options as http.
        """
        base = Path(self.mktemp())
        base.mkdir()
        self.assertEqual(
            https.parseOptions({"listing": True}, base),
            http.parseOptions({"listing": True}, base),
        )

    def test_newSiteEachCall(self) -> None:
        """
        Every C{buildFactory} call returns a new site, without tracebacks in
        error pages, on the context's reactor.
        """
        context = self.context()
        first = https.buildFactory(context)
        second = https.buildFactory(context)
        self.assertIsInstance(first, server.Site)
        self.assertIsNot(first, second)
        self.assertFalse(first.displayTracebacks)
        self.assertIs(first.reactor, context.reactor)


class ParseRangeHeaderTests(SynchronousTestCase):
    """
    Tests for L{parseRangeHeader}.
    """

    def test_specs(self) -> None:
        """
        First-last, open-ended and suffix specs, with optional whitespace
        and empty list elements, in the order given.
        """
        self.assertEqual(
            parseRangeHeader(b"bytes=0-0, 5-, -3,,\t7-9 ,"),
            [(0, 0), (5, None), (None, 3), (7, 9)],
        )

    def test_unitCaseInsensitive(self) -> None:
        """
        The unit is compared without case (RFC 9110 section 14.1).
        """
        self.assertEqual(parseRangeHeader(b"Bytes=1-2"), [(1, 2)])

    def test_invalid(self) -> None:
        """
        Anything that is not a bytes range set is C{None}: another unit,
        no set at all, a bad spec anywhere in it, a last before its first,
        signs and underscores C{int()} would take.
        """
        for value in (
            b"items=0-1",
            b"bytes",
            b"bytes=",
            b"bytes=,",
            b"bytes = 1-2",
            b"bytes=1-2,x-y",
            b"bytes=-",
            b"bytes=3-1",
            b"bytes=+1-2",
            b"bytes=1_0-20",
            b"bytes=1 - 2",
            b"bytes=\xd9\xa1-2",
        ):
            self.assertIsNone(parseRangeHeader(value), value)


class PlanRangesTests(SynchronousTestCase):
    """
    Tests for L{planRanges} on a 1,000-byte file.
    """

    def plan(self, value: bytes, size: int = 1000, maxParts: int = 64) -> RangePlan:
        return planRanges([value], size, b"b" * 24, b"text/plain", maxParts)

    def parts(self, *pairs: tuple[int, int]) -> RangePlan:
        return RangePlan(tuple(Part(offset, size) for offset, size in pairs))

    def test_noHeader(self) -> None:
        """
        No Range, or two of them: the whole file.
        """
        self.assertTrue(planRanges(None, 1000, b"b", b"t").whole)
        twice = [b"bytes=0-1", b"bytes=2-3"]
        self.assertTrue(planRanges(twice, 1000, b"b", b"t").whole)

    def test_single(self) -> None:
        """
        One part, clipped to the file.
        """
        self.assertEqual(self.plan(b"bytes=10-19"), self.parts((10, 10)))
        self.assertEqual(self.plan(b"bytes=990-5000"), self.parts((990, 10)))
        self.assertEqual(self.plan(b"bytes=-10"), self.parts((990, 10)))
        self.assertEqual(self.plan(b"bytes=-5000"), self.parts((0, 1000)))
        self.assertEqual(self.plan(b"bytes=500-"), self.parts((500, 500)))

    def test_merged(self) -> None:
        """
        Overlapping and adjacent parts merge; merged parts keep the order
        of their first piece.
        """
        self.assertEqual(self.plan(b"bytes=0-1,2-3,1-5"), self.parts((0, 6)))
        self.assertEqual(
            self.plan(b"bytes=700-799,0-99,750-850,100-109"),
            self.parts((700, 151), (0, 110)),
        )

    def test_unsatisfiable(self) -> None:
        """
        No part inside the file: 416; one inside is kept.
        """
        self.assertTrue(self.plan(b"bytes=1000-").unsatisfiable)
        self.assertTrue(self.plan(b"bytes=-0,2000-3000").unsatisfiable)
        self.assertEqual(self.plan(b"bytes=2000-,5-5"), self.parts((5, 1)))

    def test_amplification(self) -> None:
        """
        Parts adding up to more than the file: the whole file.
        """
        self.assertTrue(self.plan(b"bytes=0-,0-").whole)
        self.assertTrue(self.plan(b"bytes=0-600,400-999").whole)

    def test_tooManyParts(self) -> None:
        """
        More parts than C{maxParts} after merging: the whole file.
        """
        spec = b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10) for i in range(4))
        self.assertEqual(len(self.plan(spec, 100000, maxParts=4).parts or ()), 4)
        self.assertTrue(self.plan(spec, 100000, maxParts=3).whole)

    def test_multipartOverhead(self) -> None:
        """
        A multipart answer larger than the file: the whole file.
        """
        self.assertTrue(self.plan(b"bytes=0-0,10-10", size=100).whole)
        self.assertEqual(
            self.plan(b"bytes=0-0,10-10", size=1000), self.parts((0, 1), (10, 1))
        )

    def test_emptyFile(self) -> None:
        """
        Any range of an empty file: the (empty) whole file.
        """
        self.assertTrue(self.plan(b"bytes=0-0", size=0).whole)


class ChangingFileTests(_WebTestCase):
    """
    A file that changes while it is being sent.
    """

    def setUp(self) -> None:
        super().setUp()
        (self.base / "root").mkdir()
        self.file = self.base / "root" / "big.bin"
        self.file.write_bytes(b"x" * 300_000)

    def start(self) -> tuple[StringTransport, object]:
        """
        Send a request for the file; the transport and the channel.
        """
        site = self.site({"root": "root"})
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"GET /big.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        return transport, channel

    def finish(self, transport: StringTransport) -> None:
        for _ in range(1000):
            if transport.disconnecting:
                return
            self.reactor.advance(0)
        self.fail("the response never ended")

    def test_grows(self) -> None:
        """
        Bytes added after the headers went out are not sent: the body is
        the Content-Length the headers promised.
        """
        transport, _ = self.start()
        with self.file.open("ab") as f:
            f.write(b"y" * 100_000)
        self.finish(transport)
        response = _parse(transport.value())
        self.assertEqual(response.header(b"content-length"), b"300000")
        self.assertEqual(response.body, b"x" * 300_000)
        self.assertFalse(transport.disconnected)

    def test_shrinks(self) -> None:
        """
        A file cut short after its length went out in the headers aborts
        the connection (the promised length can't be kept), and says so in
        the log.
        """
        transport, _ = self.start()
        with capturedLogs() as events:
            os.truncate(self.file, 100_000)
            self.finish(transport)
        self.assertTrue(transport.disconnected)
        self.assertLess(len(_parse(transport.value()).body), 300_000)
        self.assertTrue(
            any("shrank while being served" in formatEvent(e) for e in events)
        )


class IfModifiedSinceTests(_WebTestCase):
    """
    If-Modified-Since answers 304 only when RFC 9110 section 13.1.3 lets it.
    """

    def setUp(self) -> None:
        super().setUp()
        (self.base / "root").mkdir()
        page = self.base / "root" / "page.txt"
        page.write_bytes(b"page")
        os.utime(page, (1_000_000_000, 1_000_000_000))
        self.reactor.advance(2_000_000_000)

    def status(self, *headers: bytes, method: bytes = b"GET") -> int:
        channel = self.site({"root": "root"}).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            method
            + b" /page.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            + b"".join(h + b"\r\n" for h in headers)
            + b"\r\n"
        )
        for _ in range(100):
            if transport.disconnecting:
                break
            self.reactor.advance(0)
        return _parse(transport.value()).status

    def test_notModified(self) -> None:
        """
        A date at or after the file's, and not after now: 304, for GET and
        HEAD.
        """
        since = b"If-Modified-Since: Sun, 09 Sep 2001 01:46:40 GMT"
        self.assertEqual(self.status(since), 304)
        self.assertEqual(self.status(since, method=b"HEAD"), 304)
        later = b"If-Modified-Since: Wed, 18 May 2033 03:33:20 GMT"
        self.assertEqual(self.status(later), 304)

    def test_modified(self) -> None:
        """
        A date before the file's: 200.
        """
        self.assertEqual(
            self.status(b"If-Modified-Since: Sat, 08 Sep 2001 01:46:40 GMT"), 200
        )

    def test_ignored(self) -> None:
        """
        A date after now, a request with If-None-Match, two dates, or a
        date that is not one: 200.
        """
        since = b"If-Modified-Since: Sun, 09 Sep 2001 01:46:40 GMT"
        for headers in (
            [b"If-Modified-Since: Wed, 18 May 2033 03:33:21 GMT"],
            [since, b'If-None-Match: "x"'],
            [since, since],
            [b"If-Modified-Since: yesterday"],
        ):
            self.assertEqual(self.status(*headers), 200, headers)


class ServerHeaderTests(_WebTestCase):
    """
    The Server header: twisted.web's unless the port's server_header option
    turns it off or names another.
    """

    def test_default(self) -> None:
        """
        By default, twisted.web's own.
        """
        response = self.request(self.site({}), b"/")
        self.assertEqual(response.header(b"server"), server.version)

    def test_off(self) -> None:
        """
        server_header = false: no Server header, on pages and errors alike.
        """
        site = self.site({"server_header": False})
        for target in (b"/", b"/missing"):
            self.assertNotIn(b"server", self.request(site, target).headers)

    def test_named(self) -> None:
        """
        server_header = "text": that text.
        """
        site = self.site({"server_header": "edge/1 (ours)"})
        self.assertEqual(self.request(site, b"/").header(b"server"), b"edge/1 (ours)")
        self.assertEqual(
            self.request(site, b"/missing").header(b"server"), b"edge/1 (ours)"
        )

    def test_true(self) -> None:
        """
        server_header = true is the default.
        """
        self.assertEqual(
            parseWebOptions({"server_header": True}, self.base).serverHeader,
            server.version,
        )

    def test_bad(self) -> None:
        """
        Anything else is refused naming the option: a header line break,
        control characters, an empty or overlong name, another type.
        """
        for value, message in (
            ("a\r\nSet-Cookie: x=1", "'a\\r\\nSet-Cookie: x=1' is not"),
            ("", "'' is not"),
            (" lead", "' lead' is not"),
            ("x" * 257, "is not 1 to 256 visible ASCII"),
            ("caf\u00e9", "'caf\u00e9' is not"),
            (5, "expected true, false or a string, got integer 5"),
        ):
            error = self.assertRaises(
                OptionError, parseWebOptions, {"server_header": value}, self.base
            )
            self.assertEqual(error.key, "server_header")
            self.assertIn(message, error.message)


def readResponse(connection: socket.socket) -> _Response:
    """
    Read one response with a Content-Length from C{connection}.
    """
    data = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            response = _parse(data)
            length = response.header(b"content-length")
            assert length is not None, head
            if len(body) >= int(length):
                return response


class OneSegmentTests(SynchronousTestCase):
    """
    A real daemon sends each HTTP response (headers and body) in one TCP
    segment, as the client's kernel counts them (C{TCP_INFO}), over plain
    HTTP and over TLS, on a kept-alive connection.
    """

    def setUp(self) -> None:
        folder = Path(self.mktemp()).absolute()
        (folder / "www").mkdir(parents=True)
        (folder / "www" / "index.html").write_bytes(b"<p>" + b"x" * 2000 + b"</p>")
        self.stateDir = folder / "state"
        daemon = configuredDaemon(
            folder,
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "http"
            options = { root = "www" }

            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "https"
            """,
        )
        self.addCleanup(daemon.stop)
        self.ports = daemon.listening(3)

    def segmentsPerResponse(
        self, connection: socket.socket, path: str, count: int
    ) -> list[tuple[int, int]]:
        """
        GET C{path} C{count} times on C{connection}: each response's status
        and the data segments it came in.
        """
        seen = []
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        for _ in range(count):
            before = dataSegmentsIn(connection)
            connection.sendall(request)
            response = readResponse(connection)
            seen.append((response.status, dataSegmentsIn(connection) - before))
        return seen

    def test_http(self) -> None:
        """
        A file (which twisted.web streams from a producer) and an error
        page (rendered at once) each come in one segment.
        """
        with socket.create_connection(self.ports["http"], timeout=20) as connection:
            self.assertEqual(
                self.segmentsPerResponse(connection, "/index.html", 3), [(200, 1)] * 3
            )
            self.assertEqual(
                self.segmentsPerResponse(connection, "/missing", 3), [(404, 1)] * 3
            )

    def test_https(self) -> None:
        """
        Over TLS the headers' record and the body's record come in one
        segment (after the first response, which may share the connection
        with the session tickets TLS 1.3 sends after the handshake).
        """
        context = ssl.create_default_context(
            cafile=str(self.stateDir / "selfsigned-cert.pem")
        )
        with context.wrap_socket(
            socket.create_connection(self.ports["https"], timeout=20),
            server_hostname="localhost",
        ) as connection:
            self.segmentsPerResponse(connection, "/", 1)
            self.assertEqual(
                self.segmentsPerResponse(connection, "/", 3), [(200, 1)] * 3
            )


class DateHeaderTests(_WebTestCase):
    """
    The Date header is made from the port's clock, once a second.
    """

    def test_clock(self) -> None:
        """
        Date is the reactor's time, the same string within a second and
        the next one after it.
        """
        site = self.site({})
        self.reactor.advance(1_000_000_000.2)
        first = self.request(site, b"/").header(b"date")
        self.reactor.advance(0.5)
        same = self.request(site, b"/").header(b"date")
        self.reactor.advance(0.5)
        later = self.request(site, b"/").header(b"date")
        self.assertEqual(
            (first, same, later),
            (
                b"Sun, 09 Sep 2001 01:46:40 GMT",
                b"Sun, 09 Sep 2001 01:46:40 GMT",
                b"Sun, 09 Sep 2001 01:46:41 GMT",
            ),
        )


class FileMetadataTests(_WebTestCase):
    """
    What a request for a file costs and what it sees: the path's metadata
    is looked up no more than once a second, what is served always comes
    from the file as it is opened.
    """

    def setUp(self) -> None:
        super().setUp()
        (self.base / "root").mkdir()
        self.file = self.base / "root" / "page.txt"
        self.file.write_bytes(b"first")
        self.served = self.site({"root": "root"})
        self.stats: list[str] = []

        def counting(path: str) -> os.stat_result:
            self.stats.append(path)
            return os.stat(path)

        resource = self.served.resource
        self.assertIsInstance(resource, ConfinedFile)
        resource.statCache = StatCache(self.reactor, stat=counting)

    def test_statOncePerSecond(self) -> None:
        """
        Two requests within a second stat the file (and the root) once; a
        request a second later stats them again.
        """
        for _ in range(2):
            self.assertEqual(self.request(self.served, b"/page.txt").body, b"first")
        self.assertEqual(self.stats.count(str(self.file)), 1)
        self.assertEqual(self.stats.count(str(self.base / "root")), 1)
        self.reactor.advance(1)
        self.request(self.served, b"/page.txt")
        self.assertEqual(self.stats.count(str(self.file)), 2)

    def test_changedFileServedWhole(self) -> None:
        """
        A file rewritten within the second is served as it is now: its
        bytes, its length, its modification time.
        """
        self.request(self.served, b"/page.txt")
        self.file.write_bytes(b"second, longer")
        os.utime(self.file, (1_000_000_000, 1_000_000_000))
        response = self.request(self.served, b"/page.txt")
        self.assertEqual(
            (
                response.body,
                response.header(b"content-length"),
                response.header(b"last-modified"),
            ),
            (b"second, longer", b"14", b"Sun, 09 Sep 2001 01:46:40 GMT"),
        )

    def test_changedFileHead(self) -> None:
        """
        A HEAD for a file rewritten within the second has its length as it
        is now.
        """
        self.request(self.served, b"/page.txt")
        self.file.write_bytes(b"second, longer")
        response = self.request(self.served, b"/page.txt", method=b"HEAD")
        self.assertEqual(
            (response.status, response.header(b"content-length"), response.body),
            (200, b"14", b""),
        )

    def test_newFileAtOnce(self) -> None:
        """
        A file that was not found is served as soon as it exists: what is
        missing is not remembered.
        """
        self.assertEqual(self.request(self.served, b"/new.txt").status, 404)
        (self.base / "root" / "new.txt").write_bytes(b"new")
        self.assertEqual(self.request(self.served, b"/new.txt").body, b"new")

    def test_removedFileAtOnce(self) -> None:
        """
        A file removed within the second is not found.
        """
        self.request(self.served, b"/page.txt")
        self.file.unlink()
        self.assertEqual(self.request(self.served, b"/page.txt").status, 404)

    def test_symlinkAtOnce(self) -> None:
        """
        A file replaced within the second by a symlink out of the root is
        not served: confinement never trusts remembered metadata.
        """
        secret = self.base / "secret.txt"
        secret.write_bytes(b"the secret")
        self.request(self.served, b"/page.txt")
        self.file.unlink()
        self.file.symlink_to(secret)
        response = self.request(self.served, b"/page.txt")
        self.assertEqual(response.status, 404)
        self.assertNotIn(b"the secret", response.body)

    def test_noRandomForWholeFile(self) -> None:
        """
        A whole file needs no multipart boundary: no random bytes are
        drawn for it (a getrandom call a request); a multipart range
        answer still gets one.
        """
        drawn: list[int] = []
        urandom = os.urandom

        def counting(size: int) -> bytes:
            drawn.append(size)
            return urandom(size)

        self.patch(os, "urandom", counting)
        self.file.write_bytes(b"x" * 5000)
        self.request(self.served, b"/page.txt")
        self.assertEqual(drawn, [])
        channel = self.served.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"GET /page.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=0-0,4000-4000\r\n"
            b"Connection: close\r\n\r\n"
        )
        for _ in range(100):
            if transport.disconnecting:
                break
            self.reactor.advance(0)
        response = _parse(transport.value())
        self.assertEqual(response.status, 206)
        self.assertIn(b"multipart/byteranges", response.header(b"content-type") or b"")
        self.assertEqual(drawn, [12])

    def test_typeWithoutWorkingDirectory(self) -> None:
        """
        A file's Content-Type comes from its extension without asking for
        the working directory (twisted.web's way costs a getcwd a request).
        """

        def refuse() -> str:
            raise AssertionError("getcwd called")

        self.patch(os, "getcwd", refuse)
        response = self.request(self.served, b"/page.txt")
        self.assertEqual(
            (response.status, response.header(b"content-type")), (200, b"text/plain")
        )


class SystemCallsPerRequestTests(SynchronousTestCase):
    """
    What a request for a small file costs a real daemon in system calls
    (C{strace -c}): no lookups it can do without.
    """

    #: Requests counted, on one kept-alive connection.
    REQUESTS = 200

    def setUp(self) -> None:
        if shutil.which("strace") is None:
            raise SkipTest("strace is not installed: apt-get install strace")
        folder = Path(self.mktemp()).absolute()
        (folder / "www").mkdir(parents=True)
        (folder / "www" / "index.html").write_bytes(b"<p>small</p>\n")
        self.folder = folder
        self.daemon = configuredDaemon(
            folder,
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "http"
            options = { root = "www", access_log = false }
            """,
        )
        self.addCleanup(self.daemon.stop)
        self.port = self.daemon.listening(2)["http"][1]

    def keptAlive(self) -> Callable[[], None]:
        """
        A connection that had a first request for C{/index.html} answered;
        what sends L{REQUESTS} more on it.
        """
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(connection.close)
        request = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
        connection.sendall(request)
        self.assertEqual(readResponse(connection).status, 200)

        def requests() -> None:
            for _ in range(self.REQUESTS):
                connection.sendall(request)
                self.assertEqual(readResponse(connection).body, b"<p>small</p>\n")

        return requests

    def traced(self, requests: Callable[[], None]) -> dict[str, float]:
        """
        The daemon's system calls per request (of L{REQUESTS}) while
        C{requests} runs.
        """
        table = self.folder / "strace.txt"
        strace = subprocess.Popen(
            [
                "strace",
                "-c",
                "-f",
                "-o",
                str(table),
                "-p",
                str(self.daemon.process.pid),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: strace.poll() is None and strace.kill())
        assert strace.stderr is not None
        # strace says so on stderr once it is attached.
        ready, _, _ = select.select([strace.stderr], [], [], 30)
        self.assertTrue(ready, "strace did not attach within 30s")
        self.assertIn(b"attached", strace.stderr.readline())
        requests()
        strace.send_signal(signal.SIGINT)
        strace.communicate(timeout=30)
        return {
            entry.name: entry.perOperation or 0.0
            for entry in topSyscalls(table.read_text(), self.REQUESTS, count=100)
        }

    def test_newConnection(self) -> None:
        """
        A connection for one HTTP/1.0 request sets TCP_NODELAY once (the
        transport does; twisted.web asking again costs nothing).
        """
        request = b"GET /index.html HTTP/1.0\r\n\r\n"

        def oneEach() -> None:
            for _ in range(self.REQUESTS):
                with socket.create_connection(
                    ("127.0.0.1", self.port), timeout=10
                ) as connection:
                    connection.sendall(request)
                    self.assertEqual(readResponse(connection).status, 200)

        calls = self.traced(oneEach)
        self.assertLessEqual(calls.get("setsockopt", 0.0), 1.05, calls)

    def test_hotSmallFile(self) -> None:
        """
        A small file that has not changed for a second is answered from
        memory: one C{lstat} a request (is it still the same file,
        unchanged?), no open and no read.
        """
        written = (self.folder / "www" / "index.html").stat().st_ctime
        deadline = time.monotonic() + 5
        while time.time() < written + SETTLED + 0.1:
            # Bounded: the file settles within SETTLED seconds of its write.
            self.assertLess(time.monotonic(), deadline)
            select.select([], [], [], 0.05)
        calls = self.traced(self.keptAlive())
        slack = 0.05
        self.assertEqual(
            {
                name: calls.get(name, 0.0) <= most + slack
                for name, most in {"newfstatat": 1, "openat": 0, "read": 0}.items()
            },
            dict.fromkeys(["newfstatat", "openat", "read"], True),
            calls,
        )

    def test_smallFile(self) -> None:
        """
        A small file costs at most three stats a request (whether the path
        is a symlink, and what was opened, twice), one ioctl, no lseek, and
        no getrandom or getcwd: twisted.web's File costs eight stats, two
        ioctls, two lseeks, a getrandom and a getcwd.
        """
        calls = self.traced(self.keptAlive())
        # What else the daemon did meanwhile (a timer, a status tick) may
        # add a call or two over the whole run.
        slack = 0.05
        self.assertEqual(
            {
                name: calls.get(name, 0.0) <= most + slack
                for name, most in {
                    "newfstatat": 3,
                    "ioctl": 1,
                    "lseek": 0,
                    "getrandom": 0,
                    "getcwd": 0,
                    "openat": 1,
                }.items()
            },
            dict.fromkeys(
                ["newfstatat", "ioctl", "lseek", "getrandom", "getcwd", "openat"], True
            ),
            calls,
        )
