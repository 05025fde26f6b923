"""
Tests for the status dashboard (L{multiport.status.dashboard}): the page as
served, and the page as real headless Chromium renders it against a real
daemon.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from multiport.daemon.service import PortsService
from tests.test_status import _StatusTestCase, boundPort, echoTraffic, startService

CHROMIUM = shutil.which("chromium")
TIMEOUT = shutil.which("timeout")

#: Seconds one Chromium run may take before it is killed.
CHROMIUM_LIMIT = 60

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DashboardPageTests(_StatusTestCase):
    """
    Tests for C{GET /} as served.
    """

    def test_html(self) -> None:
        """
        C{/} answers 200 with an HTML page.
        """
        response = self.get(b"/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertTrue(response.body.startswith(b"<!DOCTYPE html>"))

    def test_selfContained(self) -> None:
        """
        The page loads nothing from elsewhere: no external script, style,
        image or font.
        """
        body = self.get(b"/").body.decode()
        self.assertEqual(
            re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", body), []
        )
        self.assertEqual(re.findall(r"<script[^>]+src|<link[^>]+stylesheet", body), [])
        self.assertEqual(re.findall(r"url\(|@import", body), [])

    def test_contentSecurityPolicy(self) -> None:
        """
        The page may only talk to its own port, enforced by the browser.
        """
        policy = self.get(b"/").header(b"content-security-policy")
        assert policy is not None
        self.assertIn(b"default-src 'none'", policy)
        self.assertIn(b"connect-src 'self'", policy)

    def test_pollsStatusEverySecond(self) -> None:
        """
        The page fetches C{status} and schedules itself again a second later.
        """
        body = self.get(b"/").body.decode()
        self.assertIn('getJSON("./status")', body)
        self.assertIn('getJSON("./history")', body)
        self.assertIn("setTimeout(loop, 1000)", body)


class DashboardRows(HTMLParser):
    """
    The port rows of a rendered dashboard: for each C{tr[data-port]}, its
    cells by first class, as C{(text, data-value)}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, tuple[str, str | None]]] = {}
        self._row: str | None = None
        self._cell: str | None = None
        self._value: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("data-port"):
            self._row = attributes["data-port"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None:
            self._cell = (attributes.get("class") or "").split(" ")[0]
            self._value = attributes.get("data-value")
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            text = " ".join("".join(self._text).split())
            self.rows[self._row][self._cell] = (text, self._value)
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def dashboardRows(dom: str) -> dict[str, dict[str, tuple[str, str | None]]]:
    """
    The port rows of a rendered dashboard's DOM.
    """
    parser = DashboardRows()
    parser.feed(dom)
    parser.close()
    return parser.rows


class Collect(ProcessProtocol):
    """
    Collects a process's output; C{ended} fires with C{(stdout, stderr,
    exit code)}.
    """

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[tuple[bytes, bytes, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback((b"".join(self.out), b"".join(self.err), code))


@inlineCallbacks
def runChromium(testCase: TestCase, url: str, *args: str):
    """
    Run headless Chromium on C{url} with C{args} in a process of its own
    (the reactor under test keeps serving it), bounded in time; its
    standard output.
    """
    assert CHROMIUM is not None
    profile = Path(testCase.mktemp()).absolute()
    profile.mkdir(parents=True)
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        *args,
        url,
    ]
    if TIMEOUT is not None:
        # timeout(1) kills Chromium's whole process group when time is up.
        argv = [TIMEOUT, "-k", "5", str(CHROMIUM_LIMIT), *argv]
    collect = Collect()
    process = reactor.spawnProcess(
        collect, argv[0], argv, env={**os.environ, "HOME": str(profile)}
    )
    killer = reactor.callLater(CHROMIUM_LIMIT + 10, process.signalProcess, "KILL")
    try:
        out, err, code = yield collect.ended
    finally:
        if killer.active():
            killer.cancel()
    if code != 0:
        raise AssertionError(f"chromium exited with {code}:\n{err.decode()[-3000:]}")
    return out


class ChromiumTests(TestCase):
    """
    The dashboard rendered by headless Chromium against a real daemon on
    127.0.0.1.
    """

    timeout = 4 * CHROMIUM_LIMIT

    if CHROMIUM is None:
        skip = "chromium is not installed (apt-get install chromium)"

    def setUp(self) -> None:
        self.service: PortsService = startService(
            self, "127.0.0.1:0=echo,127.0.0.1:0=discard,127.0.0.1:0=status"
        )
        _, port = boundPort(self.service, "status")
        self.url = f"http://127.0.0.1:{port}/"
        self.names = {s.name: s.config.handler for s in self.service.portStatus()}

    @inlineCallbacks
    def dump(self):
        """
        The port rows of the dashboard as Chromium renders it.
        """
        dom = yield runChromium(self, self.url, "--dump-dom")
        return dashboardRows(dom.decode("utf-8"))

    @inlineCallbacks
    def test_rowPerPort(self):
        """
        The rendered page has a row for every port with its handler, state
        and figures.
        """
        rows = yield self.dump()
        self.assertEqual(sorted(rows), sorted(self.names))
        for name, handler in self.names.items():
            row = rows[name]
            self.assertEqual(row["handler"][0], handler)
            self.assertEqual(row["state"][0], "listening")
            for figure in ["current", "accepted", "closed", "rejected", "errors"]:
                text, value = row[figure]
                self.assertRegex(value or "", r"^\d+$", (name, figure))
                self.assertEqual(text.replace(",", ""), value, (name, figure))
        [echo] = [n for n, h in self.names.items() if h == "echo"]
        self.assertEqual(rows[echo]["accepted"], ("0", "0"))
        self.assertEqual(rows[echo]["received"], ("0 B", "0"))

    @inlineCallbacks
    def test_figuresFollowTraffic(self):
        """
        After traffic through the echo port a new rendering shows the new
        figures, bytes in human units.
        """
        [echo] = [n for n, h in self.names.items() if h == "echo"]
        before = yield self.dump()
        self.assertEqual(before[echo]["accepted"][1], "0")
        yield echoTraffic(self.service, 3, 1000)
        after = yield self.dump()
        self.assertEqual(after[echo]["accepted"], ("3", "3"))
        self.assertEqual(after[echo]["closed"], ("3", "3"))
        self.assertEqual(after[echo]["received"], ("2.93 KiB", "3000"))
        self.assertEqual(after[echo]["sent"], ("2.93 KiB", "3000"))

    @inlineCallbacks
    def test_screenshot(self):
        """
        Chromium saves a 1280x800 PNG screenshot of the dashboard.
        """
        yield echoTraffic(self.service, 4, 20000)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        screenshot = folder / "dashboard.png"
        yield runChromium(
            self, self.url, f"--screenshot={screenshot}", "--window-size=1280,800"
        )
        data = screenshot.read_bytes()
        self.assertEqual(data[:8], PNG_SIGNATURE)
        width, height = struct.unpack(">II", data[16:24])
        self.assertEqual((width, height), (1280, 800))
