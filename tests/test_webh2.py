"""
Unit tests of the http handler's HTTP/2 (L{multiport.handlers.webh2},
L{multiport.handlers.webh2frames}): the h2 library's client against a
port's protocol on a L{StringTransport} and a memory reactor.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import PortConfig, TLSConfig
from multiport.handlers.interface import HandlerContext
from multiport.handlers.web import https
from multiport.handlers.webh2 import PortChannel, PortH2Connection
from multiport.handlers.webh2frames import PREAMBLE, FrameEdges
from multiport.handlers.weboptions import parseWebOptions
from multiport.ports.counters import HandlerCounters

GET = [
    (b":method", b"GET"),
    (b":path", b"/"),
    (b":scheme", b"https"),
    (b":authority", b"localhost"),
]
#: A file over three times a stream's default window (65,535 bytes).
BIG = bytes(range(256)) * 800


def runDueCall(clock: MemoryReactorClock) -> bool:
    """
    Run the first call due now on C{clock}, alone; whether there was one.
    """
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    if not due:
        return False
    call = min(due, key=lambda c: c.getTime())
    clock.calls.remove(call)
    call.called = 1
    call.func(*call.args, **call.kw)
    return True


def httpsSite(root: Path, clock: MemoryReactorClock, counters: HandlerCounters) -> Any:
    """
    The site of an https port serving C{root}, on C{clock}.
    """
    port = PortConfig(
        interface="127.0.0.1",
        port=8443,
        handler="https",
        tls=TLSConfig(),
        backlog=50,
        options=parseWebOptions({"root": str(root)}, root),
    )
    context = HandlerContext(reactor=clock, clock=clock, port=port, counters=counters)
    return https.buildFactory(context)


class Harness:
    """
    One HTTP/2 connection to a site (L{httpsSite}): the h2 library's
    client on one side, the port's protocol on a L{StringTransport} that
    negotiated C{h2} on the other.
    """

    def __init__(self, site: Any, clock: MemoryReactorClock) -> None:
        self.clock = clock
        self.site = site
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        protocol = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 53422))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
            peerAddress=IPv4Address("TCP", "192.0.2.7", 53422),
        )
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.protocol: PortChannel = protocol
        self.transport = transport

    @property
    def h2(self) -> PortH2Connection:
        """
        The HTTP/2 connection the port's protocol switched to.
        """
        channel: PortH2Connection = self.protocol._channel
        return channel

    def send(self, extra: bytes = b"") -> None:
        """
        Send what the client has queued, then C{extra}.
        """
        self.protocol.dataReceived(self.client.data_to_send() + extra)

    def step(self) -> list[h2.events.Event]:
        """
        Run the first call due now, alone (the memory clock's C{advance}
        also runs what that call schedules for now); what the client
        received.
        """
        runDueCall(self.clock)
        return self.receive()

    def receive(self) -> list[h2.events.Event]:
        """
        What the server wrote since last time, as the client's events.
        """
        data = self.transport.value()
        self.transport.clear()
        return list(self.client.receive_data(data)) if data else []

    def settle(self) -> list[h2.events.Event]:
        """
        Run the reactor's due calls one at a time until none is left, at
        most 2,000 (a loop that reschedules itself forever stops there);
        every event the client received.
        """
        events = self.receive()
        for _ in range(2000):
            if not any(
                c.getTime() <= self.clock.seconds()
                for c in self.clock.getDelayedCalls()
            ):
                break
            events += self.step()
        return events


class HarnessCase(SynchronousTestCase):
    """
    A test with a L{Harness} on a folder holding C{index.html}.
    """

    def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        root.mkdir(parents=True)
        (root / "index.html").write_bytes(b"hello\n")
        (root / "big.bin").write_bytes(BIG)
        self.clock = MemoryReactorClock()
        # twisted.web streams a file with a pull producer, which the global
        # cooperator would run: this one runs on the memory reactor.
        cooperator = Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        self.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        self.counters = HandlerCounters()
        self.site = httpsSite(root, self.clock, self.counters)
        self.harness = Harness(self.site, self.clock)
        self.protocol, self.transport = self.harness.protocol, self.harness.transport
        self.harness.send()
        self.harness.settle()

    def tearDown(self) -> None:
        if not self.transport.disconnected:
            from twisted.internet.error import ConnectionDone
            from twisted.python.failure import Failure

            self.protocol.connectionLost(Failure(ConnectionDone()))
        for call in self.clock.getDelayedCalls():
            if call.active():
                call.cancel()


class BetweenMessagesTests(HarnessCase):
    """
    Whether an HTTP/2 connection is between messages: what decides if a
    client that leaves without close_notify closed clean.
    """

    def test_fresh(self) -> None:
        """
        A connection with no stream yet is between messages.
        """
        self.assertTrue(self.protocol.betweenMessages())

    def test_requestInFlight(self) -> None:
        """
        A request not yet answered is not.
        """
        self.harness.client.send_headers(1, GET, end_stream=False)
        self.harness.send()
        self.assertFalse(self.protocol.betweenMessages())

    def test_answeredBeforeEndStream(self) -> None:
        """
        A stream whose answer is all sent is done, even before twisted.web
        sends END_STREAM a reactor turn later (curl leaves in between).
        """
        self.harness.client.send_headers(1, GET, end_stream=True)
        self.harness.send()
        body = b""
        for _ in range(100):
            events = self.harness.step()
            body += b"".join(
                e.data for e in events if isinstance(e, h2.events.DataReceived)
            )
            if body == b"hello\n":
                break
        self.assertEqual(body, b"hello\n")
        self.assertIn(1, self.harness.h2.streams)
        self.assertTrue(self.protocol.betweenMessages())
        events = self.harness.settle()
        self.assertTrue(any(isinstance(e, h2.events.StreamEnded) for e in events))
        self.assertTrue(self.protocol.betweenMessages())

    def test_answerHeldByFlowControl(self) -> None:
        """
        An answer that flow control holds back is not all sent.
        """
        self.harness.client.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        self.harness.send()
        self.harness.settle()
        self.harness.client.send_headers(1, GET, end_stream=True)
        self.harness.send()
        events = self.harness.settle()
        self.assertTrue(any(isinstance(e, h2.events.ResponseReceived) for e in events))
        self.assertFalse(any(isinstance(e, h2.events.DataReceived) for e in events))
        self.assertFalse(self.protocol.betweenMessages())

    def test_partialFrame(self) -> None:
        """
        Half a frame is not between messages.
        """
        self.harness.send(PingFrame(0, b"12345678").serialize()[:5])
        self.assertFalse(self.protocol.betweenMessages())

    def test_protocolError(self) -> None:
        """
        A client that broke the protocol is not between messages, whatever
        follows.
        """
        self.harness.send(DataFrame(7, b"x").serialize())
        self.assertFalse(self.protocol.betweenMessages())

    def test_keptAfterLoss(self) -> None:
        """
        The answer once the connection was lost is the one from just
        before, though losing it ended every stream.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.harness.client.send_headers(1, GET, end_stream=False)
        self.harness.send()
        self.harness.h2.stopProducing()
        self.assertEqual(self.harness.h2.streams, {})
        self.assertFalse(self.protocol.betweenMessages())
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertFalse(self.protocol.betweenMessages())


class StreamEndTests(HarnessCase):
    """
    A stream that ends before its answer is written stops what writes it.
    """

    def test_resetBeforeAnswer(self) -> None:
        """
        A request reset in the same read as it arrived: the file producer
        already registered is stopped, and nothing raises later.
        """
        self.harness.client.send_headers(1, GET, end_stream=True)
        self.harness.client.reset_stream(1)
        self.harness.send()
        self.harness.settle()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.harness.h2.streams, {})

    def test_lostBeforeAnswer(self) -> None:
        """
        The same when the connection is lost instead.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.harness.client.send_headers(1, GET, end_stream=True)
        self.harness.send()
        self.protocol.connectionLost(Failure(ConnectionLost()))
        for _ in range(100):
            runDueCall(self.clock)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_streamResetByH2(self) -> None:
        """
        A second HEADERS on a stream whose request ended makes h2 reset the
        stream by itself: its request is not served, nothing raises, and
        the connection's next stream is answered.
        """
        client = self.harness.client
        client.send_headers(1, GET, end_stream=True)
        block = client.encoder.encode(GET)
        again = struct.pack(">I", len(block))[1:] + b"\x01\x05" + struct.pack(">I", 1)
        self.harness.send(again + block)
        self.harness.settle()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.harness.h2.streams, {})
        client.send_headers(3, GET, end_stream=True)
        self.harness.send()
        events = self.harness.settle()
        self.assertEqual(
            [
                dict(e.headers)[b":status"]
                for e in events
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3
            ],
            [b"200"],
        )

    def test_noPath(self) -> None:
        """
        A request without :path (CONNECT, which h2 lets through) is
        answered 400 instead of raising, and the connection goes on.
        """
        client = self.harness.client
        connect = [(b":method", b"CONNECT"), (b":authority", b"localhost:1")]
        client.send_headers(1, connect, end_stream=True)
        client.send_headers(3, GET, end_stream=True)
        self.harness.send()
        events = self.harness.settle()
        self.assertEqual(
            sorted(
                (e.stream_id, dict(e.headers)[b":status"])
                for e in events
                if isinstance(e, h2.events.ResponseReceived)
            ),
            [(1, b"400"), (3, b"200")],
        )
        self.assertEqual(self.harness.h2.streams, {})
        self.assertEqual(self.flushLoggedErrors(), [])


class FlowControlTests(HarnessCase):
    """
    A stream whose flow-control window is spent waits outside twisted.web's
    sending loop, which would otherwise retry it on every reactor turn.
    """

    def idle(self) -> bool:
        """
        Whether nothing is due on the reactor now (no loop spinning).
        """
        now = self.clock.seconds()
        return not any(c.getTime() <= now for c in self.clock.getDelayedCalls())

    def test_slowReader(self) -> None:
        """
        A client that acknowledges nothing gets one window of a large file,
        and the connection goes idle; each acknowledgement lets more
        through, until the whole file and its END_STREAM.
        """
        path = [(k, b"/big.bin" if k == b":path" else v) for k, v in GET]
        self.harness.client.send_headers(1, path, end_stream=True)
        self.harness.send()
        body = b""
        ended = False
        for _ in range(20):
            events = self.harness.settle()
            self.assertTrue(self.idle())
            data = [e for e in events if isinstance(e, h2.events.DataReceived)]
            body += b"".join(e.data for e in data)
            self.assertLessEqual(len(body), 65535 * (1 + _))
            ended |= any(isinstance(e, h2.events.StreamEnded) for e in events)
            if ended:
                break
            got = sum(e.flow_controlled_length for e in data)
            self.harness.client.acknowledge_received_data(got, 1)
            self.harness.send()
        self.assertTrue(ended)
        self.assertEqual(body, BIG)

    def test_windowOpenedBySettings(self) -> None:
        """
        A client that starts with a window of 0, then raises every stream's
        initial window with SETTINGS, gets its answer.
        """
        self.harness.client.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        self.harness.send()
        self.harness.client.send_headers(1, GET, end_stream=True)
        self.harness.send()
        events = self.harness.settle()
        self.assertTrue(self.idle())
        self.assertFalse(any(isinstance(e, h2.events.DataReceived) for e in events))
        self.harness.client.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535}
        )
        self.harness.send()
        events = self.harness.settle()
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        self.assertEqual(body, b"hello\n")
        self.assertTrue(any(isinstance(e, h2.events.StreamEnded) for e in events))


class HeaderTimeoutTests(HarnessCase):
    """
    The header timeout counts from the first byte of a frame or header
    block, never while the connection rests.
    """

    def test_ignoredFrameArmsNothing(self) -> None:
        """
        A whole frame that h2 ignores (a WINDOW_UPDATE for a stream it has
        closed) leaves an idle connection alone past the header timeout.
        """
        self.harness.client.send_headers(1, GET, end_stream=True)
        self.harness.send()
        self.harness.settle()
        self.harness.send(WindowUpdateFrame(1, window_increment=100).serialize())
        self.clock.advance(25)
        self.assertFalse(self.transport.disconnecting)

    def test_trickledHeaderBlock(self) -> None:
        """
        A header block trickled as CONTINUATION frames, each whole, closes
        the connection once the header timeout passes from its first byte.
        """
        headers = HeadersFrame(1)
        headers.data = b"\x82"
        self.harness.send(headers.serialize())
        for _ in range(4):
            self.clock.advance(4)
            piece = ContinuationFrame(1)
            piece.data = b"\x84"
            self.harness.send(piece.serialize())
            self.assertFalse(self.transport.disconnecting)
        self.clock.advance(5)
        self.assertTrue(self.transport.disconnecting)

    def test_steadyFrames(self) -> None:
        """
        Frames that each arrive whole, however many, arm nothing.
        """
        for _ in range(10):
            self.harness.send(PingFrame(0, b"12345678").serialize())
            self.clock.advance(15)
            self.harness.receive()
        self.assertFalse(self.transport.disconnecting)


def frames() -> st.SearchStrategy[Frame]:
    """
    Frames of the kinds that matter to L{FrameEdges}: header blocks with
    and without END_HEADERS, their CONTINUATION, and others.
    """

    def block(kind: type[Frame], stream: int, end: bool, data: bytes) -> Frame:
        frame = kind(stream)
        frame.data = data
        if end:
            frame.flags.add("END_HEADERS")
        return frame

    streams = st.integers(1, 9)
    data = st.binary(max_size=40)
    return st.one_of(
        st.builds(
            block,
            st.sampled_from([HeadersFrame, ContinuationFrame]),
            streams,
            st.booleans(),
            data,
        ),
        st.builds(DataFrame, streams, data),
        st.builds(PingFrame, st.just(0), st.binary(min_size=8, max_size=8)),
        st.builds(
            WindowUpdateFrame, st.integers(0, 9), window_increment=st.integers(1, 99)
        ),
    )


def ends(frame: Frame) -> bool | None:
    """
    Whether C{frame} ends a header block (C{True}), begins or continues one
    (C{False}), or is not part of one (C{None}).
    """
    if isinstance(frame, HeadersFrame | ContinuationFrame):
        return "END_HEADERS" in frame.flags
    return None


class FrameEdgesTests(SynchronousTestCase):
    """
    L{FrameEdges} follows frames however the bytes are split.
    """

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.lists(frames(), max_size=8), st.lists(st.integers(0, 400), max_size=6))
    def test_anySplit(self, sequence: list[Frame], cuts: list[int]) -> None:
        """
        After the whole stream, C{pending} says whether a header block is
        still open; C{feed} says a piece completed something exactly when
        a frame outside a header block, or a header block, ended in it.
        """
        data = PREAMBLE + b"".join(f.serialize() for f in sequence)
        # Where each thing completes: the preamble, then each frame that is
        # not inside an open header block.
        completions, offset, inBlock = [len(PREAMBLE)], len(PREAMBLE), False
        for frame in sequence:
            offset += len(frame.serialize())
            ended = ends(frame)
            if ended is not None:
                inBlock = not ended
            if not inBlock:
                completions.append(offset)
        points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
        edges = FrameEdges()
        for start, end in zip(points, points[1:], strict=False):
            expected = any(start < c <= end for c in completions)
            self.assertEqual(edges.feed(data[start:end]), expected, (start, end))
        self.assertEqual(edges.pending, inBlock)

    def test_midFrame(self) -> None:
        """
        Bytes that stop inside a frame's header or payload are pending.
        """
        frame = PingFrame(0, b"12345678").serialize()
        for cut in range(1, len(frame)):
            edges = FrameEdges()
            self.assertTrue(edges.feed(PREAMBLE))
            self.assertFalse(edges.feed(frame[:cut]))
            self.assertTrue(edges.pending)
            self.assertTrue(edges.feed(frame[cut:]))
            self.assertFalse(edges.pending)
