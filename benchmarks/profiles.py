"""
Profiles of multiport under a benchmark's load: where its CPU time goes
(py-spy, by the function on top of the stack) and which system calls it
makes per operation (C{strace -c}).

    python -m benchmarks.profiles ROW [ROW ...] --seconds 5

Each row starts the server and its load as the scenario of the same name
does, samples the daemon with py-spy for C{--seconds} under load, then
counts its system calls with strace for as long under a second run of the
load (strace slows the daemon down: the counts are per operation, the rate
under strace is not a figure to quote).  Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from attrs import frozen

from benchmarks import measure, processes, servers, tools
from benchmarks.measure import Sample

#: Runs the load for the seconds given; what the generator measured.
Load = Callable[[float], Sample]
#: Starts a row's servers in the stack; the daemon's process id and its load.
Start = Callable[[Path, ExitStack], tuple[int, Load]]


@frozen
class Entry:
    """
    One line of a profile: a function (or a system call) and its share.

    @ivar share: Of the samples (or of the calls), 0 to 1.
    @ivar perOperation: Calls per operation of the load (system calls only).
    """

    name: str
    share: float
    perOperation: float | None = None


#: A py-spy frame: C{function (file:line)}; --native frames have no line.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frameName(frame: str) -> str:
    """
    A py-spy frame without its line number, its file cut to the last two
    parts of its path: C{doRead (twisted/internet/tcp.py)}.
    """
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = "/".join(Path(match["file"]).parts[-2:])
    return f"{match['function']} ({path})"


def topFunctions(raw: str, count: int = 10) -> list[Entry]:
    """
    The C{count} functions most often on top of the stack in py-spy's raw
    (collapsed) output, each with its share of all samples.
    """
    samples: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples[frameName(stack.split(";")[-1])] += int(number)
    total = sum(samples.values())
    return [Entry(name, n / total) for name, n in samples.most_common(count)]


_STRACE_ROW = re.compile(
    r"^\s*(?P<percent>[\d.]+)\s+[\d.]+\s+\d+\s+(?P<calls>\d+)\s+(?:\d+\s+)?(?P<name>\w+)$"
)


def topSyscalls(table: str, operations: float, count: int = 8) -> list[Entry]:
    """
    The C{count} system calls C{strace -c} counted most often, each with its
    share of all calls and its calls per one of C{operations}.
    """
    calls: dict[str, int] = {}
    for line in table.splitlines():
        match = _STRACE_ROW.match(line)
        if match is not None and match["name"] != "total":
            calls[match["name"]] = int(match["calls"])
    total = sum(calls.values())
    ranked = sorted(calls.items(), key=lambda item: -item[1])[:count]
    return [
        Entry(name, n / total, n / operations if operations else None)
        for name, n in ranked
    ]


def _loadFor(run: Callable[[float, float], Sample]) -> Load:
    return lambda seconds: run(seconds, 0.5)


def _relayRoundTrips(workdir: Path, stack: ExitStack) -> tuple[int, Load]:
    upstream, port = processes.freePorts(2)
    stack.enter_context(servers.echoServer(workdir, upstream))
    relay = stack.enter_context(servers.multiportRelay(workdir, port, upstream))
    return relay.process.pid, _loadFor(
        lambda seconds, warmup: measure.echo([port], 32, seconds, 64, warmup)
    )


def _relayBulk(workdir: Path, stack: ExitStack) -> tuple[int, Load]:
    upstream, port = processes.freePorts(2)
    sink = stack.enter_context(servers.sink(workdir, upstream))
    relay = stack.enter_context(servers.multiportRelay(workdir, port, upstream))
    return relay.process.pid, _loadFor(
        lambda seconds, warmup: measure.stream(
            port, 4, seconds, warmup, sink=sink.process.pid
        )
    )


def _web(headers: Sequence[str]) -> Start:
    def start(workdir: Path, stack: ExitStack) -> tuple[int, Load]:
        [port] = processes.freePorts(1)
        web = stack.enter_context(servers.multiportWeb(workdir, port))
        url = f"http://127.0.0.1:{port}/index.html"
        return web.process.pid, lambda seconds: measure.wrk(url, 50, seconds, headers)

    return start


def _echo(make: Callable[[Path, int], servers.Server]) -> Start:
    def start(workdir: Path, stack: ExitStack) -> tuple[int, Load]:
        [port] = processes.freePorts(1)
        server = stack.enter_context(make(workdir, port))
        return server.process.pid, _loadFor(
            lambda seconds, warmup: measure.echo([port], 32, seconds, 64, warmup)
        )

    return start


#: The rows of issue 24's table that have a load: name, and how to start it.
ROWS: dict[str, Start] = {
    "relay-rr": _relayRoundTrips,
    "relay-bulk": _relayBulk,
    "http-keepalive": _web(()),
    "http-new": _web(("Connection: close",)),
    "echo": _echo(servers.multiportEcho),
    # The same handler without the per-port layer, on the same transport
    # and reactor (the layer scenario's baseline).
    "echo-bare": _echo(partial(servers.fastEcho, reactor=True)),
}


def _whileLoaded(
    tool: Sequence[str], load: Load, seconds: float, stop: bool
) -> tuple[Sample, float]:
    """
    Run C{tool} beside C{load} (for C{seconds} and a second more, so that
    the tool's attach time is covered); with C{stop}, interrupt the tool
    once the load ends, as strace must be.  What the load measured, and
    how long it ran in all (its warm-up included).
    """
    process = subprocess.Popen(
        list(tool), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    watchdog = threading.Timer(seconds + 60, process.kill)
    watchdog.start()
    try:
        started = time.monotonic()
        sample = load(seconds + 1)
        elapsed = time.monotonic() - started
        if stop:
            process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=seconds + 60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"{tool[0]} failed: {errors.decode(errors='replace')}")
    return sample, elapsed


def profile(
    row: str, seconds: float, workdir: Path, native: bool = False
) -> tuple[list[Entry], list[Entry], Sample]:
    """
    Profile C{row}: its top functions (py-spy) and system calls (strace,
    per operation of the load), and the load's figures under py-spy.
    """
    with ExitStack() as stack:
        pid, load = ROWS[row](workdir, stack)
        rawPath = workdir / f"{row}.pyspy.txt"
        spy = [
            tools.command("py-spy"),
            "record",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            "250",
            "--duration",
            str(max(1, round(seconds))),
            "--pid",
            str(pid),
            "--output",
            str(rawPath),
        ]
        sampled, _ = _whileLoaded(
            spy + (["--native"] if native else []), load, seconds, False
        )
        tablePath = workdir / f"{row}.strace.txt"
        traced, elapsed = _whileLoaded(
            [tools.command("strace"), "-c", "-f", "-o", str(tablePath), "-p", str(pid)],
            load,
            seconds,
            True,
        )
        functions = topFunctions(rawPath.read_text())
        # Operations under strace: the load's rate over all the time it ran
        # (a warm-up is not counted by the generator, but was traced).
        calls = topSyscalls(tablePath.read_text(), traced.value * elapsed)
    return functions, calls, sampled


def table(title: str, entries: Sequence[Entry]) -> str:
    """
    C{entries} as an reStructuredText table under C{title}.
    """
    perOperation = any(e.perOperation is not None for e in entries)
    rows = [
        (e.name, f"{100 * e.share:.1f}%")
        + (
            (f"{e.perOperation:.2f}" if e.perOperation is not None else "",)
            if perOperation
            else ()
        )
        for e in entries
    ]
    header = (title, "share") + (("per operation",) if perOperation else ())
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = " ".join("=" * w for w in widths)
    lines = [
        rule,
        " ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        rule,
    ]
    lines += [
        " ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]
    return "\n".join([*lines, rule])


def main(argv: Sequence[str] | None = None) -> int:
    """
    Profile the rows asked for and print their tables.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profiles", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("rows", nargs="+", choices=sorted(ROWS), metavar="ROW")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--keep", type=Path, help="folder for the raw profiles")
    options = parser.parse_args(argv)
    needs = ["gcc", "py-spy", "strace"]
    if any(row.startswith("http") for row in options.rows):
        needs.append("wrk")
    missing = tools.missing(needs)
    if missing:
        print(tools.installHint(missing), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        # The servers run in it: a relative path would not be theirs.
        workdir = (options.keep or Path(scratch)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for row in options.rows:
            functions, calls, sample = profile(
                row, options.seconds, workdir, options.native
            )
            print(f"{row}: {sample.value:,.0f}/s under py-spy")
            print(table("function (py-spy, on top of the stack)", functions))
            print(table("system call (strace -c -f)", calls))
            print()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        processes.stopAll()
