"""
L{multiport.ports.handshake} and the TLS layer of a port in memory: what a
client that does not speak TLS gets, and why a failed handshake failed.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import PortConfig, TLSConfig
from multiport.handlers.interface import HandlerContext
from multiport.handlers.simple import Echo
from multiport.ports.counters import PortCounters
from multiport.ports.factory import PortFactory
from multiport.ports.handshake import (
    PLAIN_HTTP_MESSAGE,
    PLAIN_REQUEST_LIMIT,
    Plain,
    classifyPlain,
    handshakeFailure,
    notTLSReason,
    plainHTTPAnswer,
    startsTLS,
)
from multiport.ports.server import SwitchableCreator
from multiport.ports.tls import certificateFromPEM, makeSelfSigned
from tests.test_policies import v4


class StartsTLSTests(SynchronousTestCase):
    """
    L{startsTLS} tells a TLS client by its first byte, as nginx does.
    """

    def test_handshakeRecord(self):
        """
        0x16 (a handshake record) and any byte with the high bit set (an
        SSLv2-style hello) can begin TLS.
        """
        self.assertTrue(all(startsTLS(b) for b in (0x16, 0x80, 0xFF)))

    def test_text(self):
        """
        Letters, control bytes and other record types can't.
        """
        self.assertFalse(any(startsTLS(b) for b in (*b"GPSH\r\n", 0x00, 0x15, 0x17)))


class ClassifyPlainTests(SynchronousTestCase):
    """
    L{classifyPlain} reads a plain HTTP request as far as it needs to.
    """

    def test_completeHead(self):
        """
        A request line and headers ending in a blank line (CRLF or bare LF)
        are answered.
        """
        for request in (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /a HTTP/1.0\n\n",
            b"OPTIONS * HTTP/1.1\r\n\r\nbody",
        ):
            self.assertIs(classifyPlain(request), Plain.HTTP, request)

    def test_partial(self):
        """
        The start of a request, down to one letter, waits for more.
        """
        for request in (b"G", b"GE", b"GET", b"GET ", b"GET / HTTP/1.1\r\nHost"):
            self.assertIs(classifyPlain(request), Plain.MORE, request)

    def test_limit(self):
        """
        A request head that never ends is answered once it reaches the
        limit.
        """
        request = b"GET /" + b"a" * PLAIN_REQUEST_LIMIT
        self.assertIs(classifyPlain(request), Plain.HTTP)

    def test_other(self):
        """
        Anything else is neither TLS nor HTTP.
        """
        for data in (
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x00\x01",
            b"get / HTTP/1.1\r\n\r\n",
        ):
            self.assertIs(classifyPlain(data), Plain.OTHER, data)


class AnswerTests(SynchronousTestCase):
    """
    L{plainHTTPAnswer} is nginx's 400, in plain text.
    """

    def test_answer(self):
        """
        A 400 that closes the connection, its body nginx's sentence.
        """
        answer = plainHTTPAnswer(b"GET / HTTP/1.1\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 400 Bad Request")
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Content-Length: %d" % (len(body),), lines)
        self.assertEqual(body, PLAIN_HTTP_MESSAGE.encode() + b"\n")

    def test_head(self):
        """
        A HEAD request gets the head alone.
        """
        answer = plainHTTPAnswer(b"HEAD / HTTP/1.1\r\n\r\n")
        self.assertTrue(answer.endswith(b"\r\n\r\n"))
        self.assertIn(b"Content-Length: ", answer)


class ReasonTests(SynchronousTestCase):
    """
    The reasons logged for a failed handshake.
    """

    def test_notTLS(self):
        """
        Plain HTTP is named; anything else shows how it began.
        """
        self.assertEqual(
            notTLSReason(b"GET / HTTP/1.1"), "plain HTTP sent to a TLS port"
        )
        self.assertEqual(
            notTLSReason(b"SSH-2.0-OpenSSH_9.6"), "not TLS (it began b'SSH-2.0-')"
        )

    def test_openSSL(self):
        """
        OpenSSL's refusal is given in its own words.
        """
        failure = Failure(SSL.Error([("SSL routines", "", "no shared cipher")]))
        self.assertEqual(handshakeFailure(failure), "no shared cipher")

    def test_clientLeft(self):
        """
        A client that leaves mid-handshake, closing or resetting.
        """
        for value in (error.ConnectionDone(), error.ConnectionLost()):
            self.assertEqual(
                handshakeFailure(Failure(value)), "the client closed the connection"
            )


class PlainOnTLSPortTests(SynchronousTestCase):
    """
    A TLS port's protocol stack in memory, given bytes that are not TLS.
    """

    def setUp(self) -> None:
        cert, key = makeSelfSigned(datetime.datetime.now(datetime.UTC), "test")
        tls = TLSConfig(cert=Path("memory.pem"))
        loaded = certificateFromPEM(tls, cert + key, cert + key)
        clock = Clock()
        config = PortConfig("127.0.0.1", 7443, "echo", tls, 50, None)
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        self.factory = PortFactory(Factory.forProtocol(Echo), PortCounters(), context)
        listening = self.factory.listeningFactory(
            SwitchableCreator(loaded.contextFactory)
        )
        self.protocol = listening.buildProtocol(v4("192.0.2.1"))
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def feed(self, *parts: bytes) -> dict | None:
        """
        Give the port C{parts} one read at a time; the connection log event
        if the connection closed (the transport ends it at once).
        """
        with capturedLogs() as events:
            for part in parts:
                self.protocol.dataReceived(part)
        closed = [e for e in events if e.get("reason")]
        return closed[0] if closed else None

    def test_plainHTTP(self):
        """
        A plain HTTP request, split over reads, gets the 400 once its head
        is complete; the connection closes and the log says why.
        """
        self.assertIsNone(self.feed(b"GE", b"T / HTTP/1.1\r\nHost: x\r\n"))
        self.assertEqual(self.transport.value(), b"")
        event = self.feed(b"\r\n")
        self.assertTrue(
            self.transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n")
        )
        self.assertFalse(self.transport.connected)
        assert event is not None
        self.assertEqual(event["reason"], "error")
        self.assertEqual(
            event["detail"], "TLS handshake failed: plain HTTP sent to a TLS port"
        )
        self.assertEqual(self.factory.counters.tlsHandshakeFailures, 1)

    def test_other(self):
        """
        Bytes that are neither TLS nor HTTP close the connection unanswered.
        """
        event = self.feed(b"SSH-2.0-OpenSSH_9.6\r\n")
        # (A string transport records what the TLS layer writes once
        # closed, which a socket would drop.)
        self.assertNotIn(b"HTTP", self.transport.value())
        self.assertFalse(self.transport.connected)
        assert event is not None
        self.assertEqual(
            event["detail"], "TLS handshake failed: not TLS (it began b'SSH-2.0-')"
        )

    def test_garbageHandshake(self):
        """
        A first byte that can begin TLS goes to OpenSSL, whose reason is
        logged.
        """
        event = self.feed(b"\x16\x03\x01\x00\x05hello")
        assert event is not None
        self.assertEqual(event["reason"], "error")
        self.assertTrue(event["detail"].startswith("TLS handshake failed: "))
        self.assertNotIn("plain HTTP", event["detail"])
        self.assertNotIn("not TLS", event["detail"])
