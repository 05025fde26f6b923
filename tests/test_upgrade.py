"""
C{multiport-ctl upgrade} (C{POST /api/upgrade}): a new daemon takes the
listening sockets over while clients keep connecting, and the old one
drains; a new daemon that fails leaves the old one serving.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import tools
from multiport.ctl.main import main as ctl
from tests.support import GREET_PLUGIN, Daemon, waitUntil, writePlugin
from tests.test_benchmarks import alive
from tests.test_live import freePort
from tests.test_livedaemon import connect, echoes
from tests.test_notify import Listener
from tests.test_twistd import stopDaemon

#: At most this many connections a load loop makes, and this many seconds.
LOOP_CONNECTIONS = 30_000
LOOP_SECONDS = 90.0
#: A plugin's new version that hangs at import in an upgrade's new daemon,
#: once the file "hang" exists in the working directory.
HANG_PLUGIN = """
import os, select
from twisted.internet.protocol import Factory, Protocol
from multiport.handlers import Handler

class Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello\\n")
        self.transport.loseConnection()

def build(context):
    if os.path.exists(os.environ["HANG_FILE"]):
        select.select([], [], [])
    return Factory.forProtocol(Hello)

hang = Handler("hang", "Hangs at start once HANG_FILE exists.", build)
"""
#: How long the load generator connects (it stops by itself).
LOADGEN_SECONDS = 8.0
#: Long-lived connections open across the upgrade.
STREAMS = 20


def _tlsContext() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Load:
    """
    Clients connecting in a bounded loop (echo and https), and long-lived
    echo streams, counting what goes wrong.
    """

    def __init__(self, echo: int, https: int | None) -> None:
        self.echo, self.https = echo, https
        self.stop = threading.Event()
        self.connections = 0
        self.refused = 0
        self.reset = 0
        self.other: list[str] = []
        self.lost = 0
        self.streamBytes = 0
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()
        self.elapsed = 0.0

    def _one(self, port: int, tls: bool) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                if tls:
                    with _tlsContext().wrap_socket(raw) as wrapped:
                        wrapped.sendall(
                            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        )
                        if not wrapped.recv(12).startswith(b"HTTP/1.1"):
                            self.lost += 1
                elif not echoes(raw, b"ping"):
                    self.lost += 1
        except ConnectionRefusedError:
            self.refused += 1
        except ConnectionResetError as e:
            self.reset += 1
            self.other.append(f"{'https' if tls else 'echo'}: {e!r}")
        except (OSError, ssl.SSLError) as e:
            self.other.append(f"{'https' if tls else 'echo'}: {e!r}")
        self.connections += 1

    def _loop(self) -> None:
        deadline = time.monotonic() + LOOP_SECONDS
        while (
            not self.stop.is_set()
            and self.connections < LOOP_CONNECTIONS
            and time.monotonic() < deadline
        ):
            self._one(self.echo, False)
            if self.https is not None:
                self._one(self.https, True)
        self.elapsed = time.monotonic() - self.started

    def _stream(self, connection: socket.socket, finish: threading.Event) -> None:
        chunk = b"s" * 1000
        with connection:
            while not finish.is_set():
                try:
                    if echoes(connection, chunk):
                        self.streamBytes += len(chunk)
                    else:
                        self.lost += 1
                        return
                except OSError as e:
                    self.other.append(f"stream: {e!r}")
                    return
                finish.wait(0.05)

    def start(self, finish: threading.Event) -> None:
        self.finish = finish
        for _ in range(STREAMS):
            thread = threading.Thread(
                target=self._stream, args=(connect(self.echo), finish), daemon=True
            )
            thread.start()
            self.threads.append(thread)
        loop = threading.Thread(target=self._loop, daemon=True)
        loop.start()
        self.threads.append(loop)

    def join(self) -> None:
        self.stop.set()
        self.finish.set()
        for thread in self.threads:
            thread.join(60)


class MetricsWatch:
    """
    Reads C{/metrics} in a loop (at most L{LOOP_SECONDS}) and records every
    time a counter (a C{_total} series) went down.
    """

    def __init__(self, status: int) -> None:
        self.url = f"http://127.0.0.1:{status}/metrics"
        self.stop = threading.Event()
        self.last: dict[str, float] = {}
        self.decreases: list[str] = []
        self.reads = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        deadline = time.monotonic() + LOOP_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    text = response.read().decode()
            except OSError:
                continue
            self.reads += 1
            for line in text.splitlines():
                series, _, value = line.rpartition(" ")
                # process_* series are the process's own (CPU time): they start
                # again in a new process, as after any restart.
                if "_total" not in series or not series.startswith("multiport_"):
                    continue
                number = float(value)
                if number < self.last.get(series, 0.0):
                    self.decreases.append(f"{series}: {self.last[series]} -> {number}")
                self.last[series] = number
            self.stop.wait(0.1)

    def join(self) -> None:
        self.stop.set()
        self.thread.join(30)


def _ctl(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = ctl(list(argv))
    return status, out.getvalue() + err.getvalue()


class UpgradeCase(SynchronousTestCase):
    """
    A real C{twistd multiport} to upgrade, and the new daemons it started
    stopped at the end.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir()
        self.status = freePort()
        self.newPids: list[int] = []

    def _killNew(self, daemon: Daemon) -> None:
        # Also those a failed assertion left unnamed: the old daemon logs
        # every pid it starts.
        daemon.readQueued()
        for line in daemon.lines:
            match = re.search(r"started the new daemon \(pid (\d+)\)", line)
            if match and int(match.group(1)) not in self.newPids:
                self.newPids.append(int(match.group(1)))
        for pid in self.newPids:
            stopDaemon(pid)

    def start(
        self,
        toml: str,
        env: dict[str, str] | None = None,
        extra: Sequence[str] = (),
        twistd: Sequence[str] = (),
    ) -> Daemon:
        (self.folder / "multiport.toml").write_text(toml)
        daemon = Daemon(
            [
                "--config",
                str(self.folder / "multiport.toml"),
                "--status",
                f"127.0.0.1:{self.status}",
                "--state-dir",
                str(self.folder / "state"),
                *extra,
            ],
            str(self.folder),
            env=env,
            twistdArgs=twistd,
        )
        self.addCleanup(daemon.stop)
        # First (cleanups run last-in first-out): the new daemon holds the
        # old one's output pipe open.
        self.addCleanup(self._killNew, daemon)
        return daemon

    def upgrade(self) -> tuple[int, str]:
        return _ctl(
            "--status",
            f"127.0.0.1:{self.status}",
            "--state-dir",
            str(self.folder / "state"),
            "upgrade",
        )

    def statusOf(self) -> dict[str, object]:
        """
        The daemon's C{/status} document (whichever process serves it).
        """
        url = f"http://127.0.0.1:{self.status}/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            document: dict[str, object] = json.load(response)
        return document

    def accepted(self, port: int) -> int:
        """
        How many connections the daemon's C{/status} says C{port} accepted.
        """
        ports = self.statusOf()["ports"]
        assert isinstance(ports, list)
        [entry] = [p for p in ports if p["port"] == port]
        return int(entry["connections"]["accepted"])

    def underLoad(self, *extra: str) -> None:
        """
        Under connect loops on an echo port (the C load generator: connect,
        echo a byte, close, again; any refused, reset or unanswered
        connection is an error) and an https port, and 20 echo streams
        opened before, the upgrade refuses and resets nothing and loses no
        byte; the streams finish on the old process, which then exits; the
        new one serves (its pid answers), and the counters go on.
        """
        echo, https = freePort(), freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {echo}
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = {https}
            interface = "127.0.0.1"
            handler = "https"
            tls = true
            """.replace("            ", ""),
            extra=extra,
        )
        daemon.waitFor("ready: ")
        oldPid = self.statusOf()["pid"]
        load = Load(echo, https)
        finish = threading.Event()
        load.start(finish)
        self.addCleanup(load.join)
        # Bounded: it stops by itself after LOADGEN_SECONDS.
        loadgen = subprocess.Popen(
            [str(tools.loadgen()), "accept", "127.0.0.1", str(echo), "2"]
            + [str(LOADGEN_SECONDS), "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(loadgen.kill)
        metrics = MetricsWatch(self.status)
        self.addCleanup(metrics.join)
        waitUntil(lambda: load.connections > 20, timeout=30)
        before = self.accepted(echo)
        status, output = self.upgrade()
        self.assertEqual(status, 0, output)
        newPid = int(output.split("pid ")[1].split(")")[0])
        self.newPids.append(newPid)
        self.assertNotEqual(newPid, oldPid)
        self.assertEqual(self.statusOf()["pid"], newPid)
        after = load.connections
        waitUntil(lambda: load.connections > after + 20, timeout=30)
        # The old process still serves the streams, the new one the rest.
        self.assertIsNone(daemon.process.poll())
        self.assertGreaterEqual(self.accepted(echo), before)
        out, _ = loadgen.communicate(timeout=LOADGEN_SECONDS + 30)
        generated = json.loads(out)
        finish.set()
        load.join()
        daemon.process.wait(60)
        # Only the new daemon is left: it answers, its counters went on.
        with connect(echo) as client:
            self.assertTrue(echoes(client, b"new"))
        # Every connection either process accepted: the new one's totals
        # started from the old one's (workers report once a second).
        expected = generated["ops"] + STREAMS + 1
        waitUntil(lambda: self.accepted(echo) >= expected, timeout=10)
        metrics.join()
        self.assertGreater(metrics.reads, 10)
        self.assertEqual(metrics.decreases, [])
        rate = (load.connections + generated["ops"]) / generated["seconds"]
        print(
            f"\nupgrade under load{' ' + ' '.join(extra) if extra else ''}: "
            f"{generated['ops']} echo connections from the load generator "
            f"({generated['errors']} refused, reset or unanswered), "
            f"{load.connections} https connections ({rate:.0f} a second in "
            f"all), {load.refused} refused, {load.reset} reset, {load.lost} "
            f"lost, other {load.other[:3]}; {STREAMS} streams echoed "
            f"{load.streamBytes} bytes; new pid {newPid}; /metrics read "
            f"{metrics.reads} times, {len(metrics.decreases)} counters went down"
        )
        self.assertGreaterEqual(rate, 200)
        self.assertEqual(
            (generated["errors"], load.refused, load.reset, load.lost, load.other),
            (0, 0, 0, 0, []),
        )


class UpgradeTests(UpgradeCase):
    """
    A real C{twistd multiport} upgraded under load.
    """

    def test_underLoad(self) -> None:
        """
        One process: see L{underLoad}.
        """
        self.underLoad()

    def test_underLoadWorkers(self) -> None:
        """
        With C{--workers 2}: the new daemon brings its own workers, the old
        ones drain; see L{underLoad}.
        """
        self.underLoad("--workers", "2")

    def test_failedUpgrade(self) -> None:
        """
        A new daemon that can't start (a syntax error planted in a handler
        plugin) is killed; the old one serves on, refusing nothing.
        """
        plugins = writePlugin(self.folder / "plugins", "greetplugin", GREET_PLUGIN)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(plugins), env.get("PYTHONPATH", "")])
        echo = freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {echo}
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "greet"
            """.replace("            ", ""),
            env=env,
        )
        daemon.listening(3)
        (plugins / "twisted" / "plugins" / "greetplugin.py").write_text("def (:\n")
        load = Load(echo, None)
        load.start(threading.Event())
        status, output = self.upgrade()
        self.assertEqual(status, 1, output)
        self.assertIn("upgrade failed, still serving", output)
        daemon.waitFor("upgrade failed, still serving: the new daemon (exited|closed)")
        before = load.connections
        waitUntil(lambda: load.connections > before + 50, timeout=30)
        load.join()
        self.assertEqual((load.refused, load.reset, load.lost), (0, 0, 0))
        with connect(echo) as client:
            self.assertTrue(echoes(client, b"old"))


class UpgradeDetailsTests(UpgradeCase):
    """
    The rest of an upgrade: C{--worker-sockets reuseport}, the timeout, the
    pid file, systemd's C{MAINPID}, ports added live.
    """

    def test_underLoadReusePort(self) -> None:
        """
        With a socket per worker, every socket of the group is handed over:
        see L{UpgradeTests.underLoad}.
        """
        self.underLoad("--workers", "2", "--worker-sockets", "reuseport")

    def test_timeout(self) -> None:
        """
        A new daemon that does not serve within C{--upgrade-timeout} (here
        a new version of a plugin that hangs at import) is killed; the old
        one serves on.
        """
        plugins = writePlugin(self.folder / "plugins", "hangplugin", HANG_PLUGIN)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(plugins), env.get("PYTHONPATH", "")])
        env["HANG_FILE"] = str(self.folder / "hang")
        echo = freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {echo}
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "hang"
            """.replace("            ", ""),
            env=env,
            extra=("--upgrade-timeout", "2"),
        )
        daemon.waitFor("ready: ")
        (self.folder / "hang").write_text("")
        started = time.monotonic()
        status, output = self.upgrade()
        self.assertEqual(status, 1, output)
        self.assertIn("the new daemon was not ready within 2 s", output)
        self.assertLess(time.monotonic() - started, 20)
        [match] = daemon.waitFor(r"started the new daemon \(pid (\d+)\)")
        waitUntil(lambda: not alive(int(match.group(1))), timeout=30)
        with connect(echo) as client:
            self.assertTrue(echoes(client, b"old"))
        self.assertEqual(self.statusOf()["pid"], daemon.process.pid)

    def test_pidfileAndMainPid(self) -> None:
        """
        The pid file names the new daemon once it serves, and still does
        after the old one exits; systemd is told the new main pid
        (C{MAINPID=}) after both were ready, and the old one sends no
        C{STOPPING=1}: only the new one does, when it stops.
        """
        listener = Listener(self)
        pidfile = self.folder / "multiport.pid"
        env = dict(os.environ, NOTIFY_SOCKET=listener.address)
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "echo"
            """.replace("            ", ""),
            env=env,
            twistd=(f"--pidfile={pidfile}",),
        )
        daemon.waitFor("ready: ")
        self.assertEqual(pidfile.read_text().strip(), str(daemon.process.pid))
        listener.until("READY")
        status, output = self.upgrade()
        self.assertEqual(status, 0, output)
        newPid = int(output.split("pid ")[1].split(")")[0])
        self.newPids.append(newPid)
        listener.until("MAINPID")
        daemon.process.wait(60)
        self.assertEqual(pidfile.read_text().strip(), str(newPid))
        os.kill(newPid, signal.SIGTERM)
        listener.until("STOPPING")
        waitUntil(lambda: not alive(newPid), timeout=30)
        self.assertFalse(pidfile.exists())
        kinds = [
            key
            for m in listener.messages
            for key in ("READY", "MAINPID", "STOPPING")
            if key in m
        ]
        self.assertEqual(kinds, ["READY", "READY", "MAINPID", "STOPPING"])
        [mainPid] = [m["MAINPID"] for m in listener.messages if "MAINPID" in m]
        self.assertEqual(mainPid, str(newPid))

    def test_addedLive(self) -> None:
        """
        A port added through the admin API is served by the new daemon,
        and a reload there keeps it as added live.
        """
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "echo"
            """.replace("            ", "")
        )
        daemon.waitFor("ready: ")
        added = freePort()
        status, output = _ctl(
            "--status",
            f"127.0.0.1:{self.status}",
            "--state-dir",
            str(self.folder / "state"),
            "add",
            f"127.0.0.1:{added}=echo",
        )
        self.assertEqual(status, 0, output)
        status, output = self.upgrade()
        self.assertEqual(status, 0, output)
        newPid = int(output.split("pid ")[1].split(")")[0])
        self.newPids.append(newPid)
        daemon.process.wait(60)
        with connect(added) as client:
            self.assertTrue(echoes(client, b"still here"))
        os.kill(newPid, signal.SIGHUP)
        with connect(added) as client:
            self.assertTrue(echoes(client, b"kept by the reload"))

    def udp(self, *extra: str) -> None:
        """
        A UDP port's socket is handed over too: its datagrams are answered
        before and after, by the new daemon once the old one is gone.
        """
        number = freePort(socket.SOCK_DGRAM)
        daemon = self.start(
            f"""
            [[port]]
            port = {number}
            interface = "127.0.0.1"
            protocol = "udp"
            handler = "echo"
            """.replace("            ", ""),
            extra=extra,
        )
        daemon.waitFor("ready: ")

        def answered(data: bytes) -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(data, ("127.0.0.1", number))
                return client.recv(100) == data

        self.assertTrue(answered(b"old"))
        status, output = self.upgrade()
        self.assertEqual(status, 0, output)
        self.newPids.append(int(output.split("pid ")[1].split(")")[0]))
        daemon.process.wait(60)
        self.assertTrue(answered(b"new"))

    def test_udp(self) -> None:
        """
        One process: see L{udp}.
        """
        self.udp()

    def test_udpWorkers(self) -> None:
        """
        With C{--workers 2}: see L{udp}.
        """
        self.udp("--workers", "2")
