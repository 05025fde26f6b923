"""
An http connection when its port drains (SIGTERM, a removed port, an
upgrade's old process): it closes at once only between requests; a client
that connected before the drain gets its first request answered.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from multiport.handlers.interface import IDrainable
from multiport.handlers.lean import LeanChannel
from multiport.handlers.webchannel import TimedChannel
from tests.test_web import _WebTestCase

REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


class DrainTests(_WebTestCase):
    """
    L{multiport.handlers.lean.LeanChannel.drain}.
    """

    #: Whether the port's HTTP/1.x is L{LeanChannel}'s (the http handler's)
    #: or twisted.web's (a websocket port's).
    lean = True

    def connect(self) -> tuple[IDrainable, StringTransport]:
        site = self.site({})
        site.lean = self.lean
        channel = site.buildProtocol(None)
        self.assertIsInstance(channel, LeanChannel if self.lean else TimedChannel)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def turn(self, transport: StringTransport) -> None:
        for _ in range(100):
            if transport.disconnecting:
                return
            self.reactor.advance(0)

    def test_beforeFirstRequest(self) -> None:
        """
        A connection drained before its first request arrives answers it,
        with C{Connection: close}, then closes: the client connected before
        the drain and loses nothing.
        """
        channel, transport = self.connect()
        channel.drain()
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(REQUEST)
        self.turn(transport)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:80])
        self.assertIn(b"\r\nConnection: close\r\n", response)
        self.assertTrue(transport.disconnecting)

    def test_partRequest(self) -> None:
        """
        A request half received when the drain starts is answered too.
        """
        channel, transport = self.connect()
        channel.dataReceived(REQUEST[:20])
        channel.drain()
        channel.dataReceived(REQUEST[20:])
        self.turn(transport)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_betweenRequests(self) -> None:
        """
        A kept-alive connection that went quiet after an answer closes at
        once.
        """
        channel, transport = self.connect()
        channel.dataReceived(REQUEST)
        self.turn(transport)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertFalse(transport.disconnecting)
        channel.drain()
        self.assertTrue(transport.disconnecting)

    def test_nextRequestStarted(self) -> None:
        """
        After an answer, a next request whose first bytes came is no longer
        between requests: it is answered before the close.
        """
        channel, transport = self.connect()
        channel.dataReceived(REQUEST)
        self.turn(transport)
        transport.clear()
        channel.dataReceived(REQUEST[:10])
        channel.drain()
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(REQUEST[10:])
        self.turn(transport)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.disconnecting)


class TwistedChannelDrainTests(DrainTests):
    """
    L{multiport.handlers.webchannel.DrainingChannel.drain}, twisted.web's
    channel (a websocket port's HTTP/1.1).
    """

    lean = False
