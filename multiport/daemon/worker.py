"""
A worker process of C{twistd multiport --workers N}: it serves the ports
of the configuration the main process sends, on listening sockets the main
process bound and passes to it, and answers for its counters.

Run by the main process only (C{python -m multiport.daemon.worker}); descriptor 3
is its end of the channel (L{multiport.daemon.ipc}).  Its log events go to
standard output as lines of JSON, which the main process reads and logs
again with the worker's number.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict, cast

from attrs import evolve
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.logger import Logger, globalLogBeginner

from multiport.config.model import Config, TLSConfig
from multiport.daemon.ipc import Channel, Handler, channelFactory
from multiport.daemon.logformat import batchedObserver, workerRecord
from multiport.io.reactortype import ReactorLike, globalReactor
from multiport.io.transport import FastServer
from multiport.io.transports import (
    DEFAULT_TRANSPORT,
    TRANSPORTS,
    logTransport,
    transportNamed,
)
from multiport.ports.admission import DaemonLimit
from multiport.ports.policies import sharePolicy

if TYPE_CHECKING:
    from multiport.daemon.service import PortsService
    from multiport.ports.tls import LoadedCertificate

log = Logger()

#: The channel's descriptor in a worker.
CHANNEL_FD = 3


def shareConfig(config: Config, workers: int) -> Config:
    """
    One worker's share of C{config}: each port's limits and rates divided
    among the workers.
    """
    return evolve(
        config,
        ports=tuple(
            evolve(p, policy=sharePolicy(p.policy, workers)) for p in config.ports
        ),
    )


class StartPayload(TypedDict):
    """
    The main process's C{start} message: the ports, the names of the
    sockets passed with it (in order), how many workers share them.
    """

    config: Config
    names: list[str]
    workers: int


class ApplyPayload(TypedDict):
    """
    The main process's C{apply} message: the ports to go to, the names of
    the sockets passed with it (its new ports).
    """

    config: Config
    names: list[str]


class Worker:
    """
    What a worker does for the main process's messages.
    """

    def __init__(
        self,
        reactor: ReactorLike,
        index: int,
        owner: tuple[int, int] | None,
        transport: type[tcp.Server] = FastServer,
    ) -> None:
        self.reactor = reactor
        #: The class of the ports' accepted connections (C{--transport}).
        self.transport = transport
        self.index = index
        self.owner = owner
        self.service: PortsService | None = None
        #: The channel to the main process, once made.
        self.channel: Channel | None = None
        #: How many workers share the ports (each takes its share of limits).
        self.workers = 1
        self.stopping = False

    def handlers(self) -> dict[str, Handler]:
        return {"start": self.start, "apply": self.apply, "status": self.status}

    def _certificates(self, config: Config) -> dict[TLSConfig, LoadedCertificate]:
        from multiport.ports.certificates import loadCertificates

        return loadCertificates(config.ports, config.stateDir)

    def start(self, message: object, descriptors: list[int]) -> dict[str, int]:
        """
        Serve C{payload["config"]} on the sockets passed (named by
        C{payload["names"]}, in order), then drop privileges if asked.
        """
        from multiport.daemon.service import PortsService
        from multiport.handlers.registry import findHandlers

        # The main process (L{multiport.daemon.pool}) sends this shape.
        payload = cast(StartPayload, message)
        workers = payload["workers"]
        config = shareConfig(payload["config"], workers)
        self.workers = workers
        self.service = PortsService(
            config,
            findHandlers(),
            self._certificates(config),
            self.reactor,
            DaemonLimit.fromFileLimit(len(config.ports)),
            descriptors=dict(zip(payload["names"], descriptors, strict=True)),
            transport=self.transport,
        )
        from multiport.acme.attach import attachAcme

        # Every worker serves what the main process orders.
        attachAcme(self.service, config, self.reactor, self.owner, orders=False)
        try:
            self.service.privilegedStartService()
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        if self.owner is not None:
            uid, gid = self.owner
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        self.service.startService()
        return {"pid": os.getpid()}

    def apply(self, message: object, descriptors: list[int]) -> object:
        """
        Go to C{payload["config"]}, adopting the sockets passed for its new
        ports.
        """
        # The main process (L{multiport.daemon.poolcontrol}) sends this shape.
        payload = cast(ApplyPayload, message)
        names = payload["names"]
        service = self.service
        assert service is not None, "the main process starts a worker first"
        service.descriptors.update(zip(names, descriptors, strict=True))
        config = shareConfig(payload["config"], self.workers)
        try:
            return service.reconcile(config, self._certificates(config))
        finally:
            # Adopting duplicates a socket: these copies are never needed.
            for name in names:
                service.descriptors.pop(name, None)
            for descriptor in descriptors:
                os.close(descriptor)

    def status(self, payload: object, descriptors: list[int]) -> object:
        """
        Every port's status in this worker.
        """
        if self.service is None:
            return []
        return self.service.portStatus()

    def stop(self) -> Deferred[object] | None:
        """
        Stop serving (draining), if serving; then give the main process
        the final figures (a worker's last periodic report is up to a
        second old) and wait for it to take them, so that the daemon's
        totals miss nothing.
        """
        service = self.service
        if service is None or not service.running:
            return None

        def final(_: object) -> Deferred[object] | None:
            if self.channel is None or not self.channel.connected:
                return None
            told = self.channel.call("final", service.portStatus())
            return told.addErrback(lambda _: None)

        return service.stopService().addCallback(final)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multiport.daemon.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--twisted-reactor", action="store_true")
    parser.add_argument("--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT)
    args = parser.parse_args(argv)
    if not args.twisted_reactor:
        # The main process's choice: multiport's reactor unless it was
        # started with twistd --reactor.
        from multiport.io import reactor as ours

        ours.install()
    reactor = globalReactor()

    # Each event as a line of JSON on standard output, for the main process
    # to log with its namespace and fields; connection and access log lines
    # together once per reactor turn (as the main process's own log writes
    # them).
    globalLogBeginner.beginLoggingTo(
        [batchedObserver(sys.stdout, workerRecord, reactor)], redirectStandardIO=False
    )
    owner = None if args.uid is None else (args.uid, args.gid)
    worker = Worker(reactor, args.index, owner, transportNamed(args.transport))
    logTransport(args.transport)
    channel = Channel(worker.handlers())
    worker.channel = channel
    reactor.adoptStreamConnection(CHANNEL_FD, socket.AF_UNIX, channelFactory(channel))
    os.close(CHANNEL_FD)

    def mainGone(_: object) -> None:
        # The main process is gone: finish (draining) and exit.
        if reactor.running and not worker.stopping:
            worker.stopping = True
            reactor.stop()

    channel.lost.addCallback(mainGone)
    # The main process decides when workers stop: signals sent to the
    # terminal's process group (Ctrl-C) or to the whole service (systemd)
    # must not stop a worker twice.
    os.setsid()

    def onStopSignal(number: int, frame: object) -> None:
        reactor.callFromThread(stopping, number)

    def stopping(number: int) -> None:
        if not worker.stopping:
            if reactor.running:
                worker.stopping = True
                reactor.stop()
        elif worker.service is not None:
            # Asked again while draining: the main process got a second
            # SIGTERM or SIGINT.
            worker.service.hurry(number)

    reactor.callWhenRunning(
        lambda: [
            signal.signal(s, onStopSignal) for s in (signal.SIGTERM, signal.SIGINT)
        ]
    )
    reactor.addSystemEventTrigger("before", "shutdown", worker.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
