"""
A real C{twistd multiport} daemon getting its certificate from pebble:
with C{--workers}, the main process orders once and every worker serves.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.pebble import freeTCPPort, startPebble
from tests.support import configuredDaemon, waitUntil
from tests.test_acmepebble import NAME, served


class WorkersTests(SynchronousTestCase):
    """
    ACME with C{--workers 2}.
    """

    def test_workersServeWhatMainOrders(self):
        """
        The certificate is ordered once; every connection, whichever
        worker takes it, gets pebble's certificate afterwards.
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        daemon = configuredDaemon(
            folder,
            f"""\
            [acme]
            directory = "{pebble.directory}"
            directory_ca = "{pebble.ca}"

            [[port]]
            port = {https}
            interface = "127.0.0.1"
            handler = "https"
            tls = {{ acme = ["{NAME}"] }}

            [[port]]
            port = {http}
            interface = "127.0.0.1"
            handler = "http"
            options = {{ redirect_https = {https} }}
            """,
            "--workers",
            "2",
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"obtained a certificate for a\.test", timeout=60)
        root = pebble.root()
        # Each worker looks for the new certificate every few seconds.
        waitUntil(lambda: all(served(https, root) is not None for _ in range(8)), 30)
        self.assertEqual(
            sum("ordering a certificate" in line for line in daemon.lines), 1
        )
