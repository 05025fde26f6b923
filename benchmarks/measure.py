"""
Running a load generator (ours, or wrk) against a server and reading what it
printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence

from attrs import frozen

from benchmarks import processes, tools

#: The CPU the load generator runs on; servers run on CPU 0.
GENERATOR_CORE = 1
#: Above this share of one CPU the generator may itself be the bottleneck.
SATURATED = 0.9


@frozen
class Sample:
    """
    One measurement.

    @ivar value: The figure (operations per second, seconds, bytes...).
    @ivar generatorCPU: The load generator's CPU use over the run as a share
        of one core, or C{None} where no generator ran.
    @ivar errors: Failed operations the generator saw.
    """

    value: float
    generatorCPU: float | None = None
    errors: int = 0

    @property
    def saturated(self) -> bool:
        """
        Whether the generator used (nearly) all of its core.
        """
        return self.generatorCPU is not None and self.generatorCPU >= SATURATED


def parseLoadgen(output: str) -> dict[str, float]:
    """
    The JSON object the C load generator printed last.

    @raise ValueError: if there is none.
    """
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    raise ValueError(f"no result from loadgen in {output!r}")


_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}


def parseWrk(output: str) -> dict[str, float]:
    """
    Requests per second, requests, and errors from wrk's report.

    @raise ValueError: if wrk printed no rate.
    """
    rate = re.search(r"^Requests/sec:\s+([\d.]+)([kKmM]?)", output, re.M)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk output: {output!r}")
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(m?s|m)\b", output, re.M)
    errors = 0
    socketErrors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socketErrors:
        errors += sum(int(n) for n in socketErrors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return {
        "rate": float(rate.group(1)) * _UNITS[rate.group(2)],
        "requests": float(total.group(1)) if total else 0.0,
        "errors": float(errors),
    }


def _run(
    argv: Sequence[str], timeout: float, core: int | None = GENERATOR_CORE
) -> tuple[str, float]:
    """
    Run a generator pinned to C{core} (its own, by default; C{None}: not
    pinned); its output and its CPU use as a share of one core over the
    whole run.  A watchdog kills it after C{timeout} seconds, though every
    generator bounds its own run.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        processes.pinned(argv, core),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        output = process.stdout.read().decode(errors="replace")
        process.stdout.close()
        # wait4, not wait: it also says how much CPU the generator used.
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    if process.returncode:
        raise RuntimeError(f"{argv[0]} failed ({process.returncode}): {output}")
    return output, (usage.ru_utime + usage.ru_stime) / elapsed


def echo(
    ports: Sequence[int],
    connections: int,
    seconds: float,
    size: int = 64,
    warmup: float = 0.5,
    core: int | None = GENERATOR_CORE,
) -> Sample:
    """
    Echo round trips per second over C{connections} spread over C{ports},
    the generator pinned to C{core} (C{None}: not pinned).
    """
    portList = ",".join(map(str, ports))
    return _loadgen(
        ["echo", portList, str(connections), str(size)], seconds, warmup, core
    )


def accept(port: int, concurrency: int, seconds: float, warmup: float = 0.5) -> Sample:
    """
    New connections per second (connect, one byte each way, reset).
    """
    return _loadgen(["accept", str(port), str(concurrency)], seconds, warmup)


def stream(
    port: int,
    connections: int,
    seconds: float,
    warmup: float = 0.5,
    sink: int | None = None,
) -> Sample:
    """
    Relay throughput in MB/s (10^6 bytes per second): bytes written over
    C{connections} connections to C{port}, each sent 64 KB at a time as fast
    as it takes them.

    @param sink: The process id of the sink the relay writes to, which runs
        on the generator's CPU: its CPU use is added to the generator's, so
        that the sample says when that CPU was the limit.
    @raise RuntimeError: if no byte was written, or none reached the sink.
    """
    cpuBefore, readBefore = 0.0, 0
    if sink is not None:
        cpuBefore, readBefore = processes.cpuSeconds(sink), processes.bytesRead(sink)
    started = time.monotonic()
    sample = _loadgen(["stream", str(port), str(connections)], seconds, warmup)
    elapsed = time.monotonic() - started
    received = processes.bytesRead(sink) - readBefore if sink is not None else None
    if sample.value <= 0 or received == 0:
        raise RuntimeError(
            f"nothing relayed through port {port}: {sample.value:.0f} bytes/s "
            f"written, {received} bytes read by the sink, "
            f"{sample.errors} of {connections} connections failed"
        )
    cpu = sample.generatorCPU
    if sink is not None and cpu is not None:
        cpu += (processes.cpuSeconds(sink) - cpuBefore) / elapsed
    return Sample(sample.value / 1e6, cpu, sample.errors)


def _loadgen(
    arguments: Sequence[str],
    seconds: float,
    warmup: float,
    core: int | None = GENERATOR_CORE,
) -> Sample:
    """
    Run the C load generator (mode, ports, then the mode's own figures) for
    C{seconds} after C{warmup}, on C{core}; operations per second and its
    CPU share.
    """
    mode, ports, *rest = arguments
    output, _ = _run(
        [
            str(tools.loadgen()),
            mode,
            "127.0.0.1",
            ports,
            *rest,
            str(seconds),
            str(warmup),
        ],
        timeout=seconds + warmup + 60,
        core=core,
    )
    result = parseLoadgen(output)
    return Sample(
        result["ops"] / result["seconds"],
        result["cpu_seconds"] / result["seconds"],
        int(result["errors"]),
    )


def wrk(
    url: str,
    connections: int,
    seconds: float,
    headers: Sequence[str] = (),
    core: int | None = GENERATOR_CORE,
) -> Sample:
    """
    HTTP requests per second with wrk (one thread, keep-alive unless a
    header says otherwise), pinned to C{core} (C{None}: not pinned).
    """
    argv = [
        tools.command("wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
    ]
    for header in headers:
        argv += ["-H", header]
    output, cpu = _run([*argv, url], timeout=seconds + 60, core=core)
    result = parseWrk(output)
    return Sample(result["rate"], cpu, int(result["errors"]))


_H2LOAD_FINISHED = re.compile(r"^finished in [\d.]+m?s, ([\d.]+) req/s", re.M)
_H2LOAD_REQUESTS = re.compile(
    r"^requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, "
    r"(\d+) failed, \d+ errored, (\d+) timeout",
    re.M,
)
_H2LOAD_CODES = re.compile(
    r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M
)
_H2LOAD_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.M)


@frozen
class H2loadReport:
    """
    What h2load printed: requests per second, how many requests succeeded,
    failed and timed out, the answers other than 2xx, and the protocol
    spoken (L{None} if no connection was made).
    """

    rate: float
    succeeded: int
    failed: int
    timeouts: int
    non2xx: int
    protocol: str | None


def parseH2load(output: str) -> H2loadReport:
    """
    h2load's report.

    @raise ValueError: if h2load printed no result.
    """
    finished = _H2LOAD_FINISHED.search(output)
    requests = _H2LOAD_REQUESTS.search(output)
    codes = _H2LOAD_CODES.search(output)
    if finished is None or requests is None or codes is None:
        raise ValueError(f"no result in h2load output: {output!r}")
    protocol = _H2LOAD_PROTOCOL.search(output)
    succeeded, failed, timeouts = (int(n) for n in requests.groups()[1:])
    return H2loadReport(
        rate=float(finished.group(1)),
        succeeded=succeeded,
        failed=failed,
        timeouts=timeouts,
        non2xx=sum(int(n) for n in codes.groups()[1:]),
        protocol=None if protocol is None else protocol.group(1),
    )


def h2load(
    url: str,
    clients: int,
    streams: int,
    seconds: float,
    warmup: float = 0.5,
    http1: bool = False,
    core: int | None = GENERATOR_CORE,
) -> Sample:
    """
    HTTPS requests per second with h2load (one thread): C{clients}
    connections of C{streams} concurrent requests each, over HTTP/2, or
    over HTTP/1.1 when C{http1}; pinned to C{core}.

    Errors are the answers other than 2xx, the timeouts, and the failed
    requests beyond the C{clients * streams} that h2load counts as failed
    when the run stops with them in flight.

    @raise RuntimeError: if the server spoke another protocol, or answered
        nothing.
    """
    argv = [
        tools.command("h2load"),
        "-t1",
        f"-c{clients}",
        f"-m{streams}",
        f"-D{max(1, round(seconds * 1000))}ms",
        f"--warm-up-time={round(warmup * 1000)}ms",
        *(["--h1"] if http1 else []),
        url,
    ]
    output, cpu = _run(argv, timeout=seconds + warmup + 60, core=core)
    report = parseH2load(output)
    expected = "http/1.1" if http1 else "h2"
    if report.protocol != expected or not report.succeeded:
        raise RuntimeError(
            f"h2load got {report.succeeded} answers from {url} over "
            f"{report.protocol}, not {expected}: {output[-2000:]}"
        )
    errors = report.non2xx + report.timeouts + max(0, report.failed - clients * streams)
    return Sample(report.rate, cpu, errors)


class Holder:
    """
    Hold C{connections} idle connections open (the C{hold} mode of loadgen)
    until L{close}.
    """

    def __init__(
        self, ports: Sequence[int], connections: int, timeout: float = 120
    ) -> None:
        self.process = subprocess.Popen(
            processes.pinned(
                [
                    str(tools.loadgen()),
                    "hold",
                    "127.0.0.1",
                    ",".join(map(str, ports)),
                    str(connections),
                ],
                GENERATOR_CORE,
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=processes._raiseFileLimit,
        )
        assert self.process.stdout is not None
        # "ready" comes once every connection is open; the watchdog ends a
        # generator stuck connecting, which ends the readline below.
        watchdog = threading.Timer(timeout, self.process.kill)
        watchdog.start()
        try:
            line = b""
            while line.strip() != b"ready":
                line = self.process.stdout.readline()
                if not line:
                    self.close()
                    raise RuntimeError(
                        f"loadgen hold ended before it was ready ({timeout}s at most)"
                    )
            self.result = parseLoadgen(self.process.stdout.readline().decode())
        finally:
            watchdog.cancel()

    def close(self) -> None:
        """
        Close the connections and wait for the generator to exit.
        """
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
