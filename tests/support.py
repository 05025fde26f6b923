"""
Helpers shared by the tests: configurations, services on a reactor, and a
real C{twistd multiport} process.
"""

from __future__ import annotations

import linecache
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.threadable import isInIOThread
from twisted.trial.unittest import FailTest

from multiport.config.build import buildConfig
from multiport.config.model import Config, Defaults
from multiport.config.portspec import parsePorts
from multiport.handlers.registry import findHandlers

#: The handlers found on sys.path, as the daemon finds them.
HANDLERS = findHandlers()

#: twistd ends a run stopped by a signal by killing itself with that signal
#: (exit status 128+N), which skips atexit: under coverage (CI measures the
#: daemons the tests start), save the data first.
_RUN_TWISTD = """
from twisted.application import app

_exitWithSignal = app._exitWithSignal


def _saveCoverageThenExit(sig):
    try:
        import coverage
    except ImportError:
        pass
    else:
        current = coverage.Coverage.current()
        if current is not None:
            current.stop()
            current.save()
    _exitWithSignal(sig)


app._exitWithSignal = _saveCoverageThenExit
from twisted.scripts.twistd import run

run()
"""
TWISTD = [sys.executable, "-c", _RUN_TWISTD]


#: A third-party handler plugin, as another package would ship it.
GREET_PLUGIN = textwrap.dedent(
    """
    from twisted.internet.protocol import Factory, Protocol
    from multiport.handlers import Handler

    class Greet(Protocol):
        def connectionMade(self):
            self.transport.write(b"hello from a plugin\\r\\n")
            self.transport.loseConnection()

    greet = Handler("greet", "Greets, then closes.",
                    lambda context: Factory.forProtocol(Greet))
    """
)


def writePlugin(folder: Path, name: str, source: str) -> Path:
    """
    Write plugin module C{name} into C{folder}/twisted/plugins (no
    C{__init__.py}, as a package ships it); the folder to put on sys.path.
    """
    plugins = folder / "twisted" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def installPlugin(testCase: Any, name: str, source: str) -> None:
    """
    Make plugin module C{name} visible to this process for one test, as if
    its folder had been on sys.path at start.
    """
    import twisted.plugins

    folder = writePlugin(Path(testCase.mktemp()), name, source)
    testCase.patch(sys, "path", [str(folder), *sys.path])
    testCase.patch(
        twisted.plugins,
        "__path__",
        [*twisted.plugins.__path__, str(folder / "twisted" / "plugins")],
    )
    testCase.addCleanup(sys.modules.pop, f"twisted.plugins.{name}", None)


_T = TypeVar("_T")

#: How long a wait lasts unless the test says otherwise: far longer than
#: anything awaited takes on a loaded two-core machine, so a wait that runs
#: out means the awaited thing did not happen.  A passing test never waits
#: this long; only a failing one does.
WAIT_TIMEOUT = 20.0


class WaitTimeout(FailTest):
    """
    A bounded wait ran out: what was awaited did not happen in time.
    """


#: The project's root: test files are named relative to it in messages.
_ROOT = Path(__file__).resolve().parent.parent


def _shortPath(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(_ROOT)) if path.is_relative_to(_ROOT) else filename


def describe(predicate: Callable[[], object]) -> str:
    """
    What C{predicate} awaits, for a failure message: the source text of a
    lambda's body and where it is (C{"counters.closed == 1 (at
    tests/test_port.py:106)"}), else the function's qualified name.
    """
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    where = f"(at {_shortPath(code.co_filename)}:{code.co_firstlineno})"
    if code.co_name != "<lambda>":
        return f"{predicate.__qualname__}() {where}"
    # The body's span, from the positions of the instructions computing it;
    # the entries at column 0 to 0 belong to the lambda's entry and return.
    spans = [
        (line, endLine, column, endColumn)
        for line, endLine, column, endColumn in code.co_positions()
        if None not in (line, endLine, column, endColumn)
        and not (column == endColumn == 0)
    ]
    lines = linecache.getlines(code.co_filename)
    if not spans or not lines:
        return f"a lambda {where}"
    line, column = min((s[0], s[2]) for s in spans)
    endLine, endColumn = max((s[1], s[3]) for s in spans)
    chosen = [text.encode() for text in lines[line - 1 : endLine]]
    chosen[-1] = chosen[-1][:endColumn]
    chosen[0] = chosen[0][column:]
    body = " ".join(b.decode(errors="replace").strip() for b in chosen)
    return f"{body} {where}"


class _Wait(Generic[_T]):
    """
    One bounded wait, shared by L{waitUntil} and L{waitUntilOnReactor}:
    what is awaited, until when, and how it went.
    """

    def __init__(
        self,
        predicate: Callable[[], _T],
        accept: Callable[[_T], object] | None,
        timeout: float,
        what: str | None,
        now: Callable[[], float],
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"a wait's timeout must be positive, not {timeout!r}")
        self.predicate = predicate
        self.accept = accept
        self.timeout = timeout
        self.what = what
        self.now = now
        self.deadline = now() + timeout
        self.checks = 0
        self.last: _T | None = None

    def holds(self) -> bool:
        """
        Call the predicate once; whether its result ends the wait.
        """
        self.checks += 1
        self.last = self.predicate()
        if self.accept is None:
            return bool(self.last)
        return bool(self.accept(self.last))

    def remaining(self) -> float:
        """
        Seconds left before the wait runs out (zero or less once it has).
        """
        return self.deadline - self.now()

    def timedOut(self) -> WaitTimeout:
        """
        The failure that says what was awaited, for how long, and what the
        predicate last gave.
        """
        what = self.what
        if what is None:
            what = describe(self.predicate)
            if self.accept is not None:
                what = f"{what} to satisfy {describe(self.accept)}"
        return WaitTimeout(
            f"waited {self.timeout:g} s for {what}, in vain: "
            f"{self.checks} checks, the last gave {self.last!r}"
        )


def waitUntil(
    predicate: Callable[[], _T],
    timeout: float = WAIT_TIMEOUT,
    *,
    accept: Callable[[_T], object] | None = None,
    interval: float = 0.02,
    what: str | None = None,
) -> _T:
    """
    Block this thread until C{predicate()} returns something true (or
    something C{accept} finds true), and return that.

    C{waitUntil(predicate, timeout=WAIT_TIMEOUT, *, accept=None,
    interval=0.02, what=None) -> value}: C{predicate} is called at once,
    then every C{interval} seconds; after C{timeout} seconds (one last call
    at the deadline) it raises L{WaitTimeout}, naming C{what} (by default
    the source of C{predicate} and C{accept}, see L{describe}), the timeout
    and the predicate's last result.  With C{accept}, a result ends the
    wait when C{accept(result)} is true, so a false one can too (an empty
    list of processes left).  An exception from either ends the wait with
    it.

    For code that runs outside the reactor: a daemon in a subprocess,
    blocking sockets, a test's own thread.  A trial C{TestCase} whose
    reactor must keep turning uses L{waitUntilOnReactor}; called in the
    running reactor's thread, this raises C{RuntimeError} at once rather
    than freeze it.
    """
    running = sys.modules.get("twisted.internet.reactor")
    if running is not None and getattr(running, "running", False) and isInIOThread():
        raise RuntimeError(
            "waitUntil blocks its thread, and this is the running reactor's:"
            " use waitUntilOnReactor"
        )
    wait = _Wait(predicate, accept, timeout, what, time.monotonic)
    while not wait.holds():
        remaining = wait.remaining()
        if remaining <= 0:
            raise wait.timedOut()
        # Outside the reactor, nothing else needs this thread meanwhile.
        time.sleep(min(interval, remaining))
    return wait.last  # type: ignore[return-value]


def waitUntilOnReactor(
    predicate: Callable[[], _T],
    timeout: float = WAIT_TIMEOUT,
    *,
    accept: Callable[[_T], object] | None = None,
    interval: float = 0.005,
    what: str | None = None,
    clock: IReactorTime | None = None,
) -> Deferred[_T]:
    """
    A Deferred that fires with the first true result of C{predicate()} (or
    the first that C{accept} finds true), checked now and then every
    C{interval} seconds on C{clock} while the reactor goes on.

    C{waitUntilOnReactor(predicate, timeout=WAIT_TIMEOUT, *, accept=None,
    interval=0.005, what=None, clock=reactor) -> Deferred}: after
    C{timeout} seconds of C{clock} (one last check at the deadline) it
    fails with L{WaitTimeout}, naming C{what} (by default the source of
    C{predicate} and C{accept}), the timeout and the predicate's last
    result; an exception from either fails it with that.  Cancelling it
    stops the checks.  For trial C{TestCase}s (C{yield} it in an
    C{inlineCallbacks} test); C{clock} lets a test drive it with
    L{twisted.internet.task.Clock}.
    """
    if clock is None:
        from twisted.internet import reactor

        clock = reactor  # type: ignore[assignment]
    assert clock is not None
    wait = _Wait(predicate, accept, timeout, what, clock.seconds)
    pending: list[IDelayedCall] = []

    def stop(result: Deferred[_T]) -> None:
        if pending:
            pending.pop().cancel()

    result: Deferred[_T] = Deferred(stop)

    def check() -> None:
        pending.clear()
        try:
            holds = wait.holds()
        except BaseException:
            result.errback()
            return
        if holds:
            result.callback(wait.last)  # type: ignore[arg-type]
            return
        remaining = wait.remaining()
        if remaining <= 0:
            result.errback(wait.timedOut())
            return
        pending.append(clock.callLater(min(interval, remaining), check))

    check()
    return result


def accepting(port: int, host: str = "127.0.0.1") -> bool:
    """
    Whether something accepts a TCP connection on C{host}:C{port} now (the
    probe connection is closed at once).
    """
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def busyPort(testCase: Any) -> int:
    """
    A port number on 127.0.0.1 that is in use until the test ends.
    """
    taken = socket.socket()
    testCase.addCleanup(taken.close)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return int(taken.getsockname()[1])


DEFAULTS = Defaults()


def configFor(
    ports: str, stateDir: str | Path, defaults: Defaults = DEFAULTS
) -> Config:
    """
    The configuration a C{--ports} value gives.
    """
    return buildConfig(parsePorts(ports), defaults, HANDLERS, Path(stateDir))


def _limitFiles(limit: int) -> Any:
    def set() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return set


class Daemon:
    """
    A real C{twistd -n multiport} process, its log read line by line.
    """

    def __init__(
        self,
        args: Sequence[str],
        cwd: str,
        twistdArgs: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        fileLimit: int | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        """
        @param wrapper: A command that runs twistd's (a socket activator).
        """
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        environment = dict(os.environ if env is None else env)
        self.process = subprocess.Popen(
            [*wrapper, *TWISTD, "-n", "--pidfile=", *twistdArgs, "multiport", *args],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=None if fileLimit is None else _limitFiles(fileLimit),
        )
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def waitFor(
        self, pattern: str, count: int = 1, timeout: float = 30
    ) -> list[re.Match[str]]:
        """
        Wait until C{count} log lines match C{pattern}; fail after
        C{timeout} seconds or if the process ends first.
        """
        expression = re.compile(pattern)
        matches = [m for m in map(expression.search, self.lines) if m]
        deadline = time.monotonic() + timeout
        while len(matches) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {count} lines matching {pattern!r} in {timeout}s:\n"
                    + "".join(self.lines)
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)
                raise AssertionError(
                    f"twistd ended ({self.process.wait()}) before {count} lines "
                    f"matched {pattern!r}:\n" + "".join(self.lines)
                )
            self.lines.append(line)
            match = expression.search(line)
            if match:
                matches.append(match)
        return matches

    def readQueued(self) -> None:
        """
        Take the log lines read so far into L{lines}, without waiting.
        """
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._queue.put(None)
                return
            self.lines.append(line)

    def listening(self, count: int) -> dict[str, tuple[str, int]]:
        """
        Wait for C{count} ports to listen; their addresses by handler and
        name (C{"echo"} and C{"tcp:127.0.0.1:4242"} both map to it).
        """
        found: dict[str, tuple[str, int]] = {}
        pattern = r"listening on tcp:\[?([0-9a-f.:]+?)\]?:(\d+): handler (\S+),"
        for match in self.waitFor(pattern, count):
            host, port, handler = match.group(1), int(match.group(2)), match.group(3)
            found[handler] = (host, port)
            found[f"tcp:{host}:{port}"] = (host, port)
        return found

    def stop(self, timeout: float = 30) -> int:
        """
        SIGTERM the daemon and wait for it to exit; its exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        self._queue.put(None)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


def configuredDaemon(
    folder: Path,
    toml: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    fileLimit: int | None = None,
) -> Daemon:
    """
    A daemon in C{folder} with C{toml} (dedented) as its configuration
    file, its state in C{folder/state} and a status port on 127.0.0.1 at a
    free port, besides C{args}.
    """
    (folder / "multiport.toml").write_text(textwrap.dedent(toml))
    return Daemon(
        [
            "--config",
            str(folder / "multiport.toml"),
            "--status",
            "127.0.0.1:0",
            "--state-dir",
            str(folder / "state"),
            *args,
        ],
        str(folder),
        env=env,
        fileLimit=fileLimit,
    )


#: Where Linux's struct tcp_info keeps tcpi_data_segs_in (since 4.6): the
#: TCP segments with data a socket has received.
_TCPI_DATA_SEGS_IN = 152


def dataSegmentsIn(skt: socket.socket) -> int:
    """
    How many TCP segments carrying data C{skt} has received so far, as the
    kernel counts them (C{TCP_INFO}); the difference over one response is
    how many segments the server sent it in.
    """
    info = skt.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < _TCPI_DATA_SEGS_IN + 4:
        raise AssertionError(
            f"this kernel's TCP_INFO ({len(info)} bytes) has no tcpi_data_segs_in"
        )
    return int.from_bytes(
        info[_TCPI_DATA_SEGS_IN : _TCPI_DATA_SEGS_IN + 4], sys.byteorder
    )
