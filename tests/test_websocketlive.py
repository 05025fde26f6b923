"""
The websocket handler on real ports with clients nobody here wrote: the
C{websockets} library (its blocking client, in a thread, while the reactor
serves) on plain and TLS ports, through the bridge to a TCP echo upstream,
and the port's figures in C{/status} and C{/metrics}.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import threading
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.request import urlopen

from attrs import evolve
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from multiport.config.build import buildConfig
from multiport.config.model import Defaults, TLSConfig
from multiport.config.portspec import parsePortItem
from multiport.daemon.service import PortsService
from multiport.handlers.registry import findHandlers
from multiport.handlers.simple import Echo
from multiport.ports.tls import ensureSelfSigned
from tests.support import installPlugin, waitUntilOnReactor
from tests.test_dashboard import CHROMIUM, CHROMIUM_LIMIT, runChromium
from tests.test_status import STATUS_HANDLERS, httpGet

MiB = 1024 * 1024
_T = TypeVar("_T")


def startPorts(
    testCase: TestCase, *ports: tuple[str, dict[str, object]]
) -> PortsService:
    """
    A daemon on the real reactor with C{ports} (C{(spec, options)}), plus a
    status port; stopped at cleanup.
    """
    requests = [
        evolve(parsePortItem(spec, f"test port {index}"), options=options)
        for index, (spec, options) in enumerate([*ports, ("127.0.0.1:0=status", {})], 1)
    ]
    config = buildConfig(requests, Defaults(), STATUS_HANDLERS, Path(testCase.mktemp()))
    certificates = {}
    if any(port.tls is not None for port in config.ports):
        certificates[TLSConfig()] = ensureSelfSigned(config.stateDir)
    service = PortsService(config, STATUS_HANDLERS, certificates, reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    return service


def portOf(service: PortsService, handler: str) -> int:
    """
    The number of the service's only port with C{handler}.
    """
    [bound] = [b for b in service.boundPorts() if b.config.handler == handler]
    return int(bound.address.port)  # type: ignore[attr-defined]


def client(url: str, **options: Any) -> ClientConnection:
    """
    The C{websockets} library's blocking client, connected to C{url}.
    """
    return connect(url, proxy=None, open_timeout=10, close_timeout=10, **options)


def inThread(function: Callable[[], _T]) -> Deferred[_T]:
    """
    Run a blocking client in a thread while the reactor serves.
    """
    return deferToThread(function)


def statusOf(service: PortsService, handler: str) -> Deferred[dict[str, Any]]:
    """
    The C{/status} entry of the port with C{handler}.
    """

    def entry(result: tuple[int, Any, bytes]) -> dict[str, Any]:
        ports = json.loads(result[2])["ports"]
        [port] = [p for p in ports if p["handler"] == handler]
        return dict(port)

    return httpGet(portOf(service, "status"), "/status").addCallback(entry)


class EchoTests(TestCase):
    """
    The echo endpoint with the C{websockets} client.
    """

    timeout = 60

    def setUp(self) -> None:
        self.service = startPorts(
            self,
            ("127.0.0.1:0=websocket", {"echo": True, "subprotocols": ["game.v1"]}),
        )
        self.url = f"ws://127.0.0.1:{portOf(self.service, 'websocket')}/ws"

    @inlineCallbacks
    def test_echo(self):
        """
        Text and binary messages come back unchanged, with the agreed
        subprotocol; C{/status} and C{/metrics} count them.
        """

        def talk() -> tuple[object, object, str | None]:
            with client(self.url, subprotocols=["game.v1"]) as ws:
                ws.send("héllo")
                text = ws.recv(timeout=10)
                ws.send(b"\x00\xff" * 5000)
                data = ws.recv(timeout=10)
                return text, data, ws.subprotocol

        text, data, subprotocol = yield inThread(talk)
        self.assertEqual((text, data), ("héllo", b"\x00\xff" * 5000))
        self.assertEqual(subprotocol, "game.v1")
        yield waitUntilOnReactor(
            lambda: self.service.portStatus()[0].counters["connections"]["current"] == 0  # type: ignore[index]
        )
        port = yield statusOf(self.service, "websocket")
        self.assertEqual(
            port["websocket"],
            {
                "connections": 0,
                "messages": {"in": 2, "out": 2},
                "bytes": {"in": 10006, "out": 10006},
                "handshake_failures": {},
                "close_codes": {"1000": 1},
            },
        )
        _, _, body = yield httpGet(portOf(self.service, "status"), "/metrics")
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name.startswith("multiport_websocket")
        }
        labels = (
            ("handler", "websocket"),
            ("interface", "127.0.0.1"),
            ("port", port["name"]),
        )
        self.assertEqual(
            samples[
                (
                    "multiport_websocket_messages_total",
                    tuple(sorted((*labels, ("direction", "in")))),
                )
            ],
            2,
        )
        self.assertEqual(samples[("multiport_websocket_connections", labels)], 0)
        self.assertEqual(
            samples[
                (
                    "multiport_websocket_closes_total",
                    tuple(sorted((*labels, ("by", "client"), ("code", "1000")))),
                )
            ],
            1,
        )

    @inlineCallbacks
    def test_oversized(self):
        """
        A message over 1 MiB closes the connection with 1009.
        """

        def talk() -> int | None:
            with client(self.url, max_size=None) as ws:
                ws.send(b"x" * (MiB + 1))
                try:
                    ws.recv(timeout=10)
                except ConnectionClosedError as e:
                    return e.rcvd.code if e.rcvd else None
            return None

        code = yield inThread(talk)
        self.assertEqual(code, 1009)

    @inlineCallbacks
    def test_refusals(self):
        """
        A page from another origin gets 403, a client asking only for
        another subprotocol 400, a plain GET 426; each is counted.
        """

        def status(**options: Any) -> int:
            try:
                client(self.url, **options).close()
            except InvalidStatus as e:
                return e.response.status_code
            return 101

        origin = yield inThread(lambda: status(origin="http://evil.example"))
        subprotocol = yield inThread(lambda: status(subprotocols=["chat"]))
        good = yield inThread(
            lambda: status(origin=self.url.replace("ws:", "http:")[:-3])
        )
        plain, _, _ = yield httpGet(portOf(self.service, "websocket"), "/ws")
        self.assertEqual((origin, subprotocol, good, plain), (403, 400, 101, 426))
        port = yield statusOf(self.service, "websocket")
        self.assertEqual(
            port["websocket"]["handshake_failures"],
            {"origin": 1, "subprotocol": 1, "not_upgrade": 1},
        )


class TLSTests(TestCase):
    """
    The endpoint on a TLS port.
    """

    timeout = 60

    @inlineCallbacks
    def test_wss(self):
        """
        C{wss://} works against the port's certificate.
        """
        service = startPorts(self, ("127.0.0.1:0=websocket+tls", {"echo": True}))
        context = ssl.create_default_context(
            cafile=str(service.config.stateDir / "selfsigned-cert.pem")
        )
        url = f"wss://localhost:{portOf(service, 'websocket')}/ws"

        def talk() -> object:
            with client(
                url, ssl=context, origin=f"https://localhost:{url.split(':')[2][:-3]}"
            ) as ws:
                ws.send(b"over TLS")
                return ws.recv(timeout=10)

        self.assertEqual((yield inThread(talk)), b"over TLS")


class BridgeTests(TestCase):
    """
    The bridge to a TCP echo upstream.
    """

    timeout = 120

    def setUp(self) -> None:
        upstream = reactor.listenTCP(
            0, Factory.forProtocol(Echo), interface="127.0.0.1"
        )
        self.addCleanup(upstream.stopListening)
        self.upstream = upstream.getHost().port

    @inlineCallbacks
    def test_tenMiB(self):
        """
        10 MiB of random bytes sent as binary messages come back through
        the bridge and the echo upstream with the same SHA-256.
        """
        service = startPorts(
            self,
            ("127.0.0.1:0=websocket", {"upstream": f"127.0.0.1:{self.upstream}"}),
        )
        url = f"ws://127.0.0.1:{portOf(service, 'websocket')}/ws"
        payload = os.urandom(10 * MiB)

        def talk() -> bytes:
            received = hashlib.sha256()
            count = 0
            with client(url) as ws:
                sender = _Sender(ws, payload, 256 * 1024)
                sender.start()
                while count < len(payload):
                    message = ws.recv(timeout=30)
                    assert isinstance(message, bytes), type(message)
                    received.update(message)
                    count += len(message)
                sender.join(30)
            return received.digest()

        digest = yield inThread(talk)
        self.assertEqual(digest, hashlib.sha256(payload).digest())
        yield waitUntilOnReactor(
            lambda: service.portStatus()[0].counters["connections"]["current"] == 0  # type: ignore[index]
        )
        port = yield statusOf(service, "websocket")
        self.assertEqual(port["websocket"]["bytes"]["in"], 10 * MiB)
        self.assertEqual(port["websocket"]["bytes"]["out"], 10 * MiB)

    @inlineCallbacks
    def test_upstreamDown(self):
        """
        An upstream that refuses the connection closes the WebSocket with
        1014 (bad gateway).
        """
        closed = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        number = closed.getHost().port
        yield closed.stopListening()
        service = startPorts(
            self, ("127.0.0.1:0=websocket", {"upstream": f"127.0.0.1:{number}"})
        )
        url = f"ws://127.0.0.1:{portOf(service, 'websocket')}/ws"

        def talk() -> int | None:
            with client(url) as ws:
                try:
                    ws.recv(timeout=10)
                except ConnectionClosedError as e:
                    return e.rcvd.code if e.rcvd else None
            return None

        self.assertEqual((yield inThread(talk)), 1014)


class _Sender:
    """
    Sends C{payload} in messages of C{size} from a thread of its own, so
    that the client reads while it sends.
    """

    def __init__(self, ws: ClientConnection, payload: bytes, size: int) -> None:
        self._thread = threading.Thread(
            target=lambda: [
                ws.send(payload[i : i + size]) for i in range(0, len(payload), size)
            ],
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


#: At most this many loads of a page until it shows a result.
PAGE_LOADS = 5

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ws test</title></head>
<body><div id="result">pending</div>
<script>
const result = document.getElementById("result");
const ws = new WebSocket("ws://" + TARGET + "/ws");
ws.binaryType = "arraybuffer";
const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
let step = 0;
ws.onopen = () => ws.send("hello from chromium");
ws.onmessage = (event) => {
  if (step === 0) {
    if (event.data !== "hello from chromium") {
      result.textContent = "wrong text: " + event.data;
      return;
    }
    step = 1;
    ws.send(bytes);
  } else {
    const back = new Uint8Array(event.data);
    result.textContent = back.join(",") === bytes.join(",")
      ? "echo ok" : "wrong bytes: " + back.join(",");
    ws.close(1000);
  }
};
ws.onerror = () => { result.textContent = "error"; };
</script></body></html>
"""


class ChromiumTests(TestCase):
    """
    Headless Chromium opens a page served by the port; the page's script
    opens a WebSocket to the port, sends text and bytes and checks the
    echo.
    """

    timeout = 4 * CHROMIUM_LIMIT

    if CHROMIUM is None:
        skip = "chromium is not installed (apt-get install chromium)"

    def serve(self) -> tuple[PortsService, Path]:
        """
        A websocket port and an http port serving the same folder, whose
        C{index.html} opens a WebSocket to its own host.
        """
        root = Path(self.mktemp()).absolute()
        root.mkdir()
        (root / "index.html").write_text(PAGE.replace("TARGET", "location.host"))
        service = startPorts(
            self,
            ("127.0.0.1:0=websocket", {"echo": True, "root": str(root)}),
            ("127.0.0.1:0=http", {"root": str(root)}),
        )
        return service, root

    @inlineCallbacks
    def result(self, url: str):
        """
        What the page says once it has a result.  Chromium dumps the page
        when its virtual time budget is spent, which does not wait for a
        WebSocket's answer: on a loaded machine that may still be
        "pending", so the page is loaded again, at most L{PAGE_LOADS}
        times.
        """
        for _ in range(PAGE_LOADS):
            dom = yield runChromium(self, url, "--dump-dom")
            text = dom.decode("utf-8")
            start = text.index('<div id="result">') + len('<div id="result">')
            result = text[start : text.index("</div>", start)]
            if result != "pending":
                return result
        return result

    @inlineCallbacks
    def test_pageEcho(self):
        """
        The page served by the websocket port gets its text and bytes
        back.
        """
        service, _ = self.serve()
        port = portOf(service, "websocket")
        self.assertEqual((yield self.result(f"http://127.0.0.1:{port}/")), "echo ok")
        entry = yield statusOf(service, "websocket")
        # Each load that got its answers exchanged two messages (a page
        # loaded again may have sent some before).
        messages = entry["websocket"]["messages"]
        self.assertEqual(messages["in"], messages["out"])
        self.assertGreaterEqual(messages["in"], 2)

    @inlineCallbacks
    def test_otherOrigin(self):
        """
        A page served by another port (another origin) that opens a
        WebSocket to the websocket port is refused.
        """
        service, root = self.serve()
        wsPort = portOf(service, "websocket")
        target = f'"127.0.0.1:{wsPort}"'
        (root / "other.html").write_text(PAGE.replace("TARGET", target))
        page = f"http://127.0.0.1:{portOf(service, 'http')}/other.html"
        self.assertEqual((yield self.result(page)), "error")
        entry = yield statusOf(service, "websocket")
        failures = entry["websocket"]["handshake_failures"]
        self.assertEqual(list(failures), ["origin"])
        self.assertGreaterEqual(failures["origin"], 1)


def readmeExample() -> str:
    """
    The WebSocket plugin example of README.rst, as written there.
    """
    text = (Path(__file__).parent.parent / "README.rst").read_text()
    start = text.index("    # shout/twisted/plugins/shout_handler.py")
    end = text.index("Then::", start)
    return "\n".join(line[4:] for line in text[start:end].splitlines())


class ReadmePluginTests(TestCase):
    """
    README's WebSocket plugin, installed as a separate package, serves its
    folder and its endpoint on a TLS port.
    """

    timeout = 60

    @inlineCallbacks
    def test_shout(self):
        """
        The example answers text in capitals, closes 1003 on binary, and
        serves its folder on the other paths.
        """
        installPlugin(self, "shout_handler", readmeExample())
        handlers = {**findHandlers(), "status": STATUS_HANDLERS["status"]}
        root = Path(self.mktemp()).absolute()
        root.mkdir()
        (root / "index.html").write_text("the game's page")
        request = evolve(
            parsePortItem("127.0.0.1:0=shout", "test"),
            options={"root": str(root), "max_message_size": 4096},
        )
        config = buildConfig([request], Defaults(), handlers, Path(self.mktemp()))
        certificates = {TLSConfig(): ensureSelfSigned(config.stateDir)}
        service = PortsService(config, handlers, certificates, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = portOf(service, "shout")
        context = ssl.create_default_context(
            cafile=str(config.stateDir / "selfsigned-cert.pem")
        )

        def talk() -> tuple[object, int | None]:
            with client(f"wss://localhost:{port}/shout", ssl=context) as ws:
                ws.send("game on")
                answer = ws.recv(timeout=10)
                ws.send(b"\x00")
                try:
                    ws.recv(timeout=10)
                except ConnectionClosedError as e:
                    return answer, e.rcvd.code if e.rcvd else None
            return answer, None

        self.assertEqual((yield inThread(talk)), ("GAME ON", 1003))
        page = yield inThread(
            lambda: urlopen(f"https://localhost:{port}/", context=context).read()
        )
        self.assertEqual(page, b"the game's page")


class DashboardTests(TestCase):
    """
    The status dashboard, rendered by headless Chromium, shows a port's
    WebSocket figures.
    """

    timeout = 4 * CHROMIUM_LIMIT

    if CHROMIUM is None:
        skip = "chromium is not installed (apt-get install chromium)"

    @inlineCallbacks
    def test_webSocketRow(self):
        """
        After two messages and a refused handshake, the port's row in the
        WebSocket table says so; a port without WebSocket has no row.
        """
        service = startPorts(
            self, ("127.0.0.1:0=websocket", {"echo": True}), ("127.0.0.1:0=echo", {})
        )
        url = f"ws://127.0.0.1:{portOf(service, 'websocket')}/ws"

        def talk() -> None:
            with client(url) as ws:
                ws.send("one")
                ws.recv(timeout=10)
                ws.send(b"two")
                ws.recv(timeout=10)
            try:
                client(url, origin="http://evil.example")
            except InvalidStatus:
                pass

        yield inThread(talk)
        yield waitUntilOnReactor(
            lambda: service.portStatus()[0].counters["connections"]["current"] == 0  # type: ignore[index]
        )
        dom = yield runChromium(
            self, f"http://127.0.0.1:{portOf(service, 'status')}/", "--dump-dom"
        )
        rows = webSocketRows(dom.decode("utf-8"))
        [name] = [
            s.name for s in service.portStatus() if s.config.handler == "websocket"
        ]
        self.assertEqual(list(rows), [name])
        row = rows[name]
        self.assertEqual(row["ws_open"], ("0", "0"))
        self.assertEqual(row["ws_messages_in"], ("2", "2"))
        self.assertEqual(row["ws_messages_out"], ("2", "2"))
        self.assertEqual(row["ws_bytes_in"], ("6 B", "6"))
        self.assertEqual(row["ws_refused"], ("1", "1"))
        self.assertEqual(row["ws_closes"], ("1", "1"))


class _WebSocketRows(HTMLParser):
    """
    The rows of the dashboard's WebSocket table: cells by first class, as
    C{(text, data-value)}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, tuple[str, str | None]]] = {}
        self._row: str | None = None
        self._cell: tuple[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("data-websocket-port"):
            self._row = attributes["data-websocket-port"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None:
            kind = (attributes.get("class") or "").split(" ")[0]
            self._cell = (kind, attributes.get("data-value"))
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            kind, value = self._cell
            self.rows[self._row][kind] = (" ".join("".join(self._text).split()), value)
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def webSocketRows(dom: str) -> dict[str, dict[str, tuple[str, str | None]]]:
    """
    The WebSocket rows of a rendered dashboard.
    """
    parser = _WebSocketRows()
    parser.feed(dom)
    parser.close()
    return parser.rows
