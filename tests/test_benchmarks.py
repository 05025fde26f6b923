"""
Tests for the benchmark suite's own code (L{benchmarks}): that it reads what
the load generators print, summarizes and writes the figures, and starts and
stops its servers cleanly.  The benchmarks themselves are not run here, only
tiny runs of a second or less per measurement.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

import benchmarks
from benchmarks import (
    measure,
    processes,
    report,
    run,
    scenarios,
    servers,
    sharing,
    tools,
)
from benchmarks.measure import Sample
from benchmarks.scenarios import Scenario, Series, Settings
from tests.support import waitUntil

PYTHON = sys.executable

#: wrk 4.1's report of a clean run.
WRK_CLEAN = """\
Running 1s test @ http://127.0.0.1:8080/index.html
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  312.45us   8.91ms   91.20%
    Req/Sec    48.77k     2.10k   51.30k    80.00%
  48531 requests in 1.00s, 39.45MB read
Requests/sec:  48512.37
Transfer/sec:     39.43MB
"""

#: wrk 4.1's report of a run where some requests failed.
WRK_ERRORS = """\
Running 1s test @ https://127.0.0.1:8443/index.html
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.31ms    2.04ms  41.77ms   88.02%
    Req/Sec     4.87k   301.12     5.20k    70.00%
  4871 requests in 1.00s, 3.95MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   4869.12
Transfer/sec:      3.95MB
"""

#: A report with the rate in thousands and the duration in minutes.
WRK_THOUSANDS = """\
Running 1m test @ http://127.0.0.1:8080/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   811.20us  100.02us   3.01ms   95.00%
    Req/Sec    12.35k   400.00    13.00k    75.00%
  740400 requests in 1.00m, 450.11MB read
Requests/sec:  12.34k
Transfer/sec:      7.50MB
"""

#: What wrk prints when nothing listens.
WRK_REFUSED = "unable to connect to 127.0.0.1:1 Connection refused\n"

LOADGEN_ECHO = (
    '{"mode": "echo", "ops": 3000, "seconds": 0.300012, '
    '"cpu_seconds": 0.120000, "errors": 0}\n'
)
LOADGEN_STREAM = (
    '{"mode": "stream", "ops": 2215641088, "seconds": 1.000383, '
    '"cpu_seconds": 0.808063, "errors": 0}\n'
)
LOADGEN_HOLD = (
    'ready\n{"mode": "hold", "ops": 50, "seconds": 0.010000, '
    '"cpu_seconds": 0.002000, "errors": 0}\n'
)


def requireTools(*names: str) -> None:
    """
    Skip the test unless every one of C{names} is available.
    """
    for name in names:
        if not tools.have(name):
            raise SkipTest(f"{name} is not installed: {tools.INSTALL[name]}")


def state(pid: int) -> str | None:
    """
    The state letter of process C{pid} (C{None} if there is none).
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """
    Whether process C{pid} exists and has not ended (a zombie has ended: the
    machine's init may be slow to reap what it inherits).
    """
    return state(pid) not in (None, "Z", "X")


def liveSession(leader: int) -> list[int]:
    """
    The processes of C{leader}'s session that have not ended.
    """
    return [pid for pid in processes.sessionPids(leader) if alive(pid)]


def waitSessionEnded(leader: int, timeout: float = 10) -> None:
    """
    Wait up to C{timeout} seconds for every process of C{leader}'s session
    to end (killed processes take a moment); fail naming those left.
    """
    waitUntil(lambda: liveSession(leader), timeout, accept=lambda pids: not pids)


def killSession(leader: int) -> None:
    """
    Kill whatever of C{leader}'s session is left, should a test fail.
    """
    for pid in liveSession(leader):
        os.kill(pid, signal.SIGKILL)


def liveChildren() -> set[int]:
    """
    The running children of this process.
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def series(
    variant: str,
    contender: str,
    values: Sequence[float],
    baseline: bool = False,
    metric: str = "round trips",
    cpu: float | None = None,
) -> Series:
    """
    A series of C{values}, each sample with generator CPU C{cpu}.
    """
    return Series(
        variant,
        contender,
        metric,
        "/s",
        baseline=baseline,
        samples=[Sample(value, cpu) for value in values],
    )


class ParseWrkTests(SynchronousTestCase):
    """
    L{measure.parseWrk} reads wrk's report.
    """

    def test_clean(self) -> None:
        """
        A clean run gives its rate, its request count and no errors.
        """
        self.assertEqual(
            measure.parseWrk(WRK_CLEAN),
            {"rate": 48512.37, "requests": 48531.0, "errors": 0.0},
        )

    def test_errors(self) -> None:
        """
        Socket errors of every kind and non-2xx responses all count as errors.
        """
        self.assertEqual(
            measure.parseWrk(WRK_ERRORS),
            {"rate": 4869.12, "requests": 4871.0, "errors": 9.0},
        )

    def test_thousands(self) -> None:
        """
        A rate with a C{k} suffix is in thousands, and a run measured in
        minutes still gives its request count.
        """
        self.assertEqual(
            measure.parseWrk(WRK_THOUSANDS),
            {"rate": 12340.0, "requests": 740400.0, "errors": 0.0},
        )

    def test_millions(self) -> None:
        """
        A rate with an C{M} suffix is in millions.
        """
        output = WRK_CLEAN.replace("48512.37", "1.5M")
        self.assertEqual(measure.parseWrk(output)["rate"], 1_500_000.0)

    def test_noRate(self) -> None:
        """
        Output without a rate raises L{ValueError} naming what is missing.
        """
        error = self.assertRaises(ValueError, measure.parseWrk, WRK_REFUSED)
        self.assertIn("no Requests/sec", str(error))


#: h2load 1.52's report of a clean HTTP/2 run stopped by its duration,
#: with requests in flight at the stop (counted failed).
H2LOAD_CLEAN = """\
starting benchmark...
spawning thread #0: 10 total client(s). (...)
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 1.00s, 1530.00 req/s, 1.11MB/s
requests: 1630 total, 1630 started, 1630 done, 1530 succeeded, 100 failed, \
100 errored, 0 timeout
status codes: 1530 2xx, 0 3xx, 0 4xx, 0 5xx
"""

#: What h2load prints when nothing listens.
H2LOAD_REFUSED = """\
starting benchmark...
spawning thread #0: 1 total client(s). (...)

finished in 301.40ms, 0.00 req/s, 0B/s
requests: 0 total, 0 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
"""


class ParseH2loadTests(SynchronousTestCase):
    """
    L{measure.parseH2load} reads h2load's report.
    """

    def test_clean(self) -> None:
        """
        A clean run gives its rate, its counts and the protocol.
        """
        self.assertEqual(
            measure.parseH2load(H2LOAD_CLEAN),
            measure.H2loadReport(
                rate=1530.0,
                succeeded=1530,
                failed=100,
                timeouts=0,
                non2xx=0,
                protocol="h2",
            ),
        )

    def test_answers(self) -> None:
        """
        Answers other than 2xx are counted; a run without a connection has
        no protocol.
        """
        report = measure.parseH2load(
            H2LOAD_REFUSED.replace("0 4xx, 0 5xx", "3 4xx, 2 5xx")
        )
        self.assertEqual((report.non2xx, report.protocol), (5, None))

    def test_noResult(self) -> None:
        """
        Output without a result raises L{ValueError}.
        """
        self.assertRaises(ValueError, measure.parseH2load, "starting benchmark...\n")

    def test_refused(self) -> None:
        """
        A real h2load run against a port where nothing listens raises
        L{RuntimeError}: no figure is made of no answer.
        """
        requireTools("h2load")
        [port] = processes.freePorts(1)
        error = self.assertRaises(
            RuntimeError,
            measure.h2load,
            f"https://127.0.0.1:{port}/",
            1,
            1,
            0.3,
            0.0,
            core=None,
        )
        self.assertIn("over None, not h2", str(error))


class ParseLoadgenTests(SynchronousTestCase):
    """
    L{measure.parseLoadgen} reads the load generator's JSON line.
    """

    def test_result(self) -> None:
        """
        The JSON line becomes a dictionary.
        """
        self.assertEqual(
            measure.parseLoadgen(LOADGEN_ECHO),
            {
                "mode": "echo",
                "ops": 3000,
                "seconds": 0.300012,
                "cpu_seconds": 0.12,
                "errors": 0,
            },
        )

    def test_stream(self) -> None:
        """
        Stream mode's line gives the bytes written as its operations, beyond
        what 32 bits hold.
        """
        self.assertEqual(
            measure.parseLoadgen(LOADGEN_STREAM),
            {
                "mode": "stream",
                "ops": 2_215_641_088,
                "seconds": 1.000383,
                "cpu_seconds": 0.808063,
                "errors": 0,
            },
        )

    def test_ready(self) -> None:
        """
        The C{ready} line that hold mode prints first is not the result.
        """
        self.assertEqual(measure.parseLoadgen(LOADGEN_HOLD)["ops"], 50)

    def test_last(self) -> None:
        """
        Of several JSON lines the last one is the result, even with other
        output after it.
        """
        output = (
            LOADGEN_ECHO
            + LOADGEN_ECHO.replace("3000", "4000")
            + "loadgen: write: Broken pipe\n"
        )
        self.assertEqual(measure.parseLoadgen(output)["ops"], 4000)

    def test_none(self) -> None:
        """
        Output without a JSON line raises L{ValueError}.
        """
        self.assertRaises(ValueError, measure.parseLoadgen, "ready\n")
        self.assertRaises(ValueError, measure.parseLoadgen, "")


class SampleTests(SynchronousTestCase):
    """
    L{Sample.saturated} says when the load generator was at its limit.
    """

    def test_saturated(self) -> None:
        """
        A generator at 90% of its core or more is saturated; below that, or
        with no generator, it is not.
        """
        self.assertEqual(
            [Sample(1, cpu).saturated for cpu in (0.95, 0.9, 0.89, None)],
            [True, True, False, False],
        )


class SummarizeTests(SynchronousTestCase):
    """
    L{report.summarize} reduces series to figures.
    """

    def test_figures(self) -> None:
        """
        Every series gets its median, minimum and maximum.
        """
        [summary] = report.summarize([series("v", "a", [300, 100, 250, 400])])
        self.assertEqual((summary.median, summary.low, summary.high), (275.0, 100, 400))

    def test_ratioToSameVariant(self) -> None:
        """
        The ratio is to the baseline of the same variant, not another one's.
        """
        summaries = report.summarize(
            [
                series("1 connection", "twisted", [100, 200, 300], baseline=True),
                series("1 connection", "multiport", [150, 300, 450]),
                series("100 connections", "twisted", [1000], baseline=True),
                series("100 connections", "multiport", [500]),
            ]
        )
        self.assertEqual([s.ratio for s in summaries], [1.0, 1.5, 1.0, 0.5])

    def test_ratioToMetricBaseline(self) -> None:
        """
        Where a variant has no baseline of its own (the variants are the sizes
        compared), the ratio is to the one baseline of the same metric.
        """
        summaries = report.summarize(
            [
                series("1 ports", "multiport", [2.0], True, metric="start-up"),
                series("10 ports", "multiport", [3.0], metric="start-up"),
                series("1 ports", "multiport", [10.0], True, metric="memory"),
                series("10 ports", "multiport", [40.0], metric="memory"),
            ]
        )
        self.assertEqual([s.ratio for s in summaries], [1.0, 1.5, 1.0, 4.0])

    def test_noBaseline(self) -> None:
        """
        Without any baseline for the metric there is no ratio.
        """
        summaries = report.summarize(
            [
                series("v", "a", [1.0], baseline=True, metric="other"),
                series("v", "b", [2.0]),
            ]
        )
        self.assertEqual([s.ratio for s in summaries], [1.0, None])

    def test_emptyDropped(self) -> None:
        """
        Series without samples are left out.
        """
        kept = series("v", "a", [1.0])
        summaries = report.summarize([series("v", "b", []), kept])
        self.assertEqual([s.series for s in summaries], [kept])

    def test_saturated(self) -> None:
        """
        The summary counts the saturated samples and keeps the generator's
        highest CPU use.
        """
        cpus = [0.95, 0.5, 0.9, None]
        samples = [Sample(1.0, cpu) for cpu in cpus]
        [summary] = report.summarize([Series("v", "a", "m", "/s", samples=samples)])
        self.assertEqual((summary.saturated, summary.generatorCPU), (2, 0.95))


class TableTests(SynchronousTestCase):
    """
    L{report.table} prints the summaries.
    """

    def setUp(self) -> None:
        self.text = report.table(
            "Echo round trips",
            report.summarize(
                [
                    series("1 connection", "twisted", [1000], True, cpu=0.5),
                    series("1 connection", "multiport", [1500], cpu=0.95),
                ]
            ),
        )
        self.lines = self.text.splitlines()

    def test_title(self) -> None:
        """
        The table starts with its title.
        """
        self.assertEqual(self.lines[0], "Echo round trips")

    def test_header(self) -> None:
        """
        The header names every column.
        """
        [header] = [line for line in self.lines if line.startswith("variant")]
        self.assertEqual(
            header.split(),
            ["variant", "contender", "metric", "median", "min", "max", "ratio"]
            + ["errors", "gen", "CPU"],
        )

    def test_rows(self) -> None:
        """
        Each row gives the figures, the baseline marked, the ratio with two
        decimals, the errors, and the generator's CPU flagged when saturated.
        """
        rows = [line.split() for line in self.lines if line.startswith("1 conn")]
        self.assertEqual(
            rows,
            [
                ["1", "connection", "twisted", "(baseline)", "round", "trips"]
                + ["(/s)", "1,000", "1,000", "1,000", "1.00", "0", "50%"],
                ["1", "connection", "multiport", "round", "trips"]
                + ["(/s)", "1,500", "1,500", "1,500", "1.50", "0", "95%", "SATURATED"],
            ],
        )


class ReplotTests(SynchronousTestCase):
    """
    A results file is read back and plotted again.
    """

    def writeResults(self) -> Path:
        summaries = report.summarize(
            [
                Series(
                    "v",
                    "twisted",
                    "m",
                    "/s",
                    baseline=True,
                    samples=[Sample(2.0, 0.5, 1), Sample(4.0, None, 0)],
                ),
                Series("v", "multiport", "m", "/s", samples=[Sample(3.0, 0.4, 0)]),
            ]
        )
        path = Path(self.mktemp()) / "2024-01-02-echo.json"
        report.writeJSON(path, report.toJSON("echo", "Echo", summaries, {}))
        return path

    def test_fromJSON(self) -> None:
        """
        fromJSON gives back the samples, medians and ratios written.
        """
        data = json.loads(self.writeResults().read_text())
        [base, ours] = report.fromJSON(data)
        self.assertEqual([x.value for x in base.series.samples], [2.0, 4.0])
        self.assertEqual([x.errors for x in base.series.samples], [1, 0])
        self.assertEqual((base.median, ours.median, ours.ratio), (3.0, 3.0, 1.0))
        self.assertTrue(base.series.baseline)

    def test_replot(self) -> None:
        """
        --replot draws the PNG next to the JSON file and exits 0.
        """
        requireTools("matplotlib")
        path = self.writeResults()
        self.assertEqual(run.main(["--replot", str(path)]), 0)
        self.assertEqual(
            path.with_suffix(".png").read_bytes()[:8], b"\x89PNG\r\n\x1a\n"
        )


class JSONTests(SynchronousTestCase):
    """
    L{report.toJSON} and L{report.writeJSON} write the results file.
    """

    def test_roundTrip(self) -> None:
        """
        The file holds the context and every series' samples and figures.
        """
        samples = [Sample(2.0, 0.5, 1), Sample(4.0, None, 0)]
        summaries = report.summarize(
            [
                Series("v", "a", "m", "/s", baseline=True, samples=samples),
                Series("v", "b", "m", "/s", higherIsBetter=False),
            ]
        )
        path = Path(self.mktemp()) / "deeper" / "results.json"
        report.writeJSON(
            path, report.toJSON("echo", "Echo", summaries, {"date": "2024-01-02"})
        )
        self.assertEqual(
            json.loads(path.read_text()),
            {
                "scenario": "echo",
                "title": "Echo",
                "date": "2024-01-02",
                "results": [
                    {
                        "variant": "v",
                        "contender": "a",
                        "metric": "m",
                        "unit": "/s",
                        "baseline": True,
                        "higher_is_better": True,
                        "samples": [2.0, 4.0],
                        "generator_cpu": [0.5, None],
                        "errors": [1, 0],
                        "median": 3.0,
                        "min": 2.0,
                        "max": 4.0,
                        "ratio": 1.0,
                        "generator_saturated": 0,
                    }
                ],
            },
        )


class PlotTests(SynchronousTestCase):
    """
    L{report.plot} draws the summaries.
    """

    def test_png(self) -> None:
        """
        The plot is a PNG file, written into a folder made for it.
        """
        requireTools("matplotlib")
        summaries = report.summarize(
            [
                series("1 connection", "twisted", [100, 120], baseline=True),
                series("1 connection", "multiport", [90, 110]),
                series("100 connections", "twisted", [1000], baseline=True),
                series("100 connections", "multiport", [900]),
                series("1 ports", "multiport", [0.2], True, metric="start-up"),
            ]
        )
        path = Path(self.mktemp()) / "plots" / "echo.png"
        report.plot(path, "Echo", summaries)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")


class AlternationTests(SynchronousTestCase):
    """
    L{scenarios.rotations}, L{scenarios.alternate} and L{scenarios._spread}.
    """

    def test_rotations(self) -> None:
        """
        Each round starts one further along, wrapping around.
        """
        self.assertEqual(
            list(scenarios.rotations("abc", 4)),
            [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]],
        )

    def test_alternate(self) -> None:
        """
        Every contender is measured once per round, in rotating order, and
        each sample goes to its own series.
        """
        measured: list[str] = []

        def contender(name: str) -> tuple[Series, Callable[[], Sample]]:
            def measureIt() -> Sample:
                measured.append(name)
                return Sample(float(len(measured)))

            return Series("v", name, "m", "/s"), measureIt

        contenders = [contender(name) for name in "xyz"]
        scenarios.alternate(2, contenders)
        self.assertEqual(
            (measured, [[s.value for s in c.samples] for c, _ in contenders]),
            (["x", "y", "z", "y", "z", "x"], [[1.0, 6.0], [2.0, 4.0], [3.0, 5.0]]),
        )

    def test_spread(self) -> None:
        """
        The ports chosen are evenly spaced, starting with the first.
        """
        self.assertEqual(
            scenarios._spread(list(range(1000, 1010)), 5),
            [1000, 1002, 1004, 1006, 1008],
        )

    def test_spreadMany(self) -> None:
        """
        Spread over many ports, the ones chosen are distinct and evenly spaced.
        """
        chosen = scenarios._spread(list(range(10_000)), 100)
        self.assertEqual(chosen, list(range(0, 10_000, 100)))

    def test_spreadFew(self) -> None:
        """
        With no more ports than asked for, every one of them is chosen.
        """
        self.assertEqual(scenarios._spread([7, 8, 9], 5), [7, 8, 9])
        self.assertEqual(scenarios._spread([7, 8, 9], 3), [7, 8, 9])


#: A C{/status?workers=1} document of a daemon with two workers: an echo
#: port, then its status port.
STATUS_WORKERS = {
    "version": "0.1.0",
    "ports": [
        {
            "name": "tcp:127.0.0.1:7001",
            "port": 7001,
            "handler": "echo",
            "connections": {"current": 0, "accepted": 101, "closed": 101},
            "bytes": {"received": 9000, "sent": 9000},
            "workers": [
                {
                    "worker": 1,
                    "pid": 502,
                    "listening": True,
                    "connections": {"current": 0, "accepted": 30, "closed": 30},
                    "bytes": {"received": 4000, "sent": 4000},
                },
                {
                    "worker": 0,
                    "pid": 501,
                    "listening": True,
                    "connections": {"current": 0, "accepted": 71, "closed": 71},
                    "bytes": {"received": 5000, "sent": 5000},
                },
            ],
        },
        {
            "name": "tcp:127.0.0.1:9099",
            "port": 9099,
            "handler": "status",
            "connections": {"current": 1, "accepted": 3, "closed": 2},
            "bytes": {"received": 300, "sent": 3000},
            "workers": [],
        },
    ],
}


def statusDocument(*workers: tuple[int, int], port: int = 7001) -> dict[str, object]:
    """
    A status document for C{port} whose workers have accepted and still
    hold the given C{(accepted, current)} connections.
    """
    return {
        "ports": [
            {
                "port": port,
                "handler": "echo",
                "workers": [
                    {
                        "worker": index,
                        "pid": 500 + index,
                        "connections": {"accepted": accepted, "current": current},
                        "bytes": {"received": 0, "sent": 0},
                    }
                    for index, (accepted, current) in enumerate(workers)
                ],
            }
        ]
    }


class SharingTests(SynchronousTestCase):
    """
    L{benchmarks.sharing}: each worker's figures from the status port, and
    how evenly they are spread.
    """

    def test_portFigures(self) -> None:
        """
        Each worker's figures for the port, by worker number.
        """
        self.assertEqual(
            sharing.portFigures(STATUS_WORKERS, 7001),
            [
                sharing.WorkerFigures(0, 501, 71, 0, 5000, 5000),
                sharing.WorkerFigures(1, 502, 30, 0, 4000, 4000),
            ],
        )

    def test_portFiguresWithoutWorkers(self) -> None:
        """
        A daemon without workers (C{--workers 1}) lists none: the port's own
        figures are its one worker's, without a process id.
        """
        document = json.loads(json.dumps(STATUS_WORKERS))
        del document["ports"][0]["workers"]
        self.assertEqual(
            sharing.portFigures(document, 7001),
            [sharing.WorkerFigures(0, None, 101, 0, 9000, 9000)],
        )

    def test_portFiguresMissing(self) -> None:
        """
        A port the document does not have is a L{LookupError}; the status
        port itself is never the port measured.
        """
        self.assertRaises(LookupError, sharing.portFigures, STATUS_WORKERS, 7002)
        self.assertRaises(LookupError, sharing.portFigures, STATUS_WORKERS, 9099)

    def test_minus(self) -> None:
        """
        What a worker did between two readings; connections still open are
        the later reading's.
        """
        earlier = sharing.WorkerFigures(0, 501, 1, 1, 10, 20)
        later = sharing.WorkerFigures(0, 501, 61, 0, 110, 220)
        self.assertEqual(
            later.minus(earlier), sharing.WorkerFigures(0, 501, 60, 0, 100, 200)
        )

    def test_smallestShare(self) -> None:
        """
        The smallest value as a percentage of the total: 50 for an even
        split, 100 for one alone, 0 for an idle worker or no work at all.
        """
        self.assertEqual(
            [
                sharing.smallestShare(values)
                for values in ([30, 70], [50, 50], [7], [0, 9], [0, 0], [], [1, 1, 2])
            ],
            [30.0, 50.0, 100.0, 0.0, 0.0, 0.0, 25.0],
        )

    def test_spreadFromStatus(self) -> None:
        """
        The smaller worker's share of the connections a measurement made,
        from the status documents before and after it.
        """
        before = sharing.portFigures(statusDocument((1, 0), (0, 0)), 7001)
        after = sharing.portFigures(STATUS_WORKERS, 7001)
        done = [now.minus(then) for now, then in zip(after, before, strict=True)]
        self.assertEqual(
            (
                [f.accepted for f in done],
                sharing.smallestShare([f.accepted for f in done]),
            ),
            ([70, 30], 30.0),
        )


class SettleTests(SynchronousTestCase):
    """
    L{sharing.settle} polls the status port until the figures have settled.
    """

    def settle(
        self,
        answers: Sequence[object],
        minimum: int = 100,
        workers: int = 2,
        timeout: float = 20,
    ) -> tuple[list[sharing.WorkerFigures], float, int]:
        """
        Settle on C{answers}, one a poll (the last one repeated; an
        exception is raised), a second apart: the figures, the seconds
        taken and the polls made.
        """
        now = [0.0]
        polls = [0]

        def fetch() -> object:
            answer = answers[min(polls[0], len(answers) - 1)]
            polls[0] += 1
            if isinstance(answer, BaseException):
                raise answer
            return answer

        def sleep(seconds: float) -> None:
            now[0] += 1.0

        figures = sharing.settle(
            fetch,  # type: ignore[arg-type]
            7001,
            workers,
            minimum,
            timeout=timeout,
            clock=lambda: now[0],
            sleep=sleep,
        )
        return figures, now[0], polls[0]

    def test_done(self) -> None:
        """
        At once when the connections asked for were all accepted and are
        closed.
        """
        figures, _, polls = self.settle([statusDocument((60, 0), (41, 0))])
        self.assertEqual(
            ([f.accepted for f in figures], [f.pid for f in figures], polls),
            ([60, 41], [500, 501], 1),
        )

    def test_lagging(self) -> None:
        """
        Until every worker reports, the connections are all counted and none
        is still open, it polls again; a status port not answering yet too.
        """
        _, _, polls = self.settle(
            [
                ConnectionRefusedError(),
                statusDocument((1, 0)),
                statusDocument((40, 10), (30, 0)),
                statusDocument((60, 1), (40, 0)),
                statusDocument((60, 0), (40, 0)),
            ]
        )
        self.assertEqual(polls, 5)

    def test_quiet(self) -> None:
        """
        Totals that stay the same for longer than the workers' reporting
        period count as settled, even short of the minimum.
        """
        figures, seconds, _ = self.settle([statusDocument((50, 0), (40, 0))])
        self.assertEqual([f.accepted for f in figures], [50, 40])
        self.assertGreaterEqual(seconds, sharing.QUIET)
        self.assertLess(seconds, sharing.QUIET + 2)

    def test_timeout(self) -> None:
        """
        Figures that never settle (a worker missing) raise L{RuntimeError}
        saying what was missing.
        """
        error = self.assertRaises(
            RuntimeError, self.settle, [statusDocument((1, 0))], timeout=5
        )
        self.assertIn("1 of 2 workers reporting", str(error))


class WorkersScenarioTests(SynchronousTestCase):
    """
    The workers scenario's registration and plot.
    """

    def test_registered(self) -> None:
        """
        The workers scenario needs wrk and the load generator, and plots
        the throughput only.
        """
        scenario = scenarios.SCENARIOS["workers"]
        self.assertEqual(
            (scenario.run, scenario.needs, scenario.plotted),
            (scenarios.workers, ("gcc", "wrk"), ("requests", "round trips")),
        )

    def test_placements(self) -> None:
        """
        The daemon on CPU 0 with the generator on CPU 1, the daemon free with
        the generator on CPU 1, and nothing pinned.
        """
        self.assertEqual(
            [(p.server, p.generator) for p in scenarios.PLACEMENTS],
            [(0, 1), (None, 1), (None, None)],
        )

    def test_toPlot(self) -> None:
        """
        A scenario's plot shows the metrics it names, or all of them.
        """
        summaries = report.summarize(
            [
                series("v", "a", [1.0], baseline=True, metric="requests"),
                series("v", "a", [0.5], baseline=True, metric="server CPU"),
            ]
        )
        only = Scenario("s", "S", lambda settings: [], plotted=("requests",))
        every = Scenario("s", "S", lambda settings: [])
        self.assertEqual(
            (
                [s.series.metric for s in only.toPlot(summaries)],
                [s.series.metric for s in every.toPlot(summaries)],
            ),
            (["requests"], ["requests", "server CPU"]),
        )

    def test_replotFiltered(self) -> None:
        """
        Drawn again, a workers results file plots the throughput only.
        """
        plotted: list[list[str]] = []
        self.patch(
            report,
            "plot",
            lambda path, title, summaries: plotted.append(
                [s.series.metric for s in summaries]
            ),
        )
        summaries = report.summarize(
            [
                series("v", "a", [1.0], baseline=True, metric="requests"),
                series("v", "a", [0.5], baseline=True, metric="server CPU"),
            ]
        )
        path = Path(self.mktemp())
        report.writeJSON(path, report.toJSON("workers", "W", summaries, {}))
        self.assertEqual(run.main(["--replot", str(path)]), 0)
        self.assertEqual(plotted, [["requests"]])

    def test_generatorCore(self) -> None:
        """
        The generators run on the core asked for: their own by default, or
        anywhere.
        """
        cores: list[int | None] = []

        def fakeRun(argv, timeout, core=measure.GENERATOR_CORE):
            cores.append(core)
            if "wrk" in argv[0]:
                return WRK_CLEAN, 0.5
            return LOADGEN_ECHO, 0.5

        self.patch(measure, "_run", fakeRun)
        self.patch(tools, "command", lambda tool: tool)
        self.patch(tools, "loadgen", lambda: Path("loadgen"))
        measure.wrk("http://127.0.0.1:1/", 1, 1)
        measure.wrk("http://127.0.0.1:1/", 1, 1, core=None)
        measure.echo([1], 1, 1)
        measure.echo([1], 1, 1, core=None)
        self.assertEqual(cores, [measure.GENERATOR_CORE, None] * 2)


class ToolsTests(SynchronousTestCase):
    """
    L{benchmarks.tools}: finding the outside tools, and the load generator.
    """

    def test_missing(self) -> None:
        """
        L{tools.missing} lists the tools that are not there, in order.
        """
        self.assertEqual(
            tools.missing(["sh", "no-such-tool-x", "no-such-tool-y"]),
            ["no-such-tool-x", "no-such-tool-y"],
        )

    def test_installHint(self) -> None:
        """
        The hint says how to install every tool named, one per line.
        """
        self.assertEqual(
            tools.installHint(["wrk", "gcc", "unknown"]),
            "  wrk: apt-get install wrk\n  gcc: apt-get install gcc\n  unknown: ?",
        )

    def test_commandMissing(self) -> None:
        """
        Asking for a missing command raises L{LookupError} with the hint.
        """
        error = self.assertRaises(LookupError, tools.command, "no-such-tool-x")
        self.assertIn("no-such-tool-x is missing", str(error))

    def test_loadgenBuilt(self) -> None:
        """
        The load generator is compiled into benchmarks/build.
        """
        requireTools("gcc")
        binary = tools.loadgen()
        self.assertEqual(
            (binary, os.access(binary, os.X_OK)),
            (Path(benchmarks.__file__).resolve().parent / "build" / "loadgen", True),
        )

    def test_loadgenCompiled(self) -> None:
        """
        Without a binary, the load generator is compiled, and runs.
        """
        requireTools("gcc")
        self.patch(tools, "BUILD", Path(self.mktemp()))
        binary = tools.loadgen()
        result = subprocess.run([binary], capture_output=True, text=True)
        self.assertEqual(
            (binary.parent, result.returncode, result.stderr.split()[:2]),
            (tools.BUILD, 2, ["usage:", "loadgen"]),
        )

    def test_loadgenReused(self) -> None:
        """
        A binary newer than its source is used as it is.
        """
        requireTools("gcc")
        self.patch(tools, "BUILD", Path(self.mktemp()))
        before = tools.loadgen().stat().st_mtime_ns
        self.assertEqual(tools.loadgen().stat().st_mtime_ns, before)

    def test_loadgenRebuilt(self) -> None:
        """
        A binary older than its source is compiled again.
        """
        requireTools("gcc")
        self.patch(tools, "BUILD", Path(self.mktemp()))
        os.utime(tools.loadgen(), (0, 0))
        self.assertGreaterEqual(
            tools.loadgen().stat().st_mtime, tools.LOADGEN_SOURCE.stat().st_mtime
        )

    def test_usage(self) -> None:
        """
        Unknown arguments make the generator exit with status 2 and its usage.
        """
        requireTools("gcc")
        result = subprocess.run(
            [tools.loadgen(), "frobnicate", "127.0.0.1"], capture_output=True
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr.split(b"\n")[0]),
            (2, b"", b"usage: loadgen echo HOST PORTS CONNS SIZE SECONDS [WARMUP]"),
        )

    def test_usageModes(self) -> None:
        """
        The usage names every mode, stream, sink and echoserver included.
        """
        requireTools("gcc")
        result = subprocess.run([tools.loadgen()], capture_output=True, text=True)
        self.assertEqual(
            [line.split()[1:3] for line in result.stderr.splitlines()],
            [
                ["loadgen", "echo"],
                ["accept", "HOST"],
                ["hold", "HOST"],
                ["stream", "HOST"],
                ["sink", "PORT"],
                ["echoserver", "PORT"],
            ],
        )

    def test_haveSbin(self) -> None:
        """
        nginx and HAProxy are found in /usr/sbin, where Debian puts them,
        even when it is not on C{PATH}.
        """
        if not Path("/usr/sbin/haproxy").exists():
            raise SkipTest("no /usr/sbin/haproxy")
        old = os.environ["PATH"]
        os.environ["PATH"] = self.mktemp()
        self.addCleanup(os.environ.__setitem__, "PATH", old)
        self.assertEqual(
            (tools.have("haproxy"), tools.command("haproxy"), tools.have("socat")),
            (True, "/usr/sbin/haproxy", False),
        )

    def test_badSize(self) -> None:
        """
        A message size out of range makes the generator exit with status 2.
        """
        requireTools("gcc")
        argv = [tools.loadgen(), "echo", "127.0.0.1", "9", "1", "0", "1"]
        result = subprocess.run(argv, capture_output=True)
        self.assertEqual(
            (result.returncode, result.stderr),
            (2, b"loadgen: size must be 1-65536\n"),
        )


class LoadgenTests(SynchronousTestCase):
    """
    The C load generator against a real echo server.
    """

    def setUp(self) -> None:
        requireTools("gcc")
        [self.port] = processes.freePorts(1)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir()
        self.server = servers.twistedEcho(workdir, self.port)
        self.server.__enter__()
        self.addCleanup(self.server.__exit__, None, None, None)

    def test_echo(self) -> None:
        """
        Echo measures round trips per second, without errors.
        """
        sample = measure.echo([self.port], 2, 0.3, warmup=0.1)
        self.assertGreater(sample.value, 0)
        self.assertGreater(sample.generatorCPU, 0)
        self.assertEqual(sample.errors, 0)

    def test_accept(self) -> None:
        """
        Accept measures new connections per second, without errors.
        """
        sample = measure.accept(self.port, 5, 0.3, 0.1)
        self.assertGreater(sample.value, 0)
        self.assertEqual(sample.errors, 0)

    def test_hold(self) -> None:
        """
        The holder opens its connections, the server holds a descriptor for
        each, and closing the holder releases them.
        """
        # A first connection, held and released, so that what the server
        # opens once, on its first client, is counted before.
        first = measure.Holder([self.port], 1)
        first.close()
        before = self.server.openFiles()
        holder = measure.Holder([self.port], 50)
        self.addCleanup(holder.close)
        waitUntil(self.server.openFiles, 10, accept=lambda n: n >= before + 50)
        self.assertEqual((holder.result["ops"], holder.result["errors"]), (50, 0))
        holder.close()
        self.assertEqual(holder.process.returncode, 0)
        # The first connection's descriptor may still have been open when
        # counted: the 50 are released when the count is back to at most it.
        waitUntil(self.server.openFiles, 10, accept=lambda n: n <= before)

    def test_holdUnanswered(self) -> None:
        """
        A connection a server leaves unanswered (it does not accept and its
        backlog is full) is given up after 4 s and counted as an error; the
        holder does not hang.
        """
        full = socket.socket()
        self.addCleanup(full.close)
        full.bind(("127.0.0.1", 0))
        # A backlog of 0 still queues one connection; the next SYNs are
        # dropped.
        full.listen(0)
        started = time.monotonic()
        holder = measure.Holder([full.getsockname()[1]], 2, timeout=30)
        self.addCleanup(holder.close)
        elapsed = time.monotonic() - started
        self.assertEqual((holder.result["ops"], holder.result["errors"]), (1, 1))
        self.assertTrue(3.5 < elapsed < 10, elapsed)

    def test_refused(self) -> None:
        """
        A generator that fails (nothing listens) raises L{RuntimeError}.
        """
        [closed] = processes.freePorts(1)
        error = self.assertRaises(
            RuntimeError, measure.echo, [closed], 1, 0.3, warmup=0.1
        )
        self.assertIn("failed (2)", str(error))


class StreamTests(SynchronousTestCase):
    """
    The load generator's C{stream} mode against its C{sink} mode.
    """

    def setUp(self) -> None:
        requireTools("gcc")
        [self.port] = processes.freePorts(1)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir()
        self.sink = servers.sink(workdir, self.port)
        self.sink.__enter__()
        self.addCleanup(self.sink.__exit__, None, None, None)

    def test_stream(self) -> None:
        """
        Stream measures MB/s without errors, and the sink reads at least as
        many bytes as were counted (the warm-up's are read too).
        """
        before = self.sink.bytesRead()
        sample = measure.stream(self.port, 4, 0.3, 0.1, sink=self.sink.process.pid)
        read = self.sink.bytesRead() - before
        self.assertEqual(sample.errors, 0)
        self.assertGreater(sample.value, 1)
        self.assertGreater(sample.generatorCPU, 0)
        self.assertGreaterEqual(read / 1e6, sample.value * 0.3 * 0.5)

    def test_sinkConnections(self) -> None:
        """
        The sink accepts many connections at once and holds each.
        """
        before = self.sink.openFiles()
        holder = measure.Holder([self.port], 100)
        self.addCleanup(holder.close)
        waitUntil(self.sink.openFiles, 10, accept=lambda n: n >= before + 100)
        self.assertEqual(holder.result["errors"], 0)

    def test_sinkPinned(self) -> None:
        """
        The sink runs on the load generator's CPU, not the servers'.
        """
        if processes.cores() < 2:
            raise SkipTest("one CPU: nothing is pinned")
        requireTools("taskset")
        usable = sorted(os.sched_getaffinity(0))
        self.assertEqual(
            os.sched_getaffinity(self.sink.process.pid),
            {usable[measure.GENERATOR_CORE]},
        )

    def test_echoServer(self) -> None:
        """
        The C{echoserver} mode writes back what each connection sends, so
        the echo mode measures round trips against it without errors.
        """
        [port] = processes.freePorts(1)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir()
        with servers.echoServer(workdir, port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                message = bytes(range(256)) * 400
                client.sendall(message)
                received = b""
                while len(received) < len(message):
                    chunk = client.recv(65536)
                    self.assertTrue(chunk, "the echo server closed early")
                    received += chunk
                self.assertEqual(received, message)
            sample = measure.echo([port], 4, 0.3, warmup=0.1)
        self.assertGreater(sample.value, 0)
        self.assertEqual(sample.errors, 0)

    def test_refused(self) -> None:
        """
        Where nothing listens, nothing is relayed: L{RuntimeError}.
        """
        [closed] = processes.freePorts(1)
        error = self.assertRaises(RuntimeError, measure.stream, closed, 2, 0.3, 0.1)
        self.assertIn("nothing relayed", str(error))
        self.assertIn("2 of 2 connections failed", str(error))


class ProcessesTests(SynchronousTestCase):
    """
    L{benchmarks.processes} starts servers and ends them with everything
    they started.
    """

    def start(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """
        Start C{argv} with L{processes.start}, stopped at cleanup.
        """
        log = Path(self.mktemp())
        log.parent.mkdir(parents=True, exist_ok=True)
        process = processes.start(argv, log)
        self.addCleanup(killSession, process.pid)
        self.addCleanup(processes.stop, process, 5)
        return process

    def startFamily(self, script: str, members: int) -> subprocess.Popen[bytes]:
        """
        Start a shell running C{script}; once C{members} processes run in
        its session.
        """
        process = self.start(["sh", "-c", script])
        running = waitUntil(
            lambda: liveSession(process.pid),
            10,
            accept=lambda pids: len(pids) >= members,
        )
        self.assertEqual(len(running), members)
        return process

    def test_freePorts(self) -> None:
        """
        The ports are distinct, and free.
        """
        ports = processes.freePorts(5)
        self.assertEqual(len(set(ports)), 5)
        for port in ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))

    def test_pinned(self) -> None:
        """
        With taskset and two CPUs, a command runs on the CPU asked for;
        without a CPU, as it is.
        """
        if processes.cores() < 2:
            raise SkipTest("one CPU: nothing is pinned")
        requireTools("taskset")
        self.assertEqual(
            (processes.pinned(["a", "b"], 1), processes.pinned(["a", "b"], None)),
            ([tools.command("taskset"), "-c", "1", "a", "b"], ["a", "b"]),
        )

    def test_fileLimit(self) -> None:
        """
        A server started with a descriptor limit has it, soft and hard;
        without one, its soft limit is raised to the hard one.
        """
        import resource

        def limits(process: subprocess.Popen[bytes]) -> tuple[int, int]:
            for line in Path(f"/proc/{process.pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
            raise AssertionError("no open files limit")

        log = Path(self.mktemp())
        limited = processes.start(["sleep", "300"], log, fileLimit=300)
        self.addCleanup(processes.stop, limited, 5)
        default = self.start(["sleep", "300"])
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual((limits(limited), limits(default)), ((300, 300), (hard, hard)))
        if hard != resource.RLIM_INFINITY:
            error = self.assertRaises(
                RuntimeError, processes.start, ["sleep", "1"], log, fileLimit=hard + 1
            )
            self.assertEqual(
                str(error),
                f"cannot give sleep a descriptor limit of {hard + 1}: this "
                f"process's hard limit is {hard}",
            )

    def test_log(self) -> None:
        """
        What the process prints goes to its log.
        """
        log = Path(self.mktemp())
        log.parent.mkdir(parents=True, exist_ok=True)
        process = processes.start(["sh", "-c", "echo out; echo err >&2"], log)
        self.addCleanup(processes.stop, process, 5)
        process.wait(10)
        self.assertEqual(log.read_text(), "out\nerr\n")

    def test_stop(self) -> None:
        """
        Stopping a server ends it with SIGTERM, leaves nothing of its session
        behind, and forgets it.
        """
        process = self.start([PYTHON, "-c", "import time; time.sleep(300)"])
        self.assertIn(process.pid, processes._RUNNING)
        processes.stop(process)
        self.assertEqual(
            (process.returncode, state(process.pid), process.pid in processes._RUNNING),
            (-signal.SIGTERM, None, False),
        )
        waitSessionEnded(process.pid)

    def test_stopChildren(self) -> None:
        """
        Stopping a server also ends the processes it started.
        """
        process = self.startFamily("sleep 300 & sleep 300", 3)
        processes.stop(process)
        self.assertEqual(state(process.pid), None)
        waitSessionEnded(process.pid)

    def test_stopOrphans(self) -> None:
        """
        Stopping a server that has exited ends the children it left behind.
        """
        process = self.start(["sh", "-c", "sleep 300 & sleep 300 & exit 0"])
        waitUntil(
            lambda: liveSession(process.pid),
            10,
            accept=lambda pids: len(pids) == 2 and process.pid not in pids,
        )
        processes.stop(process)
        waitSessionEnded(process.pid)

    def test_stopChildGroups(self) -> None:
        """
        Stopping a server ends everything in its session, as L{processes.stop}
        says, even a child that moved to a process group of its own.
        """
        process = self.start(
            [
                PYTHON,
                "-c",
                "import subprocess, time\n"
                "subprocess.Popen(['sleep', '300'], process_group=0)\n"
                "time.sleep(300)",
            ]
        )
        running = waitUntil(
            lambda: liveSession(process.pid), 10, accept=lambda pids: len(pids) >= 2
        )
        self.assertEqual(len(running), 2)
        processes.stop(process)
        waitSessionEnded(process.pid, timeout=2)

    def test_stopKills(self) -> None:
        """
        A server that ignores SIGTERM is killed once the timeout passes.
        """
        process = self.startFamily("trap '' TERM; sleep 300; sleep 300", 2)
        started = time.monotonic()
        processes.stop(process, timeout=0.5)
        self.assertEqual(process.returncode, -signal.SIGKILL)
        self.assertLess(time.monotonic() - started, 5)
        waitSessionEnded(process.pid)

    def test_stopAll(self) -> None:
        """
        L{processes.stopAll} ends every process still registered.
        """
        started = [
            self.start([PYTHON, "-c", "import time; time.sleep(300)"]) for _ in range(2)
        ]
        processes.stopAll()
        self.assertEqual(
            (processes._RUNNING, [state(p.pid) for p in started]),
            ({}, [None, None]),
        )

    def test_waitForPort(self) -> None:
        """
        Once the port accepts, L{processes.waitForPort} says how long it took.
        """
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            process = self.start(["sleep", "300"])
            took = processes.waitForPort(listening.getsockname()[1], process, 5)
        self.assertTrue(0 <= took < 5, took)

    def test_waitForPortExited(self) -> None:
        """
        A server that exits before its port opens raises L{RuntimeError}
        with its exit status.
        """
        [port] = processes.freePorts(1)
        process = self.start([PYTHON, "-c", "raise SystemExit(3)"])
        error = self.assertRaises(
            RuntimeError, processes.waitForPort, port, process, 30
        )
        self.assertIn("server exited with 3", str(error))

    def test_waitForPortTimeout(self) -> None:
        """
        A port that never opens raises L{RuntimeError} once the timeout passes.
        """
        [port] = processes.freePorts(1)
        process = self.start(["sleep", "300"])
        error = self.assertRaises(
            RuntimeError, processes.waitForPort, port, process, 0.3
        )
        self.assertIn(f"port {port} did not open within 0.3s", str(error))

    def test_cpuAndBytesRead(self) -> None:
        """
        L{processes.cpuSeconds} and L{processes.bytesRead} add up the CPU
        time and the bytes read of a session's processes.
        """
        process = self.start(
            [
                PYTHON,
                "-c",
                "import time\n"
                "open('/dev/zero', 'rb').read(3_000_000)\n"
                "end = time.process_time() + 0.3\n"
                "while time.process_time() < end: pass\n"
                "print('done', flush=True)\n"
                "time.sleep(300)",
            ]
        )
        waitUntil(lambda: processes.cpuSeconds(process.pid) >= 0.3, 10)
        self.assertGreaterEqual(processes.bytesRead(process.pid), 3_000_000)

    def test_cpuOfEndedChildren(self) -> None:
        """
        L{processes.cpuSeconds} counts the CPU time of a child that ended
        and was waited for (a socat child whose client went away).
        """
        process = self.start(
            [
                PYTHON,
                "-c",
                "import os, time\n"
                "child = os.fork()\n"
                "if child == 0:\n"
                "    end = time.process_time() + 0.3\n"
                "    while time.process_time() < end: pass\n"
                "    os._exit(0)\n"
                "os.waitpid(child, 0)\n"
                "print('done', flush=True)\n"
                "time.sleep(300)",
            ]
        )
        waitUntil(lambda: processes.cpuSeconds(process.pid) >= 0.3, 10)

    def test_memoryAndFiles(self) -> None:
        """
        The memory and descriptors of a session add up those of its processes.
        """
        process = self.startFamily("sleep 300 & sleep 300", 3)

        def measured() -> tuple[tuple[int, int], tuple[int, int]]:
            pids = processes.sessionPids(process.pid)
            rss = 0
            for pid in pids:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            files = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)
            ours = (processes.rssBytes(process.pid), processes.openFiles(process.pid))
            return ours, (rss, files)

        # A process that has just started may still be growing between the
        # two readings: compare readings taken while it holds still.
        ours, theirs = waitUntil(measured, 10, accept=lambda pair: pair[0] == pair[1])
        self.assertGreater(theirs[0], 0)


class ServerTests(SynchronousTestCase):
    """
    L{servers.Server} and the servers the benchmarks run.
    """

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir()
        self.addCleanup(processes.stopAll)

    def test_multiportEcho(self) -> None:
        """
        multiport's echo server starts, echoes, has memory, and is gone after
        the C{with} block.
        """
        [port] = processes.freePorts(1)
        with servers.multiportEcho(self.workdir, port) as server:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"ping")
                self.assertEqual(c.recv(4), b"ping")
            self.assertGreater(server.startup, 0)
            # Its own start-up, from its log, is part of the time to the
            # first accepted connection.
            self.assertLess(0, server.reportedStartup())
            self.assertLess(server.reportedStartup(), server.startup)
            self.assertGreater(server.rss(), 0)
            pid = server.process.pid
        self.assertEqual(
            (server.process.returncode is not None, state(pid), liveSession(pid)),
            (True, None, []),
        )

    def test_noReadyLine(self) -> None:
        """
        A server that never logs multiport's ready line: L{RuntimeError}
        with the end of its log, after the time given.
        """
        [port] = processes.freePorts(1)
        server = servers.Server(
            "no ready line",
            [PYTHON, "-m", "benchmarks.peers.twisted_echo", str(port)],
            port,
            self.workdir,
        )
        with server:
            error = self.assertRaises(RuntimeError, server.reportedStartup, 0.2)
        self.assertIn("no ready line logged no ready line within 0.2s", str(error))

    def test_failedStart(self) -> None:
        """
        A server that exits at start raises L{RuntimeError} with its status and
        the end of its log, and is forgotten.
        """
        [port] = processes.freePorts(1)
        server = servers.Server(
            "broken one",
            [PYTHON, "-c", "print('no good'); raise SystemExit(4)"],
            port,
            self.workdir,
        )
        error = self.assertRaises(RuntimeError, server.__enter__)
        self.assertEqual(
            (str(error).splitlines()[1:], processes._RUNNING),
            (["no good"], {}),
        )
        self.assertIn("server exited with 4", str(error))
        self.assertTrue((self.workdir / f"broken-one-{port}.log").exists())

    def fetch(self, make: Callable[[Path, int], servers.Server]) -> tuple[int, bytes]:
        """
        The status and body of /index.html from the server C{make} makes.
        """
        [port] = processes.freePorts(1)
        with make(self.workdir, port):
            url = f"http://127.0.0.1:{port}/index.html"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, b""

    def test_multiportWeb(self) -> None:
        """
        multiport's web server serves the benchmark page.
        """
        self.assertEqual(self.fetch(servers.multiportWeb), (200, servers.PAGE))

    def test_twistdWeb(self) -> None:
        """
        C{twistd web} serves the benchmark page.
        """
        self.assertEqual(self.fetch(servers.twistdWeb), (200, servers.PAGE))

    def test_haproxyConfig(self) -> None:
        """
        HAProxy relays TCP with one thread, no splicing, and timeouts no
        measurement reaches.
        """
        self.assertEqual(
            servers.haproxyConfig(8000, 9000),
            "global\n"
            "    nbthread 1\n"
            "    maxconn 1000\n"
            "\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 10s\n"
            "    timeout client 1h\n"
            "    timeout server 1h\n"
            "\n"
            "frontend relay\n"
            "    bind 127.0.0.1:8000\n"
            "    default_backend sink\n"
            "\n"
            "backend sink\n"
            "    server sink 127.0.0.1:9000\n",
        )

    def test_haproxyConfigSplice(self) -> None:
        """
        With C{splice}, HAProxy's defaults turn on C{option splice-auto},
        and the rest of its configuration is the same.
        """
        plain = servers.haproxyConfig(8000, 9000)
        spliced = servers.haproxyConfig(8000, 9000, splice=True)
        self.assertEqual(
            spliced,
            plain.replace(
                "    timeout server 1h\n",
                "    timeout server 1h\n    option splice-auto\n",
            ),
        )
        self.assertNotIn("splice", plain)

    def test_haproxyConfigOwnMaxconn(self) -> None:
        """
        Without a C{maxconn}, HAProxy's configuration leaves it to derive
        one from its descriptor limit.
        """
        config = servers.haproxyConfig(8000, 9000, maxconn=None)
        self.assertTrue(config.startswith("global\n    nbthread 1\n\ndefaults\n"))
        self.assertNotIn("maxconn", config)

    def relays(self, make: Callable[[Path, int, int], servers.Server]) -> None:
        """
        The relay C{make} makes forwards what it is sent to the sink.
        """
        requireTools("gcc")
        upstream, port = processes.freePorts(2)
        with servers.sink(self.workdir, upstream) as sink:
            with make(self.workdir, port, upstream) as relay:
                scenarios.checkRelays(relay, sink, size=1_000_000)
                self.assertEqual(relay.port, port)

    def test_multiportRelay(self) -> None:
        """
        multiport's relay handler forwards to the sink.
        """
        self.relays(servers.multiportRelay)

    def test_multiportRelayNoSplice(self) -> None:
        """
        multiport's relay handler forwards to the sink without splice(2) too,
        under a name of its own.
        """
        self.relays(partial(servers.multiportRelay, splice=False))
        [config] = self.workdir.glob("multiport-*.toml")
        self.assertIn("splice = false", config.read_text())
        self.assertEqual(
            servers.multiportRelay(self.workdir, 1, 2, splice=False).name,
            "multiport, no splice",
        )

    def test_portforward(self) -> None:
        """
        C{twistd portforward} forwards to the sink.
        """
        self.relays(servers.portforward)

    def test_socat(self) -> None:
        """
        socat forwards to the sink.
        """
        requireTools("socat")
        self.relays(servers.socat)

    def test_haproxy(self) -> None:
        """
        HAProxy forwards to the sink.
        """
        requireTools("haproxy")
        self.relays(servers.haproxy)

    def test_notRelaying(self) -> None:
        """
        A server that does not forward to the sink fails the check, saying
        how much arrived.
        """
        requireTools("gcc")
        upstream, port = processes.freePorts(2)
        with servers.sink(self.workdir, upstream) as sink:
            with servers.twistedEcho(self.workdir, port) as echo:
                error = self.assertRaises(
                    RuntimeError,
                    scenarios.checkRelays,
                    echo,
                    sink,
                    size=1000,
                    timeout=0.5,
                )
        self.assertEqual(
            str(error), "twisted relayed 0 of 1000 bytes to the sink within 0.5s"
        )

    def listeners(self, port: int) -> int:
        """
        How many sockets listen on C{port} (IPv4).
        """
        listening = [
            line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        ]
        return sum(
            1
            for fields in listening
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port
        )

    def test_multiportWorkers(self) -> None:
        """
        C{--workers 2} is ready once both workers serve: its status port
        lists them, one shared listening socket; on exit every worker has
        ended too.
        """
        port, statusPort = processes.freePorts(2)
        server = servers.multiportWorkers(self.workdir, port, "http", 2, statusPort)
        self.assertEqual(server.core, None)
        with server:
            figures = server.settled(1)
            pids = server.pids()
            self.assertEqual(
                (
                    [f.worker for f in figures],
                    sorted(f.pid for f in figures),
                    self.listeners(port),
                ),
                ([0, 1], pids[1:], 1),
            )
            url = f"http://127.0.0.1:{port}/index.html"
            with urllib.request.urlopen(url, timeout=10) as response:
                self.assertEqual(response.read(), servers.PAGE)
        self.assertEqual(
            [(pid, processes.alive(pid)) for pid in pids],
            [(pid, False) for pid in pids],
        )

    def test_multiportWorkersReusePort(self) -> None:
        """
        With C{reusePort} each worker listens on a socket of its own.
        """
        port, statusPort = processes.freePorts(2)
        server = servers.multiportWorkers(
            self.workdir, port, "echo", 2, statusPort, reusePort=True
        )
        with server:
            self.assertEqual((len(server.settled(1)), self.listeners(port)), (2, 2))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"ping")
                self.assertEqual(c.recv(4), b"ping")
            pids = server.pids()
        self.assertEqual([processes.alive(pid) for pid in pids], [False] * 3)

    def test_multiportOneWorker(self) -> None:
        """
        C{--workers 1} serves in the main process: its one "worker" is the
        port's own figures.
        """
        port, statusPort = processes.freePorts(2)
        with servers.multiportWorkers(
            self.workdir, port, "echo", 1, statusPort
        ) as server:
            self.assertEqual(
                (server.settled(1), server.pids()),
                ([sharing.WorkerFigures(0, None, 1, 0, 0, 0)], [server.process.pid]),
            )

    def test_workersLeftBehind(self) -> None:
        """
        Workers still running once the main process has ended are killed,
        and that is an error.
        """
        [port] = processes.freePorts(1)
        stray = subprocess.Popen(["sleep", "300"])
        self.addCleanup(stray.wait)
        self.addCleanup(stray.kill)
        server = servers.MultiportWorkers(
            "stray",
            [PYTHON, "-m", "benchmarks.peers.twisted_echo", str(port)],
            port,
            self.workdir,
            2,
            port,
        )
        self.patch(server, "settled", lambda minimum: [])
        with self.assertRaises(RuntimeError) as caught:
            with server:
                server.workerPids = [stray.pid]
                server.grace = 0.2
        self.assertIn(f"worker processes [{stray.pid}]", str(caught.exception))
        self.assertEqual(stray.wait(10), -signal.SIGKILL)

    def test_nginx(self) -> None:
        """
        nginx serves the benchmark page from a private folder, as
        C{python -m benchmarks} makes (a L{tempfile.TemporaryDirectory}).
        """
        requireTools("nginx")
        self.workdir.chmod(0o700)
        self.assertEqual(self.fetch(servers.nginx), (200, servers.PAGE))


class CommandLineTests(SynchronousTestCase):
    """
    L{run.main}, the C{python -m benchmarks} command.
    """

    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.results = Path(self.mktemp())
        self.leaders: list[int] = []
        start = processes.start

        def recordingStart(*args, **kwargs) -> subprocess.Popen[bytes]:
            process = start(*args, **kwargs)
            self.leaders.append(process.pid)
            return process

        self.patch(processes, "start", recordingStart)

    def restrictPath(self, *commands: str) -> None:
        """
        Leave only C{commands} on C{PATH}.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        for command in commands:
            (folder / command).symlink_to(tools.command(command))
        old = os.environ["PATH"]
        os.environ["PATH"] = str(folder)
        self.addCleanup(os.environ.__setitem__, "PATH", old)

    def assertNothingLeft(self, servers: int, children: set[int]) -> None:
        """
        The C{servers} started have ended with their sessions, and this
        process has no more children than it had (C{children}).
        """
        self.assertEqual((len(self.leaders), processes._RUNNING), (servers, {}))
        self.assertEqual(
            [(pid, state(pid)) for pid in self.leaders],
            [(pid, None) for pid in self.leaders],
        )
        for leader in self.leaders:
            waitSessionEnded(leader)
        self.assertEqual(liveChildren(), children)

    def resultsFile(self, scenario: str) -> dict[str, object]:
        """
        The one JSON file C{scenario} wrote, dated today.
        """
        [path] = self.results.glob(f"*-{scenario}.json")
        self.assertRegex(path.name, rf"^\d{{4}}-\d\d-\d\d-{scenario}\.json$")
        self.assertLessEqual(
            abs(
                datetime.date.fromisoformat(path.name[:10]) - datetime.date.today()
            ).days,
            1,
        )
        return json.loads(path.read_text())  # type: ignore[no-any-return]

    def test_list(self) -> None:
        """
        C{--list} lists every scenario with its title.
        """
        self.assertEqual(run.main(["--list"]), 0)
        self.assertEqual(
            [line.split(None, 1) for line in self.stdout.getvalue().splitlines()],
            [[s.name, s.title] for s in scenarios.SCENARIOS.values()],
        )
        self.assertEqual(
            list(scenarios.SCENARIOS),
            [
                "echo",
                "http",
                "https",
                "http2",
                "accept",
                "ports",
                "idle",
                "idle-relay",
                "layer",
                "relay",
                "relay-rr",
                "transport",
                "udp-echo",
                "udp-relay",
                "workers",
            ],
        )

    def test_unknown(self) -> None:
        """
        An unknown scenario is an error, status 2, naming the known ones.
        """
        self.assertEqual(run.main(["nosuch"]), 2)
        self.assertEqual(
            self.stderr.getvalue(),
            "unknown scenario nosuch; known: "
            "echo, http, https, http2, accept, ports, idle, idle-relay, layer, "
            "relay, relay-rr, transport, udp-echo, udp-relay, workers\n",
        )

    def test_badSettings(self) -> None:
        """
        No rounds, or no time, is an error, status 2.
        """
        self.assertEqual(
            [run.main(["echo", "--rounds", "0"]), run.main(["echo", "--seconds", "0"])],
            [2, 2],
        )

    def test_missingTool(self) -> None:
        """
        A scenario whose tools are missing is skipped with how to install them,
        and the status is 1.
        """
        self.restrictPath()
        self.assertEqual(run.main(["http", "--results", str(self.results)]), 1)
        self.assertIn(
            "skipping http: missing\n  wrk: apt-get install wrk\n",
            self.stderr.getvalue(),
        )
        self.assertFalse(self.results.exists())

    def test_echo(self) -> None:
        """
        A tiny echo run prints its table, writes its results and plot, and
        leaves no process behind.
        """
        requireTools("gcc")
        children = liveChildren()
        argv = ["echo", "--seconds", "0.3", "--rounds", "1", "--warmup", "0.1"]
        self.assertEqual(run.main([*argv, "--results", str(self.results)]), 0)
        contenders = ["twisted", "multiport", "asyncio"]
        if tools.have("uvloop"):
            contenders.append("uvloop")
        self.assertNothingLeft(len(contenders), children)
        data = self.resultsFile("echo")
        self.assertEqual(
            [(r["variant"], r["contender"], r["baseline"]) for r in data["results"]],
            [
                (variant, contender, contender == "twisted")
                for variant in ("1 connection", "100 connections")
                for contender in contenders
            ],
        )
        for result in data["results"]:
            self.assertEqual((len(result["samples"]), result["errors"]), (1, [0]))
            self.assertGreater(result["samples"][0], 0)
        self.assertEqual(
            (data["scenario"], data["settings"], data["command"]),
            (
                "echo",
                {"seconds": 0.3, "rounds": 1, "warmup": 0.1},
                "python -m benchmarks echo --seconds 0.3 --rounds 1 --warmup 0.1 "
                f"--results {self.results}",
            ),
        )
        output = self.stdout.getvalue()
        self.assertEqual(output.splitlines()[0], scenarios.SCENARIOS["echo"].title)
        self.assertIn("twisted (baseline)", output)
        if tools.have("matplotlib"):
            [png] = self.results.glob("*-echo.png")
            self.assertEqual(png.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def assertWebRun(
        self, scenario: str, variants: Sequence[str], warmup: str = "0.1"
    ) -> None:
        """
        A tiny run of web C{scenario} measures twistd web, multiport and
        nginx in each of C{variants}, each answering every request, and
        leaves no process behind.
        """
        children = liveChildren()
        argv = [scenario, "--seconds", "1", "--rounds", "1", "--warmup", warmup]
        self.assertEqual(
            run.main([*argv, "--no-plot", "--results", str(self.results)]), 0
        )
        self.assertNothingLeft(3, children)
        data = self.resultsFile(scenario)
        self.assertEqual(
            [(r["variant"], r["contender"]) for r in data["results"]],
            [
                (variant, contender)
                for variant in variants
                for contender in ("twistd web", "multiport", "nginx")
            ],
        )
        self.assertEqual(
            [
                (r["contender"], r["samples"][0] > 0, r["errors"])
                for r in data["results"]
            ],
            [(r["contender"], True, [0]) for r in data["results"]],
        )
        self.assertEqual(list(self.results.glob("*.png")), [])

    def test_https(self) -> None:
        """
        A tiny https run: wrk's two variants.
        """
        requireTools("gcc", "wrk", "nginx")
        self.assertWebRun("https", ["keep-alive", "new handshake each"])

    def test_http2(self) -> None:
        """
        A tiny http2 run: h2load over HTTP/2 and over HTTP/1.1.
        """
        requireTools("h2load", "nginx")
        # A second of warm-up: 100 TLS handshakes with a Twisted server on a
        # busy machine can take most of one.
        self.assertWebRun("http2", ["HTTP/2", "HTTP/1.1"], warmup="1")

    def test_relay(self) -> None:
        """
        A tiny relay run measures every relay (HAProxy with and without
        splice-auto) over 1 and 16 streams against C{twistd portforward}, in
        MB/s, without errors, and leaves no process behind.
        """
        requireTools("gcc", "socat", "haproxy")
        children = liveChildren()
        argv = ["relay", "--seconds", "0.3", "--rounds", "1", "--warmup", "0.2"]
        self.assertEqual(
            run.main([*argv, "--no-plot", "--results", str(self.results)]), 0
        )
        contenders = [
            "twistd portforward",
            "multiport",
            "multiport, no splice",
            "socat",
            "haproxy",
            "haproxy, splice-auto",
        ]
        # The sink, then the relays.
        self.assertNothingLeft(1 + len(contenders), children)
        data = self.resultsFile("relay")
        self.assertEqual(
            [
                (r["variant"], r["contender"], r["metric"], r["unit"], r["baseline"])
                for r in data["results"]
            ],
            [
                (variant, contender, metric, unit, contender == contenders[0])
                for metric, unit in (
                    ("throughput", "MB/s"),
                    ("server CPU per MB", "us"),
                )
                for variant in ("1 stream", "16 streams")
                for contender in contenders
            ],
        )
        self.assertEqual(
            [
                (r["contender"], r["samples"][0] > 1, r["errors"])
                for r in data["results"]
            ],
            [(r["contender"], True, [0]) for r in data["results"]],
        )
        self.assertIn("socat", data["versions"])
        self.assertIn("haproxy", data["versions"])
        self.assertIn("twistd portforward (baseline)", self.stdout.getvalue())

    def test_idleRelay(self) -> None:
        """
        A small idle-relay run (200 clients, 300 descriptors each relay):
        multiport holds what its limit allows, two descriptors a
        connection, and turns the rest away without an error, as does
        HAProxy, the baseline; the limit reaches every relay and no
        process is left behind.
        """
        requireTools("gcc", "haproxy")
        children = liveChildren()
        argv = ["idle-relay", "--idle-connections", "200", "--file-limit", "300"]
        argv += ["--rounds", "1", "--no-plot", "--results", str(self.results)]
        self.assertEqual(run.main(argv), 0)
        # The sink, then the relays.
        self.assertNothingLeft(4, children)
        data = self.resultsFile("idle-relay")
        figures = {
            (r["contender"], r["metric"]): (r["samples"][0], r["errors"][0])
            for r in data["results"]
        }
        contenders = ["multiport", "multiport, no splice", "haproxy"]
        self.assertEqual(
            [(r["contender"], r["baseline"]) for r in data["results"]],
            [(c, c == "haproxy") for c in contenders for _ in range(3)],
        )
        # 300 descriptors, less one port and 64 in reserve, two a connection.
        for contender in contenders[:2]:
            self.assertEqual(
                figures[contender, "connections held"], ((300 - 1 - 64) // 2, 0)
            )
        held, errors = figures["haproxy", "connections held"]
        self.assertEqual(errors, 0)
        self.assertTrue(100 < held < 150, held)
        for contender in contenders:
            perConnection, _ = figures[contender, "descriptors per connection"]
            # Two sockets; a pipe kept from the first transfer may have been
            # closed to make room (2 of about 230 descriptors).
            self.assertLess(abs(perConnection - 2.0), 0.05, (contender, perConnection))
            memory, _ = figures[contender, "memory per connection"]
            self.assertGreater(memory, 0)

    def test_layer(self) -> None:
        """
        A tiny layer run measures multiport's echo, with and without every
        policy, against the same echo handler on multiport's own transport
        and reactor without the per-port layer, in round trips and in
        server CPU per round trip, and leaves no process behind.
        """
        requireTools("gcc")
        children = liveChildren()
        argv = ["layer", "--seconds", "0.3", "--rounds", "1", "--warmup", "0.1"]
        self.assertEqual(
            run.main([*argv, "--no-plot", "--results", str(self.results)]), 0
        )
        self.assertNothingLeft(3, children)
        contenders = [
            "bare handler, FastPort + multiport-epoll",
            "multiport",
            "multiport, every policy",
        ]
        data = self.resultsFile("layer")
        self.assertEqual(
            [
                (r["contender"], r["metric"], r["baseline"], len(r["samples"]))
                for r in data["results"]
            ],
            [
                (c, metric, c == contenders[0], 5)
                for metric in ("round trips", "server CPU per round trip")
                for c in contenders
            ],
        )
        self.assertTrue(all(r["samples"][0] > 0 for r in data["results"]))

    def test_relayRoundTrips(self) -> None:
        """
        A tiny relay-rr run measures 64-byte round trips through every
        relay (HAProxy with and without splice-auto) to the C echo server,
        against C{twistd portforward}, without errors, and leaves no
        process behind.
        """
        requireTools("gcc", "socat", "haproxy")
        children = liveChildren()
        argv = ["relay-rr", "--seconds", "0.3", "--rounds", "1", "--warmup", "0.2"]
        self.assertEqual(
            run.main([*argv, "--no-plot", "--results", str(self.results)]), 0
        )
        contenders = [
            "twistd portforward",
            "multiport",
            "multiport, no splice",
            "socat",
            "haproxy",
            "haproxy, splice-auto",
        ]
        # The echo server, then the relays.
        self.assertNothingLeft(1 + len(contenders), children)
        data = self.resultsFile("relay-rr")
        self.assertEqual(
            [
                (r["variant"], r["contender"], r["metric"], r["baseline"])
                for r in data["results"]
            ],
            [
                ("32 connections, 64 bytes", c, "round trips", c == contenders[0])
                for c in contenders
            ],
        )
        self.assertEqual(
            [
                (r["contender"], r["samples"][0] > 0, r["errors"])
                for r in data["results"]
            ],
            [(r["contender"], True, [0]) for r in data["results"]],
        )

    def test_relayWithoutPeers(self) -> None:
        """
        Without socat and HAProxy the relay scenario says how to install
        them and measures the others.
        """
        requireTools("gcc")
        have = tools.have
        self.patch(
            tools, "have", lambda tool: tool not in ("socat", "haproxy") and have(tool)
        )
        argv = ["relay", "--seconds", "0.2", "--rounds", "1", "--warmup", "0.1"]
        self.assertEqual(
            run.main([*argv, "--no-plot", "--results", str(self.results)]), 0
        )
        self.assertEqual(
            self.stderr.getvalue(),
            "relay: leaving out what needs\n"
            "  socat: apt-get install socat\n"
            "  haproxy: apt-get install haproxy\n",
        )
        self.assertEqual(
            [r["contender"] for r in self.resultsFile("relay")["results"]],
            ["twistd portforward", "multiport", "multiport, no splice"] * 4,
        )

    def test_workers(self) -> None:
        """
        A tiny workers run (one placement) measures 1 worker, 2 sharing a
        socket and 2 with SO_REUSEPORT, HTTP and echo, each with a daemon of
        its own: every request answered, the spread read from the status
        port, and no process left behind, workers included.
        """
        requireTools("gcc", "wrk")
        placement = scenarios.PLACEMENTS[1]
        self.assertEqual(placement.name, "generator on CPU 1")
        self.patch(scenarios, "PLACEMENTS", (placement,))
        workerPids: list[int] = []
        enter = servers.MultiportWorkers.__enter__

        def recordingEnter(server: servers.MultiportWorkers) -> object:
            entered = enter(server)
            workerPids.extend(server.workerPids)
            return entered

        self.patch(servers.MultiportWorkers, "__enter__", recordingEnter)
        children = liveChildren()
        argv = ["workers", "--seconds", "1", "--rounds", "1", "--warmup", "0.1"]
        self.assertEqual(
            run.main([*argv, "--no-plot", "--results", str(self.results)]), 0
        )
        self.assertNothingLeft(6, children)
        self.assertEqual(len(workerPids), 8)
        self.assertEqual([pid for pid in workerPids if processes.alive(pid)], [])
        results = self.resultsFile("workers")["results"]
        contenders = [
            "1 worker",
            "2 workers, shared socket",
            "2 workers, SO_REUSEPORT",
        ]
        variants = ["HTTP, generator on CPU 1", "echo, generator on CPU 1"]
        self.assertEqual(
            [
                (r["variant"], r["contender"], r["metric"], r["baseline"])
                for r in results
            ],
            [
                (variant, contender, metric, contender == "1 worker")
                for variant, metric in zip(
                    variants, ["requests", "round trips"], strict=True
                )
                for contender in contenders
            ]
            + [
                (variant, contender, "server CPU", contender == "1 worker")
                for variant in variants
                for contender in contenders
            ]
            + [
                (variant, contender, metric, False)
                for metric in (
                    "smaller worker's connections",
                    "smaller worker's bytes sent",
                    "smaller worker's CPU",
                )
                for variant in variants
                for contender in contenders[1:]
            ],
        )
        for result in results:
            [value] = result["samples"]
            self.assertEqual(result["errors"], [0])
            if result["unit"] == "%":
                # With a shared socket one worker may accept every
                # connection (docs/benchmarks.rst shows it): 0 is a share.
                self.assertTrue(0 <= value <= 50 + 1e-9, result)
            else:
                self.assertGreater(value, 0, result)

    def test_httpWithoutCompiler(self) -> None:
        """
        The http scenario, which needs wrk and not the C load generator, runs
        where there is no compiler.
        """
        requireTools("wrk")
        self.patch(tools, "BUILD", Path(self.mktemp()))
        self.restrictPath("wrk")
        argv = ["http", "--seconds", "1", "--rounds", "1", "--warmup", "0.1"]
        try:
            status = run.main([*argv, "--no-plot", "--results", str(self.results)])
        finally:
            processes.stopAll()
        self.assertEqual(status, 0)
        data = self.resultsFile("http")
        self.assertEqual(data["scenario"], "http")
        # Keep-alive, a new connection for every request (the rate), and
        # the large file.
        self.assertEqual(
            sorted({(r["variant"], r["contender"]) for r in data["results"]}),
            sorted(
                (variant, contender)
                for variant in ("keep-alive", "new connection each", "1 MiB file")
                for contender in {r["contender"] for r in data["results"]}
            ),
        )
        self.assertIn("twistd web", {r["contender"] for r in data["results"]})
        self.assertTrue(all(r["errors"] == [0] for r in data["results"]))

    def test_commandRecorded(self) -> None:
        """
        The results record the command as it was given, even with no
        arguments at all.
        """
        requireTools("gcc")
        quick = Scenario(
            "quick",
            "Quick",
            lambda settings: [series("v", "a", [1.0], baseline=True)],
            needs=(),
        )
        self.patch(run, "SCENARIOS", {"quick": quick})
        self.patch(run, "RESULTS", self.results)
        self.patch(sys, "argv", ["trial", "tests.test_benchmarks"])
        self.assertEqual(run.main([]), 0)
        self.assertEqual(self.resultsFile("quick")["command"], "python -m benchmarks")


class IdleRelayHelpersTests(SynchronousTestCase):
    """
    What the idle-relay scenario measures with.
    """

    def test_settleReachesTarget(self) -> None:
        """
        L{scenarios.settle} returns as soon as the figure reaches its target.
        """
        values = iter([1, 2, 5])
        self.assertEqual(scenarios.settle(lambda: next(values), 5, poll=0.001), 5)

    def test_settleQuiet(self) -> None:
        """
        A figure that stops short of its target is taken once it has not
        changed for the quiet time.
        """
        values = iter([1, 3] + [4] * 1000)
        started = time.monotonic()
        self.assertEqual(
            scenarios.settle(lambda: next(values), 10, quiet=0.05, poll=0.001), 4
        )
        self.assertLess(time.monotonic() - started, 1)

    def test_settleTimeout(self) -> None:
        """
        A figure still changing after the timeout is an error.
        """
        values = iter(range(100000))
        error = self.assertRaises(
            RuntimeError,
            scenarios.settle,
            lambda: next(values),
            10**9,
            quiet=1,
            timeout=0.05,
            poll=0.001,
        )
        self.assertIn("still changing after 0.05s", str(error))

    def test_relayTrouble(self) -> None:
        """
        Lines of a relay's log since it started saying it ran out of
        descriptors or could not reach its upstream are counted.
        """
        log = Path(self.mktemp())
        log.write_text("EMFILE from an earlier run\n")
        server = servers.Server("relay", ["true"], 1, log.parent)
        server.logPath, server.logOffset = log, log.stat().st_size
        with log.open("a") as f:
            f.write(
                "Could not accept new connection (EMFILE)\n"
                "relay on tcp:127.0.0.1:1: cannot connect to 127.0.0.1:2: ...\n"
                "socket: Too many open files\n"
                "closed clean\n"
            )
        self.assertEqual(scenarios.relayTrouble(server), 3)


class SettingsTests(SynchronousTestCase):
    """
    L{Settings} defaults, which the command line's defaults repeat.
    """

    def test_defaults(self) -> None:
        """
        The command line's defaults are the settings' defaults.
        """
        arguments = run.parser().parse_args([])
        settings = Settings(workdir=Path("."))
        self.assertEqual(
            (
                arguments.seconds,
                arguments.rounds,
                arguments.warmup,
                arguments.idle_connections,
                tuple(int(n) for n in arguments.port_counts.split(",")),
                arguments.file_limit,
            ),
            (
                settings.seconds,
                settings.rounds,
                settings.warmup,
                settings.idleConnections,
                settings.portCounts,
                settings.fileLimit,
            ),
        )
