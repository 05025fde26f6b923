"""
Three real daemons behind one real HAProxy (Debian's C{haproxy}), in TCP
mode with C{send-proxy-v2} and health checks on each daemon's
C{/healthz}: a client loop of HTTP requests and echo sessions runs while
each daemon in turn is drained, upgraded and undrained (C{multiport-ctl
roll --upgrade}'s steps), and sees no failure; every daemon logs the client's own
address, carried by the PROXY protocol; a daemon killed with SIGKILL costs
only the connections it held.

The clients connect from 127.0.0.2 (still the loopback), HAProxy from
127.0.0.1: a daemon that logged 127.0.0.2 got it from the PROXY header.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase

from multiport.ctl.client import Token
from multiport.ctl.rolling import HTTPInstances, RollSettings, rollOne
from tests.support import Daemon, waitUntil
from tests.test_live import freePort
from tests.test_twistd import stopDaemon
from tests.test_workers import getJSON

#: Where the clients connect from: not HAProxy's address.
CLIENT = "127.0.0.2"

#: HAProxy's checks: every 100 ms, down after 2 failures, up after 2
#: successes; so it sees a drain within about 0.3 s.
CHECKS = "check inter 100ms fastinter 100ms downinter 100ms fall 2 rise 2"

#: The roll's wait for the balancer: above inter x fall and inter x rise.
SETTLE = 0.6

#: Bounds of one run of the client loop.
LOOP_SECONDS = 45.0
LOOP_ROUNDS = 20000

TOKEN = "haproxy-test-token"

PORTS = """\
[defaults]
proxy_protocol = "v2"
proxy_protocol_from = ["127.0.0.1/32"]
drain_timeout = 10

[[port]]
port = {http}
interface = "127.0.0.1"
handler = "http"

[[port]]
port = {echo}
interface = "127.0.0.1"
handler = "echo"
"""


def haproxyConfig(
    http: int, echo: int, instances: list[tuple[int, int, int]], stats: Path
) -> str:
    """
    HAProxy in TCP mode in front of C{instances} (each C{(http, echo,
    status)}): round robin for HTTP, least connections for echo sessions,
    the PROXY protocol v2 to every daemon, health checks on each daemon's
    status port, and a redispatch of a connection a dead daemon refuses.
    """
    servers = {"http": [], "echo": []}
    for index, (httpPort, echoPort, status) in enumerate(instances, start=1):
        check = f"send-proxy-v2 {CHECKS} port {status}"
        servers["http"].append(f"    server d{index} 127.0.0.1:{httpPort} {check}")
        servers["echo"].append(f"    server d{index} 127.0.0.1:{echoPort} {check}")
    return (
        textwrap.dedent(
            f"""\
        global
            nbthread 1
            stats socket {stats} level admin

        defaults
            mode tcp
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            timeout check 1s
            retries 3
            option redispatch

        frontend http
            bind 127.0.0.1:{http}
            default_backend http

        frontend echo
            bind 127.0.0.1:{echo}
            default_backend echo

        backend http
            balance roundrobin
            option httpchk GET /healthz
        """
        )
        + "\n".join(servers["http"])
        + textwrap.dedent(
            """

        backend echo
            balance leastconn
            option httpchk GET /healthz
        """
        )
        + "\n".join(servers["echo"])
        + "\n"
    )


def clientSocket(port: int) -> socket.socket:
    """
    A connection from L{CLIENT} to 127.0.0.1:C{port}.
    """
    skt = socket.socket()
    skt.settimeout(10)
    skt.bind((CLIENT, 0))
    skt.connect(("127.0.0.1", port))
    return skt


def receiveExactly(skt: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = skt.recv(size - len(data))
        if not chunk:
            raise EOFError(f"end of file after {len(data)} of {size} bytes")
        data += chunk
    return data


@define
class Loop:
    """
    Clients in threads: HTTP requests (one per connection) and echo
    sessions (three round trips each) through HAProxy, until told to stop
    or a bound is reached; what went wrong is kept.
    """

    http: int
    echo: int
    stop: threading.Event = field(factory=threading.Event)
    ok: dict[str, int] = field(factory=lambda: {"http": 0, "echo": 0})
    failures: list[tuple[float, str, str]] = field(factory=list)
    clientPorts: set[int] = field(factory=set)
    threads: list[threading.Thread] = field(factory=list)

    def start(self) -> None:
        self.stop.clear()
        self.threads = [
            threading.Thread(target=self.run, args=(kind,), daemon=True)
            for kind in ("http", "echo")
        ]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def run(self, kind: str) -> None:
        once = self.request if kind == "http" else self.session
        deadline = time.monotonic() + LOOP_SECONDS
        for _ in range(LOOP_ROUNDS):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                once()
            except Exception as e:
                self.failures.append((time.monotonic(), kind, repr(e)))
            else:
                self.ok[kind] += 1

    def request(self) -> None:
        with clientSocket(self.http) as skt:
            self.clientPorts.add(skt.getsockname()[1])
            skt.sendall(
                b"GET / HTTP/1.1\r\nHost: multiport\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := skt.recv(65536):
                answer += chunk
        if not answer.startswith(b"HTTP/1.1 200 "):
            raise AssertionError(f"answered {answer[:60]!r}")

    def session(self) -> None:
        with clientSocket(self.echo) as skt:
            self.clientPorts.add(skt.getsockname()[1])
            for round in range(3):
                message = b"round %d of a session\n" % (round,)
                skt.sendall(message)
                if receiveExactly(skt, len(message)) != message:
                    raise AssertionError("echoed something else")


class HAProxyTests(SynchronousTestCase):
    """
    Three daemons behind one HAProxy, rolled, then one killed.
    """

    def setUp(self) -> None:
        if shutil.which("haproxy") is None:
            raise self.skipTest("Debian's haproxy is not installed")
        if not self.clientAddressWorks():
            raise self.skipTest(f"can't bind a client socket to {CLIENT}")
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.token = self.folder / "token"
        self.token.write_text(TOKEN + "\n")
        self.instances = [(freePort(), freePort(), freePort()) for _ in range(3)]
        #: Every daemon process started, in order, by instance.
        self.daemons: list[list[Daemon]] = [[] for _ in self.instances]
        for index in range(3):
            self.startDaemon(index)
        for index in range(3):
            self.daemons[index][-1].listening(3)
        #: Each instance's daemon now (an upgrade replaces it).
        self.pids = [generations[-1].process.pid for generations in self.daemons]
        self.http, self.echo = freePort(), freePort()
        self.probePorts: set[int] = set()
        # A UNIX socket's path is short (HAProxy: 97 bytes): not in _trial_temp.
        short = Path(tempfile.mkdtemp(prefix="multiport-haproxy-"))
        self.addCleanup(shutil.rmtree, short, True)
        self.stats = stats = short / "stats.sock"
        config = self.folder / "haproxy.cfg"
        config.write_text(haproxyConfig(self.http, self.echo, self.instances, stats))
        self.haproxy = subprocess.Popen(
            ["haproxy", "-f", str(config), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(self.stopHAProxy)
        waitUntil(lambda: self.haproxyServes())
        waitUntil(lambda: self.serversUp() == 6, what="HAProxy seeing 6 servers up")

    def haproxyServes(self) -> bool:
        """
        Whether HAProxy accepts on both frontends; fails at once if it
        exited (a bad configuration), with what it said.
        """
        if self.haproxy.poll() is not None:
            assert self.haproxy.stderr is not None
            raise AssertionError(
                f"haproxy exited {self.haproxy.returncode}: "
                + self.haproxy.stderr.read().decode(errors="replace")
            )
        # From CLIENT too: HAProxy passes the probe on to a daemon.
        try:
            for port in (self.http, self.echo):
                with clientSocket(port) as probe:
                    self.probePorts.add(probe.getsockname()[1])
        except OSError:
            return False
        return True

    def clientAddressWorks(self) -> bool:
        try:
            with socket.socket() as skt:
                skt.bind((CLIENT, 0))
        except OSError:
            return False
        return True

    def stopHAProxy(self) -> None:
        self.haproxy.terminate()
        try:
            self.haproxy.wait(10)
        except subprocess.TimeoutExpired:
            self.haproxy.kill()
            self.haproxy.wait()
        assert self.haproxy.stderr is not None
        self.haproxy.stderr.close()

    def serversUp(self) -> int:
        """
        How many servers HAProxy has up, from its stats socket.
        """
        with socket.socket(socket.AF_UNIX) as skt:
            skt.settimeout(5)
            skt.connect(str(self.stats))
            skt.sendall(b"show stat\n")
            text = b""
            while chunk := skt.recv(65536):
                text += chunk
        rows = [line.split(",") for line in text.decode().splitlines()[1:]]
        servers = [row for row in rows if len(row) > 17 and row[1].startswith("d")]
        return sum(1 for row in servers if row[17] == "UP")

    def startDaemon(self, index: int) -> Daemon:
        http, echo, status = self.instances[index]
        folder = self.folder / f"d{index + 1}"
        folder.mkdir(exist_ok=True)
        (folder / "multiport.toml").write_text(PORTS.format(http=http, echo=echo))
        daemon = Daemon(
            [
                "--config",
                str(folder / "multiport.toml"),
                "--status",
                f"127.0.0.1:{status}",
                "--state-dir",
                str(folder / "state"),
                "--admin-token-file",
                str(self.token),
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        self.daemons[index].append(daemon)
        return daemon

    def upgrade(self, instances: HTTPInstances, index: int) -> None:
        """
        Upgrade instance C{index} (C{POST /api/upgrade}): a new daemon takes
        its sockets over; its log lines arrive through the first one's
        output, which it inherited.
        """
        status = self.instances[index][2]
        self.pids[index] = instances.upgrade(f"http://127.0.0.1:{status}")
        self.addCleanup(stopDaemon, self.pids[index])

    def connectionLines(self, daemon: Daemon) -> list[str]:
        """
        The daemon's connection log lines for the proxied ports.
        """
        return [
            line
            for line in daemon.lines
            if "[multiport.connection" in line
            and (" http " in line or " echo " in line)
        ]

    def test_rollThenKill(self) -> None:
        """
        Rolling every daemon under load fails no request and resets no
        session; the daemons log the clients' own address; a SIGKILL costs
        the connections the killed daemon held, no more.
        """
        loop = Loop(self.http, self.echo)
        loop.start()
        self.addCleanup(loop.finish)
        instances = HTTPInstances(Token(TOKEN, str(self.token)))
        settings = RollSettings(
            below=1, drainTimeout=15, settle=SETTLE, readyTimeout=30, poll=0.05
        )
        rolled = time.monotonic()
        waitUntil(lambda: loop.ok["http"] >= 20 and loop.ok["echo"] >= 20)
        for index, (_, _, status) in enumerate(self.instances):
            rollOne(
                f"http://127.0.0.1:{status}",
                instances,
                lambda index=index: self.upgrade(instances, index),
                settings,
                say=lambda line: None,
            )
        loop.finish()
        rolled = time.monotonic() - rolled
        self.assertEqual(loop.failures, [], loop.ok)
        self.assertGreater(loop.ok["http"], 100)
        self.assertGreater(loop.ok["echo"], 100)
        rollFigures = dict(loop.ok, seconds=round(rolled, 1))
        clientPorts = set(loop.clientPorts)

        # A SIGKILL: hold two echo sessions on each daemon (least
        # connections spreads them), run the loop, kill daemon 2.
        held = [clientSocket(self.echo) for _ in range(6)]
        clientPorts |= {skt.getsockname()[1] for skt in held}
        for skt in held:
            self.addCleanup(skt.close)
            skt.sendall(b"hello\n")
            self.assertEqual(receiveExactly(skt, 6), b"hello\n")
        for _, echo, status in self.instances:
            waitUntil(lambda status=status, echo=echo: self.current(status, echo) == 2)
        loop = Loop(self.http, self.echo)
        loop.start()
        waitUntil(lambda: loop.ok["http"] >= 20 and loop.ok["echo"] >= 20)
        victim = self.pids[1]
        killedAt = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        waitUntil(lambda: self.serversUp() == 4, what="HAProxy seeing d2 down")
        after = dict(loop.ok)
        waitUntil(
            lambda: (
                loop.ok["http"] >= after["http"] + 50
                and loop.ok["echo"] >= after["echo"] + 50
            )
        )
        loop.finish()
        lostHeld = 0
        for skt in held:
            try:
                skt.sendall(b"still there\n")
                receiveExactly(skt, 12)
            except (OSError, EOFError):
                lostHeld += 1
            skt.close()
        # The sessions it held: the two held ones, and at most one of each
        # client thread in flight at the moment of the kill.
        self.assertEqual(lostHeld, 2)
        lateFailures = [f for f in loop.failures if f[0] > killedAt + 1.0]
        self.assertEqual(lateFailures, [])
        self.assertLessEqual(len(loop.failures), 2, loop.failures)
        # The upgraded daemons hold the first ones' output: stop them first.
        for pid in self.pids:
            stopDaemon(pid)

        # Every daemon, each upgraded one included (its lines come through
        # the first one's output), saw the clients' own address (127.0.0.2)
        # and ports, never HAProxy's.
        for index, generations in enumerate(self.daemons):
            for generation, daemon in enumerate(generations):
                daemon.stop()
                lines = self.connectionLines(daemon)
                if generation == 0:
                    self.assertNotEqual(lines, [], f"d{index + 1} logged nothing")
                bad = [line for line in lines if f" {CLIENT}:" not in line]
                self.assertEqual(bad, [], "".join(lines[:3]) + str(len(lines)))
                ports = {int(line.split(f" {CLIENT}:")[1].split()[0]) for line in lines}
                unknown = ports - clientPorts - loop.clientPorts - self.probePorts
                self.assertEqual(unknown, set())
        print(
            f"\nroll of 3 daemons under load: {rollFigures}, 0 failures; "
            f"SIGKILL of one: {lostHeld} held sessions lost of 6, "
            f"{len(loop.failures)} loop failures in flight "
            f"({[f[1] + ': ' + f[2] for f in loop.failures]}), then "
            f"{loop.ok} succeeded"
        )

    def current(self, status: int, port: int) -> int:
        document = getJSON(status, "/status")
        for entry in document["ports"]:
            if entry["name"] == f"tcp:127.0.0.1:{port}":
                return int(entry["connections"]["current"])
        raise AssertionError(f"no port {port} in {document}")


class AgentCheckTests(SynchronousTestCase):
    """
    HAProxy's C{agent-check} against a daemon's C{agent-check} port: a
    drain sets the server to DRAIN (weight 0), an undrain back.
    """

    def setUp(self) -> None:
        if shutil.which("haproxy") is None:
            raise self.skipTest("Debian's haproxy is not installed")
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.token = self.folder / "token"
        self.token.write_text(TOKEN + "\n")
        self.daemon = Daemon(
            [
                "--ports",
                "127.0.0.1:0=echo,127.0.0.1:0=agent-check",
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(self.folder / "state"),
                "--admin-token-file",
                str(self.token),
            ],
            str(self.folder),
        )
        self.addCleanup(self.daemon.stop)
        found = self.daemon.listening(3)
        self.status = found["status"][1]
        short = Path(tempfile.mkdtemp(prefix="multiport-haproxy-"))
        self.addCleanup(shutil.rmtree, short, True)
        self.stats = short / "stats.sock"
        config = self.folder / "haproxy.cfg"
        config.write_text(
            textwrap.dedent(
                f"""\
                global
                    stats socket {self.stats} level admin

                defaults
                    mode tcp
                    timeout connect 2s
                    timeout client 30s
                    timeout server 30s

                frontend echo
                    bind 127.0.0.1:{freePort()}
                    default_backend echo

                backend echo
                    server d1 127.0.0.1:{found["echo"][1]} agent-check \
                agent-port {found["agent-check"][1]} agent-inter 100ms
                """
            )
        )
        self.haproxy = subprocess.Popen(
            ["haproxy", "-f", str(config), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self.haproxy.wait, 10)
        self.addCleanup(self.haproxy.terminate)

    def state(self) -> str:
        """
        Server d1's status in HAProxy's statistics (empty until its stats
        socket answers).
        """
        try:
            with socket.socket(socket.AF_UNIX) as skt:
                skt.settimeout(5)
                skt.connect(str(self.stats))
                skt.sendall(b"show stat\n")
                text = b""
                while chunk := skt.recv(65536):
                    text += chunk
        except OSError:
            return ""
        for row in (line.split(",") for line in text.decode().splitlines()):
            if len(row) > 17 and row[1] == "d1":
                return row[17]
        return ""

    def test_drainSeenByAgent(self) -> None:
        """
        The agent's answer moves the server between UP and DRAIN.
        """
        from tests.test_drain import ctlRun

        # Without a health check, HAProxy says "no check" when not drained.
        waitUntil(self.state, accept=lambda state: state == "no check")
        token = ("--admin-token-file", str(self.token))
        code, out = ctlRun(self.status, self.folder, *token, "drain")
        self.assertEqual(code, 0, out)
        waitUntil(self.state, accept=lambda state: state == "DRAIN (agent)")
        ctlRun(self.status, self.folder, *token, "undrain")
        waitUntil(self.state, accept=lambda state: state == "no check")
