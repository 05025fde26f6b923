"""
Tests for the UDP benchmark's generator (C{benchmarks/udploadgen.c}) and
runner (L{benchmarks.udp}): bounded runs against a bare echo on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import tools, udp
from tests.test_benchmarks import requireTools


class UDPLoadgenTests(SynchronousTestCase):
    """
    The UDP ping-pong generator.
    """

    def test_usage(self) -> None:
        """
        Without arguments it says how to use it and exits 2.
        """
        requireTools("gcc")
        self.patch(tools, "BUILD", Path(self.mktemp()))
        result = subprocess.run([udp.udploadgen()], capture_output=True, text=True)
        self.assertEqual(
            (result.returncode, result.stderr.split()[:2]),
            (2, ["usage:", "udploadgen"]),
        )

    def test_pingPong(self) -> None:
        """
        Against a bare Twisted UDP echo, a half-second run counts answered
        datagrams and loses none.
        """
        requireTools("gcc")
        port = udp.freeUDPPort()
        folder = Path(self.mktemp())
        folder.mkdir()
        argv = [udp.PYTHON, "-m", "benchmarks.peers.udp_echo", str(port)]
        with udp.server("echo", argv, port, folder, core=None):
            result = udp.measure(port, clients=4, size=64, seconds=0.5, warmup=0.1)
        self.assertGreater(result["datagrams_per_s"], 100)
        self.assertEqual(result["lost"], 0)

    def test_secondsBounded(self) -> None:
        """
        The runner refuses a run longer than 600 seconds.
        """
        self.assertRaises(SystemExit, udp.main, ["--seconds", "601"])
