"""
Tests for WebSocket endpoints (L{multiport.websocket}) and the websocket
handler's options, in memory: wsproto's client (a client nobody here
wrote) against the handler's real twisted.web site on a string transport
and a clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import evolve
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from multiport.config.build import buildConfig
from multiport.config.model import Defaults, PortConfig
from multiport.config.portspec import parsePortItem
from multiport.errors import ConfigError
from multiport.handlers.interface import HandlerContext, OptionError
from multiport.handlers.websocket import parseWebSocketOptions, websocket
from multiport.ports.websocketcounters import webSocketReport
from multiport.websocket.resource import acceptKey
from multiport.websocket.settings import parseWebSocketSettings
from tests.support import HANDLERS

HOST = "127.0.0.1:7000"
SAME_HOST = b"http://" + HOST.encode()


def makeSite(options: dict[str, object]) -> tuple[Any, HandlerContext]:
    """
    The websocket handler's site for C{options} on a memory reactor.
    """
    clock = MemoryReactorClock()
    port = PortConfig(
        interface="127.0.0.1",
        port=7000,
        handler="websocket",
        tls=None,
        backlog=50,
        options=parseWebSocketOptions(options, Path(".")),
    )
    context = HandlerContext(reactor=clock, clock=clock, port=port)
    return websocket.buildFactory(context), context


class MemoryClient:
    """
    wsproto's client on one connection to C{site}, in memory.
    """

    def __init__(self, site: Any, **request: Any) -> None:
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)
        request.setdefault("host", HOST)
        request.setdefault("target", "/ws")
        self.send(Request(**request))

    def send(self, event: Event) -> None:
        """
        Send C{event}'s bytes to the server.
        """
        self.protocol.dataReceived(self.ws.send(event))

    def events(self) -> list[Event]:
        """
        What the server sent since the last call, as wsproto's events.
        """
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.ws.receive_data(data)
        return list(self.ws.events())

    @property
    def closed(self) -> bool:
        """
        Whether the server closed the TCP connection.
        """
        return not self.transport.connected


def counters(context: HandlerContext) -> dict[str, Any]:
    """
    The port's C{websocket} block of C{/status}.
    """
    report = webSocketReport(context.counters.snapshot())
    assert report is not None
    return report


class OptionTests(SynchronousTestCase):
    """
    The websocket handler's options, validated with errors that name the
    bad value.
    """

    def bad(self, options: dict[str, object]) -> OptionError:
        return self.assertRaises(OptionError, parseWebSocketOptions, options, Path("."))

    def test_defaults(self) -> None:
        """
        Echo on C{/ws}: 1 MiB messages, same host only, pings every 20 s,
        idle after 60 s.
        """
        options = parseWebSocketOptions({"echo": True}, Path("."))
        self.assertEqual(options.path, "/ws")
        self.assertIsNone(options.upstream)
        self.assertEqual(options.settings.maxMessageSize, 1024 * 1024)
        self.assertIsNone(options.settings.origins)
        self.assertEqual(options.settings.pingInterval, 20.0)
        self.assertEqual(options.settings.idleTimeout, 60.0)

    def test_echoOrUpstream(self) -> None:
        """
        Exactly one of echo and upstream.
        """
        self.assertIn("exactly one", self.bad({}).message)
        error = self.bad({"echo": True, "upstream": "127.0.0.1:7"})
        self.assertEqual(error.key, "upstream")

    def test_badValuesNamed(self) -> None:
        """
        Each bad value is named in its error.
        """
        cases: list[tuple[dict[str, object], str, str]] = [
            ({"max_message_size": 0}, "max_message_size", "0"),
            ({"max_message_size": "1M"}, "max_message_size", "'1M'"),
            ({"origins": ["example.com"]}, "origins", "'example.com'"),
            ({"origins": "https://a.example"}, "origins", "'https://a.example'"),
            ({"subprotocols": ["a b"]}, "subprotocols", "'a b'"),
            ({"ping_interval": -1}, "ping_interval", "-1"),
            ({"idle_timeout": 10, "ping_interval": 20}, "idle_timeout", "10 s"),
            ({"path": "ws"}, "path", "'ws'"),
            ({"upstream": "nowhere"}, "upstream", "'nowhere'"),
        ]
        for options, key, shown in cases:
            if "upstream" not in options:
                options = {**options, "echo": True}
            error = self.bad(options)
            self.assertEqual(error.key, key, options)
            self.assertIn(shown, error.message, options)

    def test_httpOptionsToo(self) -> None:
        """
        Keys that are not the websocket handler's go to the http handler's
        options, whose errors are its own.
        """
        options = parseWebSocketOptions({"echo": True, "listing": True}, Path("."))
        self.assertTrue(options.web.listing)
        self.assertEqual(self.bad({"echo": True, "colour": 1}).key, "colour")

    def test_origins(self) -> None:
        """
        Origins compare in lower case without their default port.
        """
        parsed = parseWebSocketSettings(
            {"origins": ["HTTPS://Game.Example:443", "http://127.0.0.1:8080"]}
        )
        self.assertEqual(
            parsed.origins, ("https://game.example", "http://127.0.0.1:8080")
        )

    def test_portNamed(self) -> None:
        """
        A bad option in a configuration names the port and the value.
        """
        request = parsePortItem("127.0.0.1:7000=websocket", "--ports item 1")
        request = evolve(request, options={"echo": True, "max_message_size": -5})
        error = self.assertRaises(
            ConfigError, buildConfig, [request], Defaults(), HANDLERS, Path(".")
        )
        self.assertIn("--ports item 1", str(error))
        self.assertIn("max_message_size", str(error))
        self.assertIn("-5", str(error))


class HandshakeTests(SynchronousTestCase):
    """
    The opening handshake: accepted, or refused with an HTTP status that
    is counted by reason.
    """

    def test_acceptKey(self) -> None:
        """
        The example of RFC 6455 section 1.3.
        """
        self.assertEqual(
            acceptKey(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        )

    def test_accepted(self) -> None:
        """
        wsproto's client completes the handshake and is counted open.
        """
        site, context = makeSite({"echo": True})
        client = MemoryClient(site)
        [accepted] = client.events()
        self.assertIsInstance(accepted, AcceptConnection)
        self.assertEqual(counters(context)["connections"], 1)

    def refused(
        self, options: dict[str, object], **request: Any
    ) -> tuple[RejectConnection, HandlerContext]:
        site, context = makeSite({"echo": True, **options})
        client = MemoryClient(site, **request)
        [rejected, *_] = client.events()
        assert isinstance(rejected, RejectConnection), rejected
        return rejected, context

    def test_otherOrigin(self) -> None:
        """
        A browser page from another host is refused with 403.
        """
        rejected, context = self.refused(
            {}, extra_headers=[(b"origin", b"http://evil.example")]
        )
        self.assertEqual(rejected.status_code, 403)
        self.assertEqual(counters(context)["handshake_failures"], {"origin": 1})

    def test_sameHostOrigin(self) -> None:
        """
        A page from the port's own host and port is accepted by default.
        """
        site, _ = makeSite({"echo": True})
        client = MemoryClient(site, extra_headers=[(b"origin", SAME_HOST)])
        self.assertIsInstance(client.events()[0], AcceptConnection)

    def test_listedOrigin(self) -> None:
        """
        With origins, only those are accepted; C{["*"]} accepts any.
        """
        site, _ = makeSite({"echo": True, "origins": ["https://game.example"]})
        good = MemoryClient(site, extra_headers=[(b"origin", b"https://game.example")])
        self.assertIsInstance(good.events()[0], AcceptConnection)
        bad = MemoryClient(site, extra_headers=[(b"origin", SAME_HOST)])
        self.assertIsInstance(bad.events()[0], RejectConnection)
        site, _ = makeSite({"echo": True, "origins": ["*"]})
        anyone = MemoryClient(site, extra_headers=[(b"origin", b"null")])
        self.assertIsInstance(anyone.events()[0], AcceptConnection)

    def test_subprotocol(self) -> None:
        """
        The first of the endpoint's subprotocols that the client offers is
        agreed; a client offering only others is refused.
        """
        site, context = makeSite({"echo": True, "subprotocols": ["v2", "v1"]})
        client = MemoryClient(site, subprotocols=["v1", "v2"])
        [accepted] = client.events()
        assert isinstance(accepted, AcceptConnection)
        self.assertEqual(accepted.subprotocol, "v2")
        other = MemoryClient(site, subprotocols=["v9"])
        [rejected, *_] = other.events()
        assert isinstance(rejected, RejectConnection)
        self.assertEqual(rejected.status_code, 400)
        self.assertEqual(counters(context)["handshake_failures"], {"subprotocol": 1})

    def raw(self, site: Any, head: bytes) -> bytes:
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(head)
        return bytes(transport.value())

    def test_badHandshakes(self) -> None:
        """
        Requests that are no upgrade, or a broken one, are refused with
        400, 405 or 426, each counted by reason.
        """
        site, context = makeSite({"echo": True})
        key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        version = b"Sec-WebSocket-Version: 13\r\n"
        host = b"Host: 127.0.0.1\r\n"
        cases = [
            (b"GET /ws HTTP/1.1\r\n" + host + b"\r\n", b"426"),
            (b"POST /ws HTTP/1.1\r\n" + host + upgrade + key + version, b"405"),
            (b"GET /ws HTTP/1.1\r\n" + host + upgrade + key + b"\r\n", b"426"),
            (b"GET /ws HTTP/1.1\r\n" + host + upgrade + version + b"\r\n", b"400"),
            (
                b"GET /ws HTTP/1.1\r\n"
                + host
                + upgrade
                + version
                + b"Sec-WebSocket-Key: c2hvcnQ=\r\n\r\n",
                b"400",
            ),
            (
                b"GET /ws HTTP/1.0\r\n" + host + upgrade + key + version + b"\r\n",
                b"400",
            ),
        ]
        for head, status in cases:
            if not head.endswith(b"\r\n\r\n"):
                head += b"Content-Length: 0\r\n\r\n"
            answer = self.raw(site, head)
            self.assertEqual(answer.split(b" ")[1], status, (head, answer))
        self.assertEqual(
            counters(context)["handshake_failures"],
            {"bad_request": 3, "method": 1, "not_upgrade": 1, "version": 1},
        )
        self.assertEqual(counters(context)["connections"], 0)

    def test_otherPathsServed(self) -> None:
        """
        Paths other than the endpoint's are served as the http handler
        serves them.
        """
        site, _ = makeSite({"echo": True})
        answer = self.raw(site, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertIn(b"multiport", answer)

    def test_framesInTheSameRead(self) -> None:
        """
        Frames sent in the same read as the upgrade request are not lost.
        """
        site, _ = makeSite({"echo": True})
        head = (
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = self.raw(site, head + _frame(True, 0, 1, True, b"early"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 101 "), answer)
        frames = Connection(ConnectionType.CLIENT)
        frames.receive_data(answer[answer.index(b"\r\n\r\n") + 4 :])
        self.assertEqual(
            [e.data for e in frames.events() if isinstance(e, TextMessage)], ["early"]
        )


class ConnectionTests(SynchronousTestCase):
    """
    An open connection: messages, limits, timers and closes.
    """

    def open(self, **options: object) -> tuple[MemoryClient, HandlerContext]:
        site, context = makeSite({"echo": True, **options})
        client = MemoryClient(site)
        [accepted] = client.events()
        assert isinstance(accepted, AcceptConnection)
        return client, context

    def test_echo(self) -> None:
        """
        Text and binary messages come back as they went, and are counted.
        """
        client, context = self.open()
        client.send(TextMessage(data="héllo"))
        client.send(BytesMessage(data=b"\x00\x01" * 100))
        events = client.events()
        self.assertEqual(
            [(type(e), e.data) for e in events],
            [(TextMessage, "héllo"), (BytesMessage, b"\x00\x01" * 100)],
        )
        report = counters(context)
        self.assertEqual(report["messages"], {"in": 2, "out": 2})
        self.assertEqual(report["bytes"], {"in": 206, "out": 206})

    def test_fragments(self) -> None:
        """
        A message sent in fragments is handed on whole.
        """
        client, _ = self.open()
        client.send(BytesMessage(data=b"ab", message_finished=False))
        client.send(BytesMessage(data=b"cd", message_finished=True))
        self.assertEqual([e.data for e in client.events()], [b"abcd"])

    def test_tooBig(self) -> None:
        """
        A message over max_message_size closes with 1009 as soon as its
        fragments pass the size, before it is whole.
        """
        client, context = self.open(max_message_size=10)
        client.send(BytesMessage(data=b"x" * 8, message_finished=False))
        client.send(BytesMessage(data=b"x" * 8, message_finished=False))
        [close] = client.events()
        assert isinstance(close, CloseConnection)
        self.assertEqual(close.code, 1009)
        client.send(close.response())
        self.assertTrue(client.closed)
        self.assertEqual(counters(context)["close_codes"], {"1009": 1})
        self.assertEqual(counters(context)["connections"], 0)

    def test_clientCloses(self) -> None:
        """
        A client's close is answered with the same code, then the server
        closes TCP; the code is counted as the client's.
        """
        client, context = self.open()
        client.send(CloseConnection(code=4000, reason="bye"))
        [answer] = client.events()
        assert isinstance(answer, CloseConnection)
        self.assertEqual(answer.code, 4000)
        self.assertTrue(client.closed)
        self.assertEqual(
            context.counters.value("websocket_closes", code="4000", by="client"), 1
        )

    def test_dropped(self) -> None:
        """
        A connection lost without a closing handshake counts as 1006.
        """
        client, context = self.open()
        client.transport.loseConnection()
        self.assertEqual(counters(context)["close_codes"], {"1006": 1})
        self.assertEqual(counters(context)["connections"], 0)

    def test_pingAnswered(self) -> None:
        """
        A client's ping gets a pong with its payload.
        """
        client, _ = self.open()
        client.send(Ping(payload=b"42"))
        [pong] = client.events()
        assert isinstance(pong, Pong)
        self.assertEqual(pong.payload, b"42")

    def test_pings(self) -> None:
        """
        The server pings every ping_interval; a client that answers is
        never idle, one that stops is closed 1001 after idle_timeout.
        """
        client, context = self.open(ping_interval=10, idle_timeout=25)
        clock: Any = context.clock
        for _ in range(5):
            clock.advance(10)
            [ping] = client.events()
            assert isinstance(ping, Ping)
            client.send(ping.response())
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(len(client.events()), 2)
        clock.advance(5)
        [close] = client.events()
        assert isinstance(close, CloseConnection)
        self.assertEqual(close.code, 1001)
        # No answer to the close: TCP is closed a few seconds later.
        self.assertFalse(client.closed)
        clock.advance(5)
        self.assertTrue(client.closed)
        self.assertEqual(counters(context)["close_codes"], {"1001": 1})

    def test_noTimers(self) -> None:
        """
        ping_interval and idle_timeout 0 turn them off: nothing is left
        scheduled.
        """
        client, context = self.open(ping_interval=0, idle_timeout=0)
        clock: Any = context.clock
        clock.advance(3600)
        self.assertEqual(client.events(), [])
        client.send(CloseConnection(code=1000))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_protocolError(self) -> None:
        """
        A client frame that is not masked is a protocol error: close 1002
        and drop the connection at once, without a traceback.
        """
        client, context = self.open()
        with capturedLogs() as events:
            client.protocol.dataReceived(b"\x82\x02ab")
        [close] = client.events()
        assert isinstance(close, CloseConnection)
        self.assertEqual(close.code, 1002)
        self.assertTrue(client.closed)
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.assertEqual(counters(context)["close_codes"], {"1002": 1})

    def test_drain(self) -> None:
        """
        When the port goes away, open connections close with 1001.
        """
        client, _ = self.open()
        client.protocol.drain()
        [close] = client.events()
        assert isinstance(close, CloseConnection)
        self.assertEqual(close.code, 1001)


#: Frames a fuzzer builds: random header bits, lengths and payloads, masked
#: or not, among well-formed frames and plain noise.
def _frame(fin: bool, rsv: int, opcode: int, mask: bool, payload: bytes) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        head = bytes([first, (0x80 if mask else 0) | length])
    elif length < 65536:
        head = bytes([first, (0x80 if mask else 0) | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, (0x80 if mask else 0) | 127]) + length.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


_TOO_BIG = _frame(True, 0, 2, True, b"b" * 150)
#: Well-formed client frames (and a few just wrong), among which the
#: random ones and noise fall.
_wellFormed = st.sampled_from(
    [
        _frame(True, 0, 1, True, b"text"),
        _TOO_BIG,
        _frame(False, 0, 2, True, b"b" * 60),
        _frame(True, 0, 0, True, b"end"),
        _frame(True, 0, 9, True, b"ping"),
        _frame(True, 0, 10, True, b"pong"),
        _frame(True, 0, 8, True, b"\x03\xe8"),
        _frame(True, 0, 8, True, b"\x03"),
        _frame(True, 0, 8, True, b"\x03\xeeok"),
        _frame(True, 0, 1, True, b"\xff\xfe"),
        _frame(True, 0, 9, True, b"p" * 126),
        _frame(False, 0, 9, True, b""),
    ]
)
_randomFrames = st.builds(
    _frame,
    st.booleans(),
    st.integers(0, 7),
    st.integers(0, 15),
    st.booleans(),
    st.binary(max_size=300),
)
_frames = st.one_of(_wellFormed, _randomFrames, st.binary(max_size=64))


class FuzzTests(SynchronousTestCase):
    """
    Fuzzed frames after a good handshake: the server answers with
    well-formed frames only, closes cleanly on garbage, never logs a
    traceback, and another connection on the same port goes on echoing.
    """

    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.one_of(_wellFormed, _frames), min_size=1, max_size=8))
    # Hypothesis rarely puts a control frame after an oversized message:
    # the closing state's corners, given explicitly.
    @example([_TOO_BIG, _frame(True, 0, 9, True, b"ping")])
    @example(
        [_TOO_BIG, _frame(True, 0, 1, True, b"text"), _frame(True, 0, 8, True, b"")]
    )
    @example([_frame(False, 0, 2, True, b"b" * 6), _frame(True, 0, 9, True, b"")])
    def test_fuzzedFrames(self, frames: list[bytes]) -> None:
        site, context = makeSite({"echo": True, "max_message_size": 10})
        other = MemoryClient(site)
        other.events()
        victim = MemoryClient(site)
        victim.events()
        with capturedLogs() as logged:
            for frame in frames:
                if victim.closed:
                    break
                victim.protocol.dataReceived(frame)
            # Whatever the server answered parses as frames.
            for event in victim.events():
                if isinstance(event, CloseConnection):
                    self.assertTrue(
                        event.code in (1000, 1002, 1005, 1007, 1009)
                        or 3000 <= event.code < 5000
                        or event.code in range(1000, 1015),
                        event.code,
                    )
                self.assertNotIsInstance(event, RejectData)
            if not victim.closed:
                victim.transport.loseConnection()
        self.assertEqual([e for e in logged if "log_failure" in e], [])
        other.send(TextMessage(data="still here"))
        self.assertEqual([e.data for e in other.events()], ["still here"])
        self.assertEqual(counters(context)["connections"], 1)
