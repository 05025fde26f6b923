"""
The benchmark scenarios: what is measured, against whom, and how.

Each scenario starts its servers, measures every contender in alternating
order for a number of rounds, and returns one L{Series} per contender and
variant.  The baseline contender of each variant is the one ratios are
taken against.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

from attrs import define, field, frozen

from benchmarks import measure, processes, servers, tools
from benchmarks.measure import Sample

_T = TypeVar("_T")


@frozen
class Settings:
    """
    How long and how often to measure.
    """

    workdir: Path
    seconds: float = 5.0
    rounds: int = 3
    warmup: float = 0.5
    idleConnections: int = 10_000
    portCounts: tuple[int, ...] = (1, 100, 1000, 10_000)


@define
class Series:
    """
    The samples of one contender in one variant of a scenario.
    """

    variant: str
    contender: str
    metric: str
    unit: str
    baseline: bool = False
    higherIsBetter: bool = True
    samples: list[Sample] = field(factory=list)


Measure = Callable[[], Sample]


def rotations(items: Sequence[_T], rounds: int) -> Iterator[list[_T]]:
    """
    C{items} once per round, each round starting one further along, so that
    nothing always goes first.
    """
    for round in range(rounds):
        start = round % len(items)
        yield [*items[start:], *items[:start]]


def alternate(rounds: int, contenders: Sequence[tuple[Series, Measure]]) -> None:
    """
    Measure every contender once per round, in rotating order.
    """
    for order in rotations(contenders, rounds):
        for series, run in order:
            series.samples.append(run())


@frozen
class Scenario:
    """
    A named benchmark.

    @ivar needs: The tools without which it can't run at all.
    @ivar optional: Tools whose contenders are left out when missing.
    """

    name: str
    title: str
    run: Callable[[Settings], list[Series]]
    needs: tuple[str, ...] = ("gcc",)
    optional: tuple[str, ...] = ()


def _echoServers(settings: Settings, stack: ExitStack) -> list[servers.Server]:
    ports = processes.freePorts(4)
    candidates = [
        servers.twistedEcho(settings.workdir, ports[0]),
        servers.multiportEcho(settings.workdir, ports[1]),
        servers.asyncioEcho(settings.workdir, ports[2]),
    ]
    if tools.have("uvloop"):
        candidates.append(servers.asyncioEcho(settings.workdir, ports[3], uvloop=True))
    return [stack.enter_context(server) for server in candidates]


def echo(settings: Settings) -> list[Series]:
    """
    Echo ping-pong with 64-byte messages over 1 and 100 connections.
    """
    results: list[Series] = []
    with ExitStack() as stack:
        running = _echoServers(settings, stack)
        for connections in (1, 100):
            contenders = []
            for server in running:
                series = Series(
                    f"{connections} connection{'s' if connections > 1 else ''}",
                    server.name,
                    "round trips",
                    "/s",
                    baseline=server.name == "twisted",
                )
                contenders.append(
                    (series, _echoRun(server.port, connections, settings))
                )
                results.append(series)
            alternate(settings.rounds, contenders)
    return results


def _echoRun(
    port: int | Sequence[int], connections: int, settings: Settings
) -> Measure:
    ports = [port] if isinstance(port, int) else list(port)
    return lambda: measure.echo(
        ports, connections, settings.seconds, warmup=settings.warmup
    )


#: Every connection policy switched on, at values this load never reaches:
#: what the checks themselves cost.
EVERY_POLICY = """\
max_connections = 100000
max_connections_per_ip = 100000
rate = { per_second = 1000000, burst = 1000000 }
rate_per_ip = { per_second = 1000000, burst = 1000000 }
idle_timeout = 600
max_duration = 86400
header_timeout = 60
allow = ["127.0.0.0/8", "::1"]
deny = ["192.0.2.0/24"]
"""


def layer(settings: Settings) -> list[Series]:
    """
    The cost of multiport's per-port layer: the same echo protocol without
    it, with it (counters), and with every connection policy on; 100
    connections, at least five rounds.
    """
    ports = processes.freePorts(3)
    with ExitStack() as stack:
        bare = stack.enter_context(servers.twistedEcho(settings.workdir, ports[0]))
        wrapped = stack.enter_context(servers.multiportEcho(settings.workdir, ports[1]))
        policed = stack.enter_context(
            servers.multiportPorts(
                settings.workdir,
                [ports[2]],
                "echo",
                name="multiport, every policy",
                defaults=EVERY_POLICY,
            )
        )
        results = [
            Series(
                "100 connections", "bare handler", "round trips", "/s", baseline=True
            ),
            Series("100 connections", "multiport", "round trips", "/s"),
            Series("100 connections", "multiport, every policy", "round trips", "/s"),
        ]
        alternate(
            max(settings.rounds, 5),
            [
                (results[0], _echoRun(bare.port, 100, settings)),
                (results[1], _echoRun(wrapped.port, 100, settings)),
                (results[2], _echoRun(policed.port, 100, settings)),
            ],
        )
    return results


def accept(settings: Settings) -> list[Series]:
    """
    New connections per second (50 at a time), multiport with its
    connection log (the default) and without.
    """
    ports = processes.freePorts(3)
    with ExitStack() as stack:
        bare = stack.enter_context(servers.twistedEcho(settings.workdir, ports[0]))
        ours = stack.enter_context(servers.multiportEcho(settings.workdir, ports[1]))
        quiet = stack.enter_context(
            servers.multiportPorts(
                settings.workdir,
                [ports[2]],
                "echo",
                logConnections=False,
                name="multiport, no connection log",
            )
        )
        results = [
            Series("50 at a time", "twisted", "connections", "/s", baseline=True),
            Series("50 at a time", "multiport", "connections", "/s"),
            Series("50 at a time", "multiport, no connection log", "connections", "/s"),
        ]
        alternate(
            settings.rounds,
            [
                (
                    series,
                    lambda port=server.port: measure.accept(
                        port, 50, settings.seconds, settings.warmup
                    ),
                )
                for series, server in zip(results, (bare, ours, quiet), strict=True)
            ],
        )
    return results


def _webServers(
    settings: Settings, stack: ExitStack, tls: bool
) -> list[servers.Server]:
    ports = processes.freePorts(3)
    candidates = [
        servers.twistdWeb(settings.workdir, ports[0], tls),
        servers.multiportWeb(settings.workdir, ports[1], tls),
    ]
    if tools.have("nginx"):
        candidates.append(servers.nginx(settings.workdir, ports[2], tls))
    return [stack.enter_context(server) for server in candidates]


def _web(
    settings: Settings, tls: bool, variants: dict[str, Sequence[str]]
) -> list[Series]:
    scheme = "https" if tls else "http"
    results: list[Series] = []
    with ExitStack() as stack:
        running = _webServers(settings, stack, tls)
        for variant, headers in variants.items():
            contenders = []
            for server in running:
                series = Series(
                    variant,
                    server.name,
                    "requests",
                    "/s",
                    baseline=server.name == "twistd web",
                )
                url = f"{scheme}://127.0.0.1:{server.port}/index.html"
                contenders.append(
                    (
                        series,
                        lambda url=url, headers=headers: measure.wrk(
                            url, 50, settings.seconds, headers
                        ),
                    )
                )
                results.append(series)
            alternate(settings.rounds, contenders)
    return results


def http(settings: Settings) -> list[Series]:
    """
    A small static page over keep-alive connections (wrk, 50 connections).
    """
    return _web(settings, False, {"keep-alive": ()})


def https(settings: Settings) -> list[Series]:
    """
    The same over TLS: requests on kept-alive connections, and a new
    connection (a full TLS handshake) for every request.
    """
    return _web(
        settings,
        True,
        {"keep-alive": (), "new handshake each": ("Connection: close",)},
    )


def _spread(ports: Sequence[int], count: int) -> list[int]:
    """
    C{count} ports evenly spaced over C{ports} (all of them if fewer).
    """
    if len(ports) <= count:
        return list(ports)
    return [ports[i * len(ports) // count] for i in range(count)]


def ports(settings: Settings) -> list[Series]:
    """
    1 to 10,000 listening ports in one process: start-up time, memory, echo
    on one port while the rest are idle, and echo spread over all of them.
    """
    kinds = {
        "start-up": ("s", False),
        "memory": ("MB", False),
        "echo on one port": ("/s", True),
        "echo spread over all": ("/s", True),
    }
    table: dict[tuple[str, int], Series] = {}
    for metric, (unit, higher) in kinds.items():
        for count in settings.portCounts:
            table[metric, count] = Series(
                f"{count} ports",
                "multiport",
                metric,
                unit,
                baseline=count == settings.portCounts[0],
                higherIsBetter=higher,
            )

    def run(count: int) -> None:
        numbers = processes.freePorts(count)
        with servers.multiportPorts(settings.workdir, numbers, "echo") as server:
            table["start-up", count].samples.append(Sample(server.startup))
            table["memory", count].samples.append(Sample(server.rss() / 1e6))
            table["echo on one port", count].samples.append(
                measure.echo(
                    [numbers[0]], 100, settings.seconds, warmup=settings.warmup
                )
            )
            table["echo spread over all", count].samples.append(
                measure.echo(
                    _spread(numbers, 100), 100, settings.seconds, warmup=settings.warmup
                )
            )

    for order in rotations(settings.portCounts, settings.rounds):
        for count in order:
            run(count)
    return list(table.values())


def idle(settings: Settings) -> list[Series]:
    """
    Memory per idle connection, holding many connections open.
    """
    count = settings.idleConnections

    def run(make: Callable[[Path, int], servers.Server]) -> Sample:
        [port] = processes.freePorts(1)
        with make(settings.workdir, port) as server:
            before, files = server.rss(), server.openFiles()
            holder = measure.Holder([port], count)
            try:
                deadline = time.monotonic() + 120
                while server.openFiles() < files + count:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{server.name} holds {server.openFiles() - files} of "
                            f"{count} connections after 120s"
                        )
                    time.sleep(0.05)
                after = server.rss()
            finally:
                holder.close()
        return Sample((after - before) / count)

    variant = f"{count} idle connections"
    bare = Series(
        variant,
        "twisted",
        "memory per connection",
        "bytes",
        baseline=True,
        higherIsBetter=False,
    )
    ours = Series(
        variant, "multiport", "memory per connection", "bytes", higherIsBetter=False
    )
    alternate(
        settings.rounds,
        [
            (bare, lambda: run(servers.twistedEcho)),
            (ours, lambda: run(servers.multiportEcho)),
        ],
    )
    return [bare, ours]


#: The streams of the relay scenario's variants.
RELAY_STREAMS = (1, 16)


def checkRelays(
    relay: servers.Server,
    sink: servers.Server,
    size: int = 256 * 1024,
    timeout: float = 30,
) -> None:
    """
    Send C{size} bytes through C{relay} and wait until C{sink} has read them
    all: the relay really forwards to the sink.

    @raise RuntimeError: if they do not all arrive within C{timeout} seconds.
    """
    before = sink.bytesRead()
    deadline = time.monotonic() + timeout
    arrived = 0
    address = ("127.0.0.1", relay.port)
    try:
        with socket.create_connection(address, timeout=timeout) as client:
            client.sendall(b"x" * size)
            while arrived < size and time.monotonic() < deadline:
                time.sleep(0.01)
                arrived = sink.bytesRead() - before
    except OSError as e:
        raise RuntimeError(f"{relay.name} does not relay: {e}") from None
    if arrived < size:
        raise RuntimeError(
            f"{relay.name} relayed {arrived} of {size} bytes to the sink "
            f"within {timeout}s"
        )


def _relayServers(
    settings: Settings, stack: ExitStack, upstream: int
) -> list[servers.Server]:
    ports = processes.freePorts(5)
    candidates = [
        servers.portforward(settings.workdir, ports[0], upstream),
        servers.multiportRelay(settings.workdir, ports[1], upstream),
        servers.multiportRelay(settings.workdir, ports[2], upstream, splice=False),
    ]
    if tools.have("socat"):
        candidates.append(servers.socat(settings.workdir, ports[3], upstream))
    if tools.have("haproxy"):
        candidates.append(servers.haproxy(settings.workdir, ports[4], upstream))
    return [stack.enter_context(server) for server in candidates]


def relay(settings: Settings) -> list[Series]:
    """
    Relay throughput: bytes written as fast as they go through a TCP
    forwarder to a sink that discards them, over 1 and 16 streams, in MB/s;
    multiport with splice(2), its default for plain TCP, and without.

    Each relay runs on CPU 0 (socat's forked children too, HAProxy with one
    thread); the load generator and the sink share CPU 1, so the generator's
    CPU figure is theirs together.  The baseline is C{twistd portforward};
    the target is the best of socat, HAProxy and it.
    """
    results: list[Series] = []
    [upstream] = processes.freePorts(1)
    with ExitStack() as stack:
        sink = stack.enter_context(servers.sink(settings.workdir, upstream))
        running = _relayServers(settings, stack, upstream)
        for server in running:
            checkRelays(server, sink)
        for streams in RELAY_STREAMS:
            contenders = []
            for server in running:
                series = Series(
                    f"{streams} stream{'s' if streams > 1 else ''}",
                    server.name,
                    "throughput",
                    "MB/s",
                    baseline=server.name == "twistd portforward",
                )
                contenders.append(
                    (
                        series,
                        lambda port=server.port, streams=streams: measure.stream(
                            port,
                            streams,
                            settings.seconds,
                            settings.warmup,
                            sink=sink.process.pid,
                        ),
                    )
                )
                results.append(series)
            alternate(settings.rounds, contenders)
    return results


SCENARIOS = {
    scenario.name: scenario
    for scenario in [
        Scenario(
            "echo", "Echo round trips, 64-byte messages", echo, optional=("uvloop",)
        ),
        Scenario(
            "http",
            "Small HTTP responses (wrk, keep-alive)",
            http,
            needs=("wrk",),
            optional=("nginx",),
        ),
        Scenario(
            "https",
            "HTTPS requests and TLS handshakes (wrk)",
            https,
            needs=("wrk",),
            optional=("nginx",),
        ),
        Scenario("accept", "Accept rate: new connections per second", accept),
        Scenario("ports", "Many ports: 1 to 10,000 listening ports", ports),
        Scenario("idle", "Many connections: memory per idle connection", idle),
        Scenario("layer", "The cost of the per-port layer", layer),
        Scenario(
            "relay",
            "Relay throughput: TCP forwarding to a sink",
            relay,
            optional=("socat", "haproxy"),
        ),
    ]
}
