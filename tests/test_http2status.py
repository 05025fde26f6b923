"""
HTTP/2 in C{/status}, C{/metrics} and the dashboard: a daemon with an
https port (HTTP/2 on), a plain http port and a status port on 127.0.0.1,
driven by curl.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.model import TLSConfig
from multiport.daemon.service import PortsService
from multiport.handlers.weboptions import WebOptions
from multiport.ports.counters import HandlerCounters, publishHTTP2Counters
from multiport.ports.tls import ensureSelfSigned
from multiport.status.http2figures import http2Figures
from tests.support import configFor, waitUntilOnReactor
from tests.test_dashboard import CHROMIUM, dashboardRows, runChromium
from tests.test_status import STATUS_HANDLERS, boundPort, httpGet

CURL = shutil.which("curl")


class FiguresTests(SynchronousTestCase):
    """
    L{http2Figures} reads a port's HTTP/2 figures from its handler counters.
    """

    def test_notSpoken(self) -> None:
        """
        A port whose handler published no HTTP/2 counters has none.
        """
        counters = HandlerCounters()
        counters.add("requests", 3)
        self.assertIsNone(http2Figures(counters.snapshot()))

    def test_publishedAtZero(self) -> None:
        """
        Published, they read 0 before any client, floods by kind.
        """
        counters = HandlerCounters()
        publishHTTP2Counters(counters)
        self.assertEqual(
            http2Figures(counters.snapshot()),
            {
                "connections": {"current": 0, "total": 0},
                "streams": {"current": 0, "total": 0},
                "stream_resets": 0,
                "floods": {"ping_settings": 0, "rapid_reset": 0},
            },
        )


class HTTP2StatusTests(TestCase):
    """
    Two HTTP/2 requests and one HTTP/1.1 request to the https port, then
    what the status port says.
    """

    timeout = 180

    if CURL is None:
        skip = "curl is not installed (apt-get install curl)"

    @inlineCallbacks
    def setUp(self) -> Any:
        root = Path(self.mktemp()).absolute()
        root.mkdir(parents=True)
        (root / "index.html").write_bytes(b"hello\n")
        config = configFor(
            "127.0.0.1:0=https,127.0.0.1:0=http,127.0.0.1:0=status", self.mktemp()
        )
        ports = tuple(
            attrs.evolve(p, options=WebOptions(root=root))
            if p.handler in ("http", "https")
            else p
            for p in config.ports
        )
        config = attrs.evolve(config, ports=ports)
        certificates = {TLSConfig(): ensureSelfSigned(config.stateDir)}
        self.service = PortsService(config, STATUS_HANDLERS, certificates, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.https, httpsPort = boundPort(self.service, "https")
        self.http, _ = boundPort(self.service, "http")
        _, self.status = boundPort(self.service, "status")
        url = f"https://127.0.0.1:{httpsPort}/"
        for version in ("--http2", "--http2", "--http1.1"):
            assert CURL is not None
            out, err, code = yield getProcessOutputAndValue(
                CURL, ["-sSk", version, "-o", "/dev/null", "-w", "%{http_code}", url]
            )
            self.assertEqual((code, out), (0, b"200"), err)
        # Each connection is closed on the daemon's side too.
        yield waitUntilOnReactor(
            lambda: self.port(self.https)["connections"]["current"] == 0
        )

    def port(self, name: str) -> dict[str, Any]:
        """
        Port C{name} in the daemon's C{/status} document, built directly.
        """
        from multiport.status.report import portReport

        [status] = [s for s in self.service.portStatus() if s.name == name]
        return portReport(status)

    @inlineCallbacks
    def test_status(self) -> Any:
        """
        C{/status} gives the https port its HTTP/2 connections and streams
        (the HTTP/1.1 request is not one), and the plain port no C{http2}.
        """
        code, _, body = yield httpGet(self.status, "/status")
        ports = {p["name"]: p for p in json.loads(body)["ports"]}
        self.assertEqual(
            ports[self.https]["http2"],
            {
                "connections": {"current": 0, "total": 2},
                "streams": {"current": 0, "total": 2},
                "stream_resets": 0,
                "floods": {"ping_settings": 0, "rapid_reset": 0},
            },
        )
        self.assertEqual(ports[self.https]["connections"]["accepted"], 3)
        self.assertNotIn("http2", ports[self.http])

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """
        C{/metrics} has the C{multiport_http2_*} families for the https port
        only, counters and gauges, and no handler family for them.
        """
        code, _, body = yield httpGet(self.status, "/metrics")
        text = body.decode("utf-8")
        families = {f.name: f for f in text_string_to_metric_families(text)}

        def values(family: str) -> dict[tuple[str, ...], float]:
            return {
                (s.labels["port"], *(v for k, v in s.labels.items() if k == "kind")): (
                    s.value
                )
                for s in families[family].samples
                if not s.name.endswith("_created")
            }

        https = (self.https,)
        self.assertEqual(values("multiport_http2_connections"), {https: 2})
        self.assertEqual(values("multiport_http2_streams"), {https: 2})
        self.assertEqual(values("multiport_http2_stream_resets"), {https: 0})
        self.assertEqual(values("multiport_http2_streams_current"), {https: 0})
        self.assertEqual(values("multiport_http2_connections_current"), {https: 0})
        self.assertEqual(
            values("multiport_http2_floods"),
            {(self.https, "ping_settings"): 0, (self.https, "rapid_reset"): 0},
        )
        self.assertEqual(families["multiport_http2_streams"].type, "counter")
        self.assertEqual(families["multiport_http2_streams_current"].type, "gauge")
        self.assertIn("multiport_http2_streams_total{", text)
        self.assertNotIn("multiport_https_http2", text)

    @inlineCallbacks
    def test_dashboard(self) -> Any:
        """
        The dashboard's https row shows its HTTP/2 streams; the plain http
        row a dash.
        """
        if CHROMIUM is None:
            self.skipTest("chromium is not installed (apt-get install chromium)")
        dom = yield runChromium(self, f"http://127.0.0.1:{self.status}/", "--dump-dom")
        rows = dashboardRows(dom.decode("utf-8"))
        self.assertEqual(rows[self.https]["h2_total"], ("2", "2"))
        self.assertEqual(rows[self.https]["h2_open"], ("0", "0"))
        self.assertEqual(rows[self.http]["h2_total"], ("\u2014", None))
