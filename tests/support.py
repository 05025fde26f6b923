"""
Helpers shared by the tests: configurations, services on a reactor, and a
real C{twistd multiport} process.
"""

from __future__ import annotations

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from multiport.config import Config, Defaults, buildConfig
from multiport.handlers.registry import findHandlers
from multiport.portspec import parsePorts

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
    ) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        environment = dict(os.environ if env is None else env)
        self.process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", *twistdArgs, "multiport", *args],
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
