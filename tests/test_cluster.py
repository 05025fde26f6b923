"""
Tests for C{[cluster] peers} (L{multiport.config.cluster}): the other
instances' status URLs, validated from the file (and by C{--check}),
linked from the dashboard and listed in C{/status}, on a real daemon too.
"""

from __future__ import annotations

import http.client
import io
import signal
import sys
from html.parser import HTMLParser
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.config.tomlfile import parseConfig, readConfigFile
from multiport.daemon.options import Options
from multiport.errors import ConfigError
from tests.support import configuredDaemon
from tests.test_status import FakeDaemon, _StatusTestCase
from tests.test_workers import getJSON

PEERS = ["http://10.0.0.12:9099/", "https://status.example.org/node3"]


class PeerLinks(HTMLParser):
    """
    The C{href} and text of each C{a.peer} in C{nav#peers}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str | None, str]] = []
        self.navs = 0
        self._inside = False
        self._href: str | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "nav" and attributes.get("id") == "peers":
            self.navs += 1
            self._inside = True
        elif tag == "a" and self._inside and attributes.get("class") == "peer":
            self._href = attributes.get("href")
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._text is not None:
            self.links.append((self._href, "".join(self._text)))
            self._text = None
        elif tag == "nav":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def peerLinksIn(page: bytes) -> PeerLinks:
    parser = PeerLinks()
    parser.feed(page.decode("utf-8"))
    parser.close()
    return parser


class ParseTests(SynchronousTestCase):
    """
    The C{[cluster]} table read from a file.
    """

    def assertBad(self, cluster: object, where: str, text: str) -> None:
        """
        C{cluster} as the table is refused naming the file, C{where} in it,
        and C{text}.
        """
        error = self.assertRaises(
            ConfigError, parseConfig, {"cluster": cluster}, Path("."), "f.toml"
        )
        self.assertEqual(error.where, f"f.toml: {where}")
        self.assertIn(text, error.message)

    def test_peers(self):
        """
        The peers are kept in order; without the table there are none.
        """
        parsed = parseConfig({"cluster": {"peers": PEERS}}, Path("."))
        self.assertEqual(parsed.peers, tuple(PEERS))
        self.assertEqual(parseConfig({}, Path(".")).peers, ())

    def test_badURLs(self):
        """
        Each bad URL is named with its place in the array.
        """
        for bad, text in [
            ("ftp://10.0.0.2/", "expected an http or https URL"),
            ("10.0.0.2:9099", "expected an http or https URL"),
            ("http:///status", "expected an http or https URL"),
            ("http://10.0.0.2:99999/", "bad port number"),
            ("http://10.0.0.2:0/", "bad port number"),
            ("http://admin:secret@10.0.0.2/", "user name or password"),
            ("http://10.0.0.2/a b", "spaces or control characters"),
            ("http://10.0.0.2/\n", "spaces or control characters"),
        ]:
            self.assertBad({"peers": [PEERS[0], bad]}, "cluster.peers[1]", repr(bad))
            self.assertBad({"peers": [PEERS[0], bad]}, "cluster.peers[1]", text)

    def test_badShapes(self):
        """
        A table that is not one, an unknown key, peers not an array or not
        strings, and a peer listed twice are refused, naming the key.
        """
        self.assertBad(["x"], "cluster", "expected a table")
        self.assertBad({"peer": []}, "cluster.peer", "unknown key (known: peers)")
        self.assertBad({"peers": PEERS[0]}, "cluster.peers", "expected an array")
        self.assertBad({"peers": [9099]}, "cluster.peers[0]", "got integer 9099")
        self.assertBad(
            {"peers": [PEERS[0], PEERS[0]]}, "cluster.peers[1]", "listed twice"
        )

    def test_fromFile(self):
        """
        A file's C{[cluster]} table, and its errors naming the file.
        """
        path = Path(self.mktemp())
        path.write_text(f"[cluster]\npeers = {PEERS!r}\n".replace("'", '"'))
        self.assertEqual(readConfigFile(path).peers, tuple(PEERS))
        path.write_text('[cluster]\npeers = ["gopher://x"]\n')
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, f"{path}: cluster.peers[0]")


class CheckTests(SynchronousTestCase):
    """
    C{--check} validates the peers, contacting none.
    """

    def check(self, text: str) -> tuple[SystemExit, str]:
        path = Path(self.mktemp())
        path.write_text(text)
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        stateDir = self.mktemp()
        error = self.assertRaises(
            SystemExit,
            Options().parseOptions,
            ["--state-dir", stateDir, "--no-status", "--check", "-c", str(path)],
        )
        return error, stdout.getvalue()

    def test_valid(self):
        """
        Good peers pass, and are listed.
        """
        error, out = self.check(
            '[cluster]\npeers = ["http://127.0.0.1:1/"]\n'
            '[[port]]\nport = 7000\nhandler = "echo"\n'
        )
        self.assertEqual(error.code, 0)
        self.assertIn("peer http://127.0.0.1:1/ [cluster.peers]", out)
        self.assertIn("configuration ok", out)

    def test_invalid(self):
        """
        A bad peer fails C{--check}, naming it and where it is.
        """
        error, _ = self.check('[cluster]\npeers = ["http://u:p@10.0.0.2/"]\n')
        self.assertIn("cluster.peers[0]", str(error.code))
        self.assertIn("http://u:p@10.0.0.2/", str(error.code))


class StatusPortTests(_StatusTestCase):
    """
    The status port shows the peers of the daemon it reports on.
    """

    def withPeers(self, peers: list[str]) -> FakeDaemon:
        daemon = FakeDaemon([self.echo])
        daemon.peers = tuple(peers)  # type: ignore[attr-defined]
        return daemon

    def test_statusLists(self):
        """
        C{/status} lists the peers in order; none without them.
        """
        document = self.get(b"/status", self.withPeers(PEERS)).json()
        assert isinstance(document, dict)
        self.assertEqual(document["peers"], PEERS)
        plain = self.get(b"/status").json()
        assert isinstance(plain, dict)
        self.assertEqual(plain["peers"], [])

    def test_dashboardLinks(self):
        """
        The dashboard links to each peer, its host and port (and path) as
        the link's text; a page without peers has no such links.
        """
        links = peerLinksIn(self.get(b"/", self.withPeers(PEERS)).body)
        self.assertEqual(
            links.links,
            [
                (PEERS[0], "10.0.0.12:9099"),
                (PEERS[1], "status.example.org/node3"),
            ],
        )
        without = peerLinksIn(self.get(b"/").body)
        self.assertEqual((without.navs, without.links), (0, []))

    def test_dashboardEscapes(self):
        """
        A peer's URL is escaped in the page (a query with C{&} and quotes
        stays one attribute).
        """
        peer = 'http://10.0.0.2:9099/?a=1&b="2"'
        body = self.get(b"/", self.withPeers([peer])).body
        self.assertIn(b'href="http://10.0.0.2:9099/?a=1&amp;b=&quot;2&quot;"', body)
        self.assertEqual(peerLinksIn(body).links[0][0], peer)


class DaemonTests(SynchronousTestCase):
    """
    A real daemon with C{[cluster] peers}.
    """

    def test_shownAndReloaded(self):
        """
        The daemon's dashboard links to its peers and C{/status} lists
        them; a SIGHUP with other peers shows those.
        """
        self.shownAndReloaded()

    def test_workers(self):
        """
        With C{--workers 2} too (the main process's status port).
        """
        self.shownAndReloaded("--workers", "2")

    def shownAndReloaded(self, *args: str) -> None:
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        table = (
            '[cluster]\npeers = ["http://127.0.0.1:9102/", "http://127.0.0.1:9103/"]\n'
            '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "echo"\n'
        )
        daemon = configuredDaemon(folder, table, *args)
        self.addCleanup(daemon.stop)
        status = daemon.listening(2)["status"][1]
        self.assertEqual(
            getJSON(status, "/status")["peers"],
            ["http://127.0.0.1:9102/", "http://127.0.0.1:9103/"],
        )
        connection = http.client.HTTPConnection("127.0.0.1", status, timeout=10)
        self.addCleanup(connection.close)
        connection.request("GET", "/")
        page = connection.getresponse().read()
        self.assertEqual(
            [href for href, _ in peerLinksIn(page).links],
            ["http://127.0.0.1:9102/", "http://127.0.0.1:9103/"],
        )
        (folder / "multiport.toml").write_text(
            table.replace('"http://127.0.0.1:9103/"', '"http://127.0.0.1:9104/"')
        )
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(r"reloaded:")
        self.assertEqual(
            getJSON(status, "/status")["peers"],
            ["http://127.0.0.1:9102/", "http://127.0.0.1:9104/"],
        )
