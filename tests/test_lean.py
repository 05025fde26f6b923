"""
Tests for the http handler's HTTP/1.x protocol (L{multiport.handlers.lean}):
keep-alive and HTTP/1.0, pipelining, request bodies, limits, the
request-smuggling cases nginx refuses, the same answers as twisted.web's
channel, and the choice between it and twisted.web's channel and HTTP/2.
"""

from __future__ import annotations

import os
import re
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from multiport.config.model import PortConfig
from multiport.handlers import leanfast
from multiport.handlers.interface import HandlerContext
from multiport.handlers.lean import MAX_HEADERS, MAX_QUEUED, MAX_URI, LeanChannel
from multiport.handlers.leanfast import (
    FAST_FILE_SIZE,
    SETTLED,
    ContentCache,
    FastAnswer,
    Head,
)
from multiport.handlers.webchannel import TimedChannel
from multiport.handlers.webresources import openRegular
from multiport.handlers.websocket import parseWebSocketOptions, websocket
from multiport.ports.counters import HandlerCounters
from tests.test_hostilehttp import InProcessPort
from tests.test_web import _WebTestCase
from tests.test_webh2 import httpsSite

#: A status line, as it starts a response.
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def statuses(data: bytes) -> list[int]:
    """
    The status of each response in C{data}, in order.
    """
    return [int(m.group(1)) for m in STATUS.finditer(data)]


class _LeanTestCase(_WebTestCase):
    """
    An http port serving a folder, spoken to over a L{StringTransport}.
    """

    def setUp(self) -> None:
        super().setUp()
        root = self.base / "root"
        root.mkdir()
        (root / "a.txt").write_bytes(b"AAAA")
        (root / "b.txt").write_bytes(b"BBBBBBBB")
        (root / "big.bin").write_bytes(b"x" * (FAST_FILE_SIZE + 1))
        (root / "folder").mkdir()
        (root / "folder" / "index.html").write_bytes(b"<p>index</p>")
        self.served = self.site({"root": "root", "access_log": False})

    def connect(
        self, site: server.Site | None = None
    ) -> tuple[LeanChannel, StringTransport]:
        """
        A new connection to C{site} (the folder by default).
        """
        channel = (site or self.served).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def send(self, data: bytes, site: server.Site | None = None) -> StringTransport:
        """
        Send C{data} on a new connection; the transport once everything
        sent is answered (or the connection closed).
        """
        channel, transport = self.connect(site)
        channel.dataReceived(data)
        self.settle(transport)
        return transport

    def settle(self, transport: StringTransport) -> None:
        """
        Run what the clock has to run for answers to be written.
        """
        for _ in range(200):
            self.reactor.advance(0)
            if transport.disconnecting:
                return


class KeepAliveTests(_LeanTestCase):
    """
    Which connections stay open after an answer.
    """

    def test_http11KeepsAlive(self) -> None:
        """
        Two HTTP/1.1 requests, one after the other, are answered on one
        connection, which stays open.
        """
        channel, transport = self.connect()
        self.assertIsInstance(channel, LeanChannel)
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.dataReceived(b"GET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(statuses(transport.value()), [200, 200])
        self.assertTrue(transport.value().endswith(b"BBBBBBBB"))
        self.assertNotIn(b"Connection:", transport.value())
        self.assertFalse(transport.disconnecting)

    def test_http11Close(self) -> None:
        """
        C{Connection: close} is answered with C{Connection: close}, then
        the connection closes.
        """
        transport = self.send(
            b"GET /a.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_http10Closes(self) -> None:
        """
        An HTTP/1.0 request is answered in HTTP/1.0, without a Host, and the
        connection closes.
        """
        transport = self.send(b"GET /a.txt HTTP/1.0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nAAAA"))
        self.assertTrue(transport.disconnecting)

    def test_http10ThenMore(self) -> None:
        """
        Bytes after an HTTP/1.0 request that closes the connection are not
        answered (llhttp refuses them: nothing more is read anyway).
        """
        for first in (b"/a.txt", b"/folder"):
            transport = self.send(
                b"GET " + first + b" HTTP/1.0\r\n\r\nGET /b.txt HTTP/1.1\r\n\r\n"
            )
            self.assertEqual(len(statuses(transport.value())), 1)
            self.assertTrue(transport.disconnecting)

    def test_http10KeepAlive(self) -> None:
        """
        An HTTP/1.0 request with C{Connection: keep-alive} is answered with
        C{Connection: keep-alive}, and the connection stays open.
        """
        transport = self.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertIn(b"\r\nConnection: keep-alive\r\n", transport.value())
        self.assertFalse(transport.disconnecting)

    def test_http10UnknownLengthCloses(self) -> None:
        """
        A kept-alive HTTP/1.0 request whose answer from twisted.web has no
        length (none of this handler's do, but a resource may) is answered
        with C{Connection: close}, as only the close can end its body.
        """
        channel, transport = self.connect()
        channel._currentHead = Head(b"GET", b"/", b"HTTP/1.0", [], True, 0.0)
        channel.writeHeaders(b"HTTP/1.0", b"200", b"OK", Headers())
        self.assertIn(b"connection: close", transport.value().lower())
        self.assertFalse(channel._persistent)


class PipeliningTests(_LeanTestCase):
    """
    Requests sent before their predecessors are answered.
    """

    def test_inOrder(self) -> None:
        """
        Requests sent at once are answered in the order sent, whichever
        way each is answered (a small file, a redirect to a folder's slash,
        a range, a missing file, a file streamed from disk).
        """
        transport = self.send(
            b"GET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /folder HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /a.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /a.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        data = transport.value()
        self.assertEqual(statuses(data), [200, 302, 206, 404, 200, 200])
        self.assertTrue(data.endswith(b"\r\n\r\nAAAA"))
        self.assertIn(b"x" * (FAST_FILE_SIZE + 1) + b"HTTP/1.1 200 OK", data)
        self.assertTrue(transport.disconnecting)

    def test_splitAcrossReads(self) -> None:
        """
        Requests arriving a byte at a time are answered as a whole.
        """
        channel, transport = self.connect()
        for byte in b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /b.txt HTTP/1.1\r\n":
            channel.dataReceived(bytes([byte]))
        for byte in b"Host: h\r\n\r\n":
            channel.dataReceived(bytes([byte]))
        self.assertEqual(statuses(transport.value()), [200, 200])


class BodyTests(_LeanTestCase):
    """
    Requests with a body: a static server reads none of them.
    """

    def test_contentLengthBodySkipped(self) -> None:
        """
        A POST's body is read past and the POST refused (405, as
        twisted.web's file and nginx refuse it); the request after it on
        the connection is answered.
        """
        transport = self.send(
            b"POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n"
            b"GET /xGET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        self.assertEqual(statuses(transport.value()), [405, 200])
        self.assertTrue(transport.value().endswith(b"BBBBBBBB"))

    def test_chunkedBodySkipped(self) -> None:
        """
        A chunked body is read past in the same way.
        """
        transport = self.send(
            b"POST /a.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nGET\r\n0\r\n\r\n"
            b"GET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        self.assertEqual(statuses(transport.value()), [405, 200])

    def test_largeBodyRefused(self) -> None:
        """
        A body announced over a megabyte is refused with 413 before it is
        read, and the connection closes.
        """
        transport = self.send(
            b"POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)

    def test_largeChunkedBodyRefused(self) -> None:
        """
        A chunked body that grows over a megabyte is refused with 413.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /a.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"y" * 0x10000 + b"\r\n"
        for _ in range(17):
            channel.dataReceived(chunk)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)


class SmugglingTests(_LeanTestCase):
    """
    The framing ambiguities request smuggling is made of: each is refused
    with 400 and a close, as nginx does, and nothing sent after it is
    answered.
    """

    def assertRefused(self, head: bytes) -> None:
        """
        C{head}, followed by a request, gets a 400 alone and a close.
        """
        transport = self.send(
            head + b"\r\n0\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        self.assertEqual(statuses(transport.value()), [400], transport.value())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_contentLengthAndTransferEncoding(self) -> None:
        """
        C{Content-Length} with C{Transfer-Encoding: chunked}.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n"
        )

    def test_twoContentLengths(self) -> None:
        """
        Two different C{Content-Length} fields.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
        )

    def test_sameContentLengthTwice(self) -> None:
        """
        The same C{Content-Length} twice (nginx: "duplicate header line").
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
        )

    def test_invalidContentLength(self) -> None:
        """
        A C{Content-Length} that is not a number.
        """
        for value in (b"abc", b"-1", b"1 2", b"+5", b"0x5"):
            self.assertRefused(
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value + b"\r\n"
            )

    def test_otherTransferEncoding(self) -> None:
        """
        A C{Transfer-Encoding} whose last coding is not C{chunked}.
        """
        for value in (b"gzip", b"chunked, gzip", b"identity"):
            self.assertRefused(
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + value + b"\r\n"
            )

    def test_foldedTransferEncoding(self) -> None:
        """
        A C{Transfer-Encoding} folded onto a second line (obs-fold).
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n"
        )


class LimitTests(_LeanTestCase):
    """
    Heads too large to take.
    """

    def test_longURI(self) -> None:
        """
        A request target over L{MAX_URI} bytes is answered 414 (nginx).
        """
        transport = self.send(
            b"GET /" + b"a" * MAX_URI + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "))
        self.assertTrue(transport.disconnecting)

    def test_longURIStillArriving(self) -> None:
        """
        A request line that never ends is refused with 414 once it is too
        long, not held in memory.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /")
        for _ in range(40):
            channel.dataReceived(b"a" * 1024)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "))

    def test_largeHeaders(self) -> None:
        """
        Header fields over 16 KiB in all are answered 431.
        """
        transport = self.send(
            b"GET / HTTP/1.1\r\nHost: h\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(17))
            + b"\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertTrue(transport.disconnecting)

    def test_headerStillArriving(self) -> None:
        """
        A header field that never ends is refused with 431 once too long.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ")
        for _ in range(40):
            channel.dataReceived(b"v" * 1024)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))

    def test_tooManyHeaders(self) -> None:
        """
        More than L{MAX_HEADERS} header fields are answered 431.
        """
        transport = self.send(
            b"GET / HTTP/1.1\r\nHost: h\r\n"
            + b"".join(b"X-%d: v\r\n" % (i,) for i in range(MAX_HEADERS))
            + b"\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))

    def test_unknownMethod(self) -> None:
        """
        A method llhttp does not know is answered 501, as twisted.web
        answers a method it does not implement.
        """
        transport = self.send(b"BREW /a.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 501 "))

    def test_laterVersion(self) -> None:
        """
        HTTP/2.0 on an HTTP/1.x request line is answered 505 (nginx).
        """
        transport = self.send(b"GET /a.txt HTTP/2.0\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "))


class SameAnswersTests(_LeanTestCase):
    """
    The same requests get the same answers from L{LeanChannel} as from
    twisted.web's channel (L{TimedChannel}), but for the Date.
    """

    REQUESTS = [
        b"GET /a.txt HTTP/1.1\r\nHost: h\r\n",
        b"HEAD /a.txt HTTP/1.1\r\nHost: h\r\n",
        b"GET /a.txt?q=1 HTTP/1.1\r\nHost: h\r\n",
        b"GET /folder HTTP/1.1\r\nHost: h\r\n",
        b"GET /folder/ HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"GET /nope.txt HTTP/1.1\r\nHost: h\r\n",
        b"GET /a.txt/x HTTP/1.1\r\nHost: h\r\n",
        b"GET /../a.txt HTTP/1.1\r\nHost: h\r\n",
        b"GET /%61.txt HTTP/1.1\r\nHost: h\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: h\r\n"
        b"If-Modified-Since: Sun, 01 Jan 2090 00:00:00 GMT\r\n",
        b"POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n",
        b"DELETE /a.txt HTTP/1.1\r\nHost: h\r\n",
        b"GET /a.txt HTTP/1.1\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: h\r\nHost: i\r\n",
        b"GET /a.txt HTTP/1.0\r\n",
    ]

    def conditional(self) -> list[bytes]:
        """
        Conditional requests, with the clock past the files' dates.
        """
        self.reactor.advance(time.time() + 10)
        soon = datetimeToString(int(time.time()) + 5)
        old = b"Sun, 09 Sep 2001 01:46:40 GMT"
        later = b"Sun, 01 Jan 2090 00:00:00 GMT"
        return [
            b"%s /a.txt HTTP/1.1\r\nHost: h\r\n%s" % (method, fields)
            for method in (b"GET", b"HEAD")
            for fields in (
                b"If-Modified-Since: " + soon + b"\r\n",
                b"If-Modified-Since: " + soon + b"; length=4\r\n",
                b"If-Modified-Since: " + old + b"\r\n",
                b"If-Modified-Since: " + later + b"\r\n",
                b"If-Modified-Since: nonsense\r\n",
                b"If-Modified-Since: " + soon + b"\r\nIf-None-Match: *\r\n",
                b"If-Modified-Since: "
                + soon
                + b"\r\nIf-Modified-Since: "
                + soon
                + b"\r\n",
            )
        ]

    def answer(self, lean: bool, request: bytes) -> bytes:
        """
        The answer to C{request} from one channel or the other.
        """
        self.served.lean = lean
        channel, transport = self.connect()
        self.assertIsInstance(channel, LeanChannel if lean else TimedChannel)
        channel.dataReceived(request + b"Connection: close\r\n\r\n")
        self.settle(transport)
        return re.sub(rb"\r\nDate: [^\r]*", b"", transport.value())

    def test_sameAnswers(self) -> None:
        """
        Each of L{REQUESTS}, then the same file asked for conditionally
        (304s among them) from memory (L{ContentCache}), has the same
        status, headers (in any order) and body from both.
        """
        seen = []
        for request in self.REQUESTS + self.conditional():
            lean, twisted = self.answer(True, request), self.answer(False, request)
            seen.extend(statuses(lean))
            leanHead, _, leanBody = lean.partition(b"\r\n\r\n")
            twistedHead, _, twistedBody = twisted.partition(b"\r\n\r\n")
            self.assertEqual(
                (
                    leanHead.split(b"\r\n")[0],
                    sorted(leanHead.lower().split(b"\r\n")[1:]),
                    leanBody,
                ),
                (
                    twistedHead.split(b"\r\n")[0],
                    sorted(twistedHead.lower().split(b"\r\n")[1:]),
                    twistedBody,
                ),
                request,
            )
        self.assertTrue({200, 206, 302, 304, 400, 404, 405, 501} <= set(seen), seen)


class ChoiceTests(_LeanTestCase):
    """
    Which protocol a connection gets.
    """

    def test_redirectAndWelcome(self) -> None:
        """
        A redirecting port and a port with the built-in page are lean too.
        """
        for options in ({"redirect_https": 443}, {}):
            channel, _ = self.connect(self.site(options))
            self.assertIsInstance(channel, LeanChannel)

    def test_webSocketPortTwisted(self) -> None:
        """
        A websocket port's connections stay on twisted.web's channel, which
        its endpoint takes over.
        """
        port = PortConfig(
            interface="127.0.0.1",
            port=8080,
            handler="websocket",
            tls=None,
            backlog=50,
            options=parseWebSocketOptions({"root": "root", "echo": True}, self.base),
        )
        context = HandlerContext(reactor=self.reactor, clock=self.reactor, port=port)
        channel, _ = self.connect(websocket.buildFactory(context))
        self.assertIsInstance(channel, TimedChannel)

    def test_tlsHttp11(self) -> None:
        """
        On a TLS port offering HTTP/2, a connection for which ALPN chose
        HTTP/1.1 (or nothing) is served by L{LeanChannel}.
        """
        site = self.tlsSite()
        for negotiated in (b"http/1.1", None):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            transport.negotiatedProtocol = negotiated  # type: ignore[attr-defined]
            channel.makeConnection(transport)
            channel.dataReceived(
                b"GET /a.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
            self.assertIsInstance(channel._channel, LeanChannel)
            self.assertTrue(transport.value().endswith(b"\r\n\r\nAAAA"))

    def test_tlsH2(self) -> None:
        """
        A connection for which ALPN chose h2 stays on twisted.web's HTTP/2.
        """
        site = self.tlsSite()
        channel = site.buildProtocol(None)
        transport = StringTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        channel.dataReceived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.assertNotIsInstance(channel._channel, LeanChannel)
        self.assertEqual(type(channel._channel).__name__, "PortH2Connection")

    def tlsSite(self) -> server.Site:
        """
        The site of a TLS port serving the folder, with HTTP/2 on.
        """
        site: server.Site = httpsSite(
            self.base / "root", self.reactor, HandlerCounters()
        )
        return site


class RealSocketTests(InProcessPort):
    """
    The protocol on a real port, through the per-port wrapper.
    """

    def setUp(self) -> None:
        super().setUp()
        self.port = self.startPort()

    @inlineCallbacks
    def test_pipelinedKeepAlive(self):
        """
        Three pipelined requests on one connection are answered in order;
        the last, asking to close, closes it.
        """
        received = yield self.exchange(
            self.port,
            b"GET /small.txt HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /nine.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=0-3\r\n\r\n"
            b"GET /small.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(statuses(received), [200, 206, 200])
        self.assertTrue(received.endswith(b"\r\n\r\n0123456789"))

    @inlineCallbacks
    def test_smuggling(self):
        """
        C{Content-Length} with C{Transfer-Encoding} is answered 400 and the
        connection closed: the request hidden in the body is not answered.
        """
        received = yield self.exchange(
            self.port,
            b"POST /small.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /nine.bin HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(statuses(received), [400])

    @inlineCallbacks
    def test_http10(self):
        """
        An HTTP/1.0 GET is answered and the connection closed.
        """
        received = yield self.exchange(self.port, b"GET /small.txt HTTP/1.0\r\n\r\n")
        self.assertTrue(received.startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertTrue(received.endswith(b"\r\n\r\n0123456789"))


class ContentCacheTests(_LeanTestCase):
    """
    Small files' answers kept in memory (L{ContentCache}).
    """

    def setUp(self) -> None:
        super().setUp()
        # The port's clock, well past the files' last change.
        self.reactor.advance(time.time() + 10)
        self.opened: list[str] = []

        def counting(path: str) -> tuple[int, os.stat_result]:
            self.opened.append(path)
            return openRegular(path)

        self.patch(leanfast, "openRegular", counting)

    def get(self, path: bytes) -> bytes:
        """
        The body of a GET of C{path}.
        """
        transport = self.send(
            b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        return transport.value().partition(b"\r\n\r\n")[2]

    def test_hotFileOpenedOnce(self) -> None:
        """
        A file asked for again, unchanged, is not opened again.
        """
        self.assertEqual([self.get(b"/a.txt"), self.get(b"/a.txt")], [b"AAAA"] * 2)
        self.assertEqual(len(self.opened), 1)

    def test_notModifiedFromMemory(self) -> None:
        """
        A conditional GET of a file answered from memory is answered 304
        there too, without twisted.web's request.
        """
        self.get(b"/a.txt")
        made: list[object] = []
        factory = self.served.requestFactory
        self.served.requestFactory = lambda *a: made.append(a) or factory(*a)
        since = datetimeToString(int(time.time()) + 5)
        transport = self.send(
            b"GET /a.txt HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: %s\r\n\r\n"
            % (since,)
        )
        self.assertEqual(statuses(transport.value()), [304])
        self.assertEqual((made, len(self.opened)), ([], 1))

    def test_changedFileServedNew(self) -> None:
        """
        A file rewritten with as many bytes is served as it is now.
        """
        self.get(b"/a.txt")
        (self.base / "root" / "a.txt").write_bytes(b"CCCC")
        self.assertEqual(self.get(b"/a.txt"), b"CCCC")

    def test_replacedFileServedNew(self) -> None:
        """
        A file replaced by another (a rename over it) is served as the new
        one.
        """
        self.get(b"/a.txt")
        fresh = self.base / "root" / "fresh"
        fresh.write_bytes(b"DDDD")
        os.utime(fresh, ns=(0, (self.base / "root" / "a.txt").stat().st_mtime_ns))
        fresh.rename(self.base / "root" / "a.txt")
        self.assertEqual(self.get(b"/a.txt"), b"DDDD")

    def test_recentFileNotKept(self) -> None:
        """
        A file changed within the last L{SETTLED} seconds is opened for
        every request: a second change within the kernel's clock tick
        would leave its times as they were.
        """
        changed = (self.base / "root" / "a.txt").stat().st_ctime
        self.reactor.advance(changed + SETTLED / 2 - self.reactor.seconds())
        self.get(b"/a.txt")
        self.get(b"/a.txt")
        self.assertEqual(len(self.opened), 2)

    def test_bounded(self) -> None:
        """
        Past its byte budget the cache starts over.
        """
        cache = ContentCache(self.reactor, maxBytes=10)
        seen = (self.base / "root" / "b.txt").stat()
        answer = FastAnswer(200, b"OK", b"", b"BBBBBBBB")
        cache.put("one", seen, answer)
        cache.put("two", seen, answer)
        self.assertEqual(
            (cache.get("one", seen), cache.get("two", seen)), (None, answer)
        )


class TimerTests(_LeanTestCase):
    """
    The idle and header timeouts, counted from the right moment though
    their timers are moved lazily.
    """

    def test_idleFromLastAnswer(self) -> None:
        """
        A kept-alive connection is closed 75 s after its last answer, not
        75 s after it first went idle.
        """
        channel, transport = self.connect()
        self.reactor.advance(50)
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        self.reactor.advance(30)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(44.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_idleNotWhileHeadArrives(self) -> None:
        """
        A connection receiving a head is not idle: the header timeout,
        not the idle one, bounds it.
        """
        channel, transport = self.connect()
        self.reactor.advance(70)
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\n")
        self.reactor.advance(10)
        self.assertFalse(transport.disconnecting)

    def test_headerTimeoutOfLaterHead(self) -> None:
        """
        A second head gets its own 20 s from its first byte, though the
        timer was set for the first head.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\n")
        self.reactor.advance(5)
        channel.dataReceived(b"Host: h\r\n\r\n")
        self.reactor.advance(5)
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\n")
        self.reactor.advance(15)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(5.1)
        self.assertTrue(transport.disconnecting)

    def test_noTimerLeftAfterClose(self) -> None:
        """
        A closed connection leaves no timer behind.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class BackpressureTests(_LeanTestCase):
    """
    A client that pipelines requests but does not read their answers: the
    transport's full buffer stops the answers and the reading.
    """

    TWO = (
        b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
    )

    def test_fullBufferHoldsAnswers(self) -> None:
        """
        While the transport's buffer is full no answer is written, and no
        more is read; once it drains the requests waiting are answered.
        """
        channel, transport = self.connect()
        self.assertIs(transport.producer, channel)
        channel.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(self.TWO)
        self.assertEqual(transport.value(), b"")
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(statuses(transport.value()), [200, 200])

    def test_manyWaitingStopReading(self) -> None:
        """
        Past L{MAX_QUEUED} requests waiting, the connection is not read
        until they are answered.
        """
        channel, transport = self.connect()
        channel.pauseProducing()
        channel.resumeProducing()
        channel._writeBlocked = True
        channel.dataReceived(self.TWO * (MAX_QUEUED // 2))
        self.assertEqual(transport.producerState, "paused")
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(statuses(transport.value())), MAX_QUEUED)

    def test_requestProducerTakesOver(self) -> None:
        """
        While twisted.web streams a file the channel is not the transport's
        producer; once the file is sent it is again.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIsNot(transport.producer, channel)
        self.settle(transport)
        for _ in range(100):
            if transport.producer is channel:
                break
            self.reactor.advance(0)
        self.assertIs(transport.producer, channel)
        self.assertTrue(transport.value().endswith(b"x" * 1000))


class PipelinedVolumeTests(InProcessPort):
    """
    Many pipelined requests for large answers on a real connection.
    """

    @inlineCallbacks
    def test_allAnsweredInOrder(self):
        """
        64 requests for a 200 KB file sent at once are all answered, whole
        and in order.
        """
        body = bytes(range(256)) * 800
        (self.root / "big.bin").write_bytes(body)
        port = self.startPort()
        request = b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
        received = yield self.exchange(
            port,
            request * 63
            + b"GET /small.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(statuses(received), [200] * 64)
        self.assertEqual(received.count(body), 63)
        self.assertTrue(received.endswith(b"\r\n\r\n0123456789"))


class ExpectContinueTests(_LeanTestCase):
    """
    C{Expect: 100-continue}.
    """

    def test_continue(self) -> None:
        """
        A request that expects 100-continue gets it before it sends its
        body, then its answer.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /a.txt HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Content-Length: 3\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"abc")
        self.assertEqual(statuses(transport.value()), [100, 405])
