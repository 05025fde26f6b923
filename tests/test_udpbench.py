"""
Tests for the UDP benchmark's generator (C{benchmarks/udploadgen.c}), its
servers and peers (L{benchmarks.udp}, L{benchmarks.peers.udp_echo}) and
its two scenarios in C{python -m benchmarks}: bounded runs of a second or
less against servers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import processes, run, scenarios, tools, udp
from benchmarks.peers.udp_echo import MAX_READ, AsyncioEcho
from benchmarks.scenarios import Settings
from tests.test_benchmarks import liveChildren, requireTools


def ask(port: int, data: bytes) -> bytes:
    """
    What 127.0.0.1:C{port} answers to the datagram C{data}.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(data, ("127.0.0.1", port))
        return client.recv(65536)


class UDPLoadgenTests(SynchronousTestCase):
    """
    The UDP ping-pong generator and its echo server.
    """

    def setUp(self) -> None:
        requireTools("gcc")
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir()
        self.addCleanup(processes.stopAll)

    def test_usage(self) -> None:
        """
        Without arguments it says how to use it and exits 2.
        """
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
        [port] = udp.freeUDPPorts(1)
        with udp.twistedEcho(self.workdir, port):
            sample = udp.datagrams(port, 0.5, 0.1, clients=4)
        self.assertGreater(sample.value, 100)
        self.assertEqual(sample.errors, 0)
        assert sample.generatorCPU is not None
        self.assertGreater(sample.generatorCPU, 0)

    def test_echoServer(self) -> None:
        """
        C{udploadgen echoserver} sends each datagram back whole, and runs on
        the generator's CPU.
        """
        [port] = udp.freeUDPPorts(1)
        with udp.upstreamEcho(self.workdir, port) as echo:
            self.assertEqual(ask(port, b"u" * 60000), b"u" * 60000)
        self.assertEqual(echo.core, udp.GENERATOR_CORE)

    def test_upstreamCPU(self) -> None:
        """
        A relay's run adds the upstream's CPU time to the generator's: they
        share a CPU.
        """
        [upstream, port] = udp.freeUDPPorts(2)
        with udp.upstreamEcho(self.workdir, upstream) as echo:
            with udp.multiportRelay(self.workdir, port, upstream):
                # Ten (pretended) seconds of the upstream's CPU over a run
                # of well under two.
                used = iter([0.0, 10.0])
                self.patch(echo, "cpuSeconds", lambda: next(used))
                sample = udp.datagrams(port, 0.3, 0.1, clients=4, upstream=echo)
        assert sample.generatorCPU is not None
        self.assertGreater(sample.generatorCPU, 5)
        self.assertGreater(sample.value, 100)

    def test_notAnswering(self) -> None:
        """
        A server that exits before it answers fails its start at once,
        saying so.
        """
        [port] = udp.freeUDPPorts(1)
        server = udp.DatagramServer(
            "gone", [udp.PYTHON, "-c", "pass"], port, self.workdir, timeout=30
        )
        error = self.assertRaises(RuntimeError, server.__enter__)
        self.assertIn("server exited with 0", str(error))


class UDPServersTests(SynchronousTestCase):
    """
    Every server the UDP scenarios measure answers over UDP.
    """

    def setUp(self) -> None:
        requireTools("gcc")
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir()
        self.addCleanup(processes.stopAll)

    def test_echoes(self) -> None:
        """
        multiport's echo port, the bare Twisted and the asyncio echo send a
        datagram back whole.
        """
        for make in (udp.multiportEcho, udp.twistedEcho, udp.asyncioEcho):
            [port] = udp.freeUDPPorts(1)
            with make(self.workdir, port):
                self.assertEqual(ask(port, b"e" * 60000), b"e" * 60000, make)

    def relays(self, make: object) -> None:
        """
        C{make}'s relay takes datagrams to the upstream and its answers back.
        """
        [upstream, port] = udp.freeUDPPorts(2)
        with udp.upstreamEcho(self.workdir, upstream):
            with make(self.workdir, port, upstream):  # type: ignore[operator]
                self.assertEqual(ask(port, b"through"), b"through")

    def test_multiportRelay(self) -> None:
        """
        multiport's UDP relay relays.
        """
        self.relays(udp.multiportRelay)

    def test_socat(self) -> None:
        """
        socat's UDP-LISTEN fork relays.
        """
        requireTools("socat")
        self.relays(udp.socat)

    def test_nginx(self) -> None:
        """
        nginx's stream module relays UDP, a session per client: no
        C{proxy_responses}, which would open an upstream socket per
        datagram.
        """
        requireTools("nginx", "nginx-stream")
        self.relays(udp.nginx)
        [config] = self.workdir.glob("nginx-udp-*.conf")
        self.assertNotIn("proxy_responses", config.read_text())


class AsyncioPeerTests(SynchronousTestCase):
    """
    The asyncio echo does the work the others do: reads of 65,535 bytes
    and no reply queued without bound.
    """

    class Transport:
        max_size = 256 * 1024

        def __init__(self) -> None:
            self.sent: list[tuple[bytes, tuple[str, int]]] = []

        def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
            self.sent.append((data, addr))

    def test_readSize(self) -> None:
        """
        Its transport reads at most 65,535 bytes a datagram, as multiport's
        port and the Twisted peer do, not asyncio's 256 KiB (a buffer glibc
        maps and unmaps for every datagram).
        """
        transport = self.Transport()
        AsyncioEcho().connection_made(transport)  # type: ignore[arg-type]
        self.assertEqual((transport.max_size, MAX_READ), (65535, 65535))

    def test_dropsWhilePaused(self) -> None:
        """
        While the transport's buffer is full a datagram is dropped and
        counted; once it drains, echoed again.
        """
        transport = self.Transport()
        echo = AsyncioEcho()
        echo.connection_made(transport)  # type: ignore[arg-type]
        echo.pause_writing()
        echo.datagram_received(b"a", ("127.0.0.1", 5))
        echo.resume_writing()
        echo.datagram_received(b"b", ("127.0.0.1", 5))
        self.assertEqual(
            (transport.sent, echo.dropped), ([(b"b", ("127.0.0.1", 5))], 1)
        )


class UDPScenarioTests(SynchronousTestCase):
    """
    C{udp-echo} and C{udp-relay} are scenarios of C{python -m benchmarks}.
    """

    def test_registered(self) -> None:
        """
        Both are in the scenario list, with the generator as their need and
        the relays' peers as optional; they plot the rates.
        """
        echo, relay = scenarios.SCENARIOS["udp-echo"], scenarios.SCENARIOS["udp-relay"]
        self.assertEqual(
            [(s.run, s.needs, s.optional, s.plotted) for s in (echo, relay)],
            [
                (scenarios.udpEcho, ("gcc",), (), ("datagrams",)),
                (
                    scenarios.udpRelay,
                    ("gcc",),
                    ("socat", "nginx", "nginx-stream"),
                    ("datagrams",),
                ),
            ],
        )

    def test_listed(self) -> None:
        """
        C{python -m benchmarks --list} names them.
        """
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(run.main(["--list"]), 0)
        names = [line.split()[0] for line in out.getvalue().splitlines()]
        self.assertIn("udp-echo", names)
        self.assertIn("udp-relay", names)

    def test_udpMain(self) -> None:
        """
        C{python -m benchmarks.udp OPTIONS} is C{python -m benchmarks
        udp-echo udp-relay OPTIONS}.
        """
        given: list[list[str]] = []
        self.patch(run, "main", lambda argv: given.append(list(argv)) or 0)
        self.assertEqual(udp.main(["--seconds", "2", "--rounds", "1"]), 0)
        self.assertEqual(
            given, [["udp-echo", "udp-relay", "--seconds", "2", "--rounds", "1"]]
        )

    def test_nginxStream(self) -> None:
        """
        nginx's stream module is a tool of its own, found by its file, with
        Debian's package named when it is missing.
        """
        self.patch(tools, "NGINX_STREAM", Path(self.mktemp()))
        self.assertEqual(tools.missing(["nginx-stream"]), ["nginx-stream"])
        self.assertIn("libnginx-mod-stream", tools.installHint(["nginx-stream"]))
        tools.NGINX_STREAM.write_text("")
        self.assertEqual(tools.missing(["nginx-stream"]), [])

    def test_relayScenario(self) -> None:
        """
        A one-round run of C{udp-relay} measures every relay present in
        rates and CPU per datagram, socat the baseline, and stops every
        process it started.
        """
        requireTools("gcc", "socat", "nginx", "nginx-stream")
        self.addCleanup(processes.stopAll)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir()
        found = scenarios.udpRelay(
            Settings(workdir=workdir, seconds=0.3, rounds=1, warmup=0.1)
        )
        self.assertEqual(
            [(s.contender, s.metric, s.baseline, len(s.samples)) for s in found],
            [
                ("multiport relay", "datagrams", False, 1),
                ("socat", "datagrams", True, 1),
                ("nginx", "datagrams", False, 1),
                ("multiport relay", "server CPU per datagram", False, 1),
                ("socat", "server CPU per datagram", True, 1),
                ("nginx", "server CPU per datagram", False, 1),
            ],
        )
        self.assertTrue(all(s.samples[0].value > 0 for s in found), found)
        self.assertEqual(liveChildren(), set())
