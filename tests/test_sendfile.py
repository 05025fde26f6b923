"""
Tests for large answers sent by the kernel (L{multiport.io.sendfile}): a
whole file or one range on a plain http port goes out by C{sendfile}, byte
for byte, counted and logged; a slow client is waited for, not spun on; a
file that shrinks or a client that leaves ends the answer cleanly; TLS and
small pieces are copied as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater

from multiport.handlers import webresources
from multiport.handlers.interface import OptionError
from multiport.handlers.weboptions import parseWebOptions
from multiport.io import sendfile as sendfileModule
from multiport.io.sendfile import SENDFILE_AT_LEAST, SendfileProducer
from tests.test_hostilehttp import InProcessPort, RawClient, parseAnswer
from tests.test_lean import statuses

#: How long a test waits for what must happen soon.
PROMPTLY = 20.0
#: A file larger than loopback's socket buffers can hold between them
#: (Linux lets a sending socket grow to 4 MiB by default, and the client's
#: receive buffer is held small).
HUGE = 24 << 20


class CountingSendfile:
    """
    C{os.sendfile}, counting its calls and the times the socket was full.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.full = 0
        self.sent = 0

    def __call__(self, out: int, source: int, offset: int, count: int) -> int:
        self.calls += 1
        try:
            done = os.sendfile(out, source, offset, count)
        except BlockingIOError:
            self.full += 1
            raise
        self.sent += done
        return done


class HeldClient(RawClient):
    """
    A L{RawClient} with a small receive buffer that reads only once told
    to (L{read}): the server meets a full socket.
    """

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 16384
        )
        self.transport.pauseProducing()
        super().connectionMade()

    def read(self) -> None:
        """
        Read from now on.
        """
        self.transport.resumeProducing()


def turns(count: int) -> Deferred[None]:
    """
    Fires after C{count} turns of the reactor.
    """
    done: Deferred[None] = deferLater(reactor, 0, lambda: None)
    for _ in range(count - 1):
        done.addCallback(lambda _: deferLater(reactor, 0, lambda: None))
    return done


@inlineCallbacks
def until(condition: Callable[[], bool], what: str):
    """
    Turn the reactor until C{condition} holds, at most L{PROMPTLY} seconds.
    """
    deadline = reactor.seconds() + PROMPTLY
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not within {PROMPTLY}s: {what}")
        yield deferLater(reactor, 0.001, lambda: None)


class SendfileTests(InProcessPort):
    """
    Large answers of a plain http port, on the real reactor.
    """

    def setUp(self) -> None:
        super().setUp()
        self.body = os.urandom(3 << 20)
        (self.root / "big.bin").write_bytes(self.body)
        self.counted = CountingSendfile()
        self.patch(sendfileModule, "sendfile", self.counted)
        self.producers: list[SendfileProducer] = []
        record = self.producers.append

        class Recorded(SendfileProducer):
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                record(self)

        self.patch(webresources, "SendfileProducer", Recorded)

    def logged(self, kind: str) -> list[dict]:
        """
        The log events of C{kind} (their C{log_namespace}'s last part).
        """
        return [
            event
            for event in self.events
            if event.get("log_namespace", "").endswith("." + kind)
        ]

    @inlineCallbacks
    def test_wholeFile(self):
        """
        A GET of a large file is answered whole with C{sendfile}; the access
        log and the connection's count of bytes sent include its body.
        """
        port = self.startPort()
        answer = yield self.get(port, b"/big.bin")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 200 OK")
        self.assertEqual(answer.header(b"content-length"), b"%d" % len(self.body))
        self.assertEqual(answer.body, self.body)
        self.assertEqual(self.counted.sent, len(self.body))
        [access] = self.logged("access")
        self.assertEqual(access["sent"], len(self.body))
        yield until(lambda: bool(self.logged("connection")), "the close is logged")
        [closed] = self.logged("connection")
        self.assertGreater(closed["sent"], len(self.body))

    @inlineCallbacks
    def test_oneRange(self):
        """
        One large range is sent with C{sendfile} from its offset.
        """
        port = self.startPort()
        answer = yield self.get(port, b"/big.bin", b"Range: bytes=1000-299999")
        self.assertEqual(answer.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertEqual(answer.body, self.body[1000:300000])
        self.assertEqual(self.counted.sent, 299000)

    @inlineCallbacks
    def test_smallPiecesCopied(self):
        """
        A range below L{SENDFILE_AT_LEAST}, and a multipart answer, are
        read and written as before: no C{sendfile}.
        """
        port = self.startPort()
        small = yield self.get(port, b"/big.bin", b"Range: bytes=10-19")
        self.assertEqual(small.body, self.body[10:20])
        size = SENDFILE_AT_LEAST
        parts = yield self.get(
            port, b"/big.bin", b"Range: bytes=0-%d,%d-%d" % (size, 2 * size, 3 * size)
        )
        self.assertEqual(parts.statusLine, b"HTTP/1.1 206 Partial Content")
        self.assertIn(self.body[2 * size : 3 * size + 1], parts.body)
        self.assertEqual(self.counted.calls, 0)

    @inlineCallbacks
    def test_pipelined(self):
        """
        Requests pipelined behind a large answer are answered after it, in
        order, on the same connection.
        """
        port = self.startPort()
        received = yield self.exchange(
            port,
            b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /small.txt HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /big.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(statuses(received), [200, 200, 200])
        self.assertEqual(received.count(self.body), 2)
        first = received.index(self.body)
        self.assertLess(first, received.index(b"0123456789"))
        self.assertLess(received.index(b"0123456789"), received.rindex(self.body))
        self.assertEqual(self.counted.sent, 2 * len(self.body))

    @inlineCallbacks
    def held(self, port: int):
        """
        A L{HeldClient} that asked for a file larger than the sockets'
        buffers can hold (L{HUGE}, kept as C{self.body}) and whose server
        met a full socket; the client and the server's producer.
        """
        self.body = os.urandom(HUGE)
        (self.root / "big.bin").write_bytes(self.body)
        path = b"/big.bin"
        client = HeldClient(
            b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        self.addCleanup(
            lambda: client.done.cancel() if not client.done.called else None
        )
        yield until(lambda: self.counted.full > 0, "the socket is full")
        [producer] = self.producers
        return client, producer

    @inlineCallbacks
    def test_slowReaderWaitedFor(self):
        """
        While the client reads nothing, the server does not call
        C{sendfile} again; once it reads, it gets the whole file.
        """
        port = self.startPort()
        client, producer = yield self.held(port)
        calls = self.counted.calls
        yield turns(50)
        self.assertLessEqual(self.counted.calls - calls, 2)
        client.read()
        received = yield client.done
        self.assertEqual(parseAnswer(received).body, self.body)
        self.assertTrue(producer.fileObject.closed)

    @inlineCallbacks
    def test_fileShrinks(self):
        """
        A file cut short while it is being sent can't give the promised
        length: the connection is aborted and the reason logged.
        """
        port = self.startPort()
        client, producer = yield self.held(port)
        os.truncate(self.root / "big.bin", 1 << 20)
        client.read()
        received = yield client.done
        answer = parseAnswer(received)
        self.assertEqual(answer.header(b"content-length"), b"%d" % HUGE)
        # Cut short: what the socket held when the file shrank may have
        # left with the file's new bytes (the kernel sends the file's pages,
        # not a copy), so only the part still in the file is compared.
        self.assertLess(len(answer.body), HUGE)
        self.assertEqual(answer.body[: 1 << 20], self.body[: 1 << 20])
        self.assertTrue(producer.fileObject.closed)
        self.assertTrue(
            any("shrank" in event.get("log_format", "") for event in self.events)
        )

    @inlineCallbacks
    def test_clientLeaves(self):
        """
        A client that goes away mid-answer ends it: the file is closed and
        the port serves the next client.
        """
        port = self.startPort()
        client, producer = yield self.held(port)
        client.transport.abortConnection()
        yield client.done
        yield until(lambda: producer.fileObject.closed, "the file is closed")
        answer = yield self.get(port, b"/small.txt")
        self.assertEqual(answer.body, b"0123456789")

    @inlineCallbacks
    def test_optionOff(self):
        """
        With the port's option C{sendfile = false}, every byte is read and
        written.
        """
        port = self.startPort(options={"root": "www", "sendfile": False})
        answer = yield self.get(port, b"/big.bin")
        self.assertEqual(answer.body, self.body)
        self.assertEqual(self.counted.calls, 0)

    def test_optionChecked(self) -> None:
        """
        C{sendfile} must be true or false; the error names the option and
        the value.
        """
        error = self.assertRaises(
            OptionError, parseWebOptions, {"sendfile": "yes"}, self.folder
        )
        self.assertIn("sendfile", str(error))
        self.assertIn("'yes'", str(error))

    @inlineCallbacks
    def test_tlsCopied(self):
        """
        Over TLS the bytes must be encrypted in user space: the answer is
        read and written, and whole.
        """
        port = self.startPort(handler="https")
        client = RawClient(
            b"GET /big.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        endpoint = wrapClientTLS(
            CertificateOptions(), TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        )
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        received = yield client.done.addTimeout(PROMPTLY, reactor)
        self.assertEqual(parseAnswer(received).body, self.body)
        self.assertEqual(self.counted.calls, 0)


class ConnectionTests(InProcessPort):
    """
    Which channels' requests may be sent with C{sendfile}.
    """

    def test_channelMustAllow(self) -> None:
        """
        A channel that does not say it allows C{sendfile} (twisted.web's,
        HTTP/2's streams) gets none, whatever its transport.
        """

        class Channel:
            transport = object()

        class Request:
            channel = Channel()

        self.assertIsNone(sendfileModule.sendfileConnection(Request()))
        Channel.sendfileAllowed = True  # type: ignore[attr-defined]
        # Allowed, but no TCP connection under it.
        self.assertIsNone(sendfileModule.sendfileConnection(Request()))
