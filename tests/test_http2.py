"""
HTTP/2 on https ports: real clients (curl, h2load, the h2 library over a
real TLS connection) against a real port on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
from hyperframe.frame import DataFrame, Frame, HeadersFrame
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from multiport.config.model import TLSConfig
from multiport.daemon.service import PortsService
from multiport.handlers.weboptions import WebOptions
from multiport.ports.tls import ensureSelfSigned
from tests.support import HANDLERS, configFor, configuredDaemon, waitUntilOnReactor
from tests.test_live import freePort


class H2Client(Protocol):
    """
    An HTTP/2 client (the h2 library) that runs C{script} once connected
    and collects every event until the connection closes.
    """

    #: Close once a stream ended or the server sent GOAWAY.
    closeWhenDone = True

    def __init__(self, script: Any) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.script = script
        self.events: list[h2.events.Event] = []
        self.raw = b""
        self.done: Deferred[list[h2.events.Event]] = Deferred()

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())
        self.script(self)

    def send(self, data: bytes = b"") -> None:
        self.transport.write(self.conn.data_to_send() + data)

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        try:
            self.events += self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 takes nothing after a GOAWAY: a client that stays reads
            # what follows in raw.
            if self.closeWhenDone:
                self.transport.loseConnection()
            return
        pending = self.conn.data_to_send()
        if pending:
            self.transport.write(pending)
        if self.closeWhenDone and any(
            isinstance(e, (h2.events.StreamEnded, h2.events.ConnectionTerminated))
            for e in self.events
        ):
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.events)

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event
        return None


def request(path: bytes = b"/", end: bool = True) -> Any:
    """
    A script that sends one GET on stream 1.
    """

    def script(client: H2Client) -> None:
        client.conn.send_headers(
            1,
            [
                (b":method", b"GET"),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
            ],
            end_stream=end,
        )
        client.send()

    return script


class HTTP2Tests(TestCase):
    """
    An https port serving a folder speaks HTTP/2 to clients that offer it.
    """

    def start(self, handler: str = "https", **options: Any) -> int:
        """
        Start an https (or C{handler}) port serving a folder with
        C{options}; its number.
        """
        root = Path(self.mktemp())
        root.mkdir()
        (root / "index.html").write_bytes(b"hello\n")
        (root / "big.bin").write_bytes(b"x" * (1 << 20))
        config = configFor(f"127.0.0.1:0={handler}", self.mktemp())
        port = config.ports[0]
        port = attrs.evolve(
            port,
            options=WebOptions(root=root, **options.pop("web", {})),
            policy=attrs.evolve(port.policy, **options),
        )
        config = attrs.evolve(config, ports=(port,))
        certificates = {TLSConfig(): ensureSelfSigned(config.stateDir)}
        self.certificate = config.stateDir / "selfsigned-cert.pem"
        self.service = PortsService(config, HANDLERS, certificates, reactor)
        self.logged: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") in (
                "multiport.access",
                "multiport.connection",
            ):
                self.logged.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        number: int = self.service.boundPorts()[0].address.port
        return number

    def endings(self, count: int) -> Any:
        """
        Wait for C{count} lines of the connection log; how each connection
        ended (C{clean}, C{reset}...).
        """

        def lines() -> list[str]:
            return [
                e["reason"]
                for e in self.logged
                if e["log_namespace"] == "multiport.connection"
            ]

        return waitUntilOnReactor(lambda: len(lines()) >= count).addCallback(
            lambda _: lines()
        )

    def counter(self, name: str, **labels: str) -> int:
        """
        The port's handler counter C{name} with C{labels}.
        """
        status = self.service.portStatus()[0]
        return status.handlerCounters.get((name, tuple(sorted(labels.items()))), 0)

    @inlineCallbacks
    def connect(self, port: int, script: Any, alpn: bytes = b"h2") -> Any:
        """
        Run C{script} on an HTTP/2 client connected over TLS; the client,
        once the connection closed.
        """
        client = yield self.open(port, script, alpn, closeWhenDone=True)
        yield client.done
        return client

    @inlineCallbacks
    def open(
        self, port: int, script: Any, alpn: bytes = b"h2", closeWhenDone: bool = False
    ) -> Any:
        """
        Connect an HTTP/2 client that runs C{script} over TLS (and, unless
        C{closeWhenDone}, stays connected); the client.
        """
        trust = Certificate.loadPEM(self.certificate.read_bytes())
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trust, acceptableProtocols=[alpn]),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        client = H2Client(script)
        client.closeWhenDone = closeWhenDone
        yield connectProtocol(endpoint, client)
        return client

    def tool(self, name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise SkipTest(f"{name} is not installed (Debian nghttp2-client, curl)")
        return path

    @inlineCallbacks
    def test_curl(self) -> Any:
        """
        curl --http2 negotiates h2 and gets the file.
        """
        port = self.start()
        out, err, code = yield getProcessOutputAndValue(
            self.tool("curl"),
            [
                "-sS",
                "-k",
                "--http2",
                "-o",
                "-",
                "-w",
                "%{http_version} %{http_code}",
                f"https://127.0.0.1:{port}/",
            ],
        )
        self.assertEqual((code, out), (0, b"hello\n2 200"), err)
        self.assertEqual(self.counter("http2_streams"), 1)
        # curl 7.88 ends an HTTP/2 connection with neither GOAWAY nor
        # close_notify: between streams, that loses nothing.
        self.assertEqual((yield self.endings(1)), ["clean"])

    @inlineCallbacks
    def test_http2Off(self) -> Any:
        """
        http2 = false: the port offers only http/1.1, which curl then speaks.
        """
        port = self.start(web={"http2": False})
        out, err, code = yield getProcessOutputAndValue(
            self.tool("curl"),
            [
                "-sS",
                "-k",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                f"https://127.0.0.1:{port}/",
            ],
        )
        self.assertEqual((code, out), (0, b"1.1"), err)

    @inlineCallbacks
    def test_httpWithTLS(self) -> Any:
        """
        An http port with TLS (not only https) speaks HTTP/2 too.
        """
        port = self.start("http+tls")
        out, err, code = yield getProcessOutputAndValue(
            self.tool("curl"),
            ["-sSk", "--http2", "-o", "/dev/null", "-w", "%{http_version}"]
            + [f"https://127.0.0.1:{port}/"],
        )
        self.assertEqual((code, out), (0, b"2"), err)
        self.assertEqual(self.counter("http2_streams"), 1)

    @inlineCallbacks
    def test_plainTextNotOffered(self) -> Any:
        """
        A plain http port speaks no HTTP/2: curl --http2 (an h2c upgrade)
        stays on HTTP/1.1, and HTTP/2 with prior knowledge gets no HTTP/2
        answer.
        """
        port = self.start("http")
        url = f"http://127.0.0.1:{port}/"
        out, err, code = yield getProcessOutputAndValue(
            self.tool("curl"),
            ["-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}", url],
        )
        self.assertEqual((code, out), (0, b"1.1"), err)
        out, err, code = yield getProcessOutputAndValue(
            self.tool("curl"),
            [
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                url,
            ],
        )
        self.assertNotEqual((code, out), (0, b"2"), err)
        self.assertEqual(self.counter("http2_connections"), 0)

    @inlineCallbacks
    def test_h2load(self) -> Any:
        """
        h2load: 10,000 requests, 10 connections of 10 streams each, all 200.
        """
        port = self.start()
        out, err, code = yield getProcessOutputAndValue(
            self.tool("h2load"),
            ["-n", "10000", "-c", "10", "-m", "10", f"https://127.0.0.1:{port}/"],
        )
        text = out.decode()
        self.assertEqual(code, 0, text + err.decode())
        self.assertIn("10000 succeeded, 0 failed, 0 errored", text)
        self.assertIn("status codes: 10000 2xx, 0 3xx, 0 4xx, 0 5xx", text)
        self.assertIn("h2", re.findall(r"Application protocol: (\S+)", text))
        self.assertEqual(self.counter("http2_streams"), 10000)
        self.assertEqual((yield self.endings(10)), ["clean"] * 10)
        self.assertEqual(self.counter("http2_streams_open"), 0)
        self.assertEqual(self.counter("http2_connections"), 10)
        self.assertEqual(self.counter("http2_connections_open"), 0)

    @inlineCallbacks
    def abortAfter(self, script: Any, ready: Any) -> Any:
        """
        Run C{script}, wait until C{ready(client)}, then abort the TCP
        connection under TLS (a reset, no close_notify); how the connection
        log says it ended.
        """
        port = self.start()
        client = yield self.open(port, script)
        yield waitUntilOnReactor(lambda: ready(client))
        client.transport.transport.abortConnection()
        yield client.done
        return (yield self.endings(1))

    def test_abortBetweenStreams(self) -> Any:
        """
        A client that leaves with a reset once its streams are answered
        closed clean.
        """
        return self.abortAfter(
            request(),
            lambda client: any(
                isinstance(e, h2.events.StreamEnded) for e in client.events
            ),
        ).addCallback(self.assertEqual, ["clean"])

    def test_abortWithStreamOpen(self) -> Any:
        """
        The control: one that leaves that way with a stream open (a request
        never finished) is a reset.
        """
        return self.abortAfter(
            request(end=False),
            lambda _: (
                self.counter("http2_streams_open") == 1
                and self.counter("http2_connections_open") == 1
            ),
        ).addCallback(self.assertEqual, ["reset"])

    @inlineCallbacks
    def test_slowReaderCostsNoCPU(self) -> Any:
        """
        A client that stops acknowledging a large answer once its window is
        full costs the daemon no CPU while it waits (twisted.web's sending
        loop alone would retry the stream on every reactor turn).
        """
        port = self.start()
        client = yield self.open(port, request(b"/big.bin"))

        def received() -> int:
            return sum(
                e.flow_controlled_length
                for e in client.events
                if isinstance(e, h2.events.DataReceived)
            )

        yield waitUntilOnReactor(lambda: received() >= 65535)
        before = resource.getrusage(resource.RUSAGE_SELF)
        # The interval measured, not a wait for anything.
        yield deferLater(reactor, 1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.assertLess(used, 0.3)
        self.assertEqual(received(), 65535)
        client.transport.abortConnection()
        yield client.done

    @inlineCallbacks
    def test_settingsAdvertised(self) -> Any:
        """
        The server's SETTINGS say 128 concurrent streams and a 64 KiB header
        list; options change both.
        """
        port = self.start()
        client = yield self.connect(port, request())
        settings = client.conn.remote_settings
        self.assertEqual(settings.max_concurrent_streams, 128)
        self.assertEqual(settings.max_header_list_size, 65536)
        responses = [
            e for e in client.events if isinstance(e, h2.events.ResponseReceived)
        ]
        self.assertEqual(dict(responses[0].headers)[b":status"], b"200")

    @inlineCallbacks
    def test_tooManyStreams(self) -> Any:
        """
        A client that opens more streams than allowed loses the connection.
        """
        port = self.start(web={"http2MaxConcurrentStreams": 4})

        def script(client: H2Client) -> None:
            # Open streams whose requests never end, past the limit (h2's
            # client doesn't check: the server's SETTINGS aren't read yet).
            for stream in range(1, 13, 2):
                client.conn.send_headers(
                    stream,
                    [
                        (b":method", b"POST"),
                        (b":path", b"/"),
                        (b":scheme", b"https"),
                        (b":authority", b"localhost"),
                    ],
                )
            client.send()

        client = yield self.connect(port, script)
        goaway = client.goaway()
        self.assertIsNotNone(goaway)
        self.assertEqual(client.conn.remote_settings.max_concurrent_streams, 4)

    @inlineCallbacks
    def test_headerListTooLarge(self) -> Any:
        """
        A header list over http2_max_header_list_size ends the connection.
        """
        port = self.start(web={"http2MaxHeaderListSize": 1024})

        def script(client: H2Client) -> None:
            client.conn.send_headers(
                1,
                [
                    (b":method", b"GET"),
                    (b":path", b"/"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b"x-big", b"x" * 4000),
                ],
                end_stream=True,
            )
            client.send()

        client = yield self.connect(port, script)
        self.assertIsNotNone(client.goaway())
        responses = [
            e for e in client.events if isinstance(e, h2.events.ResponseReceived)
        ]
        self.assertEqual(responses, [])

    def assertCalmedDown(self, client: H2Client) -> None:
        goaway = client.goaway()
        self.assertIsNotNone(goaway)
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    @inlineCallbacks
    def flood(self, script: Any) -> Any:
        """
        Run C{script} on a client that ignores the server's GOAWAY and
        never closes: the server must end the connection itself, with
        GOAWAY ENHANCE_YOUR_CALM; the connection log's line for it.
        """
        port = self.start()
        client = yield self.open(port, script)
        yield client.done
        self.assertCalmedDown(client)
        yield self.endings(1)
        [line] = [
            e for e in self.logged if e["log_namespace"] == "multiport.connection"
        ]
        return line

    @inlineCallbacks
    def test_pingFlood(self) -> Any:
        """
        A flood of PING frames ends with GOAWAY ENHANCE_YOUR_CALM and a
        close, logged as an error.
        """

        def script(client: H2Client) -> None:
            for i in range(1000):
                client.conn.ping(b"%08d" % (i,))
            client.send()

        line = yield self.flood(script)
        self.assertEqual(
            (line["reason"], line["detail"]),
            ("error", "HTTP/2 protocol error: too many SETTINGS and PING frames"),
        )
        self.assertEqual(self.counter("http2_floods", kind="ping_settings"), 1)

    @inlineCallbacks
    def test_settingsFlood(self) -> Any:
        """
        A flood of SETTINGS frames ends with GOAWAY ENHANCE_YOUR_CALM and a
        close.
        """

        def script(client: H2Client) -> None:
            for _ in range(1000):
                client.conn.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
            client.send()

        line = yield self.flood(script)
        self.assertEqual(line["reason"], "error")
        self.assertEqual(self.counter("http2_floods", kind="ping_settings"), 1)

    @inlineCallbacks
    def test_fewPingsAreAnswered(self) -> Any:
        """
        The flood bound leaves a client's occasional PINGs alone.
        """
        port = self.start()

        def script(client: H2Client) -> None:
            for i in range(20):
                client.conn.ping(b"%08d" % (i,))
            request()(client)

        client = yield self.connect(port, script)
        acks = [e for e in client.events if isinstance(e, h2.events.PingAckReceived)]
        self.assertEqual(len(acks), 20)
        self.assertEqual(self.counter("http2_floods", kind="ping_settings"), 0)

    @inlineCallbacks
    def test_rapidReset(self) -> Any:
        """
        CVE-2023-44487: a client opening streams and resetting them at once
        is cut off with GOAWAY ENHANCE_YOUR_CALM and a close.
        """

        def script(client: H2Client) -> None:
            for stream in range(1, 2 * 3000, 2):
                client.conn.send_headers(
                    stream,
                    [
                        (b":method", b"POST"),
                        (b":path", b"/"),
                        (b":scheme", b"https"),
                        (b":authority", b"localhost"),
                    ],
                )
                client.conn.reset_stream(stream)
            client.send()

        line = yield self.flood(script)
        self.assertEqual(
            (line["reason"], line["detail"]),
            ("error", "HTTP/2 protocol error: too many stream resets (rapid reset)"),
        )
        self.assertGreater(self.counter("http2_resets"), 900)
        self.assertEqual(self.counter("http2_streams_open"), 0)
        self.assertEqual(self.counter("http2_floods", kind="rapid_reset"), 1)

    @inlineCallbacks
    def test_headerTimeout(self) -> Any:
        """
        A HEADERS frame whose header block never ends (no END_HEADERS, no
        CONTINUATION) closes the connection after header_timeout.
        """
        port = self.start(headerTimeout=0.5)

        def script(client: H2Client) -> None:
            frame = HeadersFrame(1)
            frame.data = b"\x82"  # :method GET, then nothing more
            client.send(frame.serialize())

        started = reactor.seconds()
        client = yield self.connect(port, script)
        self.assertLess(reactor.seconds() - started, 10)
        self.assertEqual(
            [e for e in client.events if isinstance(e, h2.events.ResponseReceived)], []
        )

    @inlineCallbacks
    def test_accessLogStreamID(self) -> Any:
        """
        Each HTTP/2 request leaves one access log line with its stream id.
        """
        port = self.start()
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "multiport.access":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        yield self.connect(
            port,
            request(),
        )
        yield waitUntilOnReactor(lambda: events)
        self.assertEqual(len(events), 1)
        self.assertEqual((events[0]["stream"], events[0]["protocol"]), (1, "HTTP/2"))

    @inlineCallbacks
    def test_drain(self) -> Any:
        """
        Stopping the port sends GOAWAY to an idle HTTP/2 connection and
        closes it.
        """
        port = self.start()
        client = yield self.open(port, request())
        yield waitUntilOnReactor(
            lambda: any(isinstance(e, h2.events.StreamEnded) for e in client.events)
        )
        yield self.service.stopService()
        yield client.done
        goaway = client.goaway()
        self.assertIsNotNone(goaway)
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.NO_ERROR)

    @inlineCallbacks
    def test_drainAnswersStreamInFlight(self) -> Any:
        """
        Stopping the port sends GOAWAY naming the last stream taken; the
        request in flight on it is still answered, then the connection
        closes.
        """
        port = self.start()
        client = yield self.open(port, request(end=False))
        yield waitUntilOnReactor(lambda: self.counter("http2_streams_open") == 1)
        stopped = self.service.stopService()
        yield waitUntilOnReactor(lambda: client.goaway() is not None)
        self.assertEqual(client.goaway().last_stream_id, 1)
        # The request's end, which h2's client no longer sends after a
        # GOAWAY (RFC 9113 lets streams up to last_stream_id finish).
        client.transport.write(DataFrame(1, flags=["END_STREAM"]).serialize())
        yield client.done
        yield stopped
        answer = [f for f in rawFrames(client.raw) if isinstance(f, DataFrame)]
        self.assertEqual(
            [(f.stream_id, f.data, "END_STREAM" in f.flags) for f in answer],
            [(1, b"hello\n", False), (1, b"", True)],
        )
        [line] = [e for e in self.logged if e["log_namespace"] == "multiport.access"]
        self.assertEqual((line["stream"], line["status"]), (1, 200))


def rawFrames(data: bytes) -> list[Frame]:
    """
    The whole HTTP/2 frames in C{data} (what the daemon sent), up to a
    frame cut short.
    """
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


class DaemonTests(SynchronousTestCase):
    """
    HTTP/2 through a real C{twistd multiport} with a configuration file and
    the JSON log.
    """

    def test_jsonLogAndSwitch(self) -> None:
        """
        curl --http2 gets HTTP/2 from an https port, and its request's JSON
        access log line carries the stream id; C{http2 = false} in the
        file keeps the other port on HTTP/1.1 (no stream id).  Both
        connections close clean.
        """
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed (apt-get install curl)")
        folder = Path(self.mktemp()).absolute()
        (folder / "www").mkdir(parents=True)
        (folder / "www" / "index.html").write_bytes(b"hello\n")
        on, off = freePort(), freePort()
        daemon = configuredDaemon(
            folder,
            f"""
            [[port]]
            port = {on}
            interface = "127.0.0.1"
            handler = "https"
            options = {{ root = "www" }}

            [[port]]
            port = {off}
            interface = "127.0.0.1"
            handler = "https"
            options = {{ root = "www", http2 = false }}
            """,
            "--log-format",
            "json",
        )
        self.addCleanup(daemon.stop)
        daemon.listening(3)
        versions = []
        for port in (on, off):
            result = subprocess.run(
                [curl, "-sSk", "--http2", "-o", "/dev/null", "-w", "%{http_version}"]
                + [f"https://127.0.0.1:{port}/"],
                capture_output=True,
                timeout=30,
                check=True,
            )
            versions.append(result.stdout)
        self.assertEqual(versions, [b"2", b"1.1"])
        access = [
            json.loads(m.string)
            for m in daemon.waitFor(r'"namespace": "multiport.access"', 2)
        ]
        self.assertEqual(
            [(a["port"], a["protocol"], a["stream"], a["status"]) for a in access],
            [
                (f"tcp:127.0.0.1:{on}", "HTTP/2", 1, 200),
                (f"tcp:127.0.0.1:{off}", "HTTP/1.1", None, 200),
            ],
        )
        closed = [
            json.loads(m.string)
            for m in daemon.waitFor(r'"namespace": "multiport.connection"', 2)
        ]
        self.assertEqual([c["reason"] for c in closed], ["clean", "clean"])


class TwistedShapeTests(TestCase):
    """
    The private parts of twisted.web that L{multiport.handlers.webh2} uses.
    """

    def test_h2ConnectionShape(self) -> None:
        """
        H2Connection has the hooks PortH2Connection overrides and reads.
        """
        from twisted.web._http2 import H2Connection

        for name in (
            "_requestReceived",
            "_requestAborted",
            "_requestDone",
            "_tryToWriteControlData",
            "_sendPrioritisedData",
            "_handleWindowUpdate",
            "_requestEnded",
            "endRequest",
            "remainingOutboundWindow",
            "timeoutConnection",
        ):
            self.assertTrue(callable(getattr(H2Connection, name)), name)
        connection = H2Connection(reactor=MemoryReactorClock())
        self.assertTrue(connection._stillProducing)
        self.assertIsInstance(connection.streams, dict)
        self.assertIsNone(connection._sendingDeferred)
        for name in ("block", "unblock"):
            self.assertTrue(callable(getattr(connection.priority, name)), name)

    def test_h2StreamShape(self) -> None:
        """
        H2Stream keeps the request's :path and its registered producer
        where PortH2Connection reads them.
        """
        from twisted.web._http2 import H2Connection, H2Stream
        from twisted.web.http import Request

        connection = H2Connection(reactor=MemoryReactorClock())
        connection.makeConnection(StringTransport())
        stream = H2Stream(
            1,
            connection,
            [(b":method", b"GET"), (b":path", b"/here")],
            Request,
            None,
            None,
        )
        self.assertEqual((stream.path, stream.producer), (b"/here", None))

    def test_genericChannelShape(self) -> None:
        """
        _GenericHTTPChannelProtocol keeps what PortChannel's switch reads.
        """
        from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

        channel = _GenericHTTPChannelProtocol(HTTPChannel())
        for name in (
            "_negotiatedProtocol",
            "_requestFactory",
            "_factory",
            "_site",
            "_timeOut",
            "_callLater",
            "_channel",
        ):
            self.assertTrue(hasattr(channel, name), name)
