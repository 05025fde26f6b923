"""
Hostile bytes against an http port that serves a folder, from anyone who
can reach it: multi-part C{Range} headers, a FIFO in the root, request
heads nginx refuses, and a client that never reads its response.

Each test sends raw bytes over a real socket on 127.0.0.1 and checks the
exact status line.  Beside each expectation is nginx 1.22's answer to the
same bytes (nginx-light, C{root} on the same files), the anchor for what
an HTTP server should do; where we answer differently, the comment says
why.

Most tests run the port in this process on the real reactor (a request the
port never answers then fails the test by timing out).  The FIFO test runs
a real C{twistd multiport}: before the fix, the FIFO froze the whole
daemon, this process's reactor included if it were here.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

from attrs import evolve, frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.tomlfile import parseConfig
from multiport.daemon.service import PortsService
from multiport.ports.certificates import loadCertificates
from multiport.ports.policies import Policy
from tests.support import HANDLERS
from tests.test_attacks import PROMPTLY, DaemonTestCase

#: The 9,000-byte file every range test asks for parts of.
NINE = bytes((i * 7) % 251 for i in range(9000))


@frozen
class Answer:
    """
    One HTTP response as it came off the wire.
    """

    statusLine: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """
        The only value of header C{name}, or C{None}.
        """
        values = self.headers.get(name, [])
        assert len(values) <= 1, values
        return values[0] if values else None


def parseAnswer(data: bytes) -> Answer:
    """
    Split one complete response (the server closed after it).
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, data[:300]
    statusLine, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Answer(statusLine, headers, body)


class RawClient(Protocol):
    """
    Sends C{request} as it is; C{done} fires with everything received once
    the server closes.  Cancelling C{done} aborts the connection.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred(
            lambda _: self.transport.abortConnection()
        )

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        if not self.done.called:
            self.done.callback(self.received)


class InProcessPort(TestCase):
    """
    An http port in this process, on the real reactor, serving a folder.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.root = self.folder / "www"
        self.root.mkdir(parents=True)
        (self.root / "nine.bin").write_bytes(NINE)
        (self.root / "small.txt").write_bytes(b"0123456789")
        (self.root / "empty.txt").write_bytes(b"")
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def startPort(self, handlers=HANDLERS, **settings: object) -> int:
        """
        Start an http port serving C{www} with C{settings} in its table;
        its port number.
        """
        table = {
            "port": 0,
            "interface": "127.0.0.1",
            "handler": "http",
            "options": {"root": "www"},
            **settings,
        }
        fileConfig = parseConfig({"port": [table]}, self.folder, "hostile.toml")
        config = buildConfig(
            fileConfig.ports,
            fileConfig.defaults.over(Defaults()),
            handlers,
            self.folder / "state",
        )
        # A TLS port's certificate, self-signed in the state folder.
        certificates = loadCertificates(config.ports, config.stateDir)
        service = PortsService(config, handlers, certificates, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [server] = service.ports()
        return int(server.boundAddress().port)

    @inlineCallbacks
    def exchange(self, port: int, request: bytes):
        """
        Send C{request} and return all the server sent before it closed;
        fail if it does not close within L{PROMPTLY} seconds.
        """
        client = RawClient(request)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        received = yield client.done.addTimeout(PROMPTLY, reactor)
        return received

    @inlineCallbacks
    def get(self, port: int, path: bytes, *headers: bytes):
        """
        GET C{path} with a Host, C{headers} and C{Connection: close}; the
        parsed answer.
        """
        request = b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n"
        for header in headers:
            request += header + b"\r\n"
        received = yield self.exchange(port, request + b"Connection: close\r\n\r\n")
        return parseAnswer(received)


def _multipart(answer: Answer) -> list[tuple[bytes, bytes]]:
    """
    The (Content-Range, bytes) of each part of a multipart/byteranges
    answer, checking its framing on the way.
    """
    contentType = answer.header(b"content-type")
    assert contentType is not None
    match = re.fullmatch(rb'multipart/byteranges; boundary="?([^"]+)"?', contentType)
    assert match is not None, contentType
    boundary = match.group(1)
    assert answer.body.endswith(b"\r\n--" + boundary + b"--\r\n"), answer.body[-80:]
    parts = []
    for chunk in answer.body.split(b"\r\n--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(
            line.split(b": ", 1) for line in head.split(b"\r\n") if b": " in line
        )
        parts.append((fields[b"Content-Range"], data))
    return parts


class RangeTests(InProcessPort):
    """
    C{Range} headers against a 9,000-byte file: never more bytes than the
    file, never a 500, never a hang.
    """

    def setUp(self) -> None:
        super().setUp()
        self.port = self.startPort()

    @inlineCallbacks
    def test_thousandSameParts(self):
        """
        C{bytes=0-0} a thousand times is one part, the first byte (nginx:
        206 with a thousand parts, 86 KB for a 9 KB file; twisted.web sent
        nothing and held the connection).
        """
        answer = yield self.get(
            self.port, b"/nine.bin", b"Range: bytes=" + b",".join([b"0-0"] * 1000)
        )
        self.assertEqual(answer.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertEqual(answer.header(b"content-range"), b"bytes 0-0/9000")
        self.assertEqual(answer.body, NINE[:1])

    @inlineCallbacks
    def test_hundredWholeFiles(self):
        """
        C{bytes=0-} a hundred times asks for a hundred files' worth: the
        header is ignored and the file sent once (nginx: 200; twisted.web
        sent the file a hundred times, 900 KB).
        """
        answer = yield self.get(
            self.port, b"/nine.bin", b"Range: bytes=" + b",".join([b"0-"] * 100)
        )
        self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(answer.header(b"content-length"), b"9000")
        self.assertEqual(answer.body, NINE)

    @inlineCallbacks
    def test_emptyRangeSet(self):
        """
        C{Range: bytes=} is ignored (nginx: 200; twisted.web: 500).
        """
        answer = yield self.get(self.port, b"/small.txt", b"Range: bytes=")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(answer.body, b"0123456789")

    @inlineCallbacks
    def test_adjacentPartsMerged(self):
        """
        Adjacent and overlapping parts become one (nginx: 206 with each
        part apart, which RFC 9110 lets a server coalesce).
        """
        answer = yield self.get(self.port, b"/nine.bin", b"Range: bytes=0-1,2-3, 1-5")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertEqual(answer.header(b"content-range"), b"bytes 0-5/9000")
        self.assertEqual(answer.body, NINE[:6])

    @inlineCallbacks
    def test_disjointParts(self):
        """
        Parts apart from each other come as multipart/byteranges, in the
        order asked, overlapping ones merged (nginx: 206, the same parts
        but 1-2 apart from 0-1).
        """
        answer = yield self.get(
            self.port, b"/nine.bin", b"Range: bytes=5000-5001, 0-1,1-2"
        )
        self.assertEqual(answer.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertEqual(
            _multipart(answer),
            [
                (b"bytes 5000-5001/9000", NINE[5000:5002]),
                (b"bytes 0-2/9000", NINE[:3]),
            ],
        )
        self.assertEqual(answer.header(b"content-length"), b"%d" % len(answer.body))

    @inlineCallbacks
    def test_multipartLargerThanFile(self):
        """
        Parts whose multipart framing would outweigh the file itself get
        the whole file (nginx: 206, 462 bytes for a 10-byte file).
        """
        answer = yield self.get(self.port, b"/small.txt", b"Range: bytes=0-1,5-6")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(answer.body, b"0123456789")

    @inlineCallbacks
    def test_tooManyParts(self):
        """
        More than 64 parts, even small and apart, get the whole file
        (nginx: 206 with every part).
        """
        spec = b",".join(b"%d-%d" % (i * 100, i * 100) for i in range(65))
        answer = yield self.get(self.port, b"/nine.bin", b"Range: bytes=" + spec)
        self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(answer.body, NINE)

    @inlineCallbacks
    def test_unsatisfiable(self):
        """
        Only parts past the end: 416 with the file's size (nginx: 416;
        twisted.web: 500 for two such parts).
        """
        for spec in (b"bytes=9000-9100", b"bytes=9000-9100,20000-", b"bytes=-0"):
            answer = yield self.get(self.port, b"/nine.bin", b"Range: " + spec)
            self.assertEqual(
                answer.statusLine,
                b"HTTP/1.1 416 Requested Range not satisfiable",
                spec,
            )
            self.assertEqual(answer.header(b"content-range"), b"bytes */9000")
            self.assertEqual(answer.body, b"")

    @inlineCallbacks
    def test_unsatisfiablePartDropped(self):
        """
        A part past the end beside one inside: the one inside (nginx: the
        same).
        """
        answer = yield self.get(self.port, b"/small.txt", b"Range: bytes=20-30,1-2")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertEqual(answer.header(b"content-range"), b"bytes 1-2/10")
        self.assertEqual(answer.body, b"12")

    @inlineCallbacks
    def test_emptyFile(self):
        """
        Any range of an empty file: the (empty) file (nginx: 200;
        twisted.web: 416, or 500 for two parts).
        """
        for spec in (b"bytes=0-0", b"bytes=0-0,2-3"):
            answer = yield self.get(self.port, b"/empty.txt", b"Range: " + spec)
            self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK", spec)
            self.assertEqual(answer.body, b"")

    @inlineCallbacks
    def test_suffix(self):
        """
        A suffix range: the last bytes (nginx: 206).
        """
        answer = yield self.get(self.port, b"/nine.bin", b"Range: bytes=-3")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertEqual(answer.header(b"content-range"), b"bytes 8997-8999/9000")
        self.assertEqual(answer.body, NINE[-3:])

    @inlineCallbacks
    def test_invalidIgnored(self):
        """
        A Range that is not a valid byte range set is ignored, as RFC 9110
        allows (nginx: 416 for C{x-y} and C{3-1}, 200 for the others).
        """
        for value in (b"bytes=x-y", b"bytes=3-1", b"items=0-1", b"bytes = 1-2"):
            answer = yield self.get(self.port, b"/small.txt", b"Range: " + value)
            self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK", value)
            self.assertEqual(answer.body, b"0123456789")

    @inlineCallbacks
    def test_keepAliveAfterMultipart(self):
        """
        A multipart answer's Content-Length is exact: the next request on
        the connection is answered in turn.
        """
        ranged = (
            b"GET /nine.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=0-9,100-109\r\n\r\n"
        )
        received = yield self.exchange(
            self.port,
            ranged + b"GET /small.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        first = parseAnswer(received)
        length = int(first.header(b"content-length"))
        self.assertEqual(
            _multipart(evolve(first, body=first.body[:length])),
            [(b"bytes 0-9/9000", NINE[:10]), (b"bytes 100-109/9000", NINE[100:110])],
        )
        second = parseAnswer(first.body[length:])
        self.assertEqual(second.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(second.body, b"0123456789")


class ParsingTests(InProcessPort):
    """
    Request heads that nginx refuses, or reads where twisted.web hung:
    every one gets a status line, then the connection closes.
    """

    def setUp(self) -> None:
        super().setUp()
        self.port = self.startPort()

    @inlineCallbacks
    def statusLine(self, request: bytes):
        """
        Send C{request}; the status line of the answer, after which the
        server must have closed.
        """
        received = yield self.exchange(self.port, request)
        self.assertTrue(received, f"closed without an answer: {request[:60]!r}")
        return received.split(b"\r\n", 1)[0]

    @inlineCallbacks
    def test_noHost(self):
        """
        HTTP/1.1 without Host, or with an empty one, is 400 (nginx: 400);
        HTTP/1.0 needs none (nginx: 200).
        """
        for request in (
            b"GET /small.txt HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /small.txt HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
            b"GET http://localhost/small.txt HTTP/1.1\r\nConnection: close\r\n\r\n",
        ):
            status = yield self.statusLine(request)
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", request)
        status = yield self.statusLine(b"GET /small.txt HTTP/1.0\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.0 200 OK")

    @inlineCallbacks
    def test_twoHosts(self):
        """
        Two Host headers, even equal, are 400 (nginx: 400).
        """
        for request in (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
        ):
            status = yield self.statusLine(request)
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", request)
        status = yield self.statusLine(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.0 400 Bad Request")

    @inlineCallbacks
    def test_noHostKeepAlive(self):
        """
        The 400 closes a kept-alive connection: a request pipelined after
        it is not answered.
        """
        received = yield self.exchange(
            self.port,
            b"GET /small.txt HTTP/1.1\r\n\r\n"
            b"GET /small.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        answer = parseAnswer(received)
        self.assertEqual(answer.statusLine, b"HTTP/1.1 400 Bad Request")
        self.assertEqual(answer.header(b"connection"), b"close")
        self.assertEqual(answer.body, b"HTTP/1.1 requires a Host header field.\n")

    @inlineCallbacks
    def test_obsFold(self):
        """
        A header folded onto the next line, or whitespace before the first
        header, is 400 (nginx: 400; twisted.web joined the lines: 200).
        """
        for request in (
            b"GET /small.txt HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n"
            b"Connection: close\r\n\r\n",
            b"GET /small.txt HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n"
            b"Connection: close\r\n\r\n",
            b"GET /small.txt HTTP/1.1\r\n Host: a\r\nConnection: close\r\n\r\n",
        ):
            status = yield self.statusLine(request)
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", request)

    @inlineCallbacks
    def test_longRequestLine(self):
        """
        A request line over 16 KB is 414 (nginx: 414, over 8 KB;
        twisted.web closed without a word).
        """
        status = yield self.statusLine(
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(status, b"HTTP/1.1 414 URI Too Long")

    @inlineCallbacks
    def test_longRequestLineUnfinished(self):
        """
        A request line still without its end after 16 KB is 414 at once.
        """
        status = yield self.statusLine(b"GET /" + b"a" * 20000)
        self.assertEqual(status, b"HTTP/1.1 414 URI Too Long")

    @inlineCallbacks
    def test_longHeader(self):
        """
        A header line over 16 KB is 431 (nginx: 400, over 8 KB;
        twisted.web closed without a word).
        """
        status = yield self.statusLine(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n"
        )
        self.assertEqual(status, b"HTTP/1.1 431 Request Header Fields Too Large")

    @inlineCallbacks
    def test_largeHead(self):
        """
        Headers that add up to more than 16 KB are 431 (nginx: 200 up to
        32 KB, then 400; twisted.web: 400).
        """
        headers = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(5))
        status = yield self.statusLine(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n"
        )
        self.assertEqual(status, b"HTTP/1.1 431 Request Header Fields Too Large")

    @inlineCallbacks
    def test_bareLF(self):
        """
        Lines ended by a bare LF are read (nginx: 200; twisted.web waited
        for a CR until header_timeout), pipelined requests too.
        """
        received = yield self.exchange(
            self.port,
            b"GET /small.txt HTTP/1.1\nHost: a\n\n"
            b"GET /nine.bin HTTP/1.1\nHost: a\r\nConnection: close\n\n",
        )
        first = parseAnswer(received)
        self.assertEqual(first.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(first.body[:10], b"0123456789")
        second = parseAnswer(first.body[10:])
        self.assertEqual(second.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(second.body, NINE)

    @inlineCallbacks
    def test_ifModifiedSinceFuture(self):
        """
        If-Modified-Since later than now is ignored (RFC 9110 section
        13.1.3; nginx: 200, as it answers 304 only to the exact date;
        twisted.web: 304).  The file's own date still gets 304 (nginx:
        304).
        """
        answer = yield self.get(
            self.port,
            b"/small.txt",
            b"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
        )
        self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(answer.body, b"0123456789")
        lastModified = answer.header(b"last-modified")
        answer = yield self.get(
            self.port, b"/small.txt", b"If-Modified-Since: " + lastModified
        )
        self.assertEqual(answer.statusLine, b"HTTP/1.1 304 Not Modified")


class StalledResponseTests(InProcessPort):
    """
    A client that asks for a large file and never reads the answer.
    """

    @inlineCallbacks
    def test_handlerDefaultIdleTimeout(self):
        """
        With no idle_timeout configured, the http handler's default one
        applies: the stalled connection is closed (reason timeout) once no
        byte has moved for it.  (Shortened here from the real 75 s, which
        L{test_httpDefault} checks.)
        """
        with (self.root / "large.bin").open("wb") as large:
            large.truncate(64 * 1024 * 1024)
        handlers = dict(HANDLERS)
        # The implementation, not its lazy plugin object: attrs can evolve it.
        handlers["http"] = evolve(
            HANDLERS["http"].load(), defaultPolicy=Policy(idleTimeout=0.4)
        )
        port = self.startPort(handlers)
        closed: Deferred[str] = Deferred()

        def watch(event: dict) -> None:
            line = event.get("line", "")
            if event.get("log_namespace") == "multiport.connection" and (
                f"127.0.0.1:{local} " in line
            ):
                if not closed.called:
                    closed.callback(line)

        globalLogPublisher.addObserver(watch)
        self.addCleanup(globalLogPublisher.removeObserver, watch)
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        # A small receive window, and nothing read: the server's writes stop.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        local = client.getsockname()[1]
        client.sendall(b"GET /large.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        line = yield closed.addTimeout(PROMPTLY, reactor)
        self.assertIn(" closed timeout ", line)

    def test_httpDefault(self):
        """
        An http or https port that sets no idle_timeout gets 75 s (nginx's
        keepalive_timeout); [defaults] and the port's own value win.
        """
        for handler in ("http", "https"):
            policy = HANDLERS[handler].defaultPolicy
            self.assertEqual(policy, Policy(idleTimeout=75.0))
        fileConfig = parseConfig(
            {
                "port": [
                    {"port": 8080, "handler": "http"},
                    {"port": 8081, "handler": "http", "idle_timeout": 5},
                    {"port": 7000, "handler": "echo"},
                ]
            },
            self.folder,
            "hostile.toml",
        )
        config = buildConfig(
            fileConfig.ports, Defaults(), HANDLERS, self.folder / "state"
        )
        self.assertEqual(
            [p.policy.idleTimeout for p in config.ports], [75.0, 5.0, None]
        )
        fileConfig = parseConfig(
            {
                "defaults": {"idle_timeout": 300},
                "port": [{"port": 8080, "handler": "http"}],
            },
            self.folder,
            "hostile.toml",
        )
        config = buildConfig(
            fileConfig.ports,
            fileConfig.defaults.over(Defaults()),
            HANDLERS,
            self.folder / "state",
        )
        self.assertEqual([p.policy.idleTimeout for p in config.ports], [300.0])


class FIFOTests(DaemonTestCase):
    """
    A FIFO, a socket and a FIFO index inside an http port's root, against
    a real daemon.
    """

    def setUp(self) -> None:
        folder = self.workFolder()
        root = folder / "www"
        (root / "withfifo").mkdir(parents=True)
        (root / "ok.txt").write_bytes(b"fine")
        self.fifo = root / "pipe"
        os.mkfifo(self.fifo)
        os.mkfifo(root / "withfifo" / "index.html")
        self.addCleanup(self.unblock, self.fifo)
        self.addCleanup(self.unblock, root / "withfifo" / "index.html")
        # AF_UNIX paths are limited to about 100 bytes: bind from inside.
        here = os.getcwd()
        os.chdir(root)
        try:
            self.unixSocket = socket.socket(socket.AF_UNIX)
            self.addCleanup(self.unixSocket.close)
            self.unixSocket.bind("sock")
        finally:
            os.chdir(here)
        ports = self.startDaemon(
            """
            [[port]]
            port = 0
            interface = "127.0.0.1"
            handler = "http"
            options = { root = "www" }
            """,
            2,
        )
        self.web = ports["http"][1]

    def unblock(self, fifo: Path) -> None:
        """
        Release a daemon stuck opening C{fifo} (before the fix), so that
        it can stop: open the other end without blocking.
        """
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno != errno.ENXIO:  # nobody is reading: nothing stuck
                raise

    def test_fifo(self):
        """
        GET of a FIFO is 404 (nginx: 404) and, while it is asked, the
        status port's /healthz and the port itself keep answering (before,
        the FIFO's open() blocked the whole daemon).
        """
        with socket.create_connection(("127.0.0.1", self.web), timeout=PROMPTLY) as s:
            s.sendall(b"GET /pipe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            self.healthy()
            self.assertEqual(
                self.httpRequest(self.web, "GET", "/ok.txt"), (200, b"fine")
            )
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer[:100])

    def test_notRegularFiles(self):
        """
        HEAD of a FIFO, a FIFO as a folder's index and a socket are 404
        too (nginx: 404), and the daemon stays healthy.
        """
        for method, target in (
            (b"HEAD", b"/pipe"),
            (b"GET", b"/withfifo/"),
            (b"GET", b"/sock"),
        ):
            answer = self.rawRequest(
                self.web,
                method + b" " + target + b" HTTP/1.1\r\nHost: a\r\n"
                b"Connection: close\r\n\r\n",
            )
            self.assertTrue(
                answer.startswith(b"HTTP/1.1 404 Not Found\r\n"), (target, answer[:100])
            )
        self.healthy()


class TwistedChannelParsingTests(ParsingTests):
    """
    L{ParsingTests} on twisted.web's channel (L{StrictChannel}), which a
    websocket port's HTTP/1.1 still is.
    """

    def setUp(self) -> None:
        InProcessPort.setUp(self)
        self.port = self.startPort(
            handler="websocket", options={"root": "www", "echo": True}
        )
