"""
The service tree: one L{MultiService} holding a L{PortTCPServer} or
L{PortSSLServer} child per configured port.
"""

from __future__ import annotations

import errno
import gc
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attrs import evolve, frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from zope.interface import implementer

from multiport import __version__
from multiport.config.build import buildConfig, checkOverlaps
from multiport.config.model import (
    Config,
    Defaults,
    PortConfig,
    TLSConfig,
    formatAddress,
)
from multiport.config.tomlfile import portRequest
from multiport.daemon.live import loadCertificates
from multiport.errors import ConfigError
from multiport.handlers.interface import (
    HandlerContext,
    IDaemonControl,
    IDaemonView,
    IHandler,
    PortStatus,
    descriptorsOf,
)
from multiport.io.splice import DEFAULT_POOL, PipePool, poolSize
from multiport.ports.admission import DaemonLimit
from multiport.ports.counters import PortCounters
from multiport.ports.factory import PortFactory
from multiport.ports.policies import drainTimeoutOf
from multiport.ports.port import PortServer, PortSSLServer, PortTCPServer
from multiport.ports.tls import LoadedCertificate
from multiport.status.admintoken import tokenMatches
from multiport.text import plural

log = Logger()


def _withBoundPort(server: PortServer) -> PortConfig:
    """
    C{server}'s configuration with the port number it listens on.
    """
    bound = server.boundAddress()
    number = getattr(bound, "port", None)
    if server.config.port == 0 and number is not None:
        return evolve(server.config, port=number)
    return server.config


class StartupError(Exception):
    """
    The daemon can't start; the message says why in one line.
    """

    # twistd's own daemon-mode report says "<module>.<class>: <message>";
    # keep the prefix short (multiport.daemon.daemonmode prints the message alone).
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


class ReconcileError(Exception):
    """
    A live change could not be applied; nothing changed.

    @ivar conflict: Whether it failed on an address already in use (or a
        port that can't be removed from where it was asked), rather than on
        bad input.
    """

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict


@frozen
class Plan:
    """
    What one live change does: ports to add, to remove (they drain), to
    change in place (new settings for new connections, same socket) and
    those left alone.
    """

    add: tuple[PortConfig, ...] = ()
    remove: tuple[PortServer, ...] = ()
    change: tuple[tuple[PortServer, PortConfig], ...] = ()
    unchanged: tuple[PortServer, ...] = ()

    def summary(self) -> dict[str, object]:
        """
        The names each part touches, for logs and the admin API.
        """
        return {
            "added": [c.name for c in self.add],
            "removed": [s.name for s in self.remove],
            "changed": [s.name for s, _ in self.change],
            "unchanged": len(self.unchanged),
        }


def overlaps(a: PortConfig, b: PortConfig) -> bool:
    """
    Whether C{a} and C{b} claim the same address and port number (a
    wildcard address covers its whole family).
    """
    if a.port == 0 or a.port != b.port or a.ipv6 != b.ipv6:
        return False
    wildcard = "::" if a.ipv6 else "0.0.0.0"
    return a.interface == b.interface or wildcard in (a.interface, b.interface)


class ReloadUnavailable(Exception):
    """
    The daemon has no configuration file to reload.
    """


def logReloaded(summary: Mapping[str, Any], note: str = "") -> None:
    """
    Log what a reload changed.
    """
    log.info(
        "reloaded: added {added}, removed {removed}, changed {changed}, "
        "{unchanged} unchanged{note}",
        added=", ".join(summary["added"]) or "none",
        removed=", ".join(summary["removed"]) or "none",
        changed=", ".join(summary["changed"]) or "none",
        unchanged=summary["unchanged"],
        note=note,
    )


def reloadLogged(reload: Callable[[], object]) -> None:
    """
    Call C{reload} for SIGHUP: a failure, now or when its L{Deferred}
    fires, is logged with its reason (nothing has changed then).
    """
    try:
        result = reload()
    except ReloadUnavailable as e:
        log.info("SIGHUP: {reason}", reason=str(e))
        return
    except (ConfigError, ReconcileError) as e:
        log.error("reload failed, nothing changed: {reason}", reason=str(e))
        return
    except Exception:
        log.failure("reload failed, nothing changed")
        return
    if isinstance(result, Deferred):
        result.addErrback(
            lambda f: log.error(
                "reload failed, nothing changed: {reason}", reason=f.getErrorMessage()
            )
        )


def claims(a: PortConfig, b: PortConfig) -> bool:
    """
    Whether C{a} takes C{b}'s place: the same address and number, or an
    overlapping one.
    """
    return (a.interface, a.port) == (b.interface, b.port) or overlaps(a, b)


@contextmanager
def noCollections() -> Iterator[None]:
    """
    Python's cyclic garbage collector off for the block (then as before).

    Start-up makes many objects per port and frees almost none; the
    collector's full passes, more and longer as they accumulate, made the
    cost per port grow by about an eighth from 1,000 to 10,000 ports.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@implementer(IDaemonView, IDaemonControl)
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
        defaults: Defaults | None = None,
        rebuild: Callable[[], Config] | None = None,
        adminToken: str | None = None,
        owner: tuple[int, int] | None = None,
        view: IDaemonView | None = None,
        descriptors: Mapping[str, int] | None = None,
        pipes: PipePool | None = None,
    ) -> None:
        """
        @param defaults: What ports added through the admin API inherit.
        @param rebuild: Reads the configuration again (file and command
            line) for a reload; L{None} when there is nothing to reload.
        @param adminToken: The admin API's bearer token; L{None} turns off
            the admin API's changes.
        @param owner: The uid and gid a self-signed certificate made while
            running is given to.
        @param view: What handlers see of the daemon (the status port);
            this service by default, the worker pool in the main process.
        @param descriptors: Listening sockets to adopt rather than bind, by
            port name (in a worker: the main process's sockets).
        @param pipes: The splice pipe pool every relay port shares; by
            default one sized from C{daemonLimit} (L{poolSize}) that takes
            its descriptors from it.
        """
        super().__init__()
        self.daemonLimit = daemonLimit
        if pipes is None:
            pipes = (
                PipePool(DEFAULT_POOL)
                if daemonLimit is None
                else PipePool(poolSize(daemonLimit.maximum), daemonLimit)
            )
        self.pipes = pipes
        self.defaults = Defaults() if defaults is None else defaults
        self.rebuild = rebuild
        self.adminToken = adminToken
        self.owner = owner
        self.view = self if view is None else view
        self.descriptors: dict[str, int] = dict(descriptors or {})
        #: Names of the ports added through the admin API (a reload keeps
        #: them unless the file now configures their address).
        self.addedLive: set[str] = set()
        self.config = config
        self.handlers = handlers
        #: Ports removed while running, until their last connection is gone.
        self.draining: list[PortServer] = []
        self.version = __version__
        self.started = reactor.seconds()
        self._reactor = reactor
        self._bound = False
        self._certificates = dict(certificates)
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
        context, inner = self._handlerFactory(config, handler)
        factory = PortFactory(
            inner, PortCounters(), context, self.daemonLimit, descriptorsOf(handler)
        )
        server = self._server(config, factory, certificates)
        server.adoptDescriptor = self.descriptors.pop(config.name, None)
        return server

    def _handlerFactory(
        self, config: PortConfig, handler: IHandler
    ) -> tuple[HandlerContext, Any]:
        context = HandlerContext(
            reactor=self._reactor,
            clock=self._reactor,
            port=config,
            daemon=self.view,
            pipes=self.pipes,
        )
        inner = handler.buildFactory(context)
        # Our own log line says when a port starts; Twisted's per-factory
        # "Starting factory" lines would only repeat it.
        inner.noisy = False
        return context, inner

    def _server(
        self,
        config: PortConfig,
        factory: PortFactory,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> PortServer:
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

    def runningConfigs(self, leaving: PortServer | None = None) -> list[PortConfig]:
        """
        The configuration of every port but C{leaving}, port 0 replaced by
        the number it got: what a new port is checked against.
        """
        return [_withBoundPort(s) for s in self.ports() if s is not leaving]

    def portStatus(self) -> list[PortStatus]:
        """
        Every configured port now, listening or not, then the removed ones
        still draining (L{IDaemonView}).
        """
        statuses = []
        draining = set(self.draining)
        for port in [*self.ports(), *self.draining]:
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
                    draining=port in draining,
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

    # Live changes.

    def plan(
        self,
        config: Config,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> Plan:
        """
        What it takes to go from the running ports to C{config}.  A port
        is the same port when its address and number are (port 0 entries:
        when their whole configuration is); it is unchanged when its
        configuration and certificate are too.
        """
        running = self.ports()
        byAddress = {
            (s.config.interface, s.config.port): s for s in running if s.config.port
        }
        anyPort = [s for s in running if s.config.port == 0]
        add: list[PortConfig] = []
        change: list[tuple[PortServer, PortConfig]] = []
        unchanged: list[PortServer] = []
        matched: set[PortServer] = set()
        for new in config.ports:
            if new.port == 0:
                same = next(
                    (
                        s
                        for s in anyPort
                        if s not in matched
                        and s.config == new
                        and not self._newCertificate(s, new, certificates)
                    ),
                    None,
                )
                if same is None:
                    add.append(new)
                else:
                    matched.add(same)
                    unchanged.append(same)
                continue
            server = byAddress.get((new.interface, new.port))
            if server is None:
                add.append(new)
                continue
            matched.add(server)
            if server.config == new and not self._newCertificate(
                server, new, certificates
            ):
                unchanged.append(server)
            else:
                change.append((server, new))
        remove = [s for s in running if s not in matched]
        return Plan(tuple(add), tuple(remove), tuple(change), tuple(unchanged))

    def _newCertificate(
        self,
        server: PortServer,
        new: PortConfig,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> bool:
        if new.tls is None or new.tls not in certificates:
            return False
        current = self._certificates.get(new.tls)
        return (
            current is None or current.fingerprint != certificates[new.tls].fingerprint
        )

    def apply(
        self,
        plan: Plan,
        certificates: Mapping[TLSConfig, LoadedCertificate] = {},
    ) -> None:
        """
        Carry out C{plan}, all or nothing: build every new handler factory
        first, bind the new ports, and only then stop the removed ones
        (they drain) and switch the changed ones in place.  A new port
        overlapping one being removed on the same number can only bind once
        that one has closed: those go last, and the old port is bound
        again if the new one fails (a short gap in listening).

        @raise ReconcileError: if anything fails; nothing has changed.
        """
        known = {**self._certificates, **certificates}
        try:
            added = [
                self._makePort(c, self.handlers[c.handler], known) for c in plan.add
            ]
            changed = [
                (old, new, *self._handlerFactory(new, self.handlers[new.handler]))
                for old, new in plan.change
            ]
        except Exception as e:
            log.failure("a live change could not build its handlers")
            raise ReconcileError(f"cannot build the handler: {e}") from e
        removed = list(plan.remove)
        # Linear in the number of ports: removed ports by number and family.
        byNumber: dict[tuple[int, bool], list[PortServer]] = {}
        for server in removed:
            if server.config.port:
                key = (server.config.port, server.config.ipv6)
                byNumber.setdefault(key, []).append(server)

        def blockers(new: PortServer) -> list[PortServer]:
            key = (new.config.port, new.config.ipv6)
            return [r for r in byNumber.get(key, ()) if overlaps(new.config, r.config)]

        later = [s for s in added if blockers(s)]
        waiting = set(later)
        now = [s for s in added if s not in waiting]
        bound: list[PortServer] = []
        try:
            self._bindLive(now, bound)
            if later:
                blocking = list({id(r): r for s in later for r in blockers(s)}.values())
                for server in blocking:
                    server.unbindNow()
                try:
                    self._bindLive(later, bound)
                except ReconcileError:
                    for server in blocking:
                        server.privilegedStartService()
                    raise
        except ReconcileError:
            for server in bound:
                server.unbindNow()
            raise
        positions = {id(server): index for index, server in enumerate(self.services)}
        for server in bound:
            self._attach(server)
        for old, new, context, inner in changed:
            self._switch(old, new, context, inner, known, positions[id(old)])
        for server in removed:
            self._detach(server)
        if removed:
            gone = {id(server) for server in removed}
            self.services = [s for s in self.services if id(s) not in gone]
        self._certificates = known
        self._rememberConfig()
        if self.daemonLimit is not None:
            # Each port's fair share of the daemon's connections follows
            # the number of ports listening.
            self.daemonLimit.ports = max(1, len(self.ports()))

    def _bindLive(self, servers: Sequence[PortServer], bound: list[PortServer]) -> None:
        for server in servers:
            try:
                server.privilegedStartService()
            except CannotListenError as e:
                reason = getattr(e.socketError, "errno", None)
                raise ReconcileError(
                    describeListenError(server.config, e),
                    conflict=reason == errno.EADDRINUSE,
                ) from None
            bound.append(server)

    def _attach(self, server: PortServer) -> None:
        # MultiService.addService would bind again: the port is bound.
        server.parent = self
        self.services.append(server)
        self._nameBound(server)
        if self.running:
            server.startService()

    def _switch(
        self,
        old: PortServer,
        config: PortConfig,
        context: HandlerContext,
        inner: Any,
        certificates: Mapping[TLSConfig, LoadedCertificate],
        position: int,
    ) -> None:
        factory = old.factory
        cost = descriptorsOf(self.handlers[config.handler])
        factory.reconfigure(inner, context, cost)
        server = self._server(config, factory, certificates)
        server.takeOver(old)
        server.parent = self
        self.services[position] = server
        old.parent = None
        old.running = 0
        if old.name is not None:
            self.namedServices[old.name] = server
        if self.running:
            server.startService()
        log.info(
            "changed {name}: handler {handler}, TLS {tls}, backlog {backlog}",
            name=server.name,
            handler=config.handler,
            tls=config.tls.describe() if config.tls else "off",
            backlog=config.backlog,
        )

    def _detach(self, server: PortServer) -> None:
        """
        Stop C{server} listening now; its connections drain.
        """
        name = server.name
        server.unbindNow()
        server.factory.counters.listeningSince = None
        self._forgetName(server)
        server.name = name
        server.parent = None
        server.running = 0
        self.draining.append(server)
        timeout = drainTimeoutOf(server.config.policy)
        count = server.factory.counters.current
        log.info(
            "stopped listening on {name}; {connections} draining (at most "
            "{timeout:g}s)",
            name=name,
            count=count,
            connections=plural(count, "connection"),
            timeout=timeout,
        )

        def drained(_: object) -> None:
            self.draining.remove(server)
            log.info("{name} drained", name=name)

        server.factory.drain(timeout).addCallback(drained)

    def _rememberConfig(self) -> None:
        self.config = Config(
            ports=tuple(s.config for s in self.ports()), stateDir=self.config.stateDir
        )

    def reconcile(
        self,
        config: Config,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> dict[str, object]:
        """
        Go from the running ports to C{config} (see L{apply}); what changed.
        """
        plan = self.plan(config, certificates)
        before = {s.name for s in self.ports()}
        self.apply(plan, certificates)
        summary = plan.summary()
        summary["added"] = [s.name for s in self.ports() if s.name not in before]
        return summary

    # IDaemonControl: the admin API and SIGHUP.

    def checkToken(self, token: str) -> bool:
        return tokenMatches(self.adminToken, token)

    def _serverNamed(self, name: str) -> PortServer:
        server = self.namedServices.get(name)
        if not isinstance(server, PortTCPServer | PortSSLServer):
            raise KeyError(name)
        return server

    def _requestFrom(self, table: Mapping[str, object], where: str) -> PortConfig:
        request = portRequest(table, where, Path.cwd())
        ports = buildConfig(
            [request], self.defaults, self.handlers, self.config.stateDir
        ).ports
        if len(ports) != 1:
            raise ConfigError(
                f"{where}.interface",
                f"names {len(ports)} addresses; give one numeric address",
            )
        return ports[0]

    @staticmethod
    def checkAmong(others: Sequence[PortConfig], new: PortConfig) -> None:
        """
        Refuse C{new} beside the running C{others}: an address they claim,
        or an upstream that is one of them.

        @raise ReconcileError: (a conflict) naming both.
        """
        try:
            checkOverlaps([*others, new])
        except ConfigError as e:
            raise ReconcileError(str(e), conflict=True) from None

    def addPort(self, table: Mapping[str, object]) -> PortServer:
        """
        Add the port C{table} describes (the keys of a C{[[port]]} table).

        @raise ConfigError: for bad input.
        @raise ReconcileError: if it can't listen or overlaps a port.
        """
        new = self._requestFrom(table, "POST /api/ports")
        self.checkAmong(self.runningConfigs(), new)
        certificates = loadCertificates([new], self.config.stateDir, self.owner)
        before = set(self.ports())
        self.apply(Plan(add=(new,)), certificates)
        [server] = [s for s in self.ports() if s not in before]
        self.addedLive.add(server.name)
        log.info("added {name} through the admin API", name=server.name)
        return server

    def changePort(
        self,
        name: str,
        table: Mapping[str, object],
        servingFrom: IAddress | None = None,
    ) -> PortServer:
        """
        Give port C{name} the settings C{table} describes; its address stays.

        @param servingFrom: The address the asking request came in on: a
            status port can't change itself (into an echo port, say).
        @raise KeyError: if there is no such port.
        @raise ConfigError: for bad input, or an attempt to move the port.
        @raise ReconcileError: if the request came in on this port.
        """
        server = self._serverNamed(name)
        self._refuseSelf(server, servingFrom, "change")
        bound = server.boundAddress()
        new = self.changedConfig(
            name, server.config, getattr(bound, "port", server.config.port), table
        )
        self.checkAmong(
            self.runningConfigs(leaving=server),
            evolve(new, port=getattr(bound, "port", new.port)),
        )
        certificates = loadCertificates([new], self.config.stateDir, self.owner)
        if server.config == new and not self._newCertificate(server, new, certificates):
            return server
        self.apply(Plan(change=((server, new),)), certificates)
        return self._serverNamed(name)

    def changedConfig(
        self,
        name: str,
        current: PortConfig,
        boundPort: int,
        table: Mapping[str, object],
    ) -> PortConfig:
        """
        The configuration C{table} gives port C{name} (now C{current},
        listening on C{boundPort}); its address and number stay.

        @raise ConfigError: for bad input, or an attempt to move the port.
        """
        where = f"PUT /api/ports/{name}"
        table = dict(table)
        table.setdefault("port", current.port)
        table.setdefault("interface", current.interface)
        if table["port"] not in (current.port, boundPort):
            raise ConfigError(
                f"{where}.port",
                f"{table['port']!r} is not this port's number; to move a port, "
                "add the new one and remove this one",
            )
        table["port"] = current.port
        new = self._requestFrom(table, where)
        if new.interface != current.interface:
            raise ConfigError(
                f"{where}.interface",
                f"{new.interface} is not this port's address; to move a port, "
                "add the new one and remove this one",
            )
        return new

    def servedFrom(self, bound: IAddress | None, servingFrom: IAddress | None) -> bool:
        """
        Whether a request that came in on C{servingFrom} came through the
        port bound at C{bound}.
        """
        return (
            servingFrom is not None
            and bound is not None
            and getattr(servingFrom, "port", None) == getattr(bound, "port", None)
        )

    def _refuseSelf(
        self, server: PortServer, servingFrom: IAddress | None, verb: str
    ) -> None:
        """
        Refuse to C{verb} the port the asking request came in on: the admin
        API would cut the branch it sits on.

        @raise ReconcileError: (a conflict) if C{server} is that port.
        """
        if self.servedFrom(server.boundAddress(), servingFrom) and (
            server.config.interface
            in (getattr(servingFrom, "host", None), "0.0.0.0", "::")
        ):
            raise ReconcileError(
                f"{server.name} is the port this request came in on; {verb} it "
                "from another status port or the configuration",
                conflict=True,
            )

    def removePort(self, name: str, servingFrom: IAddress | None = None) -> int:
        """
        Stop port C{name} listening; its open connections (returned) drain.

        @param servingFrom: The address the asking request came in on: a
            status port can't remove itself.
        @raise KeyError: if there is no such port.
        """
        server = self._serverNamed(name)
        self._refuseSelf(server, servingFrom, "remove")
        count = server.factory.counters.current
        self.apply(Plan(remove=(server,)))
        self.addedLive.discard(name)
        return count

    def reload(self) -> dict[str, object]:
        """
        Read the configuration again and go to it, keeping the ports added
        through the admin API (unless the file now configures their
        address: then the file's port replaces them).

        @raise ReloadUnavailable: without a configuration file.
        @raise ConfigError: if the configuration or a certificate is bad.
        @raise ReconcileError: if it can't be applied.
        """
        if self.rebuild is None:
            raise ReloadUnavailable(
                "the daemon was started without --config: nothing to reload"
            )
        config = self.rebuild()
        kept: list[PortConfig] = []
        for server in self.ports():
            if server.name not in self.addedLive:
                continue
            claimed = [c for c in config.ports if claims(c, server.config)]
            if claimed:
                self.addedLive.discard(server.name)
                log.info(
                    "reload: {name}, added through the admin API, is now "
                    "configured by {where}",
                    name=server.name,
                    where=claimed[0].where,
                )
            else:
                kept.append(server.config)
        config = Config((*config.ports, *kept), config.stateDir)
        certificates = loadCertificates(config.ports, config.stateDir, self.owner)
        summary = self.reconcile(config, certificates)
        logReloaded(summary, f"; {len(kept)} added through the admin API kept")
        return summary

    def reloadLogged(self) -> None:
        """
        L{reload}, for SIGHUP: a failure is logged with its reason and
        nothing changes.
        """
        reloadLogged(self.reload)

    def _bindAll(self) -> None:
        with noCollections():
            self._bindEach()

    def _bindEach(self) -> None:
        bound: list[PortServer] = []
        for port in self.ports():
            try:
                port.privilegedStartService()
            except CannotListenError as e:
                for done in bound:
                    name = done.name
                    done.unbindNow()
                    self._forgetName(done)
                    log.info("closed {name}: the start failed", name=name)
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
        Stop listening on every port (and stop the other children), then
        let open connections finish, each port for at most its drain
        timeout; fires when all have stopped and drained.
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
        open = sum(p.factory.counters.current for p in [*self.ports(), *self.draining])
        if open:
            log.info(
                "draining {connections}",
                count=open,
                connections=plural(open, "open connection"),
            )
        for port in [*self.ports(), *self.draining]:
            stops.append(port.factory.drain(drainTimeoutOf(port.config.policy)))
        # Once no connection is left, no pipe is in use: close the kept ones.
        return DeferredList(stops).addCallback(lambda _: self.pipes.close())

    def hurry(self, signalNumber: int) -> int:
        """
        The daemon is stopping and got C{signalNumber} (SIGTERM or SIGINT)
        again: close every open connection now rather than let it drain;
        how many there were.
        """
        count = sum(p.factory.closeNow() for p in [*self.ports(), *self.draining])
        log.info(
            "{signal} again: closing {connections} now, without waiting for the drain",
            signal=signalName(signalNumber),
            count=count,
            connections=plural(count, "open connection"),
        )
        return count


def signalName(number: int) -> str:
    """
    C{SIGTERM} for C{signal.SIGTERM}; the number for one without a name.
    """
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
