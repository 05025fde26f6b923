"""
The benchmark command: ``python -m benchmarks [SCENARIO ...]``.

It checks the tools, runs the scenarios asked for (all by default), prints a
table per scenario, and writes ``results/<date>-<scenario>.json`` and
``.png``.  Every server and load generator it starts is ended before it
exits, and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks import processes, report, tools
from benchmarks.scenarios import SCENARIOS, Settings

RESULTS = Path(__file__).resolve().parent / "results"


def cpuModel() -> str:
    """
    The CPU's model name, as /proc/cpuinfo gives it.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(argv: Sequence[str], pattern: str) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else None


def versions() -> dict[str, str | None]:
    """
    The versions of everything measured.
    """
    import multiport
    import twisted

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "multiport": multiport.__version__,
    }
    if tools.have("uvloop"):
        import uvloop

        found["uvloop"] = uvloop.__version__
    if tools.have("nginx"):
        found["nginx"] = _version([tools.command("nginx"), "-v"], r"nginx/(\S+)")
    if tools.have("wrk"):
        found["wrk"] = _version([tools.command("wrk"), "-v"], r"wrk (\S+)")
    if tools.have("h2load"):
        found["h2load"] = _version(
            [tools.command("h2load"), "--version"], r"nghttp2/(\S+)"
        )
    if tools.have("socat"):
        found["socat"] = _version(
            [tools.command("socat"), "-V"], r"socat version (\S+)"
        )
    if tools.have("haproxy"):
        found["haproxy"] = _version(
            [tools.command("haproxy"), "-v"], r"HAProxy version (\S+)"
        )
    return found


def machine() -> dict[str, object]:
    """
    The machine the figures were measured on.
    """
    return {
        "cores": os.cpu_count(),
        "usable_cores": processes.cores(),
        "cpu": cpuModel(),
        "kernel": platform.release(),
        "pinning": processes.cores() >= 2 and tools.have("taskset"),
    }


def parser() -> argparse.ArgumentParser:
    """
    The command line.
    """
    options = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure multiport against its peers on this machine.",
    )
    options.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}",
    )
    options.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="length of one measurement (default 5)",
    )
    options.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds per contender, alternating (default 3)",
    )
    options.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="seconds of load before counting (default 0.5)",
    )
    options.add_argument(
        "--idle-connections",
        type=int,
        default=10_000,
        help="connections the idle scenario holds (default 10000)",
    )
    options.add_argument(
        "--file-limit",
        type=int,
        default=20_000,
        help="descriptor limit of every relay in the idle-relay scenario "
        "(default 20000)",
    )
    options.add_argument(
        "--port-counts",
        default="1,100,1000,10000",
        help="port counts of the ports scenario (default 1,100,1000,10000)",
    )
    options.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder for the JSON and PNG files",
    )
    options.add_argument("--no-plot", action="store_true", help="write no PNG")
    options.add_argument(
        "--list", action="store_true", help="list scenarios, then exit"
    )
    options.add_argument(
        "--replot",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="draw the plots of results files again (next to them), then exit",
    )
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmarks; 0 if every scenario asked for ran.
    """
    arguments = parser().parse_args(argv)
    if arguments.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:<8} {scenario.title}")
        return 0
    if arguments.replot:
        for path in arguments.replot:
            data = json.loads(path.read_text())
            summaries = report.fromJSON(data)
            if data.get("scenario") in SCENARIOS:
                summaries = SCENARIOS[data["scenario"]].toPlot(summaries)
            report.plot(path.with_suffix(".png"), data["title"], summaries)
        return 0
    unknown = [name for name in arguments.scenarios if name not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    if arguments.rounds < 1 or arguments.seconds <= 0:
        print("--rounds must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    chosen = [SCENARIOS[name] for name in arguments.scenarios or SCENARIOS]
    plotting = not arguments.no_plot
    if plotting and not tools.have("matplotlib"):
        print(
            "matplotlib is missing, so no plots:\n" + tools.installHint(["matplotlib"]),
            file=sys.stderr,
        )
        plotting = False
    date = datetime.date.today().isoformat()
    context = {
        "date": date,
        "command": shlex.join(
            ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "seconds": arguments.seconds,
            "rounds": arguments.rounds,
            "warmup": arguments.warmup,
        },
    }
    failed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="multiport-bench-") as folder:
            settings = Settings(
                workdir=Path(folder),
                seconds=arguments.seconds,
                rounds=arguments.rounds,
                warmup=arguments.warmup,
                idleConnections=arguments.idle_connections,
                fileLimit=arguments.file_limit,
                portCounts=tuple(int(n) for n in arguments.port_counts.split(",")),
            )
            for scenario in chosen:
                absent = tools.missing(scenario.needs)
                if absent:
                    print(
                        f"skipping {scenario.name}: missing\n"
                        + tools.installHint(absent),
                        file=sys.stderr,
                    )
                    failed += 1
                    continue
                left = tools.missing(scenario.optional)
                if left:
                    print(
                        f"{scenario.name}: leaving out what needs\n"
                        f"{tools.installHint(left)}",
                        file=sys.stderr,
                    )
                if "gcc" in scenario.needs:
                    tools.loadgen()
                summaries = report.summarize(scenario.run(settings))
                print(report.table(scenario.title, summaries), end="\n\n", flush=True)
                stem = arguments.results / f"{date}-{scenario.name}"
                report.writeJSON(
                    stem.with_suffix(".json"),
                    report.toJSON(scenario.name, scenario.title, summaries, context),
                )
                if plotting:
                    report.plot(
                        stem.with_suffix(".png"),
                        scenario.title,
                        scenario.toPlot(summaries),
                    )
    finally:
        processes.stopAll()
    return 1 if failed else 0
