"""
Tests for L{benchmarks.soak}: a short soak against a real daemon, and the
tool's pieces (the port plan, the configuration it writes, the counter check
on a canned C{/status}, the checks and the report).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import soak
from benchmarks.soak import Check, Figures, PortFigures

#: A /status document as the daemon serves it (trimmed to what the soak
#: reads), with one port whose counters don't add up.
STATUS = {
    "version": "0.1.0",
    "ports": [
        {
            "name": "tcp:127.0.0.1:7000",
            "handler": "echo",
            "connections": {"current": 2, "accepted": 10, "closed": 8, "rejected": 1},
        },
        {
            "name": "tcp:127.0.0.1:8443",
            "handler": "https",
            "connections": {"current": 0, "accepted": 5, "closed": 4, "rejected": 0},
        },
        {
            "name": "tcp:127.0.0.1:9099",
            "handler": "status",
            "connections": {"current": 1, "accepted": 3, "closed": 2, "rejected": 0},
        },
    ],
}


def goodFigures() -> Figures:
    """
    The figures of a run where everything went right.
    """
    return Figures(
        seconds=10,
        connections=400,
        ports=12,
        workers=1,
        seed=7,
        handlers={"echo": 5, "http": 2, "https": 2, "relay": 3},
        allHeldAt=2.0,
        heldMin=400,
        daemonCurrentMin=405,
        daemonCurrentPeak=420,
        exchanges={"echo": 100, "relay": 50},
        bytesSent={"echo": 1000, "relay": 500},
        bytesVerified={"echo": 1000, "relay": 500},
        events={"short session": 3},
        scrapes=10,
        daemonCloses={"clean": 30, "reset": 4},
        drainSeconds=0.2,
        fdsBefore=22,
        fdsAfter=22,
        rssBefore=50_000,
        rssSteady=60_000,
        rssPeak=63_000,
        rssEnd=61_000,
        portFigures=[
            PortFigures("tcp:127.0.0.1:7000", "echo", 10, 10, 0, 0),
            PortFigures("tcp:127.0.0.1:9099", "status", 3, 2, 1, 0),
        ],
    )


class PlanTests(SynchronousTestCase):
    """
    L{soak.planPorts} and L{soak.configText}.
    """

    def test_fifty(self):
        """
        50 ports: 40% echo, 20% http, 16% https, 24% relay.
        """
        self.assertEqual(
            soak.planPorts(50), {"echo": 20, "http": 10, "https": 8, "relay": 12}
        )

    def test_everyCount(self):
        """
        Any count from 4 adds up, with at least one port of each handler.
        """
        for count in range(4, 120):
            plan = soak.planPorts(count)
            self.assertEqual(sum(plan.values()), count, plan)
            self.assertTrue(all(n >= 1 for n in plan.values()), plan)

    def test_tooFew(self):
        """
        Fewer ports than handlers is refused.
        """
        self.assertRaises(ValueError, soak.planPorts, 3)

    def test_config(self):
        """
        The file has one [[port]] table per port, all on 127.0.0.1 with port
        0, and the relay ports name the upstream.
        """
        text = soak.configText({"echo": 2, "relay": 1}, ("127.0.0.1", 4242))
        ports = tomllib.loads(text)["port"]
        self.assertEqual([p["handler"] for p in ports], ["echo", "echo", "relay"])
        self.assertEqual(
            {(p["interface"], p["port"]) for p in ports}, {("127.0.0.1", 0)}
        )
        self.assertEqual(ports[2]["options"], {"upstream": "127.0.0.1:4242"})


class CounterCheckTests(SynchronousTestCase):
    """
    accepted = closed + current, from a canned C{/status}.
    """

    def test_portFigures(self):
        """
        Every port's counters are read.
        """
        figures = soak.portFiguresOf(STATUS)
        self.assertEqual(
            figures[0], PortFigures("tcp:127.0.0.1:7000", "echo", 10, 8, 2, 1)
        )
        self.assertEqual([f.consistent for f in figures], [True, False, True])

    def test_inconsistent(self):
        """
        The ports whose counters don't add up are named.
        """
        self.assertEqual(soak.inconsistentPorts(STATUS), ["tcp:127.0.0.1:8443"])

    def test_checkFails(self):
        """
        One port that doesn't add up fails the port counters check.
        """
        figures = goodFigures()
        figures.portFigures = soak.portFiguresOf(STATUS)
        [check] = [c for c in soak.evaluate(figures) if c.name == "port counters"]
        self.assertFalse(check.passed)
        self.assertIn("on 2 of 3 ports", check.detail)

    def test_leftOpen(self):
        """
        A load port with a connection still open at the end fails it too.
        """
        figures = goodFigures()
        figures.portFigures[0] = PortFigures("tcp:127.0.0.1:7000", "echo", 10, 9, 1, 0)
        [check] = [c for c in soak.evaluate(figures) if c.name == "port counters"]
        self.assertFalse(check.passed)
        self.assertIn("1 connections left open", check.detail)


class EvaluateTests(SynchronousTestCase):
    """
    L{soak.evaluate} judges the figures.
    """

    def verdicts(self, figures: Figures) -> dict[str, bool]:
        return {check.name: check.passed for check in soak.evaluate(figures)}

    def test_allGood(self):
        """
        The good run passes every check.
        """
        verdicts = self.verdicts(goodFigures())
        self.assertEqual(
            set(verdicts),
            {
                "connections held",
                "bytes verified",
                "no errors",
                "status scrapes",
                "file descriptors",
                "memory",
                "port counters",
            },
        )
        self.assertTrue(all(verdicts.values()), verdicts)

    def test_failures(self):
        """
        Each figure out of bounds fails its own check and no other.
        """
        cases = {
            "connections held": {"heldMin": 399},
            "bytes verified": {"bytesVerified": {"echo": 999, "relay": 500}},
            "no errors": {"errors": {"echo: mismatch": 1}},
            "status scrapes": {"scrapeFailures": 1},
            "file descriptors": {"fdsAfter": 23},
            "memory": {"rssEnd": 66_001},
        }
        for name, changes in cases.items():
            figures = goodFigures()
            for key, value in changes.items():
                setattr(figures, key, value)
            verdicts = self.verdicts(figures)
            self.assertEqual(
                [n for n, ok in verdicts.items() if not ok], [name], changes
            )

    def test_keptPipes(self):
        """
        Pipes the splice pool keeps after the load pass, up to the pool's
        idle bound (two descriptors a pipe); more fail the descriptor check.
        """
        figures = goodFigures()
        figures.pipesKept = soak.KEPT_PIPE_DESCRIPTORS
        self.assertTrue(self.verdicts(figures)["file descriptors"])
        figures.pipesKept = soak.KEPT_PIPE_DESCRIPTORS + 2
        self.assertFalse(self.verdicts(figures)["file descriptors"])
        self.assertEqual(
            soak.withoutPipes(["0:pipe:[1]", "5:socket:[2]", "9:pipe:[3]"]),
            (["5:socket:[2]"], ["0:pipe:[1]", "9:pipe:[3]"]),
        )

    def test_memoryBound(self):
        """
        The end may be up to 10% over the steady level.
        """
        figures = goodFigures()
        figures.rssEnd = 66_000
        self.assertTrue(self.verdicts(figures)["memory"])

    def test_neverHeld(self):
        """
        A run that never held every connection at once fails, saying so.
        """
        figures = goodFigures()
        figures.allHeldAt = None
        [check] = [c for c in soak.evaluate(figures) if c.name == "connections held"]
        self.assertEqual(
            (check.passed, check.detail), (False, "never all 400 open at once")
        )

    def test_aborted(self):
        """
        A run that stopped short fails.
        """
        figures = goodFigures()
        figures.aborted = "did not finish in 65 s"
        figures.checks = soak.evaluate(figures)
        self.assertFalse(soak.passed(figures))
        self.assertEqual(
            figures.checks[0], Check("run finished", False, figures.aborted)
        )


class ReportTests(SynchronousTestCase):
    """
    L{soak.formatReport} and L{Figures.toJSON}.
    """

    def test_report(self):
        """
        The report has the figures, one line per check, one row per port,
        and the verdict last.
        """
        figures = goodFigures()
        figures.checks = soak.evaluate(figures)
        lines = soak.formatReport(figures).splitlines()
        self.assertEqual(lines[-1], "PASSED")
        self.assertIn("  fds before/after     22 / 22", lines)
        self.assertIn(
            "  RSS                  before 48.8 MB, steady 58.6 MB, peak 61.5 MB, "
            "end 59.6 MB",
            lines,
        )
        self.assertIn("  bytes sent/verified  echo 1,000/1,000, relay 500/500", lines)
        self.assertIn("  client errors        none", lines)
        self.assertIn(
            "  daemon closes        clean 30, reset 4 (34 log lines for 10 "
            "connections accepted on the load ports)",
            lines,
        )
        self.assertIn(
            "  ok    file descriptors    before 22, after 22, besides 0 of pipes "
            "the splice pool keeps (at most 32)",
            lines,
        )
        self.assertIn(
            "  tcp:127.0.0.1:7000  echo           10        10        0         0  yes",
            lines,
        )

    def test_failedReport(self):
        """
        A failed check is marked FAIL and the verdict is FAILED.
        """
        figures = goodFigures()
        figures.fdsAfter = 30
        figures.fdsLeaked = ["123:socket:[4567]"]
        figures.checks = soak.evaluate(figures)
        report = soak.formatReport(figures)
        self.assertIn("FAIL  file descriptors    before 22, after 30", report)
        self.assertIn("still open: 123:socket:[4567]", report)
        self.assertTrue(report.endswith("\nFAILED"))

    def test_json(self):
        """
        The JSON figures say whether each port adds up and whether the run
        passed.
        """
        figures = goodFigures()
        figures.checks = soak.evaluate(figures)
        data = json.loads(json.dumps(figures.toJSON()))
        self.assertTrue(data["passed"])
        self.assertEqual(data["portFigures"][0]["consistent"], True)
        self.assertEqual(data["checks"][0]["name"], "connections held")


class AbortTests(SynchronousTestCase):
    """
    A run that stops short fails, says why, and stays bounded.
    """

    def runWith(self, step):
        """
        A run whose work is C{step} (an async function of the folder).
        """
        run = soak.Soak(soak.Options(seconds=0, connections=10, ports=4, quiet=True))
        self.patch(run, "_run", step)
        return asyncio.run(run.run())

    def test_error(self):
        """
        An error is reported with the step it happened in.
        """

        async def fails(folder):
            raise OSError("no such thing")

        figures = self.runWith(fails)
        self.assertEqual(figures.aborted, "starting: OSError: no such thing")
        self.assertFalse(soak.passed(figures))
        report = soak.formatReport(figures)
        self.assertIn("FAIL  run finished", report)
        self.assertIn("stopped short: starting: OSError: no such thing", report)

    def test_bound(self):
        """
        Past the load phase and L{soak.MARGIN}, the run stops.
        """
        self.patch(soak, "MARGIN", 0.1)

        async def hangs(folder):
            await asyncio.sleep(30)

        figures = self.runWith(hangs)
        self.assertEqual(figures.aborted, "did not finish in 0.1 s (starting)")
        self.assertLess(figures.elapsed, 5)


class ProcTests(SynchronousTestCase):
    """
    Reading a process's descriptors and memory from /proc.
    """

    def test_self(self):
        """
        This process's tree includes it; its descriptors and memory are
        read.
        """
        pid = os.getpid()
        self.assertIn(pid, soak.processTree(pid))
        before = len(soak.openFiles(pid))
        with open(os.devnull):
            self.assertEqual(len(soak.openFiles(pid)), before + 1)
        self.assertGreater(soak.residentKB(pid), 1000)


class ArgumentTests(SynchronousTestCase):
    """
    The command line.
    """

    def test_defaults(self):
        """
        60 seconds, 2000 connections, 50 ports, one worker.
        """
        options = soak.parseArguments([])
        self.assertEqual(
            (options.seconds, options.connections, options.ports, options.workers),
            (60.0, 2000, 50, 1),
        )

    def test_bad(self):
        """
        Out of range values are usage errors.
        """
        for argv in (["--seconds", "1"], ["--ports", "3"], ["--workers", "0"]):
            with redirect_stderr(io.StringIO()):
                self.assertRaises(SystemExit, soak.parseArguments, argv)


class ShortSoakTests(SynchronousTestCase):
    """
    A short soak against a real daemon.
    """

    def test_shortSoak(self):
        """
        Ten seconds, 400 connections over 12 ports: every check passes, the
        exit status is 0, and the JSON figures say so.
        """
        path = Path(self.mktemp())
        out = io.StringIO()
        with redirect_stdout(out):
            code = soak.main(
                [
                    "--seconds",
                    "10",
                    "--connections",
                    "400",
                    "--ports",
                    "12",
                    "--seed",
                    "1",
                    "--json",
                    str(path),
                ]
            )
        report = out.getvalue()
        self.assertEqual(code, 0, report)
        self.assertTrue(report.endswith("PASSED\n"), report)
        figures = json.loads(path.read_text())
        self.assertTrue(figures["passed"])
        self.assertEqual(figures["handlers"], soak.planPorts(12))
        self.assertEqual(figures["heldMin"], 400)
        self.assertGreaterEqual(figures["daemonCurrentMin"], 400)
        self.assertEqual(figures["mismatches"], 0)
        self.assertEqual(figures["bytesSent"], figures["bytesVerified"])
        self.assertGreater(figures["bytesSent"]["echo"], 0)
        self.assertGreater(figures["bytesSent"]["relay"], 0)
        self.assertEqual(figures["errors"], {})
        self.assertEqual(figures["fdsBefore"], figures["fdsAfter"])
        self.assertLessEqual(figures["rssEnd"], figures["rssSteady"] * 1.1)
        self.assertEqual(len(figures["portFigures"]), 13)
        self.assertTrue(all(p["consistent"] for p in figures["portFigures"]))
        self.assertGreaterEqual(figures["scrapes"], 9)
        self.assertLess(figures["elapsed"], 10 + soak.MARGIN)
        for event in ("short session", "slow reader", "one-shot request"):
            self.assertGreater(figures["events"].get(event, 0), 0, event)
        self.assertGreater(figures["daemonCloses"].get("reset", 0), 0)
        # One connection log line for each connection the load ports took.
        self.assertEqual(
            sum(figures["daemonCloses"].values()),
            sum(
                p["accepted"]
                for p in figures["portFigures"]
                if p["handler"] != "status"
            ),
        )
