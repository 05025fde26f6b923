"""
Tests for C{--workers}: the pieces on their own, then a real daemon with
two worker processes.  The daemon is another process, so blocking sockets
are fine in the end-to-end tests.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from multiport.config.model import Config
from multiport.daemon.worker import shareConfig
from multiport.daemon.workers import (
    Slot,
    WorkerProcess,
    mergeStatuses,
    split,
    workerCount,
)
from multiport.errors import ConfigError
from multiport.handlers.interface import Handler, PortStatus
from multiport.ports.policies import Policy, Rate, sharePolicy
from multiport.ports.sockets import bindShared as bindSocket
from tests.support import HANDLERS, Daemon, configFor, waitUntil
from tests.test_livedaemon import connect, echoes


class PiecesTests(SynchronousTestCase):
    """
    Worker counts, shared limits, merged counters, the main's sockets.
    """

    def test_workerCount(self):
        """
        A number from 1 to 256, or auto (one per core); anything else names
        --workers.
        """
        self.assertEqual(workerCount("1"), 1)
        self.assertEqual(workerCount("4"), 4)
        self.assertEqual(workerCount("auto", cores=2), 2)
        for bad in ("0", "-1", "x", "1.5", "257", ""):
            error = self.assertRaises(ConfigError, workerCount, bad)
            self.assertEqual(error.where, "--workers")
            self.assertIn(repr(bad), str(error))

    def test_sharePolicy(self):
        """
        Limits and rates are divided among the workers, rounded up, never
        below 1; the rest is untouched.
        """
        policy = Policy(
            maxConnections=100,
            maxConnectionsPerIP=3,
            rate=Rate(10.0, 20),
            ratePerIP=Rate(1.0, 1),
            idleTimeout=5.0,
        )
        shared = sharePolicy(policy, 4)
        self.assertEqual(shared.maxConnections, 25)
        self.assertEqual(shared.maxConnectionsPerIP, 1)
        self.assertEqual(shared.rate, Rate(2.5, 5))
        self.assertEqual(shared.ratePerIP, Rate(0.25, 1))
        self.assertEqual(shared.idleTimeout, 5.0)
        self.assertIs(sharePolicy(policy, 1), policy)
        self.assertEqual(sharePolicy(Policy(), 4), Policy())

    def test_shareConfig(self):
        """
        Each port of a configuration gets its share.
        """
        config = configFor("7001=echo", self.mktemp())
        config = Config(
            tuple(evolve(p, policy=Policy(maxConnections=9)) for p in config.ports),
            config.stateDir,
        )
        self.assertEqual(shareConfig(config, 2).ports[0].policy.maxConnections, 5)

    def test_split(self):
        """
        Status ports stay in the main process; the others go to workers.
        """
        config = configFor("7001=echo,7002=status,7003=http", self.mktemp())
        workers, own = split(config, HANDLERS)
        self.assertEqual([p.port for p in workers.ports], [7001, 7003])
        self.assertEqual([p.port for p in own.ports], [7002])

    def test_splitByDeclaration(self):
        """
        The main process keeps the ports of any handler that declares
        C{servedByMainProcess}, a third party's too; a handler does not run
        there for its name.
        """
        report = Handler(
            "report",
            "reports on the daemon",
            build=lambda context: Factory.forProtocol(Protocol),
            servedByMainProcess=True,
        )
        notStatus = Handler("status", "a replacement", build=lambda context: Factory())
        handlers = {**HANDLERS, "report": report}
        config = configFor("7001=echo,7002=status", self.mktemp())
        config = Config(
            (*config.ports, evolve(config.ports[0], port=7003, handler="report")),
            config.stateDir,
        )
        workers, own = split(config, handlers)
        self.assertEqual([p.port for p in workers.ports], [7001])
        self.assertEqual([p.port for p in own.ports], [7002, 7003])
        workers, own = split(config, {**handlers, "status": notStatus})
        self.assertEqual([p.port for p in workers.ports], [7001, 7002])
        self.assertEqual([p.port for p in own.ports], [7003])

    def test_merge(self):
        """
        Counters add up over the workers; listening if any listens; the
        earliest listening_since.
        """
        config = configFor("7001=echo", self.mktemp()).ports[0]

        def part(accepted, current, since, listening=True):
            return PortStatus(
                name="tcp:0.0.0.0:7001",
                config=config,
                listening=listening,
                counters={
                    "connections": {"accepted": accepted, "current": current},
                    "rejected_by_reason": {"rate": accepted},
                    "bytes": {"received": 10, "sent": 20},
                    "listening_since": since,
                },
                handlerCounters={("hits", ()): accepted},
            )

        merged = mergeStatuses(
            "tcp:0.0.0.0:7001",
            config,
            [part(3, 1, 50.0), part(4, 2, 40.0, listening=False)],
        )
        self.assertEqual(
            merged.counters["connections"],
            {"accepted": 7, "current": 3, "closed": 0, "rejected": 0},
        )
        self.assertEqual(merged.counters["rejected_by_reason"], {"rate": 7})
        self.assertEqual(merged.counters["bytes"], {"received": 20, "sent": 40})
        self.assertEqual(merged.counters["listening_since"], 40.0)
        self.assertEqual(merged.handlerCounters, {("hits", ()): 7})
        self.assertTrue(merged.listening)
        self.assertFalse(merged.draining)

    def test_bindSocket(self):
        """
        The main process's sockets listen, IPv6 ones IPv6-only; a busy
        address is a CannotListenError.
        """
        from twisted.internet.error import CannotListenError

        config = configFor("127.0.0.1:0=echo", self.mktemp()).ports[0]
        skt = bindSocket(config)
        self.addCleanup(skt.close)
        self.assertNotEqual(skt.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 0)
        busy = configFor(f"127.0.0.1:{skt.getsockname()[1]}=echo", self.mktemp()).ports[
            0
        ]
        self.assertRaises(CannotListenError, bindSocket, busy)
        # The suite needs IPv6 loopback (test_service, test_twistd): an
        # IPv6 port that can't be bound is a failure here, not a pass.
        six = configFor("[::1]:0=echo", self.mktemp()).ports[0]
        other = bindSocket(six)
        self.addCleanup(other.close)
        self.assertEqual(other.family, socket.AF_INET6)
        self.assertNotEqual(
            other.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 0
        )
        self.assertEqual(other.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 1)


def getJSON(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return json.loads(response.read())
    finally:
        connection.close()


class TwoWorkersTests(SynchronousTestCase):
    """
    A real daemon with --workers 2.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.daemon = Daemon(
            [
                "--workers",
                "2",
                "--ports",
                "127.0.0.1:0=echo",
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(self.folder / "state"),
                "--drain-timeout",
                "20",
            ],
            str(self.folder),
        )
        self.addCleanup(self.daemon.stop)
        self.daemon.waitFor(r"worker \d \(pid \d+\) serving", 2)
        found = self.daemon.listening(2)
        self.echo = found["echo"][1]
        self.status = found["status"][1]

    def port(self, name: str, workers: bool = True) -> dict:
        document = getJSON(self.status, "/status" + ("?workers=1" if workers else ""))
        return next(p for p in document["ports"] if p["name"] == name)

    def waitForWorkers(
        self, name: str, accept: Callable[[dict], object], timeout: float = 15
    ) -> dict:
        """
        Poll /status?workers=1 (workers report every second) until C{accept}
        holds for port C{name}'s entry; that entry.
        """
        return waitUntil(lambda: self.port(name), timeout, accept=accept, interval=0.1)

    def test_bothServeAndCountersAddUp(self):
        """
        Both workers take connections on the one port; the totals are the
        sum of the workers' figures.
        """
        total = 300
        for index in range(total):
            with connect(self.echo) as client:
                self.assertTrue(echoes(client, b"%d" % index))
        name = f"tcp:127.0.0.1:{self.echo}"
        port = self.waitForWorkers(
            name, lambda port: port["connections"]["accepted"] == total
        )
        workers = port["workers"]
        self.assertEqual(len(workers), 2)
        self.assertEqual(sum(w["connections"]["accepted"] for w in workers), total)
        self.assertTrue(all(w["connections"]["accepted"] > 0 for w in workers), workers)
        self.assertEqual(
            sum(w["bytes"]["received"] for w in workers),
            port["bytes"]["received"],
        )
        metrics = http.client.HTTPConnection("127.0.0.1", self.status, timeout=10)
        metrics.request("GET", "/metrics?workers=1")
        text = metrics.getresponse().read().decode()
        metrics.close()
        self.assertIn('worker="0"', text)
        self.assertIn('worker="1"', text)
        metrics = http.client.HTTPConnection("127.0.0.1", self.status, timeout=10)
        metrics.request("GET", "/metrics")
        self.assertNotIn("worker=", metrics.getresponse().read().decode())
        metrics.close()

    def ctl(self, *args: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = ctl.main(
                [
                    "--status",
                    f"127.0.0.1:{self.status}",
                    "--state-dir",
                    str(self.folder / "state"),
                    *args,
                ]
            )
        return code, out.getvalue() + err.getvalue()

    def test_statusPortCantChangeItself(self):
        """
        With workers too, a status port refuses to be changed through
        itself (409), and keeps answering as a status port.
        """
        name = f"tcp:127.0.0.1:{self.status}"
        code, out = self.ctl("change", name, f"127.0.0.1:{self.status}=echo")
        self.assertEqual(code, 1, out)
        self.assertIn("the port this request came in on", out)
        self.assertIn("(HTTP 409)", out)
        code, out = self.ctl("status")
        self.assertEqual(code, 0, out)
        self.assertIn(f"{name}  status", out)

    def test_liveAddReachesBoth(self):
        """
        A port added through the admin API is served by both workers, and
        removed from both.
        """
        code, out = self.ctl("add", "127.0.0.1:0=echo")
        self.assertEqual(code, 0, out)
        name = out.split()[-1]
        number = int(name.rpartition(":")[2])
        with connect(number) as client:
            self.assertTrue(echoes(client, b"new"))
        self.waitForWorkers(name, lambda port: len(port["workers"]) == 2)
        code, out = self.ctl("remove", name)
        self.assertEqual(code, 0, out)
        self.assertRaises(ConnectionRefusedError, connect, number)

    def test_workerRestarts(self):
        """
        A worker killed is restarted; meanwhile the other serves the port.
        """
        name = f"tcp:127.0.0.1:{self.echo}"
        port = self.waitForWorkers(name, lambda port: len(port["workers"]) == 2)
        victim = port["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        self.daemon.waitFor(rf"worker \d \(pid {victim}\) exited")
        for index in range(20):
            with connect(self.echo) as client:
                self.assertTrue(echoes(client, b"still %d" % index))
        self.daemon.waitFor(r"worker \d \(pid \d+\) serving", 3)
        pids = {w["pid"] for w in self.port(name)["workers"]}
        self.assertNotIn(victim, pids)

    def assertRefused(self, port: int) -> None:
        """
        New clients of C{port} are refused (soon: the last process holding
        the listening socket may take a moment to close it), never left
        hanging in a backlog nobody accepts from.
        """

        def refused() -> bool:
            try:
                late = connect(port)
            except ConnectionRefusedError:
                return True
            late.close()
            return False

        waitUntil(refused, 5, what=f"port {port} refusing new clients")

    def test_deadWorkerCountersKept(self):
        """
        A worker killed after serving traffic: its figures stay in the
        totals of /status and /metrics, which never go backwards, while it
        is restarted.
        """
        name = f"tcp:127.0.0.1:{self.echo}"
        total = 60
        for index in range(total):
            with connect(self.echo) as client:
                self.assertTrue(echoes(client, b"%d" % index))
        port = self.waitForWorkers(
            name, lambda p: p["connections"]["accepted"] == total
        )
        busy = [w for w in port["workers"] if w["connections"]["accepted"] > 0]
        self.assertTrue(busy, port["workers"])
        victim = busy[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        self.daemon.waitFor(rf"worker \d \(pid {victim}\) exited")
        seen = []

        def replaced() -> bool:
            # Every reading on the way must keep the totals.
            figures = self.port(name, workers=False)
            seen.append(figures["connections"]["accepted"])
            self.assertEqual(figures["connections"]["current"], 0)
            self.assertEqual(figures["connections"]["closed"], seen[-1])
            self.assertEqual(figures["bytes"]["received"], port["bytes"]["received"])
            pids = {w["pid"] for w in self.port(name)["workers"]}
            return len(seen) > 5 and victim not in pids and len(pids) == 2

        waitUntil(replaced, 15, interval=0.1, what="the killed worker replaced")
        self.assertEqual(set(seen), {total})
        metrics = http.client.HTTPConnection("127.0.0.1", self.status, timeout=10)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        metrics.close()
        self.assertRegex(
            text,
            rf'multiport_connections_accepted_total\{{[^}}]*port="{name}"[^}}]*\}} '
            rf"{total}\.0",
        )

    def test_sigtermDrains(self):
        """
        SIGTERM: the workers stop listening and finish their connections;
        the daemon exits once they have.
        """
        clients = [connect(self.echo) for _ in range(6)]
        for client in clients:
            self.addCleanup(client.close)
            self.assertTrue(echoes(client, b"open"))
        self.daemon.process.send_signal(signal.SIGTERM)
        self.daemon.waitFor(r"worker \d: draining \d+ open connections?")
        self.daemon.waitFor(
            rf"worker \d: stopped listening on tcp:127\.0\.0\.1:{self.echo}$", 2
        )
        self.assertRefused(self.echo)
        for client in clients:
            self.assertTrue(echoes(client, b"finishing"))
        self.assertIsNone(self.daemon.process.poll())
        for client in clients:
            client.close()
        self.daemon.process.wait(timeout=20)
        self.daemon.waitFor(r"worker 0 exited")
        self.daemon.waitFor(r"worker 1 exited")


class FakeChannel:
    """
    A worker's channel that answers every call at once: refusing the first
    "apply" when told to.
    """

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, object, list[int]]] = []

    def call(self, kind, payload, descriptors=()):
        from twisted.internet.defer import fail, succeed

        from multiport.daemon.ipc import RemoteError

        self.calls.append((kind, payload, list(descriptors)))
        if kind == "apply" and self.refuse and len(self.calls) == 1:
            return fail(RemoteError("cannot build the handler: exploded"))
        if kind == "status":
            return succeed([])
        return succeed({"added": [], "removed": [], "changed": [], "unchanged": 1})


def fakePool(testCase: Any, *channels: FakeChannel) -> Any:
    """
    A L{WorkerPool} on a memory reactor whose workers are C{channels},
    serving an echo port (bound for real) and a status port.
    """
    from twisted.internet.testing import MemoryReactorClock

    from multiport.daemon.pool import WorkerPool
    from multiport.daemon.service import PortsService

    reactor = MemoryReactorClock()
    config = configFor("127.0.0.1:0=echo,127.0.0.1:0=status", testCase.mktemp())
    pool = WorkerPool(
        config,
        len(channels),
        reactor,
        HANDLERS,
        lambda pool, own: PortsService(own, HANDLERS, {}, reactor, view=pool),
        adminToken="t",
    )
    first = config.ports[0]
    skt = bindSocket(first)
    testCase.addCleanup(skt.close)
    real = evolve(first, port=skt.getsockname()[1])
    pool.config = Config((real,), config.stateDir)
    pool.sockets = {real.name: skt}
    pool.given = {real.name: first}
    for slot, channel in zip(pool.slots, channels, strict=True):
        slot.ready = True
        slot.channel = channel
    return pool


class ControlTests(SynchronousTestCase):
    """
    The main process applies a change in every worker, all or nothing.
    """

    def pool(self, *channels: FakeChannel):
        return fakePool(self, *channels)

    def test_appliedEverywhere(self):
        """
        Every worker gets the new configuration and the new socket; the
        main process keeps it.
        """
        channels = FakeChannel(), FakeChannel()
        pool = self.pool(*channels)
        added = self.successResultOf(
            pool.addPort({"port": 0, "handler": "echo", "interface": "127.0.0.1"})
        )
        self.addCleanup(lambda: [s.close() for s in pool.sockets.values()])
        self.assertIn(added.name, pool.sockets)
        self.assertIn(added.name, pool.addedLive)
        self.assertEqual(len(pool.config.ports), 2)
        for channel in channels:
            kind, payload, descriptors = channel.calls[0]
            self.assertEqual(kind, "apply")
            self.assertEqual(payload["names"], [added.name])
            self.assertEqual(len(descriptors), 1)

    def test_selfSignedMadeBeforeWorkers(self):
        """
        For a TLS port added live with the self-signed certificate, the main
        process makes that certificate before asking any worker: two workers
        making it at once could leave one's key beside the other's
        certificate.
        """
        seen: list[list[str]] = []

        class Looking(FakeChannel):
            def call(self, kind, payload, descriptors=()):
                if kind == "apply":
                    seen.append(sorted(p.name for p in stateDir.iterdir()))
                return super().call(kind, payload, descriptors)

        pool = self.pool(Looking(), Looking())
        stateDir = pool.config.stateDir
        stateDir.mkdir(parents=True, exist_ok=True)
        self.successResultOf(
            pool.addPort(
                {"port": 0, "handler": "echo", "interface": "127.0.0.1", "tls": {}}
            )
        )
        self.addCleanup(lambda: [s.close() for s in pool.sockets.values()])
        self.assertEqual(len(seen), 2)
        for names in seen:
            self.assertIn("selfsigned-cert.pem", names)
            self.assertIn("selfsigned-key.pem", names)

    def test_mainProcessPortAddedHere(self):
        """
        A port added through the API whose handler is served by the main
        process (status) is started here; no worker is asked.
        """
        channels = FakeChannel(), FakeChannel()
        pool = self.pool(*channels)
        added = self.successResultOf(
            pool.addPort({"port": 0, "handler": "status", "interface": "127.0.0.1"})
        )
        self.addCleanup(pool.status.stopService)
        self.assertIn(added.name, [c.name for c in pool.status.runningConfigs()])
        self.assertNotIn(added.name, pool.sockets)
        for channel in channels:
            self.assertEqual(channel.calls, [])

    def test_oneRefusesAllRollBack(self):
        """
        When one worker refuses, those that applied the change go back to
        the previous configuration, the new socket is closed, and the change
        fails naming the reason.
        """
        from multiport.errors import ReconcileError

        good, bad = FakeChannel(), FakeChannel(refuse=True)
        pool = self.pool(good, bad)
        before = pool.config
        failure = self.failureResultOf(
            pool.addPort({"port": 0, "handler": "echo", "interface": "127.0.0.1"}),
            ReconcileError,
        )
        self.assertIn("exploded", failure.value.message)
        self.assertEqual(pool.config, before)
        self.assertEqual(list(pool.sockets), [before.ports[0].name])
        self.assertEqual([kind for kind, _, _ in good.calls], ["apply", "apply"])
        self.assertEqual(good.calls[1][1]["config"], before)
        self.assertEqual([kind for kind, _, _ in bad.calls], ["apply"])
        self.assertEqual(pool.addedLive, set())

    def test_exitedWorkerFigures(self):
        """
        When a worker exits, its last figures are folded into the port's
        totals (its open connections counted as closed), handler counters
        too, and added to what the live workers report.
        """
        from twisted.python.failure import Failure

        from multiport.ports.counters import PortCounters

        pool = self.pool(FakeChannel(), FakeChannel())
        [config] = pool.config.ports

        def status(accepted: int, closed: int, handled: int) -> PortStatus:
            counters = PortCounters(
                current=accepted - closed,
                accepted=accepted,
                closed=closed,
                bytesReceived=10 * accepted,
                listeningSince=100.0,
            )
            counters.reject("rate")
            return PortStatus(
                name=config.name,
                config=config,
                listening=True,
                counters=counters.snapshot(),
                handlerCounters={("requests", ()): handled},
            )

        dying, living = pool.slots
        dying.statuses = [status(accepted=5, closed=3, handled=7)]
        living.statuses = [status(accepted=4, closed=4, handled=1)]
        pool.workerEnded(dying, Failure(Exception("killed")))
        [merged, *_] = pool.portStatus()
        self.assertEqual(
            merged.counters["connections"],
            {"current": 0, "accepted": 9, "closed": 9, "rejected": 2},
        )
        self.assertEqual(merged.counters["bytes"]["received"], 90)
        self.assertEqual(merged.counters["listening_since"], 100.0)
        self.assertEqual(merged.handlerCounters, {("requests", ()): 8})
        self.assertTrue(merged.listening)
        living.statuses = []
        [alone, *_] = pool.portStatus()
        self.assertEqual(alone.counters["connections"]["accepted"], 5)

    def test_exitedWorkerOpenStreamsDropped(self):
        """
        A handler's counts of what is open now (HTTP/2 streams) die with the
        worker that exits; its counts of events are kept.
        """
        from twisted.python.failure import Failure

        from multiport.ports.counters import PortCounters

        pool = self.pool(FakeChannel(), FakeChannel())
        [config] = pool.config.ports

        def status(streams: int, open: int) -> PortStatus:
            return PortStatus(
                name=config.name,
                config=config,
                listening=True,
                counters=PortCounters().snapshot(),
                handlerCounters={
                    ("http2_streams", ()): streams,
                    ("http2_streams_open", ()): open,
                },
            )

        dying, living = pool.slots
        dying.statuses = [status(streams=10, open=3)]
        living.statuses = [status(streams=4, open=1)]
        pool.workerEnded(dying, Failure(Exception("killed")))
        [merged, *_] = pool.portStatus()
        self.assertEqual(
            merged.handlerCounters,
            {("http2_streams", ()): 14, ("http2_streams_open", ()): 1},
        )

    def test_removeEverywhere(self):
        """
        A removed port's socket is closed in the main process once every
        worker has let it go.
        """
        pool = self.pool(FakeChannel(), FakeChannel())
        [name] = list(pool.sockets)
        skt = pool.sockets[name]
        self.assertEqual(self.successResultOf(pool.removePort(name)), 0)
        self.assertEqual(pool.sockets, {})
        self.assertEqual(skt.fileno(), -1)
        self.failureResultOf(pool.removePort(name), KeyError)


class WorkerOutputTests(SynchronousTestCase):
    """
    The main process logs each event a worker writes with its namespace and
    fields, and any other line after the worker's number in the
    C{multiport.worker} namespace.
    """

    def test_lines(self):
        """
        Complete lines are logged as they come; a partial line waits for
        its end; blank lines are dropped.
        """
        process = WorkerProcess(None, Slot(index=1))  # type: ignore[arg-type]
        with capturedLogs() as events:
            process.childDataReceived(1, b"Traceback (most recent\n\npart")
            process.childDataReceived(2, b"on stderr\n")
            process.childDataReceived(1, b"ial\n")
        self.assertEqual(
            [(e["log_namespace"], formatEvent(e), e["worker"]) for e in events],
            [
                ("multiport.worker", "worker 1: Traceback (most recent", 1),
                ("multiport.worker", "worker 1: on stderr", 1),
                ("multiport.worker", "worker 1: partial", 1),
            ],
        )

    def test_events(self):
        """
        A worker's connection log event keeps its namespace, line and
        fields.
        """
        from multiport.daemon.logformat import emitLine, workerRecord
        from multiport.ports.connectionparts import connectionLog

        written = []
        with capturedLogs() as events:
            emitLine(connectionLog, "tcp:x echo 1.2.3.4:5 closed clean", sent=4)
        [original] = events
        written.append(workerRecord(original).encode())
        process = WorkerProcess(None, Slot(index=1))  # type: ignore[arg-type]
        with capturedLogs() as events:
            process.childDataReceived(1, b"".join(written))
        self.assertEqual(
            [
                (e["log_namespace"], formatEvent(e), e["sent"], e["worker"])
                for e in events
            ],
            [("multiport.connection", "tcp:x echo 1.2.3.4:5 closed clean", 4, 1)],
        )
