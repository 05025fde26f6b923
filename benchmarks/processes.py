"""
Starting and stopping the processes a benchmark runs, and reading their
memory: every process started is ended, by process group, whatever happens.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import tools

_RUNNING: dict[int, subprocess.Popen[bytes]] = {}


def cores() -> int:
    """
    The CPUs this process may run on.
    """
    return len(os.sched_getaffinity(0))


def pinned(argv: Sequence[str], core: int | None) -> list[str]:
    """
    C{argv} run with taskset on the C{core}th CPU this process may use (0:
    servers, 1: load generators), when there are two or more and taskset is
    there.
    """
    usable = sorted(os.sched_getaffinity(0))
    if core is None or len(usable) < 2 or not tools.have("taskset"):
        return list(argv)
    return [tools.command("taskset"), "-c", str(usable[core % len(usable)]), *argv]


def freePorts(count: int, host: str = "127.0.0.1") -> list[int]:
    """
    C{count} distinct free TCP ports on C{host}.
    """
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind((host, 0))
            sockets.append(probe)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _raiseFileLimit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _fileLimit(limit: int | None) -> Callable[[], None]:
    """
    What a child runs before its command: the descriptor limit, soft and
    hard, set to C{limit}, or the soft one raised to the hard one.
    """
    if limit is None:
        return _raiseFileLimit

    def setLimit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return setLimit


def start(
    argv: Sequence[str],
    logPath: Path,
    core: int | None = 0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    fileLimit: int | None = None,
) -> subprocess.Popen[bytes]:
    """
    Start a server in a session of its own (so that its children end with
    it), pinned to C{core}, its output to C{logPath}, with its descriptor
    limit (soft and hard) at C{fileLimit}, or raised to the hard limit.
    """
    if fileLimit is not None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and fileLimit > hard:
            raise RuntimeError(
                f"cannot give {argv[0]} a descriptor limit of {fileLimit}: this "
                f"process's hard limit is {hard}"
            )
    with open(logPath, "ab") as log:
        process = subprocess.Popen(
            pinned(argv, core),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_fileLimit(fileLimit),
            env=env,
            cwd=cwd,
        )
    _RUNNING[process.pid] = process
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """
    End C{process} and everything in its session: SIGTERM, then SIGKILL.
    """
    _RUNNING.pop(process.pid, None)
    if process.poll() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    # Children outlive a leader that exited first, and may have moved to
    # process groups of their own: end everything left in the session.
    for pid in sessionPids(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@atexit.register
def stopAll() -> None:
    """
    End every process still running (at exit, and after an error).
    """
    for process in list(_RUNNING.values()):
        stop(process, timeout=5)


#: Seconds between two tries of a port that is not open yet: the resolution
#: of a server's start-up time (at 20 ms it hid the per-port cost of 1,000
#: ports, about 0.1 s, in its rounding).
PORT_POLL = 0.002


def waitForPort(
    port: int,
    process: subprocess.Popen[bytes],
    timeout: float = 60,
    host: str = "127.0.0.1",
) -> float:
    """
    Wait until C{port} accepts connections; the seconds it took.

    @raise RuntimeError: if the process ends first or C{timeout} passes.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}: {process.args}"
            )
        try:
            with socket.create_connection((host, port), timeout=1):
                return time.monotonic() - started
        except OSError:
            time.sleep(PORT_POLL)
    raise RuntimeError(f"port {port} did not open within {timeout}s: {process.args}")


def sessionPids(leader: int) -> list[int]:
    """
    Every process in the session C{leader} started.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid pgrp session ...
        if int(fields[3]) == leader:
            pids.append(int(entry.name))
    return pids


def rssBytes(leader: int) -> int:
    """
    The resident memory of every process in C{leader}'s session, in bytes.
    """
    total = 0
    for pid in sessionPids(leader):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def openFiles(leader: int) -> int:
    """
    How many file descriptors the processes of C{leader}'s session hold.
    """
    total = 0
    for pid in sessionPids(leader):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


def cpuSeconds(leader: int) -> float:
    """
    The CPU time (user and system) every process in C{leader}'s session has
    used so far, in seconds, with that of their children that ended and
    were waited for (socat's forked children end with their client).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in sessionPids(leader):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command, utime, stime, cutime and cstime are the 12th
        # to 15th fields.
        total += sum(int(field) for field in fields[11:15])
    return total / ticks


def bytesRead(leader: int) -> int:
    """
    The bytes every process in C{leader}'s session has read so far, from
    files and sockets alike (C{rchar} of C{/proc/PID/io}).
    """
    total = 0
    for pid in sessionPids(leader):
        try:
            io = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        for line in io.splitlines():
            if line.startswith("rchar:"):
                total += int(line.split()[1])
    return total


def _stat(pid: int) -> list[str] | None:
    """
    The fields of C{/proc/PID/stat} after the command (state first), or
    C{None} if there is no such process.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """
    Whether process C{pid} exists and has not ended (a zombie has ended).
    """
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(parent: int) -> list[int]:
    """
    The live processes whose parent is C{parent}, whatever their session.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if (
                fields is not None
                and int(fields[1]) == parent
                and alive(int(entry.name))
            ):
                found.append(int(entry.name))
    return sorted(found)


def processCPUSeconds(pid: int) -> float:
    """
    The CPU time (user and system) process C{pid} alone has used so far, in
    seconds; 0 if it is gone.
    """
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
