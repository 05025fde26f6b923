"""
The benchmark scenarios: what is measured, against whom, and how.

Each scenario starts its servers, measures every contender in alternating
order for a number of rounds, and returns one L{Series} per contender and
variant.  The baseline contender of each variant is the one ratios are
taken against.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from attrs import define, field, frozen

from benchmarks import measure, processes, servers, sharing, tools, udp
from benchmarks.measure import Sample

if TYPE_CHECKING:
    from benchmarks.report import Summary

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
    fileLimit: int = 20_000


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
    @ivar plotted: The metrics its plot shows (all if empty); the table and
        the results file have them all.
    """

    name: str
    title: str
    run: Callable[[Settings], list[Series]]
    needs: tuple[str, ...] = ("gcc",)
    optional: tuple[str, ...] = ()
    plotted: tuple[str, ...] = ()

    def toPlot(self, summaries: Sequence[Summary]) -> list[Summary]:
        """
        The C{summaries} its plot shows.
        """
        return [
            s for s in summaries if not self.plotted or s.series.metric in self.plotted
        ]


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
    with ExitStack() as stack:
        return _echoEach(settings, _echoServers(settings, stack))


def transport(settings: Settings) -> list[Series]:
    """
    The echo scenario with issue 10's transport and reactor: bare Twisted
    and multiport, each stock and with L{multiport.io.transport.FastServer} (and
    the C{multiport-epoll} reactor), against asyncio and uvloop.
    """
    ports = processes.freePorts(7)
    candidates = [
        servers.twistedEcho(settings.workdir, ports[0]),
        servers.fastEcho(settings.workdir, ports[1]),
        servers.fastEcho(settings.workdir, ports[2], reactor=True),
        servers.multiportEcho(settings.workdir, ports[3]),
        servers.multiportFastEcho(settings.workdir, ports[4]),
        servers.asyncioEcho(settings.workdir, ports[5]),
    ]
    if tools.have("uvloop"):
        candidates.append(servers.asyncioEcho(settings.workdir, ports[6], uvloop=True))
    with ExitStack() as stack:
        running = [stack.enter_context(server) for server in candidates]
        return _echoEach(settings, running, cpu=True)


def _echoEach(
    settings: Settings, running: Sequence[servers.Server], cpu: bool = False
) -> list[Series]:
    """
    Echo round trips on every one of C{running}, alternating, over 1 and
    100 connections; bare Twisted (C{twisted}) is the baseline.  With
    C{cpu}, also the server's CPU time per round trip (after the rates).
    """
    results: list[Series] = []
    costs: list[Series] = []
    for connections in (1, 100):
        variant = f"{connections} connection{'s' if connections > 1 else ''}"
        contenders = []
        for server in running:
            baseline = server.name == "twisted"
            series = Series(variant, server.name, "round trips", "/s", baseline)
            run = _echoRun(server.port, connections, settings)
            if cpu:
                cost = Series(
                    variant,
                    server.name,
                    "server CPU per round trip",
                    "us",
                    baseline,
                    higherIsBetter=False,
                )
                run = partial(_withCPU, server, run, cost, settings)
                costs.append(cost)
            contenders.append((series, run))
            results.append(series)
        alternate(settings.rounds, contenders)
    return results + costs


def _withCPU(
    server: servers.Server, run: Measure, cost: Series, settings: Settings
) -> Sample:
    """
    C{run()}, adding the server's CPU time per operation (in microseconds)
    to C{cost}: its CPU time over the whole run (warm-up included) over
    the operations at the measured rate over that time.
    """
    before, started = server.cpuSeconds(), time.monotonic()
    sample = run()
    used, elapsed = server.cpuSeconds() - before, time.monotonic() - started
    if sample.value > 0:
        cost.samples.append(Sample(1e6 * used / (sample.value * elapsed)))
    return sample


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
    it on the same transport and reactor (L{FastPort} on
    C{multiport-epoll}, what multiport runs by default), with it
    (counters), and with every connection policy on; 100 connections, at
    least five rounds, and each server's CPU per round trip.
    """
    ports = processes.freePorts(3)
    with ExitStack() as stack:
        bare = stack.enter_context(
            servers.fastEcho(settings.workdir, ports[0], reactor=True)
        )
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
        variant = "100 connections"
        names = [LAYER_BASELINE, "multiport", "multiport, every policy"]
        results = [
            Series(variant, name, "round trips", "/s", baseline=name == LAYER_BASELINE)
            for name in names
        ]
        costs = [
            Series(
                variant,
                name,
                "server CPU per round trip",
                "us",
                baseline=name == LAYER_BASELINE,
                higherIsBetter=False,
            )
            for name in names
        ]
        alternate(
            max(settings.rounds, 5),
            [
                (
                    series,
                    partial(
                        _withCPU,
                        server,
                        _echoRun(server.port, 100, settings),
                        cost,
                        settings,
                    ),
                )
                for series, cost, server in zip(
                    results, costs, (bare, wrapped, policed), strict=True
                )
            ],
        )
    return results + costs


#: The layer scenario's baseline: the echo handler on multiport's transport
#: and reactor, without the per-port layer.
LAYER_BASELINE = "bare handler, FastPort + multiport-epoll"


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
    settings: Settings, stack: ExitStack, tls: bool, http2: bool = False
) -> list[servers.Server]:
    ports = processes.freePorts(3)
    candidates = [
        servers.twistdWeb(settings.workdir, ports[0], tls),
        servers.multiportWeb(settings.workdir, ports[1], tls),
    ]
    if tools.have("nginx"):
        candidates.append(servers.nginx(settings.workdir, ports[2], tls, http2))
    return [stack.enter_context(server) for server in candidates]


def _web(
    settings: Settings,
    tls: bool,
    variants: dict[str, Callable[[str], Sample]],
    http2: bool = False,
    paths: Mapping[str, str] | None = None,
) -> list[Series]:
    """
    Each of C{variants}, a way to load a URL, against twistd web (the
    baseline), multiport and nginx serving the benchmark page (or the file
    C{paths} names for the variant).
    """
    scheme = "https" if tls else "http"
    results: list[Series] = []
    with ExitStack() as stack:
        running = _webServers(settings, stack, tls, http2)
        for variant, load in variants.items():
            contenders = []
            for server in running:
                series = Series(
                    variant,
                    server.name,
                    "requests",
                    "/s",
                    baseline=server.name == "twistd web",
                )
                path = (paths or {}).get(variant, "index.html")
                url = f"{scheme}://127.0.0.1:{server.port}/{path}"
                contenders.append((series, partial(load, url)))
                results.append(series)
            alternate(settings.rounds, contenders)
    return results


def _wrk(settings: Settings, headers: Sequence[str]) -> Callable[[str], Sample]:
    return lambda url: measure.wrk(url, 50, settings.seconds, headers)


#: The http scenario's large-file variant: its name, and the connections
#: wrk keeps (each fetching the 1 MiB file over and over).
LARGE_FILE = "1 MiB file"
LARGE_FILE_CONNECTIONS = 8


def http(settings: Settings) -> list[Series]:
    """
    A small static page over keep-alive connections (wrk, 50 connections),
    with a new connection for every request (the connection rate), and a
    large file (1 MiB, L{servers.LARGE_FILE_SIZE}) over keep-alive
    connections, where what counts is how each server moves the bytes.
    """
    return _web(
        settings,
        False,
        {
            "keep-alive": _wrk(settings, ()),
            "new connection each": _wrk(settings, ("Connection: close",)),
            LARGE_FILE: lambda url: measure.wrk(
                url, LARGE_FILE_CONNECTIONS, settings.seconds
            ),
        },
        paths={LARGE_FILE: "large.bin"},
    )


def https(settings: Settings) -> list[Series]:
    """
    The same over TLS: requests on kept-alive connections, and a new
    connection (a full TLS handshake) for every request.
    """
    return _web(
        settings,
        True,
        {
            "keep-alive": _wrk(settings, ()),
            "new handshake each": _wrk(settings, ("Connection: close",)),
        },
    )


#: h2load's load in the http2 scenario: 100 requests in flight either way,
#: as 10 connections of 10 streams (HTTP/2) or 100 connections (HTTP/1.1).
HTTP2_LOAD = {"HTTP/2": (10, 10, False), "HTTP/1.1": (100, 1, True)}


def http2(settings: Settings) -> list[Series]:
    """
    The small page over TLS with h2load, over HTTP/2 and over HTTP/1.1:
    twistd web (twisted.web's own HTTP/2), multiport, and nginx with
    C{http2} on its TLS listener.
    """
    return _web(
        settings,
        True,
        {
            variant: partial(
                _h2load, settings, clients=clients, streams=streams, http1=http1
            )
            for variant, (clients, streams, http1) in HTTP2_LOAD.items()
        },
        http2=True,
    )


def _h2load(
    settings: Settings, url: str, clients: int, streams: int, http1: bool
) -> Sample:
    return measure.h2load(
        url, clients, streams, settings.seconds, settings.warmup, http1
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
    1 to 10,000 listening ports in one process: start-up time (from exec,
    and as the daemon reports it from reading its command line), memory,
    echo on one port while the rest are idle, and echo spread over all of
    them.
    """
    kinds = {
        "start-up": ("s", False),
        "start-up in the daemon": ("s", False),
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
            table["start-up in the daemon", count].samples.append(
                Sample(server.reportedStartup())
            )
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
    """
    The relays both relay scenarios compare, started in C{stack}: HAProxy
    with and without C{option splice-auto} (issue 24 asks for both).
    """
    ports = processes.freePorts(6)
    candidates = [
        servers.portforward(settings.workdir, ports[0], upstream),
        servers.multiportRelay(settings.workdir, ports[1], upstream),
        servers.multiportRelay(settings.workdir, ports[2], upstream, splice=False),
    ]
    if tools.have("socat"):
        candidates.append(servers.socat(settings.workdir, ports[3], upstream))
    if tools.have("haproxy"):
        candidates.append(servers.haproxy(settings.workdir, ports[4], upstream))
        candidates.append(
            servers.haproxy(settings.workdir, ports[5], upstream, splice=True)
        )
    return [stack.enter_context(server) for server in candidates]


#: The relays' round trips: connections, and the size of each message.
RELAY_ROUND_TRIP_CONNECTIONS = 32
RELAY_ROUND_TRIP_SIZE = 64


def relayRoundTrips(settings: Settings) -> list[Series]:
    """
    Relay request/response: 64-byte messages echoed through each TCP
    forwarder by a C echo server (the load generator's C{echoserver}), 32
    connections, in round trips a second.  Every relay of the throughput
    scenario (HAProxy with and without C{option splice-auto}); the baseline
    is C{twistd portforward}.

    Small messages are where splicing costs most (four system calls a
    direction per message, against two through user space).
    """
    results: list[Series] = []
    [port] = processes.freePorts(1)
    with ExitStack() as stack:
        upstream = stack.enter_context(servers.echoServer(settings.workdir, port))
        running = _relayServers(settings, stack, upstream.port)
        contenders = []
        for server in running:
            series = Series(
                f"{RELAY_ROUND_TRIP_CONNECTIONS} connections, "
                f"{RELAY_ROUND_TRIP_SIZE} bytes",
                server.name,
                "round trips",
                "/s",
                baseline=server.name == "twistd portforward",
            )
            contenders.append(
                (
                    series,
                    lambda port=server.port: measure.echo(
                        [port],
                        RELAY_ROUND_TRIP_CONNECTIONS,
                        settings.seconds,
                        size=RELAY_ROUND_TRIP_SIZE,
                        warmup=settings.warmup,
                    ),
                )
            )
            results.append(series)
        alternate(settings.rounds, contenders)
    return results


def relay(settings: Settings) -> list[Series]:
    """
    Relay throughput: bytes written as fast as they go through a TCP
    forwarder to a sink that discards them, over 1 and 16 streams, in MB/s;
    multiport with splice(2), its default for plain TCP, and without.

    Each relay runs on CPU 0 (socat's forked children too, HAProxy with one
    thread); the load generator and the sink share CPU 1, so the generator's
    CPU figure is theirs together.  The baseline is C{twistd portforward};
    the target is the best of socat, HAProxy and it.  After the rates, each
    relay's CPU time per MB moved (in microseconds), since a relay that is
    not CPU-bound can move as much as another at less cost.
    """
    results: list[Series] = []
    costs: list[Series] = []
    [upstream] = processes.freePorts(1)
    with ExitStack() as stack:
        sink = stack.enter_context(servers.sink(settings.workdir, upstream))
        running = _relayServers(settings, stack, upstream)
        for server in running:
            checkRelays(server, sink)
        for streams in RELAY_STREAMS:
            variant = f"{streams} stream{'s' if streams > 1 else ''}"
            contenders = []
            for server in running:
                baseline = server.name == "twistd portforward"
                series = Series(variant, server.name, "throughput", "MB/s", baseline)
                cost = Series(
                    variant,
                    server.name,
                    "server CPU per MB",
                    "us",
                    baseline,
                    higherIsBetter=False,
                )
                run = partial(
                    measure.stream,
                    server.port,
                    streams,
                    settings.seconds,
                    settings.warmup,
                    sink=sink.process.pid,
                )
                contenders.append(
                    (series, partial(_withCPU, server, run, cost, settings))
                )
                results.append(series)
                costs.append(cost)
            alternate(settings.rounds, contenders)
    return results + costs


#: Log lines of a relay that say it ran short of descriptors or could not
#: reach its upstream: each one counts as an error of the idle-relay
#: scenario.
RELAY_TROUBLE = re.compile(r"EMFILE|Too many open files|cannot connect")


def settle(
    read: Callable[[], int],
    target: int,
    quiet: float = 2.0,
    timeout: float = 120.0,
    poll: float = 0.1,
) -> int:
    """
    Poll C{read()} until it reaches C{target} or has not changed for
    C{quiet} seconds; its last value.

    @raise RuntimeError: if it is still changing after C{timeout} seconds.
    """
    started = changed = time.monotonic()
    last = read()
    while last < target:
        time.sleep(poll)
        now, value = time.monotonic(), read()
        if value != last:
            last, changed = value, now
        elif now - changed >= quiet:
            break
        if now - started > timeout:
            raise RuntimeError(f"still changing after {timeout}s: {value}")
    return last


def relayTrouble(server: servers.Server) -> int:
    """
    How many lines of C{server}'s log, since it started, match
    L{RELAY_TROUBLE}.
    """
    with open(server.logPath, "rb") as log:
        log.seek(server.logOffset)
        text = log.read().decode("utf-8", "replace")
    return len(RELAY_TROUBLE.findall(text))


#: The idle-relay scenario's relays: name and how to start one forwarding
#: a port to the sink (workdir, port, upstream, fileLimit).  C{twistd
#: portforward} is not one: with no limit of its own it runs out of
#: descriptors and stops accepting, and the clients' connects hang.
IDLE_RELAYS: tuple[tuple[str, Callable[..., servers.Server]], ...] = (
    ("multiport", servers.multiportRelay),
    ("multiport, no splice", partial(servers.multiportRelay, splice=False)),
    ("haproxy", partial(servers.haproxy, maxconn=None)),
)


def idleRelay(settings: Settings) -> list[Series]:
    """
    Idle relayed connections: C{idleConnections} clients held open through
    each relay to the sink, every relay with the same descriptor limit
    (C{fileLimit}, soft and hard).  How many it holds (it turns the rest
    away, or fails them), the descriptors and the resident memory each one
    costs it; multiport with splice(2) (its default) and without, and
    HAProxy (its C{maxconn} derived from the same limit),
    the baseline when installed (else multiport without splice).  Log lines
    saying a relay ran short of descriptors count as errors.
    """
    count = settings.idleConnections
    relays = [
        (name, make)
        for name, make in IDLE_RELAYS
        if name != "haproxy" or tools.have("haproxy")
    ]
    baseline = "haproxy" if tools.have("haproxy") else "multiport, no splice"
    variant = f"{count} idle connections, {settings.fileLimit} descriptors"
    figures = {
        name: {
            metric: Series(
                variant,
                name,
                metric,
                unit,
                baseline=name == baseline,
                higherIsBetter=metric == "connections held",
            )
            for metric, unit in (
                ("connections held", "connections"),
                ("descriptors per connection", "descriptors"),
                ("memory per connection", "bytes"),
            )
        }
        for name, _ in relays
    }
    [upstream] = processes.freePorts(1)
    with servers.sink(settings.workdir, upstream) as sink:

        def run(name: str, make: Callable[..., servers.Server]) -> Sample:
            [port] = processes.freePorts(1)
            idle = sink.openFiles()
            with make(
                settings.workdir, port, upstream, fileLimit=settings.fileLimit
            ) as relay:
                # One transfer first: whatever a relay loads or allocates on
                # its first connection is not counted as the idle ones' cost.
                checkRelays(relay, sink)
                settle(lambda: -sink.openFiles(), -idle)
                before, files, atSink = relay.rss(), relay.openFiles(), idle
                holder = measure.Holder([port], count)
                try:
                    held = settle(lambda: sink.openFiles() - atSink, count)
                    after, filesAfter = relay.rss(), relay.openFiles()
                finally:
                    holder.close()
                errors = int(holder.result["errors"]) + relayTrouble(relay)
            settle(lambda: -sink.openFiles(), -idle)
            perRelay = figures[name]
            if held:
                perRelay["descriptors per connection"].samples.append(
                    Sample((filesAfter - files) / held)
                )
                perRelay["memory per connection"].samples.append(
                    Sample((after - before) / held)
                )
            return Sample(float(held), errors=errors)

        alternate(
            settings.rounds,
            [
                (figures[name]["connections held"], partial(run, name, make))
                for name, make in relays
            ],
        )
    return [series for byMetric in figures.values() for series in byMetric.values()]


#: Connections the workers scenario's generators keep open: enough that
#: every worker gets some.
WORKER_CONNECTIONS = 100


@frozen
class Placement:
    """
    Which CPUs the daemon (main process and workers) and the load generator
    may use in the workers scenario; C{None}: any.
    """

    name: str
    server: int | None
    generator: int | None


#: The machine has two cores and the generator needs one too: the workers
#: scenario measures the same daemons three ways.
PLACEMENTS = (
    # The usual placement of this suite: one core for the daemon, however
    # many workers it has, one for the generator.
    Placement("server on CPU 0", 0, measure.GENERATOR_CORE),
    # The daemon may use both cores, the generator only the second.
    Placement("generator on CPU 1", None, measure.GENERATOR_CORE),
    # The scheduler decides.
    Placement("nothing pinned", None, None),
)

#: The workers scenario's contenders: a name, C{--workers}, and whether
#: each worker has an SO_REUSEPORT socket of its own.
WORKER_CONTENDERS = (
    ("1 worker", 1, False),
    ("2 workers, shared socket", 2, False),
    ("2 workers, SO_REUSEPORT", 2, True),
)

#: What the workers scenario reports besides the throughput: the metric,
#: its unit, and whether only daemons with several workers have it.  The
#: shares are the smaller worker's part of the connections it accepted,
#: of the bytes it sent (the responses or echoes: its part of the work),
#: and of the workers' CPU time.
WORKER_FIGURES = {
    "server CPU": ("cores", False),
    "smaller worker's connections": ("%", True),
    "smaller worker's bytes sent": ("%", True),
    "smaller worker's CPU": ("%", True),
}


def _workersLoad(
    load: str, port: int, placement: Placement, settings: Settings
) -> Sample:
    """
    One measurement of the workers scenario's C{load} against C{port}.
    """
    if load == "HTTP":
        return measure.wrk(
            f"http://127.0.0.1:{port}/index.html",
            WORKER_CONNECTIONS,
            settings.seconds,
            core=placement.generator,
        )
    return measure.echo(
        [port],
        WORKER_CONNECTIONS,
        settings.seconds,
        warmup=settings.warmup,
        core=placement.generator,
    )


def _workersRun(
    settings: Settings,
    load: str,
    placement: Placement,
    workers: int,
    reusePort: bool,
    figures: dict[str, Series],
) -> Sample:
    """
    Start the daemon, measure C{load} against it, read how its workers
    shared the work (their status, their CPU time), and stop it: the
    throughput sample; the other figures are added to C{figures}.
    """
    port, statusPort = processes.freePorts(2)
    with servers.multiportWorkers(
        settings.workdir,
        port,
        "http" if load == "HTTP" else "echo",
        workers,
        statusPort,
        reusePort=reusePort,
        core=placement.server,
    ) as server:
        before = server.settled(1)
        pids = server.pids()
        cpuBefore = [processes.processCPUSeconds(pid) for pid in pids]
        started = time.monotonic()
        sample = _workersLoad(load, port, placement, settings)
        elapsed = time.monotonic() - started
        cpu = [
            processes.processCPUSeconds(pid) - earlier
            for pid, earlier in zip(pids, cpuBefore, strict=True)
        ]
        after = server.settled(sum(f.accepted for f in before) + WORKER_CONNECTIONS)
    figures["server CPU"].samples.append(Sample(sum(cpu) / elapsed))
    if workers > 1:
        done = [now.minus(then) for now, then in zip(after, before, strict=True)]
        figures["smaller worker's connections"].samples.append(
            Sample(sharing.smallestShare([f.accepted for f in done]))
        )
        figures["smaller worker's bytes sent"].samples.append(
            Sample(sharing.smallestShare([f.sent for f in done]))
        )
        # The main process is first; each worker's CPU by its pid.
        byPid = dict(zip(pids[1:], cpu[1:], strict=True))
        figures["smaller worker's CPU"].samples.append(
            Sample(sharing.smallestShare([byPid.get(f.pid, 0.0) for f in after]))
        )
    return sample


def workers(settings: Settings) -> list[Series]:
    """
    C{--workers 2} against C{--workers 1}: HTTP requests (wrk) and echo
    round trips over 100 connections, with one shared socket per port and
    with an SO_REUSEPORT socket per worker, in each of L{PLACEMENTS}; how
    evenly the connections and the CPU time spread over the workers, and
    the CPU the daemon used.  Each measurement starts a daemon of its own
    and stops it, its workers too, so every count is of that measurement.
    """
    throughput: list[tuple[Series, Measure]] = []
    extra: list[Series] = []
    for load, metric in (("HTTP", "requests"), ("echo", "round trips")):
        for placement in PLACEMENTS:
            variant = f"{load}, {placement.name}"
            for contender, count, reusePort in WORKER_CONTENDERS:
                series = Series(variant, contender, metric, "/s", baseline=count == 1)
                figures = {
                    name: Series(
                        variant,
                        contender,
                        name,
                        unit,
                        baseline=count == 1 and not several,
                        higherIsBetter=name != "server CPU",
                    )
                    for name, (unit, several) in WORKER_FIGURES.items()
                    if count > 1 or not several
                }
                throughput.append(
                    (
                        series,
                        partial(
                            _workersRun,
                            settings,
                            load,
                            placement,
                            count,
                            reusePort,
                            figures,
                        ),
                    )
                )
                extra.extend(figures.values())
    alternate(settings.rounds, throughput)
    metrics = list(WORKER_FIGURES)
    extra.sort(key=lambda series: metrics.index(series.metric))
    return [series for series, _ in throughput] + extra


def _datagramsEach(
    settings: Settings,
    running: Sequence[servers.Server],
    baseline: str,
    upstream: servers.Server | None = None,
) -> list[Series]:
    """
    UDP ping-pong on every one of C{running}, alternating: datagrams
    answered a second, then the server's CPU time per answered datagram;
    C{baseline} names the contender ratios are taken against.
    """
    variant = f"{udp.CLIENTS} clients, {udp.SIZE} bytes"
    rates: list[Series] = []
    costs: list[Series] = []
    contenders = []
    for server in running:
        base = server.name == baseline
        rate = Series(variant, server.name, "datagrams", "/s", base)
        cost = Series(
            variant,
            server.name,
            "server CPU per datagram",
            "us",
            base,
            higherIsBetter=False,
        )
        run = partial(
            udp.datagrams,
            server.port,
            settings.seconds,
            settings.warmup,
            upstream=upstream,
        )
        contenders.append((rate, partial(_withCPU, server, run, cost, settings)))
        rates.append(rate)
        costs.append(cost)
    alternate(settings.rounds, contenders)
    return rates + costs


def udpEcho(settings: Settings) -> list[Series]:
    """
    UDP echo: 32 clients, each with one 64-byte datagram in flight;
    multiport's echo port against a bare Twisted C{DatagramProtocol} (the
    baseline) and an asyncio one.
    """
    udp.udploadgen()
    ports = udp.freeUDPPorts(3)
    candidates = [
        udp.twistedEcho(settings.workdir, ports[0]),
        udp.multiportEcho(settings.workdir, ports[1]),
        udp.asyncioEcho(settings.workdir, ports[2]),
    ]
    with ExitStack() as stack:
        running = [stack.enter_context(server) for server in candidates]
        return _datagramsEach(settings, running, "twisted")


def udpRelay(settings: Settings) -> list[Series]:
    """
    UDP relay: the echo load through each relay to the generator's C echo
    server on CPU 1; multiport's relay against C{socat
    UDP-LISTEN:...,fork} (the baseline) and nginx's stream proxy, each a
    session per client address.  A datagram is one relayed round trip.
    """
    udp.udploadgen()
    ports = udp.freeUDPPorts(4)
    with ExitStack() as stack:
        upstream = stack.enter_context(udp.upstreamEcho(settings.workdir, ports[0]))
        candidates = [udp.multiportRelay(settings.workdir, ports[1], upstream.port)]
        if tools.have("socat"):
            candidates.append(udp.socat(settings.workdir, ports[2], upstream.port))
        if tools.have("nginx") and tools.have("nginx-stream"):
            candidates.append(udp.nginx(settings.workdir, ports[3], upstream.port))
        running = [stack.enter_context(server) for server in candidates]
        return _datagramsEach(settings, running, "socat", upstream)


SCENARIOS = {
    scenario.name: scenario
    for scenario in [
        Scenario(
            "echo", "Echo round trips, 64-byte messages", echo, optional=("uvloop",)
        ),
        Scenario(
            "http",
            "Small HTTP responses (wrk: keep-alive, and a connection each)",
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
        Scenario(
            "http2",
            "HTTP/2 and HTTP/1.1 over TLS (h2load, 100 requests in flight)",
            http2,
            needs=("h2load",),
            optional=("nginx",),
        ),
        Scenario("accept", "Accept rate: new connections per second", accept),
        Scenario("ports", "Many ports: 1 to 10,000 listening ports", ports),
        Scenario("idle", "Many connections: memory per idle connection", idle),
        Scenario(
            "idle-relay",
            "Many relayed connections: held, descriptors and memory each, "
            "under one descriptor limit",
            idleRelay,
            optional=("haproxy",),
        ),
        Scenario(
            "layer",
            "The cost of the per-port layer, on the same transport",
            layer,
            plotted=("round trips",),
        ),
        Scenario(
            "relay",
            "Relay throughput: TCP forwarding to a sink",
            relay,
            optional=("socat", "haproxy"),
        ),
        Scenario(
            "relay-rr",
            "Relay round trips: 64-byte messages through the relay to an echo",
            relayRoundTrips,
            needs=("gcc",),
            optional=("socat", "haproxy"),
        ),
        Scenario(
            "transport",
            "Echo round trips with multiport's transport and reactor",
            transport,
            optional=("uvloop",),
            plotted=("round trips",),
        ),
        Scenario(
            "udp-echo",
            "UDP echo: datagrams a second",
            udpEcho,
            plotted=("datagrams",),
        ),
        Scenario(
            "udp-relay",
            "UDP relay: datagrams a second to an echo",
            udpRelay,
            optional=("socat", "nginx", "nginx-stream"),
            plotted=("datagrams",),
        ),
        Scenario(
            "workers",
            "Worker processes: --workers 2 against 1, 100 connections",
            workers,
            needs=("gcc", "wrk"),
            plotted=("requests", "round trips"),
        ),
    ]
}
