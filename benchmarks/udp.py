"""
UDP benchmarks: ping-pong datagrams a second with the C generator
(C{udploadgen.c}), the server on one core and the generator on the other.

  python -m benchmarks.udp [--seconds S] [--clients N] [--size B]

Echo: multiport's UDP echo port against a bare Twisted DatagramProtocol
and an asyncio DatagramProtocol.  Relay: multiport's UDP relay against
C{socat UDP-LISTEN:...,fork} and nginx's stream UDP proxy, each in front
of the same bare Twisted echo upstream (on the generator's core, so that
the relay's core is the one measured).  Every run is bounded by
C{--seconds}; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks import processes, tools

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "udploadgen.c"
PYTHON = sys.executable
TWISTD = [PYTHON, "-c", "from twisted.scripts.twistd import run; run()", "-n"]
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


def udploadgen() -> Path:
    """
    The UDP generator, compiled with gcc when missing or older than its
    source.
    """
    binary = tools.BUILD / "udploadgen"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    tools.BUILD.mkdir(exist_ok=True)
    subprocess.run(
        [tools.command("gcc"), "-O2", "-Wall", "-o", str(binary), str(SOURCE)],
        check=True,
    )
    return binary


def freeUDPPort() -> int:
    """
    A UDP port number free on 127.0.0.1 now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(port: int, timeout: float = 30) -> None:
    """
    Wait until 127.0.0.1:C{port} answers a datagram.

    @raise RuntimeError: if it does not within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        probe.connect(("127.0.0.1", port))
        while time.monotonic() < deadline:
            try:
                probe.send(b"ready?")
                probe.recv(100)
                return
            except OSError:
                continue
    raise RuntimeError(f"nothing answers on udp 127.0.0.1:{port} in {timeout}s")


@contextmanager
def server(
    name: str, argv: Sequence[str], port: int, workdir: Path, core: int | None = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """
    C{argv} running (pinned to C{core}) until the block ends, once it
    answers on C{port}.
    """
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    process = processes.start(
        argv, workdir / f"{name}-{port}.log", core=core, cwd=workdir, env=environment
    )
    try:
        answers(port)
        yield process
    finally:
        processes.stop(process)


def measure(
    port: int, clients: int, size: int, seconds: float, warmup: float = 0.5
) -> dict[str, float]:
    """
    One generator run against C{port}: datagrams answered a second, the
    generator's CPU share, lost datagrams.
    """
    argv = processes.pinned(
        [
            str(udploadgen()),
            "127.0.0.1",
            str(port),
            str(clients),
            str(size),
            str(seconds),
            str(warmup),
        ],
        1,
    )
    output = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + warmup + 30, check=True
    ).stdout
    result = json.loads(output)
    return {
        "datagrams_per_s": result["ops"] / result["seconds"],
        "generator_cpu": result["cpu_seconds"] / result["seconds"],
        "lost": result["errors"],
    }


def echoServers(workdir: Path, port: int) -> dict[str, list[str]]:
    """
    The echo servers compared, by name.
    """
    return {
        "multiport": [
            *TWISTD,
            "--pidfile=",
            "multiport",
            "--no-status",
            "--state-dir",
            str(workdir / "state"),
            "--ports",
            f"127.0.0.1:{port}/udp=echo",
        ],
        "twisted": [PYTHON, "-m", "benchmarks.peers.udp_echo", str(port)],
        "asyncio": [PYTHON, "-m", "benchmarks.peers.udp_echo", str(port), "--asyncio"],
    }


def nginxConfig(workdir: Path, port: int, upstream: int) -> Path:
    """
    An nginx configuration proxying UDP C{port} to C{upstream}.
    """
    path = workdir / f"nginx-{port}.conf"
    path.write_text(
        f"load_module {NGINX_STREAM};\n"
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {workdir}/nginx-{port}.pid;\nerror_log {workdir}/nginx-error.log;\n"
        "events { worker_connections 4096; }\n"
        "stream {\n"
        f"  server {{ listen 127.0.0.1:{port} udp; proxy_pass 127.0.0.1:{upstream};"
        " proxy_timeout 30s; proxy_responses 1; }\n"
        "}\n"
    )
    return path


def relayServers(workdir: Path, port: int, upstream: int) -> dict[str, list[str]]:
    """
    The UDP relays compared, by name (those whose tool is missing left out).
    """
    relays = {
        "multiport relay": [
            *TWISTD,
            "--pidfile=",
            "multiport",
            "--no-status",
            "--state-dir",
            str(workdir / "state"),
            "--config",
            str(workdir / "relay.toml"),
        ],
    }
    (workdir / "relay.toml").write_text(
        f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\nprotocol = "udp"\n'
        f'handler = "relay"\noptions = {{ upstream = "127.0.0.1:{upstream}" }}\n'
    )
    if tools.have("socat"):
        relays["socat"] = [
            tools.command("socat"),
            f"UDP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"UDP:127.0.0.1:{upstream}",
        ]
    if tools.have("nginx") and Path(NGINX_STREAM).exists():
        config = nginxConfig(workdir, port, upstream)
        relays["nginx"] = [
            tools.command("nginx"),
            "-c",
            str(config),
            "-p",
            str(workdir),
        ]
    return relays


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the UDP scenarios and print one JSON line per server.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.udp")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--only", choices=["echo", "relay"], default=None)
    arguments = parser.parse_args(argv)
    if not 0 < arguments.seconds <= 600:
        parser.error("--seconds must be from 0 to 600")
    with tempfile.TemporaryDirectory(prefix="multiport-udp-") as folder:
        workdir = Path(folder)
        if arguments.only in (None, "echo"):
            port = freeUDPPort()
            for name, command in echoServers(workdir, port).items():
                with server(name, command, port, workdir):
                    result = measure(
                        port, arguments.clients, arguments.size, arguments.seconds
                    )
                print(json.dumps({"scenario": "udp echo", "server": name, **result}))
        if arguments.only in (None, "relay"):
            upstream, port = freeUDPPort(), freeUDPPort()
            echo = [PYTHON, "-m", "benchmarks.peers.udp_echo", str(upstream)]
            with server("upstream", echo, upstream, workdir, core=1):
                for name, command in relayServers(workdir, port, upstream).items():
                    with server(name.replace(" ", "-"), command, port, workdir):
                        result = measure(
                            port, arguments.clients, arguments.size, arguments.seconds
                        )
                    print(
                        json.dumps({"scenario": "udp relay", "server": name, **result})
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
