"""
A bounded soak test of a real daemon::

    python -m benchmarks.soak --seconds 60

It starts a C{twistd -n multiport} process of its own (a generated TOML file
in a temporary folder, every port on 127.0.0.1 with port 0, C{--status
127.0.0.1:0}, C{--state-dir} in the folder), holds C{--connections}
connections across C{--ports} ports of echo, http, https and relay for
C{--seconds} seconds, scrapes C{/status} and C{/metrics} every second, and
mixes in clients that read slowly, reset their connection (RST, with
C{SO_LINGER} 0) or send garbage.  The relay ports forward to a small echo
server this process runs itself.  The load is asyncio, in this one process.

At the end it checks the daemon and prints a table of figures:

    - every connection was held at once, on both sides;
    - every byte echoed or relayed came back unchanged;
    - no client saw an unexpected error, and the daemon logged none;
    - the daemon's file descriptors are back to their count before the load;
    - its resident memory is back within 10% of its steady level (sampled
      after a warm-up, under the full load);
    - for every port, accepted = closed + current, in every scrape and at
      the end, with no connection left open.

The exit status is 0 when every check passes, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import random
import re
import resource
import signal
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from multiport.io.splice import KEEP_AT_LEAST

#: The share of the ports each handler gets.
SHARES: tuple[tuple[str, float], ...] = (
    ("echo", 0.40),
    ("http", 0.20),
    ("https", 0.16),
    ("relay", 0.24),
)
#: prctl(2)'s option to be signalled when the parent dies.
PR_SET_PDEATHSIG = 1
#: Memory at the end may exceed the steady level by this fraction.
RSS_TOLERANCE = 0.10
#: Seconds one exchange (an echo, a request) may take under load.
EXCHANGE_TIMEOUT = 10.0
#: Seconds one churning client's whole session may take.
CHURN_TIMEOUT = 15.0
#: Seconds to wait for the daemon to listen.
START_TIMEOUT = 20.0
#: Seconds the connections get to drain after the load.
DRAIN_TIMEOUT = 15.0
#: Seconds the daemon's descriptors get to come back to their count.
FD_TIMEOUT = 10.0
#: The descriptors of the splice pipes an idle daemon's pool may keep for
#: reuse (two a pipe): the relay splices only bulk traffic, so whether the
#: probe before the load made a pipe depends on its size, and what the
#: load leaves kept is a bounded cache rather than a leak.
KEPT_PIPE_DESCRIPTORS = 2 * KEEP_AT_LEAST


def withoutPipes(files: Sequence[str]) -> tuple[list[str], list[str]]:
    """
    C{files} (as L{openFiles} names them, C{PID:TARGET}) without pipes,
    and the pipes.
    """
    pipes = [name for name in files if name.partition(":")[2].startswith("pipe:")]
    return [name for name in files if name not in pipes], pipes


#: The run's own margin past the load phase (start, drain, checks); past it
#: the run stops, kills the daemon and fails.
MARGIN = 45.0
#: Seconds the daemon gets to exit on SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
#: What the built-in page of an http port says.
PAGE_MARK = b"multiport is running"
#: How the daemon logs each port it listens on.
LISTENING = re.compile(r"listening on (tcp:\[?[0-9a-f.:]+?\]?:(\d+)): handler (\S+),")
#: The connection log's closing line (a worker's line too, in the same
#: namespace; "worker N: " was its prefix before workers kept namespaces).
CLOSED = re.compile(r"(?:#\w+\]|worker \d+:) tcp:\S+ \S+ \S+ closed (\w+)")
#: Log lines that are a daemon error.
ERROR_LINE = re.compile(r"#(error|critical)\]|Traceback|Unhandled")


# --------------------------------------------------------------------------
# Figures and checks: plain data, formatted and judged without I/O.


@dataclass
class PortFigures:
    """
    One port's connection counters, from C{/status}.
    """

    name: str
    handler: str
    accepted: int
    closed: int
    current: int
    rejected: int

    @property
    def consistent(self) -> bool:
        """
        Whether accepted = closed + current.
        """
        return self.accepted == self.closed + self.current


@dataclass
class Check:
    """
    One check of the run: its name, whether it passed, and its figures.
    """

    name: str
    passed: bool
    detail: str


@dataclass
class Figures:
    """
    Everything one soak run measured.
    """

    seconds: float
    connections: int
    ports: int
    workers: int
    seed: int
    handlers: dict[str, int] = field(default_factory=dict)
    #: Seconds into the load when every holder was connected (None: never).
    allHeldAt: float | None = None
    #: The fewest holders open (client side) from then to the load's end.
    heldMin: int = 0
    #: The daemon's open connections on the load ports, from /status
    #: scrapes over the same window.
    daemonCurrentMin: int = 0
    daemonCurrentPeak: int = 0
    exchanges: dict[str, int] = field(default_factory=dict)
    bytesSent: dict[str, int] = field(default_factory=dict)
    bytesVerified: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    events: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    scrapes: int = 0
    scrapeFailures: int = 0
    inconsistentScrapes: int = 0
    daemonCloses: dict[str, int] = field(default_factory=dict)
    daemonErrorLines: list[str] = field(default_factory=list)
    drainSeconds: float | None = None
    fdsBefore: int | None = None
    fdsAfter: int | None = None
    fdsLeaked: list[str] = field(default_factory=list)
    #: Descriptors of splice pipes the daemon's pool keeps after the load
    #: beyond those before it: a bounded cache, not a leak.
    pipesKept: int = 0
    rssBefore: int | None = None
    rssSteady: int | None = None
    rssPeak: int | None = None
    rssEnd: int | None = None
    portFigures: list[PortFigures] = field(default_factory=list)
    elapsed: float = 0.0
    #: Why the run stopped short, if it did, and the daemon's last lines.
    aborted: str | None = None
    daemonLogTail: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def toJSON(self) -> dict[str, Any]:
        """
        The figures as JSON-ready data (with the checks' verdicts).
        """
        data = asdict(self)
        for port, figures in zip(data["portFigures"], self.portFigures, strict=True):
            port["consistent"] = figures.consistent
        data["passed"] = passed(self)
        return data


def planPorts(count: int) -> dict[str, int]:
    """
    How many ports of each handler C{count} ports are: L{SHARES} by largest
    remainder, at least one of each.
    """
    if count < len(SHARES):
        raise ValueError(f"at least {len(SHARES)} ports, one per handler")
    exact = {name: share * count for name, share in SHARES}
    plan = {name: max(1, int(value)) for name, value in exact.items()}
    byRemainder = sorted(exact, key=lambda name: exact[name] - int(exact[name]))
    while sum(plan.values()) < count:
        plan[byRemainder.pop()] += 1
    while sum(plan.values()) > count:
        largest = max(plan, key=lambda name: plan[name])
        plan[largest] -= 1
    return plan


def portFiguresOf(status: Mapping[str, Any]) -> list[PortFigures]:
    """
    Every port's counters in a C{/status} document.
    """
    figures = []
    for port in status["ports"]:
        connections = port["connections"]
        figures.append(
            PortFigures(
                name=port["name"],
                handler=port["handler"],
                accepted=int(connections["accepted"]),
                closed=int(connections["closed"]),
                current=int(connections["current"]),
                rejected=int(connections.get("rejected", 0)),
            )
        )
    return figures


def inconsistentPorts(status: Mapping[str, Any]) -> list[str]:
    """
    The ports of a C{/status} document whose accepted is not closed +
    current.
    """
    return [port.name for port in portFiguresOf(status) if not port.consistent]


def evaluate(figures: Figures) -> list[Check]:
    """
    Judge a run's figures.
    """
    checks = []
    if figures.aborted is not None:
        checks.append(Check("run finished", False, figures.aborted))
    held = (
        figures.allHeldAt is not None
        and figures.heldMin >= figures.connections
        and figures.daemonCurrentMin >= figures.connections
    )
    if figures.allHeldAt is None:
        heldDetail = f"never all {figures.connections} open at once"
    else:
        heldDetail = (
            f"{figures.connections} from {figures.allHeldAt:.1f} s to "
            f"{figures.seconds:.0f} s: fewest open {figures.heldMin} (clients), "
            f"{figures.daemonCurrentMin} (daemon, peak {figures.daemonCurrentPeak})"
        )
    checks.append(Check("connections held", held, heldDetail))
    sent = sum(figures.bytesSent.values())
    verified = sum(figures.bytesVerified.values())
    checks.append(
        Check(
            "bytes verified",
            figures.mismatches == 0 and sent == verified and sent > 0,
            f"{verified:,} of {sent:,} bytes sent came back, "
            f"{figures.mismatches} mismatches",
        )
    )
    errors = sum(figures.errors.values()) + len(figures.daemonErrorLines)
    checks.append(
        Check(
            "no errors",
            errors == 0,
            f"{sum(figures.errors.values())} client, "
            f"{len(figures.daemonErrorLines)} daemon log lines",
        )
    )
    checks.append(
        Check(
            "status scrapes",
            figures.scrapes > 0 and figures.scrapeFailures == 0,
            f"{figures.scrapes} of /status and /metrics each, "
            f"{figures.scrapeFailures} failed",
        )
    )
    fdsOk = (
        figures.fdsBefore is not None
        and figures.fdsAfter == figures.fdsBefore
        and 0 <= figures.pipesKept <= KEPT_PIPE_DESCRIPTORS
    )
    checks.append(
        Check(
            "file descriptors",
            fdsOk,
            f"before {figures.fdsBefore}, after {figures.fdsAfter}, besides "
            f"{figures.pipesKept} of pipes the splice pool keeps (at most "
            f"{KEPT_PIPE_DESCRIPTORS})",
        )
    )
    if figures.rssSteady and figures.rssEnd is not None:
        ratio = figures.rssEnd / figures.rssSteady
        rssOk = ratio <= 1 + RSS_TOLERANCE
        rssDetail = (
            f"steady {mb(figures.rssSteady)}, end {mb(figures.rssEnd)} "
            f"({ratio:.0%} of steady, at most {1 + RSS_TOLERANCE:.0%})"
        )
    else:
        rssOk, rssDetail = False, "not measured"
    checks.append(Check("memory", rssOk, rssDetail))
    bad = [port.name for port in figures.portFigures if not port.consistent]
    open_ = sum(
        port.current for port in figures.portFigures if port.handler != "status"
    )
    countersOk = (
        bool(figures.portFigures)
        and not bad
        and figures.inconsistentScrapes == 0
        and open_ == 0
    )
    checks.append(
        Check(
            "port counters",
            countersOk,
            f"accepted = closed + current on {len(figures.portFigures) - len(bad)} "
            f"of {len(figures.portFigures)} ports at the end, "
            f"{figures.inconsistentScrapes} inconsistent scrapes, "
            f"{open_} connections left open",
        )
    )
    return checks


def passed(figures: Figures) -> bool:
    """
    Whether every check of the run passed.
    """
    return bool(figures.checks) and all(check.passed for check in figures.checks)


def mb(kilobytes: int | None) -> str:
    """
    Kilobytes as megabytes, for the report.
    """
    if kilobytes is None:
        return "-"
    return f"{kilobytes / 1024:.1f} MB"


def _counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items()))


def formatReport(figures: Figures) -> str:
    """
    The run's figures and checks as a plain-text table.
    """
    handlers = ", ".join(f"{name} {count}" for name, count in figures.handlers.items())
    lines = [
        f"multiport soak: {figures.seconds:g} s of load, {figures.connections:,} "
        f"connections, {figures.ports} ports ({handlers}) and the status port, "
        f"{figures.workers} worker(s), seed {figures.seed}; "
        f"{figures.elapsed:.1f} s in all",
        "",
    ]
    accepted = sum(
        port.accepted for port in figures.portFigures if port.handler != "status"
    )
    rows = [
        ("exchanges", _counts(figures.exchanges)),
        (
            "bytes sent/verified",
            ", ".join(
                f"{kind} {figures.bytesSent.get(kind, 0):,}/"
                f"{figures.bytesVerified.get(kind, 0):,}"
                for kind in sorted(figures.bytesSent)
            )
            or "none",
        ),
        ("mismatches", str(figures.mismatches)),
        ("client events", _counts(figures.events)),
        ("client errors", _counts(figures.errors)),
        (
            "daemon closes",
            f"{_counts(figures.daemonCloses)} "
            f"({sum(figures.daemonCloses.values()):,} log lines for "
            f"{accepted:,} connections accepted on the load ports)",
        ),
        ("daemon error lines", str(len(figures.daemonErrorLines))),
        (
            "status scrapes",
            f"{figures.scrapes} ({figures.scrapeFailures} failed, "
            f"{figures.inconsistentScrapes} inconsistent)",
        ),
        (
            "drain",
            "-"
            if figures.drainSeconds is None
            else f"{figures.drainSeconds:.1f} s after the load",
        ),
        ("fds before/after", f"{figures.fdsBefore} / {figures.fdsAfter}"),
        (
            "RSS",
            f"before {mb(figures.rssBefore)}, steady {mb(figures.rssSteady)}, "
            f"peak {mb(figures.rssPeak)}, end {mb(figures.rssEnd)}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    if figures.rssEnd is not None and figures.rssBefore is not None:
        lines.append(
            f"  {'':<{width}}  (CPython keeps most memory it frees: the end is "
            "compared with the steady level under load, not with before)"
        )
    for leaked in figures.fdsLeaked[:10]:
        lines.append(f"  {'':<{width}}  still open: {leaked}")
    for line in figures.daemonErrorLines[:10]:
        lines.append(f"  {'':<{width}}  daemon: {line.rstrip()}")
    if figures.aborted is not None:
        lines += ["", f"stopped short: {figures.aborted}"]
        lines += [f"  daemon: {line.rstrip()}" for line in figures.daemonLogTail]
    lines += ["", "checks:"]
    for check in figures.checks:
        verdict = "ok  " if check.passed else "FAIL"
        lines.append(f"  {verdict}  {check.name:<18}  {check.detail}")
    if figures.portFigures:
        nameWidth = max(len(port.name) for port in figures.portFigures)
        lines += [
            "",
            "per port, at the end (accepted = closed + current):",
            f"  {'port':<{nameWidth}}  {'handler':<7}  {'accepted':>8}  "
            f"{'closed':>8}  {'current':>7}  {'rejected':>8}  ok",
        ]
        for port in figures.portFigures:
            lines.append(
                f"  {port.name:<{nameWidth}}  {port.handler:<7}  "
                f"{port.accepted:>8}  {port.closed:>8}  {port.current:>7}  "
                f"{port.rejected:>8}  {'yes' if port.consistent else 'NO'}"
            )
    lines += ["", "PASSED" if passed(figures) else "FAILED"]
    return "\n".join(lines)


def configText(plan: Mapping[str, int], upstream: tuple[str, int]) -> str:
    """
    The daemon's TOML file: C{plan}'s ports, all on 127.0.0.1 with port 0,
    the relay ports forwarding to C{upstream}.
    """
    tables = []
    for handler, count in plan.items():
        for _ in range(count):
            table = (
                f'[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "{handler}"\n'
            )
            if handler == "relay":
                table += f'options = {{ upstream = "{upstream[0]}:{upstream[1]}" }}\n'
            tables.append(table)
    return "\n".join(tables)


# --------------------------------------------------------------------------
# The daemon's process, its descriptors and memory.


def processTree(pid: int) -> list[int]:
    """
    C{pid} and its descendants (a daemon with C{--workers} has children).
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def openFiles(pid: int) -> list[str]:
    """
    What the descriptors of C{pid} and its descendants point to.
    """
    targets = []
    for process in processTree(pid):
        try:
            names = os.listdir(f"/proc/{process}/fd")
        except OSError:
            continue
        for name in names:
            try:
                targets.append(f"{process}:{os.readlink(f'/proc/{process}/fd/{name}')}")
            except OSError:
                continue
    return targets


def residentKB(pid: int) -> int:
    """
    The resident memory (VmRSS, kB) of C{pid} and its descendants.
    """
    total = 0
    for process in processTree(pid):
        try:
            text = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def raiseFileLimit() -> int:
    """
    Raise this process's soft descriptor limit to the hard one (the daemon
    inherits it); the new limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _dieWithParent() -> None:
    """
    In the daemon's process, before it runs: be killed if the soak process
    dies (Linux's C{PR_SET_PDEATHSIG}), so that no daemon outlives its run.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class DaemonProcess:
    """
    A C{twistd -n multiport} subprocess whose log is read as it comes: the
    ports it listens on, its connection log's reasons, its error lines.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ports: dict[str, str] = {}
        self.closes: Counter[str] = Counter()
        self.errorLines: list[str] = []
        self.recent: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, arguments: Sequence[str], folder: Path) -> DaemonProcess:
        """
        Start the daemon in C{folder} with C{arguments} after C{multiport}.
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "multiport",
            *arguments,
            cwd=str(folder),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
            preexec_fn=_dieWithParent,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        """
        The daemon's process id.
        """
        return self.process.pid

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := (await self.process.stdout.readline()).decode(errors="replace"):
            self.recent = [*self.recent[-40:], line]
            if (listening := LISTENING.search(line)) is not None:
                self.ports[listening.group(1)] = listening.group(3)
            elif (closed := CLOSED.search(line)) is not None:
                self.closes[closed.group(1)] += 1
            elif ERROR_LINE.search(line) and len(self.errorLines) < 100:
                self.errorLines.append(line)
            self._changed.set()
        self._changed.set()

    async def listening(self, count: int, timeout: float) -> dict[str, str]:
        """
        Wait until C{count} ports listen; their handlers by name.
        """
        async with asyncio.timeout(timeout):
            while len(self.ports) < count:
                if self._reader.done():
                    raise RuntimeError(
                        "the daemon exited before listening:\n" + "".join(self.recent)
                    )
                self._changed.clear()
                await self._changed.wait()
        return dict(self.ports)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """
        SIGTERM the daemon (SIGKILL after C{timeout} seconds); its status.
        """
        if self.process.returncode is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except (TimeoutError, ProcessLookupError):
                self.kill()
                await self.process.wait()
        try:
            async with asyncio.timeout(5):
                await self._reader
        except TimeoutError:
            self._reader.cancel()
        return self.process.returncode

    def kill(self) -> None:
        """
        SIGKILL the daemon, if it still runs.
        """
        if self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------
# Clients.


class Failed(Exception):
    """
    A client saw something other than what the daemon should do; the
    argument is the error's kind.
    """


@dataclass(frozen=True)
class Port:
    """
    One of the daemon's load ports.
    """

    name: str
    handler: str
    number: int


def resetAndClose(writer: asyncio.StreamWriter) -> None:
    """
    Close with a reset (RST): C{SO_LINGER} 0, then close at once.
    """
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass
    writer.transport.abort()


async def closeWriter(writer: asyncio.StreamWriter, timeout: float = 5.0) -> None:
    """
    Close cleanly, and at once if that takes over C{timeout} seconds.
    """
    writer.close()
    try:
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


async def readResponse(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """
    One HTTP response's status code and body.
    """
    statusLine = await reader.readline()
    parts = statusLine.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise Failed("http: bad status line" if statusLine else "http: closed")
    code = int(parts[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    else:
        body = await reader.read()
    return code, body


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    """
    GET C{path} from 127.0.0.1:C{port} on a connection of its own.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Connection: close\r\n\r\n"
        )
        return await readResponse(reader)
    finally:
        await closeWriter(writer)


class Load:
    """
    One run's clients: the holders (one connection each, held for the whole
    load, exchanging now and then), the churners (short sessions of every
    kind, one after another), and what they counted.
    """

    def __init__(
        self,
        ports: Sequence[Port],
        connections: int,
        rng: random.Random,
        tls: ssl.SSLContext,
    ) -> None:
        self.ports = ports
        self.byHandler: dict[str, list[Port]] = {}
        for port in ports:
            self.byHandler.setdefault(port.handler, []).append(port)
        self.connections = connections
        self.rng = rng
        self.tls = tls
        self.blob = rng.randbytes(1 << 20)
        self.stopping = False
        self.holdersOpen = 0
        self.allHeldAt: float | None = None
        self.heldMin = connections
        self.started = 0.0
        self.exchanges: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.verified: Counter[str] = Counter()
        self.mismatches = 0
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def payload(self, low: int, high: int) -> bytes:
        """
        Random bytes, C{low} to C{high} of them.
        """
        size = self.rng.randint(low, high)
        start = self.rng.randrange(len(self.blob) - size)
        return self.blob[start : start + size]

    async def connect(
        self, port: Port, plain: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """
        Connect to C{port}, over TLS for https unless C{plain}.
        """
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            if port.handler == "https" and not plain:
                return await asyncio.open_connection(
                    "127.0.0.1",
                    port.number,
                    ssl=self.tls,
                    server_hostname="localhost",
                )
            return await asyncio.open_connection("127.0.0.1", port.number)

    async def echo(
        self,
        port: Port,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        data: bytes,
    ) -> None:
        """
        Send C{data} and check that it comes back unchanged.
        """
        kind = port.handler
        writer.write(data)
        self.sent[kind] += len(data)
        try:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                back = await reader.readexactly(len(data))
        except asyncio.IncompleteReadError:
            raise Failed(f"{kind}: closed by the daemon") from None
        if back != data:
            self.mismatches += 1
            raise Failed(f"{kind}: mismatch")
        self.verified[kind] += len(data)
        self.exchanges[kind] += 1

    async def request(
        self,
        port: Port,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        close: bool = False,
    ) -> None:
        """
        GET / and check the built-in page comes back.
        """
        writer.write(
            b"GET / HTTP/1.1\r\nHost: localhost\r\n"
            + (b"Connection: close\r\n" if close else b"")
            + b"\r\n"
        )
        try:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                code, body = await readResponse(reader)
        except asyncio.IncompleteReadError:
            raise Failed(f"{port.handler}: closed by the daemon") from None
        if code != 200 or PAGE_MARK not in body:
            raise Failed(f"{port.handler}: answered {code}")
        self.exchanges[port.handler] += 1

    async def holder(self, port: Port, delay: float) -> None:
        """
        Hold one connection to C{port} until the load stops, exchanging
        every half second to two seconds; connect again after a failure
        (counted).
        """
        await asyncio.sleep(delay)
        while not self.stopping:
            try:
                reader, writer = await self.connect(port)
            except (OSError, TimeoutError, ssl.SSLError) as e:
                self.errors[f"{port.handler}: connect ({type(e).__name__})"] += 1
                await asyncio.sleep(0.5)
                continue
            self.holdersOpen += 1
            if self.holdersOpen == self.connections and self.allHeldAt is None:
                self.allHeldAt = time.monotonic() - self.started
            try:
                while not self.stopping:
                    if port.handler in ("echo", "relay"):
                        await self.echo(port, reader, writer, self.payload(16, 2048))
                    else:
                        await self.request(port, reader, writer)
                    await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            except Failed as e:
                self.errors[str(e)] += 1
            except (OSError, TimeoutError, ssl.SSLError) as e:
                self.errors[f"{port.handler}: {type(e).__name__}"] += 1
            finally:
                self.holdersOpen -= 1
                if self.allHeldAt is not None and not self.stopping:
                    self.heldMin = min(self.heldMin, self.holdersOpen)
                await closeWriter(writer)

    # The churners' sessions, each bounded by CHURN_TIMEOUT.

    async def shortSession(self) -> None:
        """
        Echo a few kilobytes on a new connection, then close.
        """
        port = self.rng.choice(self.byHandler["echo"] + self.byHandler["relay"])
        reader, writer = await self.connect(port)
        try:
            await self.echo(port, reader, writer, self.payload(1, 16384))
        finally:
            await closeWriter(writer)
        self.events["short session"] += 1

    async def slowReader(self) -> None:
        """
        Send a few hundred kilobytes and read the echo back slowly (4 KB
        every 25 ms), so the daemon has to hold back.
        """
        port = self.rng.choice(self.byHandler["echo"] + self.byHandler["relay"])
        data = self.payload(128 * 1024, 384 * 1024)
        reader, writer = await self.connect(port)

        async def send() -> None:
            for start in range(0, len(data), 16384):
                writer.write(data[start : start + 16384])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        kind = port.handler
        self.sent[kind] += len(data)
        try:
            offset = 0
            while offset < len(data):
                chunk = await reader.read(min(4096, len(data) - offset))
                if not chunk:
                    raise Failed(f"{kind}: closed by the daemon")
                if chunk != data[offset : offset + len(chunk)]:
                    self.mismatches += 1
                    raise Failed(f"{kind}: mismatch")
                offset += len(chunk)
                self.verified[kind] += len(chunk)
                await asyncio.sleep(0.025)
            await sender
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await closeWriter(writer)
        self.events["slow reader"] += 1

    async def abruptClose(self) -> None:
        """
        Connect anywhere, send part of something, then reset (RST).
        """
        port = self.rng.choice(self.ports)
        reader, writer = await self.connect(port)
        if port.handler in ("echo", "relay"):
            writer.write(self.payload(1, 65536))
        else:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Half: ")
        await asyncio.sleep(self.rng.uniform(0, 0.2))
        resetAndClose(writer)
        self.events[f"reset sent ({port.handler})"] += 1

    async def garbage(self) -> None:
        """
        Send random bytes to an http or https port (plain TCP: no TLS), and
        wait up to 3 s for the daemon to close.
        """
        port = self.rng.choice(self.byHandler["http"] + self.byHandler["https"])
        reader, writer = await self.connect(port, plain=True)
        writer.write(
            self.payload(64, 4096) + (b"\r\n\r\n" if port.handler == "http" else b"")
        )
        try:
            async with asyncio.timeout(3):
                while await reader.read(65536):
                    pass
            self.events["garbage: closed by the daemon"] += 1
        except TimeoutError:
            self.events["garbage: open after 3 s, reset"] += 1
        except OSError:
            self.events["garbage: reset by the daemon"] += 1
        finally:
            resetAndClose(writer)

    async def oneShot(self) -> None:
        """
        One request with C{Connection: close} on an http or https port.
        """
        port = self.rng.choice(self.byHandler["http"] + self.byHandler["https"])
        reader, writer = await self.connect(port)
        try:
            await self.request(port, reader, writer, close=True)
        finally:
            await closeWriter(writer)
        self.events["one-shot request"] += 1

    async def churner(self) -> None:
        """
        Run churning sessions one after another until the load stops.
        """
        sessions: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.shortSession, 3),
            (self.slowReader, 1),
            (self.abruptClose, 3),
            (self.garbage, 2),
            (self.oneShot, 2),
        ]
        kinds, weights = zip(*sessions, strict=True)
        while not self.stopping:
            session = self.rng.choices(kinds, weights)[0]
            try:
                async with asyncio.timeout(CHURN_TIMEOUT):
                    await session()
            except Failed as e:
                self.errors[str(e)] += 1
            except (OSError, TimeoutError, ssl.SSLError) as e:
                self.errors[f"{session.__name__}: {type(e).__name__}"] += 1


class UpstreamEcho(asyncio.Protocol):
    """
    The relay ports' upstream: echoes, and stops reading while its replies
    can't be sent (so a slow relay client holds nothing here either).
    """

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


# --------------------------------------------------------------------------
# The run.


@dataclass
class Options:
    """
    A run's parameters.
    """

    seconds: float = 60.0
    connections: int = 2000
    ports: int = 50
    workers: int = 1
    seed: int | None = None
    json: Path | None = None
    quiet: bool = False


class Soak:
    """
    One soak run: the daemon, the load, the samples, and the figures.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        seed = options.seed if options.seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(seed)
        self.plan = planPorts(options.ports)
        self.figures = Figures(
            seconds=options.seconds,
            connections=options.connections,
            ports=options.ports,
            workers=options.workers,
            seed=seed,
            handlers=dict(self.plan),
        )
        self.daemon: DaemonProcess | None = None
        #: What the run is doing, for the report if it stops short.
        self.step = "starting"
        self.statusPort = 0
        self.rss: list[tuple[float, int]] = []
        self.daemonCurrent: list[tuple[float, int]] = []
        self.loadEnded = 0.0

    def say(self, message: str) -> None:
        """
        A progress line, unless quiet.
        """
        if not self.options.quiet:
            print(message, flush=True)

    async def run(self) -> Figures:
        """
        The whole run, bounded: the load phase plus L{MARGIN}.
        """
        began = time.monotonic()
        figures = self.figures
        bound = self.options.seconds + MARGIN
        with tempfile.TemporaryDirectory(prefix="multiport-soak-") as folder:
            deadline = asyncio.timeout(bound)
            try:
                async with deadline:
                    await self._run(Path(folder))
            except TimeoutError:
                if deadline.expired():
                    figures.aborted = f"did not finish in {bound:g} s ({self.step})"
                else:
                    figures.aborted = f"{self.step}: timed out"
            except (RuntimeError, OSError, ValueError, Failed) as e:
                figures.aborted = f"{self.step}: {type(e).__name__}: {e}"
            finally:
                if self.daemon is not None:
                    # A daemon with nothing open stops at once; one that
                    # does not is killed, so the run stays bounded.
                    await self.daemon.stop(STOP_TIMEOUT)
                    figures.daemonCloses = dict(self.daemon.closes)
                    figures.daemonErrorLines = list(self.daemon.errorLines)
                    if figures.aborted is not None:
                        figures.daemonLogTail = self.daemon.recent[-10:]
        figures.elapsed = time.monotonic() - began
        figures.checks = evaluate(figures)
        return figures

    async def _run(self, folder: Path) -> None:
        options, figures = self.options, self.figures
        limit = raiseFileLimit()
        needed = options.connections * 3 + 500
        if limit < needed:
            raise RuntimeError(
                f"the descriptor limit is {limit}; {needed} are needed "
                f"(raise the hard limit: ulimit -Hn)"
            )
        server = await asyncio.get_running_loop().create_server(
            UpstreamEcho, "127.0.0.1", 0, backlog=1024
        )
        try:
            upstream = server.sockets[0].getsockname()[:2]
            (folder / "multiport.toml").write_text(configText(self.plan, upstream))
            arguments = [
                "--config",
                str(folder / "multiport.toml"),
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(folder / "state"),
            ]
            if options.workers != 1:
                arguments += ["--workers", str(options.workers)]
            self.step = "starting the daemon"
            self.daemon = daemon = await DaemonProcess.start(arguments, folder)
            named = await daemon.listening(options.ports + 1, START_TIMEOUT)
            ports = [
                Port(name, handler, int(name.rpartition(":")[2]))
                for name, handler in named.items()
                if handler != "status"
            ]
            [self.statusPort] = [
                int(name.rpartition(":")[2])
                for name, handler in named.items()
                if handler == "status"
            ]
            tls = ssl.create_default_context(
                cafile=str(folder / "state" / "selfsigned-cert.pem")
            )
            load = Load(ports, options.connections, self.rng, tls)
            self.say(f"daemon {daemon.pid} listening on {len(named)} ports")
            self.step = "probing every port"
            await self.probe(load)
            self.step = "counting descriptors before the load"
            files = await self.quiescentFiles()
            before, pipesBefore = withoutPipes(files)
            figures.fdsBefore = len(before)
            figures.rssBefore = residentKB(daemon.pid)
            self.step = "the load"
            await self.loadPhase(load)
            self.step = "draining"
            await self.drain()
            self.step = "counting descriptors after the load"
            after, pipesAfter = withoutPipes(await self.filesBackTo(len(before)))
            figures.fdsAfter = len(after)
            figures.pipesKept = len(pipesAfter) - len(pipesBefore)
            figures.fdsLeaked = sorted((Counter(after) - Counter(before)).elements())
            figures.rssEnd = await self.settledRSS()
            self.step = "reading the final /status"
            figures.portFigures = portFiguresOf(await self.loadStatus())
            self.step = "done"
        finally:
            server.close()

    async def probe(self, load: Load) -> None:
        """
        One exchange on every port before the load: each works.
        """
        for port in load.ports:
            reader, writer = await load.connect(port)
            try:
                if port.handler in ("echo", "relay"):
                    await load.echo(port, reader, writer, b"probe")
                else:
                    await load.request(port, reader, writer)
            finally:
                await closeWriter(writer)
        for counter in (load.sent, load.verified, load.exchanges):
            counter.clear()

    async def loadStatus(self) -> dict[str, Any]:
        """
        C{/status}, parsed.
        """
        code, body = await fetch(self.statusPort, "/status")
        if code != 200:
            raise Failed(f"/status answered {code}")
        return json.loads(body)  # type: ignore[no-any-return]

    def loadCurrent(self, status: Mapping[str, Any]) -> int:
        """
        Connections open on the load ports, in a C{/status} document.
        """
        return sum(
            port.current for port in portFiguresOf(status) if port.handler != "status"
        )

    async def quiescentFiles(self) -> list[str]:
        """
        The daemon's descriptors once no connection is open and their count
        holds still for three readings.
        """
        assert self.daemon is not None
        async with asyncio.timeout(DRAIN_TIMEOUT):
            while self.loadCurrent(await self.loadStatus()):
                await asyncio.sleep(0.1)
            readings: list[list[str]] = []
            while len(readings) < 3 or len({len(r) for r in readings[-3:]}) > 1:
                readings.append(openFiles(self.daemon.pid))
                await asyncio.sleep(0.1)
        return readings[-1]

    async def filesBackTo(self, count: int) -> list[str]:
        """
        Poll the daemon's descriptors until there are C{count} again besides
        pipes, for at most L{FD_TIMEOUT} seconds; the last reading.
        """
        assert self.daemon is not None
        deadline = time.monotonic() + FD_TIMEOUT
        while True:
            files = openFiles(self.daemon.pid)
            if len(withoutPipes(files)[0]) == count or time.monotonic() > deadline:
                return files
            await asyncio.sleep(0.1)

    async def settledRSS(self) -> int:
        """
        The daemon's resident memory after the drain: the median of three
        readings over a second.
        """
        assert self.daemon is not None
        readings = []
        for _ in range(3):
            await asyncio.sleep(0.4)
            readings.append(residentKB(self.daemon.pid))
        return int(statistics.median(readings))

    async def scraper(self, load: Load) -> None:
        """
        Every second until the load stops: C{/status} and C{/metrics}
        (checked: the counters add up, the metrics are there), and the
        daemon's memory.
        """
        assert self.daemon is not None
        figures = self.figures
        nextReport = 10.0
        while not load.stopping:
            tick = time.monotonic()
            elapsed = tick - load.started
            self.rss.append((elapsed, residentKB(self.daemon.pid)))
            try:
                async with asyncio.timeout(EXCHANGE_TIMEOUT):
                    status = await self.loadStatus()
                    code, metrics = await fetch(self.statusPort, "/metrics")
                if code != 200 or b"multiport_connections_current" not in metrics:
                    raise Failed(f"/metrics answered {code}")
            except (OSError, TimeoutError, ValueError, Failed):
                figures.scrapeFailures += 1
            else:
                figures.scrapes += 1
                if inconsistentPorts(status):
                    figures.inconsistentScrapes += 1
                if load.allHeldAt is not None and elapsed > load.allHeldAt + 1:
                    self.daemonCurrent.append((elapsed, self.loadCurrent(status)))
            if elapsed >= nextReport:
                nextReport += 10
                self.say(
                    f"{elapsed:4.0f} s: {load.holdersOpen} held, "
                    f"{sum(load.exchanges.values()):,} exchanges, "
                    f"{sum(load.errors.values())} errors, "
                    f"RSS {mb(self.rss[-1][1])}"
                )
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

    async def loadPhase(self, load: Load) -> None:
        """
        Ramp the holders up, hold them with the churners beside them for
        C{--seconds}, then stop every client.
        """
        options, figures = self.options, self.figures
        ramp = min(5.0, options.seconds / 5)
        warmUp = max(ramp + 2.0, options.seconds / 4)
        load.started = time.monotonic()
        holders = [
            asyncio.ensure_future(
                load.holder(
                    load.ports[i % len(load.ports)], ramp * i / options.connections
                )
            )
            for i in range(options.connections)
        ]
        churners = [
            asyncio.ensure_future(load.churner())
            for _ in range(max(4, options.connections // 25))
        ]
        scraper = asyncio.ensure_future(self.scraper(load))
        self.say(
            f"load: {options.connections} holders over {ramp:.0f} s, "
            f"{len(churners)} churners, {options.seconds:g} s"
        )
        await asyncio.sleep(options.seconds)
        load.stopping = True
        clients = holders + churners
        _, unfinished = await asyncio.wait([*clients, scraper], timeout=CHURN_TIMEOUT)
        for task in unfinished:
            task.cancel()
            load.errors["unfinished at the end"] += 1
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
        for task in clients:
            if task.done() and not task.cancelled() and task.exception() is not None:
                load.errors[f"crashed: {task.exception()!r}"] += 1
        steady = [rss for t, rss in self.rss if warmUp - 2 <= t <= warmUp]
        figures.rssSteady = int(statistics.median(steady)) if steady else None
        figures.rssPeak = max((rss for _, rss in self.rss), default=None)
        figures.allHeldAt = load.allHeldAt
        figures.heldMin = load.heldMin if load.allHeldAt is not None else 0
        currents = [current for _, current in self.daemonCurrent]
        figures.daemonCurrentMin = min(currents, default=0)
        figures.daemonCurrentPeak = max(currents, default=0)
        figures.exchanges = dict(load.exchanges)
        figures.bytesSent = dict(load.sent)
        figures.bytesVerified = {kind: load.verified[kind] for kind in load.sent}
        figures.mismatches = load.mismatches
        figures.events = dict(load.events)
        figures.errors = dict(load.errors)
        self.loadEnded = time.monotonic()

    async def drain(self) -> None:
        """
        Wait (bounded) until the daemon has no connection open on the load
        ports.
        """
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while self.loadCurrent(await self.loadStatus()):
                    await asyncio.sleep(0.1)
        except TimeoutError:
            return
        self.figures.drainSeconds = time.monotonic() - self.loadEnded


def parseArguments(argv: Sequence[str]) -> Options:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Run a bounded mixed load against a daemon of its own "
        "and check it afterwards.",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="load phase")
    parser.add_argument(
        "--connections", type=int, default=2000, help="connections held at once"
    )
    parser.add_argument("--ports", type=int, default=50, help="load ports")
    parser.add_argument("--workers", type=int, default=1, help="daemon workers")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--json", type=Path, default=None, help="write figures")
    parser.add_argument("--quiet", action="store_true", help="only the report")
    arguments = parser.parse_args(argv)
    if arguments.seconds < 4:
        parser.error("--seconds must be at least 4")
    if arguments.connections < 1:
        parser.error("--connections must be at least 1")
    if arguments.ports < len(SHARES):
        parser.error(f"--ports must be at least {len(SHARES)}")
    if arguments.workers < 1:
        parser.error("--workers must be at least 1")
    return Options(
        seconds=arguments.seconds,
        connections=arguments.connections,
        ports=arguments.ports,
        workers=arguments.workers,
        seed=arguments.seed,
        json=arguments.json,
        quiet=arguments.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run a soak; 0 when every check passed, else 1.
    """
    options = parseArguments(sys.argv[1:] if argv is None else argv)
    figures = asyncio.run(Soak(options).run())
    print(formatReport(figures), flush=True)
    if options.json is not None:
        options.json.write_text(json.dumps(figures.toJSON(), indent=2) + "\n")
    return 0 if passed(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
