"""
The admin API's changes and the reload, for the ports of this process
(L{AdminControl}, part of L{multiport.daemon.service.PortsService}); the
checks a change passes before it is planned, shared with the worker pool.
Every change answers with a L{Deferred} (L{IDaemonControl}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from attrs import evolve
from twisted.application.service import IService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger

from multiport.config.build import buildConfig
from multiport.config.build import checkOverlaps as _checkOverlaps
from multiport.config.model import Config, Defaults, PortConfig, TLSConfig
from multiport.config.tomlfile import portRequest
from multiport.daemon.notify import SILENT, Notifier, announcedReload
from multiport.daemon.plan import Plan, claims
from multiport.daemon.reload import logReloaded, reloadLogged
from multiport.daemon.upgrade import Upgrader, upgradeService
from multiport.errors import ConfigError, ReconcileError, ReloadUnavailable
from multiport.handlers.interface import ChangeSummary, IHandler, PortRef, PortStatus
from multiport.ports.certificates import loadCertificates
from multiport.ports.server import PORT_SERVERS, PortServer
from multiport.ports.tls import LoadedCertificate
from multiport.status.admintoken import tokenMatches

# The lines were the service's before this module existed; their namespace
# is part of the JSON log.
log = Logger(namespace="multiport.daemon.service")

_R = TypeVar("_R")

NO_RELOAD = "the daemon was started without --config: nothing to reload"


def requestFrom(
    table: Mapping[str, object],
    where: str,
    defaults: Defaults,
    handlers: Mapping[str, IHandler],
    stateDir: Path,
) -> PortConfig:
    """
    The one port C{table} (the keys of a C{[[port]]} table) describes.

    @raise ConfigError: for bad input, or a table naming several addresses.
    """
    request = portRequest(table, where, Path.cwd())
    ports = buildConfig([request], defaults, handlers, stateDir).ports
    if len(ports) != 1:
        raise ConfigError(
            f"{where}.interface",
            f"names {len(ports)} addresses; give one numeric address",
        )
    return ports[0]


def checkAmong(others: Sequence[PortConfig], new: PortConfig) -> None:
    """
    Refuse C{new} beside the running C{others}: an address they claim,
    or an upstream that is one of them.

    @raise ReconcileError: (a conflict) naming both.
    """
    try:
        _checkOverlaps([*others, new])
    except ConfigError as e:
        raise ReconcileError(str(e), conflict=True) from None


def changedConfig(
    name: str,
    current: PortConfig,
    boundPort: int,
    table: Mapping[str, object],
    request: Callable[[Mapping[str, object], str], PortConfig],
) -> PortConfig:
    """
    The configuration C{table} gives port C{name} (now C{current},
    listening on C{boundPort}); its address and number stay.

    @param request: Reads a table into a port (L{requestFrom}).
    @raise ConfigError: for bad input, or an attempt to move the port.
    """
    where = f"PUT /api/ports/{name}"
    table = dict(table)
    table.setdefault("port", current.port)
    table.setdefault("interface", current.interface)
    table.setdefault("protocol", current.protocol)
    if table["protocol"] != current.protocol:
        raise ConfigError(
            f"{where}.protocol",
            f"{table['protocol']!r} is not this port's protocol; to move a port, "
            "add the new one and remove this one",
        )
    if table["port"] not in (current.port, boundPort):
        raise ConfigError(
            f"{where}.port",
            f"{table['port']!r} is not this port's number; to move a port, "
            "add the new one and remove this one",
        )
    table["port"] = current.port
    new = request(table, where)
    if new.interface != current.interface:
        raise ConfigError(
            f"{where}.interface",
            f"{new.interface} is not this port's address; to move a port, "
            "add the new one and remove this one",
        )
    return new


def _number(address: IAddress | None, default: int) -> int:
    number = getattr(address, "port", default)
    assert isinstance(number, int)
    return number


def servedFrom(bound: IAddress | None, servingFrom: IAddress | None) -> bool:
    """
    Whether a request that came in on C{servingFrom} came through the port
    bound at C{bound}.
    """
    return (
        servingFrom is not None
        and bound is not None
        and getattr(servingFrom, "port", None) == getattr(bound, "port", None)
    )


def refuseSelf(server: PortServer, servingFrom: IAddress | None, verb: str) -> None:
    """
    Refuse to C{verb} the port the asking request came in on: the admin
    API would cut the branch it sits on.

    @raise ReconcileError: (a conflict) if C{server} is that port.
    """
    if servedFrom(server.boundAddress(), servingFrom) and (
        server.config.interface in (getattr(servingFrom, "host", None), "0.0.0.0", "::")
    ):
        raise ReconcileError(
            f"{server.name} is the port this request came in on; {verb} it "
            "from another status port or the configuration",
            conflict=True,
        )


def refOf(server: PortServer) -> PortRef:
    """
    The name and real number of a listening C{server}.
    """
    assert server.name is not None, "a listening port is named"
    return PortRef(server.name, _number(server.boundAddress(), server.config.port))


class AdminControl:
    """
    The admin API's changes and the reload, applied to this process's
    ports (L{IDaemonControl}, with L{multiport.daemon.apply.LiveChanges}).
    """

    config: Config
    handlers: Mapping[str, IHandler]
    defaults: Defaults
    adminToken: str | None
    owner: tuple[int, int] | None
    rebuild: Callable[[], Config] | None
    addedLive: set[str]
    namedServices: dict[str, IService]
    #: Told of reloads (RELOADING=1, READY=1).
    notifier: Notifier = SILENT
    #: Starts a new daemon and hands the ports over (POST /api/upgrade);
    #: L{None} where there is no daemon to replace (a test's service).
    upgrader: Upgrader | None = None

    # Provided by the service and LiveChanges.

    def ports(self) -> Sequence[PortServer]:
        raise NotImplementedError

    def runningConfigs(self, leaving: PortServer | None = None) -> list[PortConfig]:
        raise NotImplementedError

    def portStatus(self) -> list[PortStatus]:
        raise NotImplementedError

    def listeningSockets(self) -> dict[str, int]:
        raise NotImplementedError

    def shareSockets(self) -> None:
        raise NotImplementedError

    def liveAdditions(self) -> frozenset[str]:
        """
        The names of the ports added through the admin API.
        """
        return frozenset(self.addedLive)

    def apply(
        self,
        plan: Plan[PortServer],
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> None:
        raise NotImplementedError

    def reconcile(
        self, config: Config, certificates: Mapping[TLSConfig, LoadedCertificate]
    ) -> ChangeSummary:
        raise NotImplementedError

    def _newCertificate(
        self,
        server: PortServer,
        new: PortConfig,
        certificates: Mapping[TLSConfig, LoadedCertificate],
    ) -> bool:
        raise NotImplementedError

    # IDaemonControl.

    def checkToken(self, token: str) -> bool:
        return tokenMatches(self.adminToken, token)

    def serverNamed(self, name: str) -> PortServer:
        """
        The port service named C{name}.

        @raise KeyError: if there is none.
        """
        server = self.namedServices.get(name)
        if not isinstance(server, PORT_SERVERS):
            raise KeyError(name)
        return server

    def requestFrom(self, table: Mapping[str, object], where: str) -> PortConfig:
        """
        L{requestFrom} with this daemon's defaults and handlers.
        """
        return requestFrom(
            table, where, self.defaults, self.handlers, self.config.stateDir
        )

    def addPort(self, table: Mapping[str, object]) -> Deferred[PortRef]:
        """
        Add the port C{table} describes (the keys of a C{[[port]]} table).

        Fails with L{ConfigError} for bad input, with L{ReconcileError} if
        it can't listen or overlaps a port.
        """
        return maybeDeferred(lambda: refOf(self.addPortNow(table)))

    def addPortNow(self, table: Mapping[str, object]) -> PortServer:
        """
        L{addPort}, at once: the port service added.
        """
        new = self.requestFrom(table, "POST /api/ports")
        checkAmong(self.runningConfigs(), new)
        certificates = loadCertificates([new], self.config.stateDir, self.owner)
        before = set(self.ports())
        self.apply(Plan(add=(new,)), certificates)
        [server] = [s for s in self.ports() if s not in before]
        assert server.name is not None, "a listening port is named"
        self.addedLive.add(server.name)
        log.info("added {name} through the admin API", name=server.name)
        return server

    def changePort(
        self,
        name: str,
        table: Mapping[str, object],
        servingFrom: IAddress | None = None,
    ) -> Deferred[PortRef]:
        """
        Give port C{name} the settings C{table} describes; its address stays.

        @param servingFrom: The address the asking request came in on: a
            status port can't change itself (into an echo port, say).

        Fails with L{KeyError} if there is no such port, L{ConfigError}
        for bad input or an attempt to move the port, L{ReconcileError} if
        the request came in on this port.
        """
        return maybeDeferred(
            lambda: refOf(self.changePortNow(name, table, servingFrom))
        )

    def changePortNow(
        self,
        name: str,
        table: Mapping[str, object],
        servingFrom: IAddress | None = None,
    ) -> PortServer:
        """
        L{changePort}, at once: the port service now serving it.
        """
        server = self.serverNamed(name)
        refuseSelf(server, servingFrom, "change")
        bound = _number(server.boundAddress(), server.config.port)
        new = changedConfig(name, server.config, bound, table, self.requestFrom)
        checkAmong(self.runningConfigs(leaving=server), evolve(new, port=bound))
        certificates = loadCertificates([new], self.config.stateDir, self.owner)
        if server.config == new and not self._newCertificate(server, new, certificates):
            return server
        self.apply(Plan(change=((server, new),)), certificates)
        return self.serverNamed(name)

    def removePort(
        self, name: str, servingFrom: IAddress | None = None
    ) -> Deferred[int]:
        """
        Stop port C{name} listening; its open connections (how many: the
        result) drain.

        @param servingFrom: The address the asking request came in on: a
            status port can't remove itself.

        Fails with L{KeyError} if there is no such port.
        """
        return maybeDeferred(self.removePortNow, name, servingFrom)

    def removePortNow(self, name: str, servingFrom: IAddress | None = None) -> int:
        """
        L{removePort}, at once.
        """
        server = self.serverNamed(name)
        refuseSelf(server, servingFrom, "remove")
        count = server.factory.counters.current
        self.apply(Plan(remove=(server,)), {})
        self.addedLive.discard(name)
        return count

    def reload(self) -> Deferred[ChangeSummary]:
        """
        Read the configuration again and go to it, keeping the ports added
        through the admin API (unless the file now configures their
        address: then the file's port replaces them).

        Fails with L{ReloadUnavailable} without a configuration file,
        L{ConfigError} if the configuration or a certificate is bad,
        L{ReconcileError} if it can't be applied.
        """
        return announcedReload(self.notifier, lambda: maybeDeferred(self.reloadNow))

    def reloadNow(self) -> ChangeSummary:
        """
        L{reload}, at once: what changed.
        """
        if self.rebuild is None:
            raise ReloadUnavailable(NO_RELOAD)
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
        config = evolve(config, ports=(*config.ports, *kept))
        certificates = loadCertificates(config.ports, config.stateDir, self.owner)
        summary = self.reconcile(config, certificates)
        logReloaded(summary, f"; {len(kept)} added through the admin API kept")
        return summary

    def upgrade(self) -> Deferred[dict[str, int]]:
        """
        Replace this daemon with a new one (L{multiport.daemon.upgrade}).
        """
        return upgradeService(self.upgrader, self)

    def reloadLogged(self) -> None:
        """
        L{reload}, for SIGHUP: a failure is logged with its reason and
        nothing changes.
        """
        reloadLogged(self.reload)
