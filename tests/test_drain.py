"""
Tests for draining that a load balancer sees: C{POST /api/drain} and
C{/api/undrain}, C{/healthz} answering 503 C{draining} while every port
serves, and C{multiport-ctl drain}/C{undrain}; in one process, then in
real daemons (one process, and C{--workers 2}).
"""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from multiport import ctl
from multiport.daemon.drain import BalancerDrain
from multiport.daemon.service import PortsService
from multiport.handlers.interface import (
    DrainState,
    HandlerContext,
    IDaemonDrain,
    servedByMainProcess,
)
from multiport.status.agent import agentAnswer, haproxyAgent
from tests.support import HANDLERS, Daemon, configFor, waitUntil
from tests.test_api import TOKEN
from tests.test_live import freePort
from tests.test_livedaemon import connect, echoes
from tests.test_status import Response, parseResponse


class Drainable(BalancerDrain):
    def __init__(self, clock: Clock) -> None:
        self._reactor = clock  # type: ignore[assignment]


class BalancerDrainTests(SynchronousTestCase):
    """
    The drain flag itself.
    """

    def test_drainAndUndrain(self) -> None:
        """
        A drain records when it began; an undrain clears it.
        """
        clock = Clock()
        clock.advance(42)
        daemon = Drainable(clock)
        self.assertEqual(daemon.drainState(), DrainState(False, None))
        self.assertEqual(self.successResultOf(daemon.drain()), DrainState(True, 42))
        self.assertEqual(daemon.drainState(), DrainState(True, 42))
        self.assertEqual(self.successResultOf(daemon.undrain()), DrainState())
        self.assertEqual(daemon.drainState(), DrainState())

    def test_drainTwiceKeepsTheFirstTime(self) -> None:
        """
        Draining a drained daemon changes nothing, its start included.
        """
        clock = Clock()
        daemon = Drainable(clock)
        daemon.drain()
        clock.advance(5)
        self.assertEqual(self.successResultOf(daemon.drain()), DrainState(True, 0))

    def test_serviceProvidesIt(self) -> None:
        """
        The daemon's service provides L{IDaemonDrain}.
        """
        config = configFor("127.0.0.1:0=echo", self.mktemp())
        service = PortsService(config, HANDLERS, {}, reactor)
        self.assertTrue(verifyObject(IDaemonDrain, service))


class DrainAPITests(TestCase):
    """
    C{POST /api/drain} and C{/api/undrain} on a real service whose ports
    listen on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.echo = freePort()
        self.status = freePort()
        config = configFor(
            f"127.0.0.1:{self.echo}=echo,127.0.0.1:{self.status}=status",
            self.mktemp(),
        )
        self.service = PortsService(config, HANDLERS, {}, reactor, adminToken=TOKEN)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def call(self, method: bytes, path: str, token: str | None = TOKEN) -> Response:
        """
        One request to the status port's site, as it arrived on it.
        """
        site = self.service.namedServices[
            f"tcp:127.0.0.1:{self.status}"
        ].factory.wrappedFactory
        channel = site.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", self.status)
        )
        channel.makeConnection(transport)
        head = (
            method + b" " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\nContent-Length: 0\r\n"
        )
        if token is not None:
            head += b"Authorization: Bearer " + token.encode() + b"\r\n"
        channel.dataReceived(head + b"\r\n")
        return parseResponse(transport.value())

    def test_drainMakesHealthz503(self) -> None:
        """
        After a drain C{/healthz} answers 503 C{draining}; the answer says
        the daemon drains and how many connections are open.
        """
        self.assertEqual(self.call(b"GET", "/healthz").status, 200)
        response = self.call(b"POST", "/api/drain")
        self.assertEqual(response.status, 200, response.body)
        answer = json.loads(response.body)
        self.assertEqual((answer["draining"], answer["connections"]), (True, 0), answer)
        self.assertIsInstance(answer["since"], float)
        health = self.call(b"GET", "/healthz")
        self.assertEqual((health.status, health.body), (503, b"draining\n"))

    def test_statusAndMetrics(self) -> None:
        """
        C{/status} says whether the daemon is drained and since when;
        C{/metrics} has C{multiport_balancer_draining}, 1 while drained.
        """
        document = json.loads(self.call(b"GET", "/status").body)
        self.assertEqual(document["drain"], {"draining": False, "since": None})
        metrics = self.call(b"GET", "/metrics").body.decode()
        self.assertIn("\nmultiport_balancer_draining 0.0\n", metrics)
        self.call(b"POST", "/api/drain")
        document = json.loads(self.call(b"GET", "/status").body)
        self.assertEqual(
            document["drain"],
            {"draining": True, "since": self.service.drainState().since},
        )
        metrics = self.call(b"GET", "/metrics").body.decode()
        self.assertIn("\nmultiport_balancer_draining 1.0\n", metrics)

    def test_undrain(self) -> None:
        """
        An undrain makes C{/healthz} answer 200 C{ok} again.
        """
        self.call(b"POST", "/api/drain")
        response = self.call(b"POST", "/api/undrain")
        self.assertEqual(response.status, 200)
        self.assertEqual(
            json.loads(response.body),
            {"draining": False, "since": None, "connections": 0},
        )
        health = self.call(b"GET", "/healthz")
        self.assertEqual((health.status, health.body), (200, b"ok\n"))

    def test_tokenRequired(self) -> None:
        """
        Without the admin token a drain is refused (401) and changes
        nothing.
        """
        for token in (None, "wrong"):
            self.assertEqual(self.call(b"POST", "/api/drain", token).status, 401)
            self.assertEqual(self.call(b"POST", "/api/undrain", token).status, 401)
        self.assertEqual(self.call(b"GET", "/healthz").status, 200)

    def test_postOnly(self) -> None:
        """
        Other methods get 405 naming POST.
        """
        response = self.call(b"GET", "/api/drain")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header(b"allow"), b"POST")
        self.assertFalse(self.service.drainState().draining)

    @inlineCallbacks
    def test_portsKeepServing(self):
        """
        While drained every port keeps listening and serving, and the
        drain counts the connections open on ports other than status
        ports.
        """
        from tests.test_api import APITests

        self.call(b"POST", "/api/drain")
        self.assertTrue(all(s.listening for s in self.service.portStatus()))
        yield APITests.echoes(self, self.echo)  # type: ignore[arg-type]
        held = socket.create_connection(("127.0.0.1", self.echo))
        self.addCleanup(held.close)
        from tests.support import waitUntilOnReactor

        echo = self.service.namedServices[f"tcp:127.0.0.1:{self.echo}"]
        yield waitUntilOnReactor(lambda: echo.factory.counters.current == 1)
        answer = json.loads(self.call(b"POST", "/api/drain").body)
        self.assertEqual(answer["connections"], 1)


def ctlRun(status: int, stateDir: Path, *args: str) -> tuple[int, str]:
    """
    C{multiport-ctl} against the status port C{status}; exit status and
    output.
    """
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = ctl.main(
            ["--status", f"127.0.0.1:{status}", "--state-dir", str(stateDir), *args]
        )
    return code, out.getvalue() + err.getvalue()


def health(status: int) -> tuple[int, bytes]:
    """
    C{GET /healthz}: its status and body.
    """
    connection = http.client.HTTPConnection("127.0.0.1", status, timeout=10)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class DrainDaemonTests(SynchronousTestCase):
    """
    A real daemon drained with C{multiport-ctl}: one process, then two
    workers.
    """

    def start(self, *extra: str) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.daemon = Daemon(
            [
                "--ports",
                "127.0.0.1:0=echo",
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(self.folder / "state"),
                *extra,
            ],
            str(self.folder),
        )
        self.addCleanup(self.daemon.stop)
        found = self.daemon.listening(2)
        self.echo = found["echo"][1]
        self.status = found["status"][1]

    def ctl(self, *args: str) -> tuple[int, str]:
        return ctlRun(self.status, self.folder / "state", *args)

    def drainUndrain(self) -> None:
        held = connect(self.echo)
        self.addCleanup(held.close)
        self.assertTrue(echoes(held, b"before"))
        self.assertEqual(health(self.status), (200, b"ok\n"))
        code, out = self.ctl("drain")
        self.assertEqual((code, out), (0, "draining (1 connection open)\n"))
        self.assertEqual(health(self.status), (503, b"draining\n"))
        # Every port keeps serving: the connection held, and new ones.
        self.assertTrue(echoes(held, b"during"))
        with connect(self.echo) as fresh:
            self.assertTrue(echoes(fresh, b"new"))
        code, out = self.ctl("undrain")
        self.assertEqual((code, out[:12]), (0, "not draining"))
        self.assertEqual(health(self.status), (200, b"ok\n"))
        self.assertTrue(echoes(held, b"after"))

    def test_oneProcess(self) -> None:
        """
        C{multiport-ctl drain} makes C{/healthz} answer 503 C{draining}
        while the ports serve; C{undrain} brings back 200.
        """
        self.start()
        self.drainUndrain()
        self.daemon.waitFor("draining for the load balancer")
        self.daemon.waitFor("drain ended")

    def test_workers(self) -> None:
        """
        The same with C{--workers 2}: the main process serves the status
        port and holds the drain.
        """
        self.start("--workers", "2")
        self.daemon.waitFor(r"worker \d \(pid \d+\) serving", 2)
        # Workers report their counters every second.
        waitUntil(lambda: self.ctl("drain")[1] == "draining (0 connections open)\n")
        self.ctl("undrain")
        held = connect(self.echo)
        self.addCleanup(held.close)
        self.assertTrue(echoes(held, b"x"))
        waitUntil(lambda: self.ctl("drain")[1] == "draining (1 connection open)\n")
        self.assertEqual(health(self.status), (503, b"draining\n"))
        with connect(self.echo) as fresh:
            self.assertTrue(echoes(fresh, b"new"))
        self.assertEqual(self.ctl("undrain")[0], 0)
        self.assertEqual(health(self.status), (200, b"ok\n"))

    def test_tokenRequired(self) -> None:
        """
        C{multiport-ctl drain} with a wrong token fails (exit 1) and
        changes nothing.
        """
        self.start()
        wrong = self.folder / "wrong"
        wrong.write_text("wrong-token\n")
        code, out = self.ctl("--admin-token-file", str(wrong), "drain")
        self.assertEqual(code, 1, out)
        self.assertIn("HTTP 401", out)
        self.assertEqual(health(self.status), (200, b"ok\n"))

    def test_sigtermAfterDrain(self) -> None:
        """
        SIGTERM after a drain closes nothing new: the status port stops
        listening at once (as with any SIGTERM, so C{/healthz} is refused,
        which a balancer counts as down too), and an open connection keeps
        being served until it closes; then the daemon exits.
        """
        self.start("--drain-timeout", "20")
        held = connect(self.echo)
        self.addCleanup(held.close)
        self.assertTrue(echoes(held, b"before"))
        self.assertEqual(self.ctl("drain")[0], 0)
        self.daemon.process.send_signal(signal.SIGTERM)
        # The held connection, and maybe the drain's own request to the
        # status port if its end has not reached the daemon yet.
        self.daemon.waitFor(r"draining [12] open connections?\b")
        self.daemon.waitFor(f"stopped listening on tcp:127.0.0.1:{self.status}")
        self.assertRaises(ConnectionRefusedError, health, self.status)
        self.assertTrue(echoes(held, b"still served"))
        self.assertIsNone(self.daemon.process.poll())
        held.close()
        # twistd ends by killing itself with the signal it got.
        self.assertEqual(self.daemon.process.wait(20), -signal.SIGTERM)
        self.assertNotIn("closed drain", "".join(self.daemon.lines))


class AgentCheckTests(SynchronousTestCase):
    """
    The C{agent-check} handler: HAProxy's agent check reads one line.
    """

    def answer(self, daemon: object) -> bytes:
        context = HandlerContext(
            reactor=Clock(),  # type: ignore[arg-type]
            clock=Clock(),
            port=configFor("127.0.0.1:0=agent-check", self.mktemp()).ports[0],
            daemon=daemon,  # type: ignore[arg-type]
        )
        protocol = haproxyAgent.buildFactory(context).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        return transport.value()

    def test_answers(self) -> None:
        """
        C{up ready} normally, C{drain} while drained, C{down} while a port
        does not listen; without a daemon, C{up ready}.
        """
        service = PortsService(
            configFor("127.0.0.1:0=echo", self.mktemp()), HANDLERS, {}, reactor
        )
        self.assertEqual(self.answer(None), b"up ready\n")
        # Not started: its port does not listen.
        self.assertEqual(self.answer(service), b"down\n")
        service.drain()
        self.assertEqual(self.answer(service), b"drain\n")
        service.undrain()
        self.assertEqual(agentAnswer(service), b"down\n")

    def test_mainProcess(self) -> None:
        """
        It reports on the whole daemon: with workers, the main process
        serves it.
        """
        self.assertTrue(servedByMainProcess(haproxyAgent))
        self.assertIn("agent-check", HANDLERS)
