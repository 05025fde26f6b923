"""
UDP benchmarks: ping-pong datagrams a second with the C generator
(C{udploadgen.c}), each server on CPU 0 and the generator on CPU 1.

The scenarios C{udp-echo} and C{udp-relay} of C{python -m benchmarks}
(L{benchmarks.scenarios}) measure the servers made here, in alternating
rounds like every other scenario;

  python -m benchmarks.udp [--seconds S] [--rounds N] ...

runs those two (it takes C{python -m benchmarks}'s options).

Echo: multiport's UDP echo port against a bare Twisted DatagramProtocol
and an asyncio DatagramProtocol, each reading datagrams of up to 65,535
bytes.  Relay: multiport's UDP relay against C{socat UDP-LISTEN:...,fork}
and nginx's stream UDP proxy, each keeping a session (an upstream socket)
per client address in front of the same upstream, the generator's own C
echo server on the generator's CPU, so that the relay's CPU is the one
measured.  Every run is bounded; every process is stopped at the end.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import measure, servers, tools
from benchmarks.measure import GENERATOR_CORE, Sample

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "udploadgen.c"
PYTHON = sys.executable

#: The generator's clients (each with one datagram in flight), and the size
#: of each datagram.
CLIENTS = 32
SIZE = 64


def udploadgen() -> Path:
    """
    The UDP generator (L{tools.compiled} from C{udploadgen.c}).
    """
    return tools.compiled(SOURCE, "udploadgen")


def freeUDPPort() -> int:
    """
    A UDP port number free on 127.0.0.1 now.
    """
    [port] = freeUDPPorts(1)
    return port


def freeUDPPorts(count: int) -> list[int]:
    """
    C{count} different UDP port numbers free on 127.0.0.1 now.
    """
    probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def answers(port: int, timeout: float = 30, process: object = None) -> float:
    """
    Wait until 127.0.0.1:C{port} answers a datagram; the seconds it took.

    @param process: The server's C{subprocess.Popen}: its exit ends the
        wait at once.
    @raise RuntimeError: if nothing answers within C{timeout} seconds, or
        the process exits first.
    """
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        probe.connect(("127.0.0.1", port))
        while time.monotonic() - started < timeout:
            poll = getattr(process, "poll", None)
            if poll is not None and poll() is not None:
                raise RuntimeError(
                    f"server exited with {poll()}: {getattr(process, 'args', '')}"
                )
            try:
                probe.send(b"ready?")
                probe.recv(100)
                return time.monotonic() - started
            except OSError:
                continue
    raise RuntimeError(f"nothing answers on udp 127.0.0.1:{port} in {timeout}s")


class DatagramServer(servers.Server):
    """
    A UDP server: ready once it answers a datagram on its port.
    """

    def waitReady(self) -> float:
        return answers(self.port, self.timeout, self.process)


def datagrams(
    port: int,
    seconds: float,
    warmup: float = 0.5,
    clients: int = CLIENTS,
    size: int = SIZE,
    upstream: servers.Server | None = None,
) -> Sample:
    """
    One generator run against 127.0.0.1:C{port}: datagrams answered a
    second, the generator's CPU share, datagrams lost.

    @param upstream: The relays' upstream, which shares the generator's
        CPU: its CPU use is added to the generator's, so that the sample
        says when that CPU was the limit.
    """
    cpuBefore = upstream.cpuSeconds() if upstream is not None else 0.0
    started = time.monotonic()
    output, _ = measure._run(
        [
            str(udploadgen()),
            "127.0.0.1",
            str(port),
            str(clients),
            str(size),
            str(seconds),
            str(warmup),
        ],
        timeout=seconds + warmup + 60,
    )
    elapsed = time.monotonic() - started
    result = measure.parseLoadgen(output)
    cpu = result["cpu_seconds"] / result["seconds"]
    if upstream is not None:
        cpu += (upstream.cpuSeconds() - cpuBefore) / elapsed
    return Sample(result["ops"] / result["seconds"], cpu, int(result["errors"]))


def _multiport(workdir: Path, port: int, config: str, name: str) -> DatagramServer:
    path = workdir / f"multiport-udp-{port}.toml"
    path.write_text(config)
    return DatagramServer(
        name,
        [
            *servers.TWISTD,
            "multiport",
            "--no-status",
            "--state-dir",
            str(workdir / "state"),
            "--config",
            str(path),
        ],
        port,
        workdir,
    )


def multiportEcho(workdir: Path, port: int) -> DatagramServer:
    """
    multiport's echo handler on UDP C{port}.
    """
    return _multiport(
        workdir,
        port,
        f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\nprotocol = "udp"\n'
        'handler = "echo"\n',
        "multiport",
    )


def twistedEcho(workdir: Path, port: int) -> DatagramServer:
    """
    A bare Twisted L{DatagramProtocol} echo (C{reactor.listenUDP}).
    """
    return DatagramServer(
        "twisted",
        [PYTHON, "-m", "benchmarks.peers.udp_echo", str(port)],
        port,
        workdir,
    )


def asyncioEcho(workdir: Path, port: int) -> DatagramServer:
    """
    An asyncio L{asyncio.DatagramProtocol} echo.
    """
    return DatagramServer(
        "asyncio",
        [PYTHON, "-m", "benchmarks.peers.udp_echo", str(port), "--asyncio"],
        port,
        workdir,
    )


def upstreamEcho(workdir: Path, port: int) -> DatagramServer:
    """
    The generator's C echo server, the relays' upstream, on the
    generator's CPU.
    """
    return DatagramServer(
        "upstream",
        [str(udploadgen()), "echoserver", "127.0.0.1", str(port)],
        port,
        workdir,
        core=GENERATOR_CORE,
    )


def multiportRelay(workdir: Path, port: int, upstream: int) -> DatagramServer:
    """
    multiport's relay handler on UDP C{port}, to 127.0.0.1:C{upstream}.
    """
    return _multiport(
        workdir,
        port,
        f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\nprotocol = "udp"\n'
        f'handler = "relay"\noptions = {{ upstream = "127.0.0.1:{upstream}" }}\n',
        "multiport relay",
    )


def socat(workdir: Path, port: int, upstream: int) -> DatagramServer:
    """
    C{socat UDP-LISTEN:PORT,fork}: a process per client address, each with
    its own socket connected to the upstream.
    """
    return DatagramServer(
        "socat",
        [
            tools.command("socat"),
            f"UDP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"UDP:127.0.0.1:{upstream}",
        ],
        port,
        workdir,
    )


def nginxConfig(workdir: Path, port: int, upstream: int) -> Path:
    """
    An nginx configuration proxying UDP C{port} to C{upstream} with one
    worker.  Without C{proxy_responses} nginx keeps a session (an upstream
    socket) per client address until C{proxy_timeout} passes without a
    datagram, as multiport's relay does with C{session_timeout}; with
    C{proxy_responses 1} it would open and close an upstream socket for
    every datagram, which is other work.
    """
    path = workdir / f"nginx-udp-{port}.conf"
    path.write_text(
        f"load_module {tools.NGINX_STREAM};\n"
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {workdir}/nginx-udp-{port}.pid;\n"
        f"error_log {workdir}/nginx-udp-error.log;\n"
        "events { worker_connections 4096; }\n"
        "stream {\n"
        f"  server {{ listen 127.0.0.1:{port} udp; proxy_pass 127.0.0.1:{upstream};"
        " proxy_timeout 30s; }\n"
        "}\n"
    )
    return path


def nginx(workdir: Path, port: int, upstream: int) -> DatagramServer:
    """
    nginx's stream module proxying UDP C{port} to C{upstream}.
    """
    return DatagramServer(
        "nginx",
        [
            tools.command("nginx"),
            "-c",
            str(nginxConfig(workdir, port, upstream)),
            "-p",
            str(workdir),
        ],
        port,
        workdir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{python -m benchmarks udp-echo udp-relay}, with the options given.
    """
    from benchmarks import run

    return run.main(
        ["udp-echo", "udp-relay", *(sys.argv[1:] if argv is None else argv)]
    )


if __name__ == "__main__":
    raise SystemExit(main())
