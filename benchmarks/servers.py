"""
The servers a benchmark runs: multiport and the peers it is measured
against, each started in its own process group on CPU 0 (the relay
scenario's sink, a load generator of sorts, on CPU 1) and stopped by
process id.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from benchmarks import processes, sharing, tools

PYTHON = sys.executable
TWISTD = [
    PYTHON,
    "-c",
    "from twisted.scripts.twistd import run; run()",
    "-n",
    "--pidfile=",
]
ROOT = Path(__file__).resolve().parent.parent
#: multiport's log line once every port listens.
READY = re.compile(r"ready: \d+ ports? listening, ([0-9.]+) s after")

#: A small page, the size of nginx's default index.html.
PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>benchmark</title></head><body>"
    + b"<p>"
    + b"multiport benchmark page " * 21
    + b"</p></body></html>\n"
)[:612]


class Server:
    """
    One server process: started on entry, stopped on exit.

    @ivar port: The port it is ready on once started (the first one).
    @ivar core: The CPU it is pinned to (see L{processes.pinned}).
    @ivar env: Environment variables set for it, besides this process's.
    @ivar fileLimit: Its descriptor limit (soft and hard); L{None}: the
        soft limit raised to the hard one.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        workdir: Path,
        timeout: float = 120,
        core: int | None = 0,
        env: Mapping[str, str] | None = None,
        fileLimit: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.workdir = workdir
        self.timeout = timeout
        self.core = core
        self.env = dict(env or {})
        self.fileLimit = fileLimit
        self.startup = 0.0

    def __enter__(self) -> Server:
        log = self.workdir / f"{self.name.replace(' ', '-')}-{self.port}.log"
        # The servers run in the work folder; they import benchmarks and
        # multiport from this checkout, installed or not.
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), environment.get("PYTHONPATH")])
        )
        environment.update(self.env)
        self.logPath = log
        self.logOffset = log.stat().st_size if log.exists() else 0
        self.process = processes.start(
            self.argv,
            log,
            core=self.core,
            cwd=self.workdir,
            env=environment,
            fileLimit=self.fileLimit,
        )
        try:
            self.startup = self.waitReady()
        except RuntimeError as e:
            processes.stop(self.process)
            raise RuntimeError(
                f"{e}\n{log.read_text(errors='replace')[-2000:]}"
            ) from None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        processes.stop(self.process)

    def waitReady(self) -> float:
        """
        Wait until the server takes connections on its port; the seconds
        it took.

        @raise RuntimeError: if it exits first or does not in time.
        """
        return processes.waitForPort(self.port, self.process, self.timeout)

    def reportedStartup(self, timeout: float = 30) -> float:
        """
        The start-up time multiport reports in its log (C{ready: N ports
        listening, X s after the command line was read}): from reading its
        command line to every port listening, the interpreter's own start
        and imports excluded.

        @raise RuntimeError: if no such line is logged within C{timeout}.
        """
        deadline = time.monotonic() + timeout
        while True:
            with open(self.logPath, "rb") as f:
                f.seek(self.logOffset)
                text = f.read().decode("utf-8", "replace")
            found = READY.findall(text)
            if found:
                return float(found[-1])
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} logged no ready line within {timeout}s: "
                    f"{text[-2000:]}"
                )
            time.sleep(0.01)

    def rss(self) -> int:
        """
        Resident memory of the server's processes, in bytes.
        """
        return processes.rssBytes(self.process.pid)

    def openFiles(self) -> int:
        """
        File descriptors the server's processes hold.
        """
        return processes.openFiles(self.process.pid)

    def cpuSeconds(self) -> float:
        """
        The CPU time the server's processes have used so far.
        """
        return processes.cpuSeconds(self.process.pid)

    def bytesRead(self) -> int:
        """
        The bytes the server's processes have read so far.
        """
        return processes.bytesRead(self.process.pid)


#: The size of the large file every HTTP server serves (C{large.bin}).
LARGE_FILE_SIZE = 1 << 20


def site(workdir: Path) -> Path:
    """
    The folder every HTTP server serves: a small index.html, and a large
    file (L{LARGE_FILE_SIZE}), C{large.bin}.
    """
    root = workdir / "www"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_bytes(PAGE)
    (root / "large.bin").write_bytes(bytes(range(256)) * (LARGE_FILE_SIZE // 256))
    return root


def certificate(workdir: Path) -> tuple[Path, Path]:
    """
    A self-signed certificate and key every TLS server uses.
    """
    from multiport.ports.tls import makeSelfSigned

    cert, key = workdir / "cert.pem", workdir / "key.pem"
    if not cert.exists():
        certPEM, keyPEM = makeSelfSigned(
            datetime.datetime.now(datetime.UTC), "localhost"
        )
        cert.write_bytes(certPEM)
        key.write_bytes(keyPEM)
    return cert, key


def multiport(workdir: Path, port: int, config: str, name: str = "multiport") -> Server:
    """
    C{twistd -n multiport} with a TOML configuration (C{port} must be one of
    its ports: the server is ready when it accepts).
    """
    path = workdir / f"multiport-{port}.toml"
    path.write_text(config)
    return Server(
        name,
        [
            *TWISTD,
            "multiport",
            "--no-status",
            "--state-dir",
            str(workdir / "state"),
            "--config",
            str(path),
        ],
        port,
        workdir,
    )


def multiportPorts(
    workdir: Path,
    ports: Sequence[int],
    handler: str,
    logConnections: bool = True,
    name: str | None = None,
    defaults: str = "",
) -> Server:
    """
    multiport serving C{handler} on every one of C{ports}; ready when the
    last one accepts (they are bound in order).  The status port is left
    out: it would be one more listener than asked for.
    """
    tables = f"[defaults]\nlog_connections = {str(logConnections).lower()}\n"
    tables += defaults
    tables += "".join(
        f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\nhandler = "{handler}"\n'
        for port in ports
    )
    if name is None:
        name = "multiport" if len(ports) == 1 else f"multiport {len(ports)} ports"
    server = multiport(workdir, ports[-1], tables, name=name)
    server.timeout = 600
    return server


def multiportEcho(workdir: Path, port: int) -> Server:
    """
    multiport's echo handler on one port.
    """
    return multiportPorts(workdir, [port], "echo")


def twistedEcho(workdir: Path, port: int) -> Server:
    """
    The same echo protocol on a bare reactor.listenTCP, without multiport.
    """
    return Server(
        "twisted",
        [PYTHON, "-m", "benchmarks.peers.twisted_echo", str(port)],
        port,
        workdir,
    )


def fastEcho(workdir: Path, port: int, reactor: bool = False) -> Server:
    """
    The same bare echo on L{multiport.io.transport.FastPort} (issue 10), on the
    C{multiport-epoll} reactor if asked.
    """
    argv = [PYTHON, "-m", "benchmarks.peers.fast_echo", str(port)]
    return Server(
        "twisted, FastPort + reactor" if reactor else "twisted, FastPort",
        argv + (["--reactor", "multiport-epoll"] if reactor else []),
        port,
        workdir,
    )


#: twistd with multiport's ports using L{multiport.io.transport.FastServer}
#: (patched in for the benchmark) on the C{multiport-epoll} reactor.
FAST_TWISTD = [
    PYTHON,
    "-c",
    "import multiport.ports.sockets as s, multiport.io.transport as t; "
    "s.ListeningPort.transport = t.FastServer; "
    "from twisted.scripts.twistd import run; run()",
    "-n",
    "--pidfile=",
    "--reactor",
    "multiport-epoll",
]


def multiportFastEcho(workdir: Path, port: int) -> Server:
    """
    multiport's echo handler on one port, its connections L{FastServer}s, on
    the C{multiport-epoll} reactor.
    """
    server = multiportEcho(workdir, port)
    server.name = "multiport, FastServer + reactor"
    server.argv = FAST_TWISTD + server.argv[len(TWISTD) :]
    return server


def asyncioEcho(workdir: Path, port: int, uvloop: bool = False) -> Server:
    """
    An asyncio echo server, on uvloop if asked.
    """
    argv = [PYTHON, "-m", "benchmarks.peers.asyncio_echo", str(port)]
    return Server(
        "uvloop" if uvloop else "asyncio",
        argv + (["--uvloop"] if uvloop else []),
        port,
        workdir,
    )


def multiportWeb(workdir: Path, port: int, tls: bool = False) -> Server:
    """
    multiport's http (or https) handler serving the benchmark site.
    """
    root = site(workdir)
    config = f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\nhandler = "http"\n'
    if tls:
        cert, key = certificate(workdir)
        config += f'tls = {{ cert = "{cert}", key = "{key}" }}\n'
    config += f'options = {{ root = "{root}" }}\n'
    return multiport(workdir, port, config)


#: C{--worker-sockets reuseport}: each worker accepts on a socket of its own
#: in an SO_REUSEPORT group instead of on one shared socket.
REUSEPORT_ARGS = ["--worker-sockets", "reuseport"]


class MultiportWorkers(Server):
    """
    C{twistd multiport --workers N} with a status port: ready once every
    worker serves (the main process binds the port before it starts them);
    its workers, in sessions of their own, are checked gone on exit.

    @ivar workers: N.
    @ivar statusPort: Where its status port listens (on 127.0.0.1).
    @ivar workerPids: The workers' process ids, known once it is ready.
    @ivar grace: The seconds the workers have to end after the main process.
    """

    grace = 15.0

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        workdir: Path,
        workers: int,
        statusPort: int,
        core: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, argv, port, workdir, core=core, env=env)
        self.workers = workers
        self.statusPort = statusPort
        self.workerPids: list[int] = []

    def __enter__(self) -> MultiportWorkers:
        super().__enter__()
        try:
            self.settled(0)
            if self.workers > 1:
                self.workerPids = sorted(
                    {f.pid for f in self.settled(0) if f.pid is not None}
                    | set(processes.children(self.process.pid))
                )
        except BaseException:
            # Whatever workers it started are stopped too.
            self.workerPids = processes.children(self.process.pid)
            self.__exit__(*sys.exc_info())
            raise
        return self

    def settled(self, minimum: int) -> list[sharing.WorkerFigures]:
        """
        Each worker's figures for the port once they have settled with at
        least C{minimum} connections accepted and closed (see
        L{sharing.settle}).
        """
        return sharing.settle(
            lambda: sharing.fetchStatus(self.statusPort),
            self.port,
            self.workers,
            minimum,
        )

    def pids(self) -> list[int]:
        """
        The main process's id and the workers'.
        """
        return [self.process.pid, *self.workerPids]

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(kind, value, traceback)
        deadline = time.monotonic() + self.grace
        left = [pid for pid in self.workerPids if processes.alive(pid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if processes.alive(pid)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left and kind is None:
            raise RuntimeError(
                f"{self.name}: worker processes {left} were still running "
                f"{self.grace:g}s after the main process ended (killed)"
            )


def multiportWorkers(
    workdir: Path,
    port: int,
    handler: str,
    workers: int,
    statusPort: int,
    reusePort: bool = False,
    core: int | None = None,
    name: str | None = None,
) -> MultiportWorkers:
    """
    multiport's C{http} (the benchmark site) or C{echo} handler on C{port}
    served by C{--workers N}, its status port on C{statusPort}, sharing one
    socket per port or, with C{reusePort}, one SO_REUSEPORT socket per
    worker.  Not pinned by default: the workers inherit the main process's
    CPUs.  Connections still open at the end get a second to drain.
    """
    make = {"http": multiportWeb, "echo": multiportEcho}[handler]
    base = make(workdir, port)
    argv = list(base.argv)
    argv[argv.index("--no-status")] = f"--status=127.0.0.1:{statusPort}"
    argv += ["--workers", str(workers), "--drain-timeout", "1"]
    if reusePort:
        argv += REUSEPORT_ARGS
    if name is None:
        name = f"multiport {workers} worker{'s' if workers > 1 else ''}"
        if reusePort:
            name += " reuseport"
    return MultiportWorkers(
        name,
        argv,
        port,
        workdir,
        workers,
        statusPort,
        core=core,
    )


def twistdWeb(workdir: Path, port: int, tls: bool = False) -> Server:
    """
    C{twistd web} serving the same folder.
    """
    root = site(workdir)
    if tls:
        cert, key = certificate(workdir)
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    else:
        listen = f"tcp:{port}:interface=127.0.0.1"
    return Server(
        "twistd web",
        [*TWISTD, "web", "--listen", listen, "--path", str(root)],
        port,
        workdir,
    )


def nginx(workdir: Path, port: int, tls: bool = False, http2: bool = False) -> Server:
    """
    nginx with one worker process serving the same folder (access log on, to
    a file, as by default), with C{http2} on its TLS listener if asked.
    """
    root = site(workdir)
    prefix = workdir / f"nginx-{port}"
    prefix.mkdir(exist_ok=True)
    # "listen ... http2": nginx before 1.25.1 (Debian 12 has 1.22) has no
    # "http2 on", later ones take this with a warning.
    listen = f"127.0.0.1:{port}" + (" ssl" if tls else "") + (" http2" if http2 else "")
    certificateLines = ""
    if tls:
        cert, key = certificate(workdir)
        certificateLines = (
            f"ssl_certificate {cert}; ssl_certificate_key {key}; "
            "ssl_protocols TLSv1.2 TLSv1.3;"
        )
    # As root, nginx's worker would run as nobody and could not read a
    # private work folder; keep it the user that made the folder.
    user = "user root;" if os.geteuid() == 0 else ""
    config = prefix / "nginx.conf"
    config.write_text(
        textwrap.dedent(
            f"""
            {user}
            worker_processes 1;
            daemon off;
            pid {prefix}/nginx.pid;
            error_log {prefix}/error.log;
            events {{ worker_connections 20000; }}
            http {{
                access_log {prefix}/access.log;
                client_body_temp_path {prefix}/body;
                proxy_temp_path {prefix}/proxy;
                fastcgi_temp_path {prefix}/fastcgi;
                uwsgi_temp_path {prefix}/uwsgi;
                scgi_temp_path {prefix}/scgi;
                keepalive_requests 1000000;
                server {{
                    listen {listen};
                    {certificateLines}
                    root {root};
                }}
            }}
            """
        )
    )
    return Server(
        "nginx",
        [tools.command("nginx"), "-p", str(prefix), "-c", str(config)],
        port,
        workdir,
    )


def sink(workdir: Path, port: int) -> Server:
    """
    The C load generator's C{sink} mode: reads and discards whatever any
    number of connections send.  It is the far side of the relays, so it
    runs on the load generator's CPU, not the servers'.
    """
    from benchmarks.measure import GENERATOR_CORE

    return Server(
        "sink",
        [str(tools.loadgen()), "sink", str(port)],
        port,
        workdir,
        core=GENERATOR_CORE,
    )


def echoServer(workdir: Path, port: int) -> Server:
    """
    The C load generator's C{echoserver} mode: writes back whatever any
    number of connections send.  The upstream of the relays' round trips,
    on the load generator's CPU like the sink.
    """
    from benchmarks.measure import GENERATOR_CORE

    return Server(
        "echoserver",
        [str(tools.loadgen()), "echoserver", str(port)],
        port,
        workdir,
        core=GENERATOR_CORE,
    )


def multiportRelay(
    workdir: Path,
    port: int,
    upstream: int,
    splice: bool = True,
    fileLimit: int | None = None,
) -> Server:
    """
    multiport's relay handler forwarding C{port} to 127.0.0.1:C{upstream}
    (connection log on, as by default), with splice(2) (the default) or,
    if C{splice} is false, copying through Python; C{fileLimit} as for
    L{Server}.
    """
    options = f'upstream = "127.0.0.1:{upstream}"'
    if not splice:
        options += ", splice = false"
    config = (
        f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\nhandler = "relay"\n'
        f"options = {{ {options} }}\n"
    )
    server = multiport(
        workdir, port, config, name="multiport" if splice else "multiport, no splice"
    )
    server.fileLimit = fileLimit
    return server


def socat(workdir: Path, port: int, upstream: int) -> Server:
    """
    socat forwarding C{port} to 127.0.0.1:C{upstream}, one forked process
    per connection (how socat relays many connections), with its default
    8 KB transfer size.
    """
    return Server(
        "socat",
        [
            tools.command("socat"),
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=1024",
            f"TCP:127.0.0.1:{upstream}",
        ],
        port,
        workdir,
    )


def haproxyConfig(
    port: int, upstream: int, maxconn: int | None = 1000, splice: bool = False
) -> str:
    """
    An HAProxy configuration relaying TCP from C{port} to C{upstream}: one
    thread, as every other contender has one core; no splicing unless
    C{splice} (C{option splice-auto}: HAProxy splices a direction when its
    traffic suggests it pays); timeouts no measurement reaches; no logging.
    Without C{maxconn} HAProxy derives its own from the descriptor limit
    (as multiport does).
    """
    limit = "" if maxconn is None else f"\n    maxconn {maxconn}"
    splicing = "\n    option splice-auto" if splice else ""
    return (
        textwrap.dedent(
            f"""\
        global
            nbthread 1LIMIT

        defaults
            mode tcp
            timeout connect 10s
            timeout client 1h
            timeout server 1hSPLICE

        frontend relay
            bind 127.0.0.1:{port}
            default_backend sink

        backend sink
            server sink 127.0.0.1:{upstream}
        """
        )
        .replace("LIMIT", limit)
        .replace("SPLICE", splicing)
    )


def haproxy(
    workdir: Path,
    port: int,
    upstream: int,
    maxconn: int | None = 1000,
    fileLimit: int | None = None,
    splice: bool = False,
) -> Server:
    """
    HAProxy in TCP mode forwarding C{port} to 127.0.0.1:C{upstream}, in the
    foreground (C{-db}), with C{maxconn} and C{splice} (see
    L{haproxyConfig}) and C{fileLimit} (see L{Server}); named C{haproxy,
    splice-auto} with splicing.
    """
    config = workdir / f"haproxy-{port}.cfg"
    config.write_text(haproxyConfig(port, upstream, maxconn, splice))
    return Server(
        "haproxy, splice-auto" if splice else "haproxy",
        [tools.command("haproxy"), "-f", str(config), "-db"],
        port,
        workdir,
        fileLimit=fileLimit,
    )


def portforward(workdir: Path, port: int, upstream: int) -> Server:
    """
    C{twistd portforward}, Twisted's own port forwarder, forwarding C{port}
    (on 127.0.0.1) to 127.0.0.1:C{upstream}.
    """
    return Server(
        "twistd portforward",
        [
            *TWISTD,
            "portforward",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--host",
            "127.0.0.1",
            "--dest_port",
            str(upstream),
        ],
        port,
        workdir,
    )
