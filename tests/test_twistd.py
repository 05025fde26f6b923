"""
Smoke tests: the real C{twistd multiport} command in a subprocess.
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    GREET_PLUGIN,
    TWISTD,
    Daemon,
    WaitTimeout,
    busyPort,
    waitUntil,
    writePlugin,
)

LISTENING = r"listening on tcp:\[?([0-9a-f.:]+?)\]?:(\d+): handler (\S+), TLS (\S+)"


def receiveAll(
    host: str, port: int, payload: bytes = b"", limit: int = 1 << 20
) -> bytes:
    """
    Connect, send C{payload}, half-close, and read until the server closes.
    """
    with socket.create_connection((host, port), timeout=10) as connection:
        if payload:
            connection.sendall(payload)
        received = b""
        while len(received) < limit:
            data = connection.recv(65536)
            if not data:
                break
            received += data
        return received


def tlsContext(certificate: Path) -> ssl.SSLContext:
    """
    A client context trusting only C{certificate}.
    """
    return ssl.create_default_context(cafile=str(certificate))


def httpGet(
    host: str, port: int, context: ssl.SSLContext | None = None, path: str = "/"
) -> tuple[int, bytes]:
    """
    GET C{path} over HTTP or, with a context, HTTPS to the name localhost.
    """
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=10)
    else:
        connection = http.client.HTTPSConnection(
            host, port, timeout=10, context=context
        )
    try:
        connection.request("GET", path, headers={"Host": "localhost"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class TwistdTests(SynchronousTestCase):
    """
    twistd -n multiport serves every port it opens and fails cleanly.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.stateDir = self.folder / "state"

    def daemon(self, *args: str, **kwargs) -> Daemon:
        daemon = Daemon(
            ["--state-dir", str(self.stateDir), *args], str(self.folder), **kwargs
        )
        self.addCleanup(daemon.stop)
        return daemon

    def test_servesEveryPort(self):
        """
        One process serves every built-in handler and a third-party plugin on
        its own port, and stops them all on SIGTERM.
        """
        writePlugin(self.folder / "thirdparty", "greet_handler", GREET_PLUGIN)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(self.folder / "thirdparty"), environment.get("PYTHONPATH", "")]
        )
        items = [
            "127.0.0.1:0=echo",
            "127.0.0.1:0=echo+tls",
            "127.0.0.1:0=http",
            "127.0.0.1:0=https",
            "[::1]:0=daytime",
            "127.0.0.1:0=qotd",
            "127.0.0.1:0=discard",
            "127.0.0.1:0=chargen",
            "127.0.0.1:0=greet",
        ]
        daemon = self.daemon(
            "--ports", ",".join(items), "--status", "127.0.0.1:0", env=environment
        )
        ports = [
            (m.group(1), int(m.group(2)))
            for m in daemon.waitFor(LISTENING, len(items) + 1)
        ]
        *ports, statusPort = ports
        echo, echoTLS, web, webTLS, daytime, qotd, discard, chargen, greet = ports
        trust = tlsContext(self.stateDir / "selfsigned-cert.pem")

        self.assertEqual(receiveAll(*echo, b"ping", limit=4), b"ping")
        with trust.wrap_socket(
            socket.create_connection(echoTLS, timeout=10), server_hostname="localhost"
        ) as tls:
            tls.sendall(b"over tls")
            self.assertEqual(tls.recv(100), b"over tls")
        self.assertEqual(httpGet(*web)[0], 200)
        status, body = httpGet("localhost", webTLS[1], trust)
        self.assertEqual(status, 200)
        self.assertIn(b"multiport is running", body)
        self.assertTrue(receiveAll(*daytime).endswith(b"-UTC\r\n"))
        self.assertIn(b"Alan Kay", receiveAll(*qotd))
        with socket.create_connection(discard, timeout=10) as connection:
            connection.sendall(b"into the void")
            connection.shutdown(socket.SHUT_WR)
            self.assertEqual(connection.recv(10), b"")
        self.assertEqual(len(receiveAll(*chargen, limit=10000)) >= 10000, True)
        self.assertEqual(receiveAll(*greet), b"hello from a plugin\r\n")
        report = json.loads(httpGet(*statusPort, path="/status")[1])
        self.assertEqual(len(report["ports"]), len(items) + 1)
        byName = {p["name"]: p for p in report["ports"]}
        self.assertEqual(
            byName[f"tcp:127.0.0.1:{echo[1]}"]["bytes"], {"received": 4, "sent": 4}
        )
        self.assertEqual(httpGet(*statusPort, path="/healthz"), (200, b"ok\n"))
        daemon.process.send_signal(signal.SIGUSR2)
        [table] = daemon.waitFor(r"port counters:")
        daemon.waitFor(
            rf"\s+tcp:127\.0\.0\.1:{echo[1]}\s+echo\s+listening\s+0\s+1\s+1\s"
        )
        connectionLines = daemon.waitFor(r"\[multiport\.connection#info\]", 3)
        self.assertIn(
            f"tcp:127.0.0.1:{echo[1]} echo 127.0.0.1:", connectionLines[0].string
        )

        daemon.stop()
        stopped = [line for line in daemon.lines if "stopped listening on" in line]
        self.assertEqual(len(stopped), len(items) + 1)
        self.assertNotIn("Traceback", "".join(daemon.lines))

    def test_floodWithDefaults(self):
        """
        With no policy configured, a flood of connections on one port is
        held below the file-descriptor limit (the excess turned away) and the
        daemon keeps serving its other ports and its health check.
        """
        daemon = self.daemon(
            "--ports",
            "127.0.0.1:0=discard,127.0.0.1:0=echo",
            "--status",
            "127.0.0.1:0",
            fileLimit=256,
        )
        flooded, echo, status = [
            (m.group(1), int(m.group(2))) for m in daemon.waitFor(LISTENING, 3)
        ]
        [limit] = daemon.waitFor(r"at most (\d+) descriptors for connections at once")
        maximum = int(limit.group(1))
        self.assertEqual(maximum, 256 - 3 - 64)
        flood = []
        self.addCleanup(lambda: [c.close() for c in flood])
        for _ in range(maximum + 100):
            flood.append(socket.create_connection(flooded, timeout=10))
        self.assertEqual(receiveAll(*echo, b"still here", limit=10), b"still here")
        self.assertEqual(httpGet(*status, path="/healthz"), (200, b"ok\n"))
        report = json.loads(httpGet(*status, path="/status")[1])
        floodPort = report["ports"][0]
        # The echo round trip and the two status requests took three of the
        # daemon's connections before they ended.
        self.assertEqual(
            floodPort["connections"]["accepted"] + floodPort["connections"]["rejected"],
            maximum + 100,
        )
        self.assertGreaterEqual(floodPort["rejected_by_reason"]["max_connections"], 100)
        self.assertLessEqual(floodPort["connections"]["current"], maximum)

    def test_portInUse(self):
        """
        A port in use ends the start with one line naming it, exit status 1,
        no traceback, and no port left bound.
        """
        busy = busyPort(self)
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "multiport",
                "--no-status",
                "--state-dir",
                str(self.stateDir),
                "--ports",
                f"127.0.0.1:0=echo,127.0.0.1:{busy}=echo",
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr,
            f"multiport: cannot listen on 127.0.0.1:{busy}: address already in use "
            "(another process, or another port here) "
            f"[--ports item 2 '127.0.0.1:{busy}=echo']\n",
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertIn("closed tcp:127.0.0.1:", result.stdout)
        self.assertIn(": the start failed", result.stdout)

    def test_badConfigFile(self):
        """
        A TOML syntax error exits 1 naming file, line and column.
        """
        path = self.folder / "bad.toml"
        path.write_text('[[port]]\nport = 7000\nhandler = "echo\n')
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "multiport",
                "--no-status",
                "--config",
                str(path),
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"multiport: {path}:3:", result.stderr)
        self.assertIn("TOML syntax error", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_check(self):
        """
        twistd multiport --check validates without binding and exits 0.
        """
        busy = busyPort(self)
        result = subprocess.run(
            [
                *TWISTD,
                "multiport",
                "--check",
                "--no-status",
                "--ports",
                f"127.0.0.1:{busy}=echo",
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"tcp:127.0.0.1:{busy} echo plain", result.stdout)
        self.assertFalse((self.folder / "twistd.pid").exists())


class PrivilegeDropTests(SynchronousTestCase):
    """
    As root, twistd binds ports below 1024 and then runs as another user.
    """

    def freePrivilegedPorts(self, count: int) -> list[int]:
        found = []
        for port in range(990, 900, -1):
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                probe.close()
            found.append(port)
            if len(found) == count:
                return found
        raise SkipTest("no two free ports below 1024 on 127.0.0.1")

    def test_bindsThenDropsPrivileges(self):
        """
        With --uid/--gid, HTTP and HTTPS on ports below 1024 answer real
        requests, and the process no longer runs as root.
        """
        if os.geteuid() != 0:
            raise SkipTest("binding ports below 1024 needs root (CI runs as root)")
        try:
            user = pwd.getpwnam("nobody")
            group = grp.getgrgid(user.pw_gid)
        except KeyError:
            raise SkipTest("no user 'nobody' on this machine") from None
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        stateDir = folder / "state"
        web, webTLS = self.freePrivilegedPorts(2)
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(stateDir),
                "--ports",
                f"127.0.0.1:{web}=http,127.0.0.1:{webTLS}=https",
            ],
            str(folder),
            twistdArgs=["--uid", user.pw_name, "--gid", group.gr_name],
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(LISTENING, 2)
        daemon.waitFor(r"set uid/gid")

        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
        [uids] = [
            line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")
        ]
        self.assertEqual(uids, [str(user.pw_uid)] * 4)

        self.assertEqual(httpGet("127.0.0.1", web)[0], 200)
        trust = tlsContext(stateDir / "selfsigned-cert.pem")
        status, body = httpGet("localhost", webTLS, trust)
        self.assertEqual(status, 200)
        self.assertIn(b"multiport is running", body)
        key = stateDir / "selfsigned-key.pem"
        self.assertEqual(os.stat(key).st_uid, user.pw_uid)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        daemon.stop()
        self.assertNotIn("Traceback", "".join(daemon.lines))
        self.assertIn("Server Shut Down", "".join(daemon.lines))


class DaemonModeTests(SynchronousTestCase):
    """
    Without -n: twistd forks, and the command on the terminal reports how
    the start went.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.pidfile = self.folder / "twistd.pid"
        self.logfile = self.folder / "twistd.log"

    def twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *TWISTD,
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.logfile),
                "multiport",
                "--no-status",
                "--state-dir",
                str(self.folder / "state"),
                *args,
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def assertWholeError(self, result: subprocess.CompletedProcess[str], busy: int):
        self.assertEqual(result.returncode, 1)
        line = (
            f"multiport: cannot listen on 127.0.0.1:{busy}: address already in use "
            "(another process, or another port here) "
            f"[--ports item 2 '127.0.0.1:{busy}=echo']\n"
        )
        self.assertEqual((result.stdout, result.stderr), ("", line))
        # twistd's daemon writes the status pipe, then removes its pid file:
        # the command on the terminal may return in between.
        waitUntil(
            lambda: not self.pidfile.exists(),
            timeout=10,
            what="the failed daemon removing its pid file",
        )
        self.assertIn(line[len("multiport: ") :], self.logfile.read_text())

    def test_portInUse(self):
        """
        A port that can't be bound after the fork: the terminal gets the
        whole line -n prints (not a bytes repr cut at 100 bytes), status 1,
        and the log file has it too.
        """
        busy = busyPort(self)
        result = self.twistd("--ports", f"127.0.0.1:0=echo,127.0.0.1:{busy}=echo")
        self.assertWholeError(result, busy)

    def test_portInUseWorkers(self):
        """
        The same with --workers, whose main process binds the sockets.
        """
        busy = busyPort(self)
        result = self.twistd(
            "--workers", "2", "--ports", f"127.0.0.1:0=echo,127.0.0.1:{busy}=echo"
        )
        self.assertWholeError(result, busy)

    def test_started(self):
        """
        A start that works still exits 0 on the terminal once the daemon
        serves, leaving its pid file.
        """
        result = self.twistd("--ports", "127.0.0.1:0=echo")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        pid = int(self.pidfile.read_text())
        self.addCleanup(stopDaemon, pid)
        match = waitUntil(
            lambda: re.search(
                r"listening on tcp:127\.0\.0\.1:(\d+)", self.logfile.read_text()
            ),
            30,
        )
        assert match is not None
        self.assertEqual(receiveAll("127.0.0.1", int(match[1]), b"up", limit=2), b"up")


def stopDaemon(pid: int, timeout: float = 30) -> None:
    """
    SIGTERM the daemonized process C{pid} and wait for it to be gone.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        waitUntil(lambda: not Path(f"/proc/{pid}").exists(), timeout)
    except WaitTimeout:
        os.kill(pid, signal.SIGKILL)


class AccessLogDaemonTests(SynchronousTestCase):
    """
    A real request's access log line, with and without workers: nginx's
    combined format after the port's name, the same fields and namespace.
    """

    def request(self, *args: str) -> tuple[Daemon, list[str]]:
        """
        Start a daemon with an http port and C{args}, send it one request
        with a referer and a user agent, stop it; it and its output lines.
        """
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--ports",
                "127.0.0.1:0=http",
                *args,
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        if "--workers" in args:
            daemon.waitFor(r"serving 1 port\b", 2)
        match = daemon.waitFor(r"listening on tcp:127\.0\.0\.1:(\d+)")[0]
        port = int(match[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(
                "GET",
                "/?q=1",
                headers={"User-Agent": 'probe/1.0 "x"', "Referer": "http://r.example/"},
            )
            self.assertEqual(connection.getresponse().status, 200)
        finally:
            connection.close()
        daemon.waitFor(r"multiport\.access")
        daemon.stop()
        return daemon, [line for line in daemon.lines if "multiport.access" in line]

    def assertCombined(self, line: str) -> None:
        from tests.test_web import COMBINED

        portName, text = line.split("] ", 1)[1].rstrip("\n").split(" ", 1)
        self.assertRegex(portName, r"^tcp:127\.0\.0\.1:\d+$")
        match = COMBINED.fullmatch(text)
        assert match is not None, line
        self.assertEqual(
            [match[k] for k in ("client", "request", "status", "referer", "agent")],
            [
                "127.0.0.1",
                "GET /?q=1 HTTP/1.1",
                "200",
                "http://r.example/",
                'probe/1.0 \\"x\\"',
            ],
        )

    def test_text(self):
        """
        One process: the line parses as combined, and Twisted's own
        "starting on" and "Port Closed" lines are gone.
        """
        daemon, [line] = self.request()
        self.assertIn("[multiport.access#info] tcp:127.0.0.1:", line)
        self.assertCombined(line)
        output = "".join(daemon.lines)
        self.assertNotRegex(output, r"starting on \d+")
        self.assertNotRegex(output, r"Port \d+ Closed")
        self.assertIn("stopped listening on", output)

    def test_textWorkers(self):
        """
        With workers, the same line in the same namespace.
        """
        daemon, [line] = self.request("--workers", "2")
        self.assertIn("[multiport.access#info] tcp:127.0.0.1:", line)
        self.assertCombined(line)
        self.assertNotRegex("".join(daemon.lines), r"starting on \d+")

    def test_jsonWorkers(self):
        """
        With workers and the JSON log, the event keeps its namespace and
        fields (client, user agent, referer, request time), with the
        worker's number.
        """
        daemon, [line] = self.request("--workers", "2", "--log-format", "json")
        record = json.loads(line)
        self.assertEqual(
            {
                k: record[k]
                for k in (
                    "namespace",
                    "client",
                    "method",
                    "uri",
                    "status",
                    "referer",
                    "user_agent",
                )
            },
            {
                "namespace": "multiport.access",
                "client": "127.0.0.1",
                "method": "GET",
                "uri": "/?q=1",
                "status": 200,
                "referer": "http://r.example/",
                "user_agent": 'probe/1.0 "x"',
            },
        )
        self.assertIn(record["worker"], (0, 1))
        self.assertIsInstance(record["request_time"], float)
        self.assertGreaterEqual(record["request_time"], 0)
        self.assertLess(record["request_time"], 10)
        self.assertCombined("] " + record["message"])
