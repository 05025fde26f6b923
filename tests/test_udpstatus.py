"""
UDP ports in C{/status}, C{/metrics}, the admin API, the dashboard and
the SIGUSR2 dump: their own figures (datagrams, drops by reason), never
a connection count.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from multiport.daemon.dump import statsTable
from multiport.status.api import portJSON
from tests.test_dashboard import CHROMIUM, dashboardRows, runChromium
from tests.test_status import boundPort, httpGet, startService
from tests.test_udpports import client


class UDPStatusTests(TestCase):
    """
    A daemon with a TCP echo, a UDP echo and a status port on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.service = startService(
            self, "127.0.0.1:0=echo,127.0.0.1:0/udp=echo,127.0.0.1:0=status"
        )
        [udp] = [p for p in self.service.ports() if p.config.datagram]
        self.udp = udp
        self.udpAddress = ("127.0.0.1", udp.boundAddress().port)
        _, self.statusPort = boundPort(self.service, "status")

    @inlineCallbacks
    def traffic(self):
        """
        Two echoed datagrams, one dropped as a reflection.
        """
        asker = client(self)
        yield asker.ask(b"abc", self.udpAddress)
        yield asker.ask(b"de", self.udpAddress)
        self.udp.factory.datagramReceived(b"x", ("127.0.0.1", 0))

    @inlineCallbacks
    def test_status(self):
        """
        C{/status} shows a UDP port's datagrams, bytes and drops by reason,
        and no connections.
        """
        yield self.traffic()
        code, _, body = yield httpGet(self.statusPort, "/status")
        [port] = [p for p in json.loads(body)["ports"] if p["protocol"] == "udp"]
        self.assertTrue(port["name"].startswith("udp:127.0.0.1:"))
        self.assertEqual(port["datagrams"], {"received": 2, "sent": 2, "dropped": 1})
        self.assertEqual(port["bytes"], {"received": 5, "sent": 5})
        self.assertEqual(port["dropped_by_reason"], {"reflection": 1})
        self.assertNotIn("connections", port)

    @inlineCallbacks
    def test_metrics(self):
        """
        C{/metrics} has the datagram families for the UDP port, and the
        UDP port is in no connection family.
        """
        yield self.traffic()
        code, _, body = yield httpGet(self.statusPort, "/metrics")
        families = {
            f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))
        }
        name = self.udp.name

        def value(family: str, **labels: str) -> float:
            [sample] = [
                s
                for s in families[family].samples
                if s.labels.get("port") == name
                and all(s.labels.get(k) == v for k, v in labels.items())
                and not s.name.endswith("_created")
            ]
            return sample.value

        self.assertEqual(value("multiport_datagrams_received"), 2)
        self.assertEqual(value("multiport_datagrams_sent"), 2)
        self.assertEqual(value("multiport_datagrams_dropped", reason="reflection"), 1)
        self.assertEqual(value("multiport_bytes_received"), 5)
        self.assertIn("multiport_datagrams_received_total", body.decode())
        for family in [
            "multiport_connections_current",
            "multiport_connections_accepted",
        ]:
            self.assertEqual(
                [s for s in families[family].samples if s.labels.get("port") == name],
                [],
            )

    @inlineCallbacks
    def test_dump(self):
        """
        The SIGUSR2 table puts UDP ports in a table of their own.
        """
        yield self.traffic()
        table = statsTable(self.service.portStatus())
        [line] = [row for row in table.splitlines() if row.startswith(self.udp.name)]
        self.assertIn("reflection=1", line)
        self.assertIn("datagrams in", table)
        self.assertEqual(line.split()[3:5], ["2", "2"])

    @inlineCallbacks
    def test_api(self):
        """
        The admin API shows a UDP port's datagram figures.
        """
        yield self.traffic()
        [status] = [s for s in self.service.portStatus() if s.config.datagram]
        shown = portJSON(status)
        self.assertEqual(shown["protocol"], "udp")
        self.assertEqual(shown["counters"]["datagramsReceived"], 2)
        self.assertNotIn("current", shown["counters"])


class UDPDashboardTests(TestCase):
    """
    The dashboard rendered by headless Chromium shows a UDP row with its
    own columns.
    """

    timeout = 120

    if CHROMIUM is None:
        skip = "chromium is not installed (apt-get install chromium)"

    @inlineCallbacks
    def test_udpRow(self):
        """
        The UDP port's row has datagram cells and no open-connections cell.
        """
        service = startService(self, "127.0.0.1:0/udp=echo,127.0.0.1:0=status")
        [udp] = [p for p in service.ports() if p.config.datagram]
        yield client(self).ask(b"abc", ("127.0.0.1", udp.boundAddress().port))
        _, port = boundPort(service, "status")
        dom = yield runChromium(self, f"http://127.0.0.1:{port}/", "--dump-dom")
        row = dashboardRows(dom.decode("utf-8"))[udp.name]
        self.assertEqual(row["datagrams_in"], ("1", "1"))
        self.assertEqual(row["datagrams_out"], ("1", "1"))
        self.assertEqual(row["handler"][0], "echo")
        self.assertNotIn("current", row)
        self.assertNotIn("accepted", row)
