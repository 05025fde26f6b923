"""
Tests for C{multiport-ctl roll}: the steps of one instance's roll against
a fake instance and a fake clock, then a real roll of two daemonized
instances restarted by a shell command.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from multiport.ctl.client import CtlError
from multiport.ctl.rolling import RollSettings, commandRestart, rollOne
from tests.support import waitUntil
from tests.test_benchmarks import alive
from tests.test_drain import health
from tests.test_live import freePort
from tests.test_livedaemon import connect, echoes
from tests.test_twistd import stopDaemon


@define
class FakeInstance:
    """
    One instance whose open connections and readiness follow a script, and
    a clock that moves only when the roll sleeps.
    """

    connectionsAt: list[tuple[float, int]] = field(factory=lambda: [(0.0, 0)])
    readyAfterRestart: float = 0.0
    now: float = 0.0
    steps: list[str] = field(factory=list)
    restartedAt: float | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def drain(self, base: str) -> None:
        self.steps.append(f"drain {base} at {self.now:g}")

    def undrain(self, base: str) -> None:
        self.steps.append(f"undrain {base} at {self.now:g}")

    def connections(self, base: str) -> int:
        return [count for at, count in self.connectionsAt if at <= self.now][-1]

    def healthy(self, base: str) -> bool:
        return (
            self.restartedAt is not None
            and self.now >= self.restartedAt + self.readyAfterRestart
        )

    def restart(self) -> None:
        self.steps.append(f"restart at {self.now:g}")
        self.restartedAt = self.now


class RollOneTests(SynchronousTestCase):
    """
    The steps of one instance's roll, in order and on time.
    """

    def roll(self, instance: FakeInstance, **settings: float) -> int:
        said: list[str] = []
        return rollOne(
            "http://i1",
            instance,
            instance.restart,
            RollSettings(poll=0.5, **settings),  # type: ignore[arg-type]
            clock=instance.clock,
            sleep=instance.sleep,
            say=said.append,
        )

    def test_order(self) -> None:
        """
        Drain, restart once the balancer had C{settle} seconds and no
        connection is open, undrain once ready, then settle again.
        """
        instance = FakeInstance(readyAfterRestart=1.0)
        self.assertEqual(self.roll(instance, settle=2), 0)
        self.assertEqual(
            instance.steps,
            ["drain http://i1 at 0", "restart at 2", "undrain http://i1 at 3"],
        )
        self.assertEqual(instance.now, 5)

    def test_waitsForConnections(self) -> None:
        """
        The restart waits until the open connections fall below C{below}.
        """
        instance = FakeInstance(connectionsAt=[(0, 10), (4, 3), (6, 0)])
        self.roll(instance, settle=1, below=1)
        self.assertIn("restart at 6", instance.steps)
        instance = FakeInstance(connectionsAt=[(0, 10), (4, 3), (6, 0)])
        self.assertEqual(self.roll(instance, settle=1, below=5), 3)
        self.assertIn("restart at 4", instance.steps)

    def test_drainTimeout(self) -> None:
        """
        Connections that stay open delay the restart at most
        C{drainTimeout} seconds.
        """
        instance = FakeInstance(connectionsAt=[(0, 7)])
        self.assertEqual(self.roll(instance, settle=1, drainTimeout=3), 7)
        self.assertIn("restart at 3", instance.steps)

    def test_notReady(self) -> None:
        """
        An instance not ready within C{readyTimeout} stops the roll with
        an error naming it, still drained.
        """
        instance = FakeInstance(readyAfterRestart=100)
        error = self.assertRaises(
            CtlError, self.roll, instance, settle=0, readyTimeout=5
        )
        self.assertIn("http://i1: not ready (/healthz 200) 5 s after", str(error))
        self.assertEqual(instance.steps, ["drain http://i1 at 0", "restart at 0"])

    def test_restartCommand(self) -> None:
        """
        The restart command gets the instance's fields; one that fails
        stops the roll, naming it and its exit status.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        out = folder / "out"
        restart = commandRestart(
            f"echo {{index}} {{status}} {{host}} {{port}} {{url}} > {out}",
            2,
            ("127.0.0.1", 9102),
            "http://127.0.0.1:9102",
        )
        restart()
        self.assertEqual(
            out.read_text(), "2 127.0.0.1:9102 127.0.0.1 9102 http://127.0.0.1:9102\n"
        )
        error = self.assertRaises(
            CtlError, commandRestart("exit 3", 1, ("::1", 1), "http://[::1]:1")
        )
        self.assertEqual(
            str(error),
            "the restart command 'exit 3' failed with exit status 3; the roll "
            "stops here",
        )

    def test_badUsage(self) -> None:
        """
        An unknown field in the restart command, a bad instance or bad
        seconds are usage errors (exit 2) naming the value.
        """
        for args, named in [
            (["--restart-command", "x {nope}", "127.0.0.1:1"], "{nope}"),
            (["--restart-command", "x", "127.0.0.1:0"], "port 0"),
            (["--restart-command", "x", "--settle", "-1", "1"], "'-1'"),
            (["--restart-command", "x", "--below", "0", "1"], "'0'"),
            (["127.0.0.1:1"], "--restart-command"),
            (["--upgrade", "--restart-command", "x", "127.0.0.1:1"], "not allowed"),
        ]:
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = ctl.main(["roll", *args])
            self.assertEqual(code, 2, args)
            self.assertIn(named, err.getvalue(), args)


#: Restarts instance $1 of the folder it sits in, as a service manager
#: would: SIGTERM, wait for the process to be gone, start it again.
RESTART = """\
set -e
dir="$(dirname "$0")/$1"
pid=$(cat "$dir/twistd.pid")
kill -TERM "$pid"
tail --pid="$pid" -s 0.05 -f /dev/null
exec "$2" --pidfile "$dir/twistd.pid" --logfile "$dir/twistd.log" \
    multiport $(cat "$dir/args") >>"$dir/restart.out" 2>&1
"""


#: The twistd script of the Python running the tests.
TWISTD = str(Path(sys.executable).parent / "twistd")


class RollDaemonsTests(SynchronousTestCase):
    """
    C{multiport-ctl roll} over two real daemonized instances.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.token = self.folder / "token"
        self.token.write_text("roll-token\n")
        (self.folder / "restart.sh").write_text(RESTART)
        self.instances: list[tuple[int, int]] = []
        for index in (1, 2):
            echo, status = freePort(), freePort()
            folder = self.folder / str(index)
            folder.mkdir()
            (folder / "args").write_text(
                f"--ports 127.0.0.1:{echo}=echo --status 127.0.0.1:{status} "
                f"--admin-token-file {self.token} --state-dir {folder}/state "
                "--drain-timeout 10"
            )
            self.instances.append((echo, status))
            self.addCleanup(self.stop, index)
            self.restartCommand(index)

    def restartCommand(self, index: int) -> None:
        """
        Start instance C{index} as the restart command does (nothing to
        stop the first time).
        """
        folder = self.folder / str(index)
        args = (folder / "args").read_text().split()
        command = [TWISTD, "--pidfile", f"{folder}/twistd.pid"]
        command += ["--logfile", f"{folder}/twistd.log", "multiport", *args]
        self.assertEqual(os.spawnv(os.P_WAIT, TWISTD, command), 0)

    def pid(self, index: int) -> int:
        return int((self.folder / str(index) / "twistd.pid").read_text())

    def stop(self, index: int) -> None:
        pidfile = self.folder / str(index) / "twistd.pid"
        if pidfile.exists():
            stopDaemon(int(pidfile.read_text()))

    def roll(self, *how: str) -> str:
        """
        Roll both instances, upgraded or restarted as C{how} says; what
        C{multiport-ctl roll} printed (it must exit 0).
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = ctl.main(
                [
                    "--admin-token-file",
                    str(self.token),
                    "roll",
                    *how,
                    "--settle",
                    "0.2",
                    "--drain-timeout",
                    "20",
                    *(f"127.0.0.1:{status}" for _, status in self.instances),
                ]
            )
        self.assertEqual(code, 0, out.getvalue() + err.getvalue())
        return out.getvalue()

    def test_rollUpgrade(self) -> None:
        """
        With C{--upgrade}, each instance in turn is drained, upgraded (a new
        daemon takes its sockets; twistd's pid file names it), found ready
        and undrained; the old processes drained and exited.
        """
        before = [self.pid(1), self.pid(2)]
        text = self.roll("--upgrade")
        after = [self.pid(1), self.pid(2)]
        self.assertIn("rolled 2 instances", text)
        for (_, status), old, new in zip(self.instances, before, after, strict=True):
            self.assertNotEqual(old, new)
            self.assertIn(f"http://127.0.0.1:{status}: upgraded, new pid {new}", text)
            self.assertIn(f"http://127.0.0.1:{status}: ready and undrained", text)
            self.assertEqual(health(status), (200, b"ok\n"))
            waitUntil(lambda old=old: not alive(old), timeout=30)
        for echo, _ in self.instances:
            with connect(echo) as client:
                self.assertTrue(echoes(client, b"new"))

    def test_roll(self) -> None:
        """
        Each instance in turn is drained, restarted by the command (a new
        process, the old one stopped after the drain), found ready and
        undrained.
        """
        before = [self.pid(1), self.pid(2)]
        restart = f"sh {self.folder}/restart.sh {{index}} {TWISTD}"
        text = self.roll("--restart-command", restart)
        after = [self.pid(1), self.pid(2)]
        self.assertNotEqual(before[0], after[0])
        self.assertNotEqual(before[1], after[1])
        self.assertIn("rolled 2 instances", text)
        for _, status in self.instances:
            self.assertIn(f"http://127.0.0.1:{status}: ready and undrained", text)
            self.assertEqual(health(status), (200, b"ok\n"))
        for index in (1, 2):
            log = (self.folder / str(index) / "twistd.log").read_text()
            # The old process was drained, then stopped.
            drained = log.index("draining for the load balancer")
            self.assertIn("stopped listening", log[drained:])
        for echo, _ in self.instances:
            with connect(echo) as client:
                self.assertTrue(echoes(client, b"new"))
