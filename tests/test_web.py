"""
Tests for the http and https handlers (L{multiport.handlers.web}), driven
through the real C{twisted.web} site with raw HTTP requests.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from attrs import frozen
from twisted.internet import _producer_helpers
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server

from multiport import __version__
from multiport.config import PortConfig
from multiport.handlers.interface import HandlerContext, OptionError
from multiport.handlers.web import WebOptions, http, https, parseWebOptions
from tests.support import configuredDaemon, dataSegmentsIn


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
        The line and the fields the JSON log carries.
        """
        [event] = self.logged({})
        line = formatEvent(event)
        self.assertTrue(line.startswith('tcp:127.0.0.1:8080 "192.168.1.1" - - ['), line)
        self.assertIn('"HEAD /missing?q=1 HTTP/1.1" 404 ', line)
        self.assertEqual(
            (event["port"], event["method"], event["uri"], event["status"]),
            ("tcp:127.0.0.1:8080", "HEAD", "/missing?q=1", 404),
        )

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
            "unknown option; known: access_log, hsts_max_age, listing, "
            "redirect_https, root",
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
