"""
The service tree: one L{MultiService} holding a L{PortTCPServer} or
L{PortSSLServer} child per configured port.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from zope.interface import implementer

from multiport import __version__
from multiport.config import Config, PortConfig, TLSConfig, formatAddress
from multiport.counters import PortCounters
from multiport.handlers.interface import (
    HandlerContext,
    IDaemonView,
    IHandler,
    PortStatus,
)
from multiport.policies import DaemonLimit
from multiport.port import PortFactory, PortServer, PortSSLServer, PortTCPServer
from multiport.tls import LoadedCertificate

log = Logger()


class StartupError(Exception):
    """
    The daemon can't start; the message says why in one line.
    """

    # twistd shows "<module>.<class>: <message>" in daemon mode, cut at 100
    # bytes: keep the prefix short.
    __module__ = "multiport"


def reportStartupErrorsBriefly() -> None:
    """
    Make an uncaught L{StartupError} print as one line, not a traceback.

    twistd lets an exception from C{privilegedStartService} end the process
    with a traceback (after removing its pid file); a port that can't bind
    deserves one clear line and exit status 1.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, StartupError):
            stream = sys.__stderr__ or sys.stderr
            stream.write(f"multiport: {value}\n")
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


@frozen
class BoundPort:
    """
    A listening port as it really is.

    @ivar name: The port's name with its real number (C{tcp:127.0.0.1:41234}).
    @ivar address: The bound address, from the socket.
    """

    name: str
    config: PortConfig
    address: IAddress
    counters: PortCounters


def describeListenError(config: PortConfig, error: CannotListenError) -> str:
    """
    One line a person can act on for a port that could not bind.
    """
    where = f" [{config.where}]" if config.where else ""
    reason = getattr(error.socketError, "errno", None)
    if reason == errno.EADDRINUSE:
        why = "address already in use (another process, or another port here)"
    elif reason in (errno.EACCES, errno.EPERM) and 0 < config.port < 1024:
        why = (
            f"permission denied: port {config.port} is below 1024; run twistd as "
            "root with --uid/--gid to drop privileges after binding, or pick a "
            "port of 1024 or more"
        )
    elif reason == errno.EADDRNOTAVAIL:
        why = f"address {config.interface} is not on this machine"
    else:
        why = str(getattr(error.socketError, "strerror", None) or error.socketError)
    # Reason first: twistd's daemon mode shows only the first 100 bytes.
    return f"cannot listen on {config.address}: {why}{where}"


@implementer(IDaemonView)
class PortsService(MultiService):
    """
    Every port of a L{Config}, bound all or nothing.  It is also the
    read-only L{IDaemonView} handlers get (the status handler reads it).

    Ports bind in C{privilegedStartService} (so twistd drops privileges after
    binding).  If one can't bind, those already bound are closed and
    L{StartupError} says why.  Children are named C{tcp:HOST:PORT} once
    bound, with the real number for port 0.
    """

    def __init__(
        self,
        config: Config,
        handlers: Mapping[str, IHandler],
        certificates: Mapping[TLSConfig, LoadedCertificate],
        reactor: Any,
        daemonLimit: DaemonLimit | None = None,
    ) -> None:
        super().__init__()
        self.daemonLimit = daemonLimit
        self.config = config
        self.version = __version__
        self.started = reactor.seconds()
        self._reactor = reactor
        self._bound = False
        self._certificates = certificates
        for portConfig in config.ports:
            self.addService(
                self._makePort(portConfig, handlers[portConfig.handler], certificates)
            )

    def _makePort(
        self,
        config: PortConfig,
        handler: IHandler,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> PortServer:
        counters = PortCounters()
        context = HandlerContext(
            reactor=self._reactor, clock=self._reactor, port=config, daemon=self
        )
        inner = handler.buildFactory(context)
        # Our own log line says when a port starts; Twisted's per-factory
        # "Starting factory" lines would only repeat it.
        inner.noisy = False  # type: ignore[attr-defined]
        factory = PortFactory(inner, counters, context, self.daemonLimit)
        if config.tls is None:
            return PortTCPServer(config, factory, self._reactor)
        return PortSSLServer(
            config, factory, certificates[config.tls].contextFactory, self._reactor
        )

    def ports(self) -> Sequence[PortServer]:
        """
        The port services, in configuration order.
        """
        return [s for s in self if isinstance(s, PortTCPServer | PortSSLServer)]

    def portStatus(self) -> list[PortStatus]:
        """
        Every configured port now, listening or not (L{IDaemonView}).
        """
        statuses = []
        for port in self.ports():
            config = port.config
            expiry = None
            if config.tls is not None and config.tls in self._certificates:
                expiry = self._certificates[config.tls].notAfter.timestamp()
            statuses.append(
                PortStatus(
                    name=port.name or config.name,
                    config=config,
                    listening=port.boundAddress() is not None,
                    counters=port.factory.counters.snapshot(),
                    handlerCounters=port.factory.handlerContext.counters.snapshot(),
                    certificateExpiry=expiry,
                )
            )
        return statuses

    def boundPorts(self) -> Sequence[BoundPort]:
        """
        Every listening port with its real address and number.
        """
        bound = []
        for port in self.ports():
            address = port.boundAddress()
            if address is not None:
                bound.append(
                    BoundPort(
                        name=port.name or port.config.name,
                        config=port.config,
                        address=address,
                        counters=port.factory.counters,
                    )
                )
        return bound

    def _bindAll(self) -> None:
        bound: list[PortServer] = []
        for port in self.ports():
            try:
                port.privilegedStartService()
            except CannotListenError as e:
                for done in bound:
                    done.unbindNow()
                    self._forgetName(done)
                message = describeListenError(port.config, e)
                log.critical("{message}", message=message)
                raise StartupError(message) from None
            bound.append(port)
            self._nameBound(port)
        self._bound = True

    def _nameBound(self, port: PortServer) -> None:
        address = port.boundAddress()
        assert address is not None
        name = "tcp:" + formatAddress(port.config.interface, address.port)  # type: ignore[attr-defined]
        port.name = name
        port.factory.portName = name
        self.namedServices[name] = port
        port.factory.counters.listeningSince = self._reactor.seconds()
        config = port.config
        log.info(
            "listening on {name}: handler {handler}, TLS {tls}, backlog {backlog}",
            name=name,
            handler=config.handler,
            tls=config.tls.describe() if config.tls else "off",
            backlog=config.backlog,
        )

    def _forgetName(self, port: PortServer) -> None:
        if port.name is not None:
            self.namedServices.pop(port.name, None)
            port.name = None  # type: ignore[assignment]

    def privilegedStartService(self) -> None:
        """
        Bind every port, all or nothing.

        @raise StartupError: if a port can't bind; none is left bound.
        """
        Service.privilegedStartService(self)
        self._bindAll()

    def startService(self) -> None:
        """
        Start every port (binding first if twistd did not).
        """
        if not self._bound:
            self._bindAll()
        super().startService()

    def stopService(self) -> Deferred[object]:
        """
        Stop listening on every port (and stop the other children); fires
        when all have stopped.
        """
        Service.stopService(self)
        self._bound = False
        stops = []
        for child in reversed(list(self)):
            if child.running and not isinstance(child, PortTCPServer | PortSSLServer):
                stops.append(maybeDeferred(child.stopService))
        for port in reversed(self.ports()):
            name = port.name
            stopped = port.stopService()
            if stopped is not None:
                stops.append(stopped)
                stopped.addCallback(
                    lambda _, name=name: log.info(
                        "stopped listening on {name}", name=name
                    )
                )
            else:
                log.info("stopped listening on {name}", name=name)
        return DeferredList(stops).addCallback(lambda _: None)
