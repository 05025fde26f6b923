"""
C{twistd multiport}'s command line: the options, parsed and validated
into the configuration model (postOptions) before anything is built.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.python import usage

from multiport import __version__
from multiport.config.build import buildConfig
from multiport.config.files import FileError
from multiport.config.model import (
    DEFAULT_BACKLOG,
    DEFAULT_INTERFACE,
    DEFAULT_PORTS,
    MAX_BACKLOG,
    Config,
    Defaults,
    PortConfig,
    PortRequest,
    TLSConfig,
    defaultStateDir,
    parseInterface,
)
from multiport.config.portspec import parsePortItem, parsePorts
from multiport.config.tomlfile import readConfigFile
from multiport.daemon import logformat
from multiport.daemon.optionvalues import seconds, wholeNumber
from multiport.daemon.token import STATUS_HANDLER, refuseExposedStatus, tokenFailure
from multiport.daemon.upgrade import DEFAULT_UPGRADE_TIMEOUT
from multiport.daemon.workers import workerCount, workerSockets
from multiport.errors import ConfigError
from multiport.handlers.interface import IHandler
from multiport.handlers.registry import checkProtocols, findHandlers
from multiport.io.transport import FastServer
from multiport.io.transports import DEFAULT_TRANSPORT, transportNamed
from multiport.ports.certificates import CertificateLoader, SelfSigned
from multiport.ports.policies import DEFAULT_DRAIN_TIMEOUT, Policy
from multiport.ports.tls import (
    LoadedCertificate,
    selfSignedPaths,
)
from multiport.status.admintoken import (
    ENVIRONMENT,
    checkAdminToken,
    givenToken,
)
from multiport.text import plural

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

# The lines were tap's before this module existed; their namespace is part
# of the JSON log.
log = Logger(namespace="multiport.daemon.tap")


#: Where the status port listens unless told otherwise: loopback only.
DEFAULT_STATUS = "127.0.0.1:9099"


class Options(usage.Options):
    """
    The options of C{twistd multiport}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve many ports from one process, each with its own handler. "
        "PORTS is a comma-separated list of [HOST:]PORT[=HANDLER[+tls]] items; "
        f"with neither --ports nor --config the ports are {DEFAULT_PORTS}."
    )

    optFlags = [
        ["list-handlers", None, "List the handlers found, then exit."],
        ["no-status", None, "Serve no status port."],
        [
            "check",
            None,
            "Parse and validate the configuration (certificates and handler "
            "options included), print one line per port, and exit 0 or 1 "
            "without binding anything.",
        ],
    ]
    optParameters = [
        ["config", "c", None, "A TOML configuration file (see README.rst)."],
        [
            "status",
            None,
            None,
            "[HOST:]PORT of the status port (status page, /status, /metrics, "
            f"/healthz). Default: {DEFAULT_STATUS}.",
        ],
        [
            "log-format",
            None,
            "text",
            "The daemon's log lines: text, or json (one object per line).",
        ],
        [
            "log-rotate-size",
            None,
            str(logformat.DEFAULT_ROTATE_SIZE),
            "Bytes after which the log file is rotated (as twistd.log.1...); 0: "
            "never by size (when logrotate rotates it).",
        ],
        [
            "log-rotate-keep",
            None,
            str(logformat.DEFAULT_ROTATE_KEEP),
            "Rotated log files kept; older ones are deleted.",
        ],
        [
            "tls-cert",
            None,
            None,
            "PEM certificate (chain and key may follow) for TLS ports that name "
            "none. Default: a self-signed certificate in the state directory.",
        ],
        ["tls-key", None, None, "PEM private key for --tls-cert, if not in it."],
        [
            "backlog",
            None,
            DEFAULT_BACKLOG,
            f"Listen backlog for ports that set none: 1 to {MAX_BACKLOG}.",
        ],
        [
            "drain-timeout",
            None,
            None,
            "Seconds the open connections of a port being removed, or of a "
            "stopping daemon, get to finish before they are closed (0: at "
            f"once), for ports that set none. Default: {DEFAULT_DRAIN_TIMEOUT:g}.",
        ],
        [
            "upgrade-timeout",
            None,
            f"{DEFAULT_UPGRADE_TIMEOUT:g}",
            "Seconds the new daemon of an upgrade (multiport-ctl upgrade) has "
            "to serve every port before it is killed and this one serves on.",
        ],
        [
            "interface",
            None,
            DEFAULT_INTERFACE,
            "Address ports without a HOST bind to.",
        ],
        [
            "workers",
            None,
            "1",
            "Processes serving every port (sharing each listening socket): a "
            "number, or auto for one per core. 1 serves in this process.",
        ],
        [
            "worker-sockets",
            None,
            "shared",
            "With --workers: shared (one listening socket per port, which every "
            "worker accepts on) or reuseport (an SO_REUSEPORT socket per worker).",
        ],
        [
            "transport",
            None,
            DEFAULT_TRANSPORT,
            "The accepted connections' transport: multiport (sends at once, "
            "holds an HTTP response's writes for one send) or twisted "
            "(Twisted's own, each write queued for the next reactor turn).",
        ],
        [
            "admin-token-file",
            None,
            None,
            "A file holding the admin API's bearer token (else "
            f"${ENVIRONMENT}; without both, one is made in the state "
            "directory). Required, as one or the other, when the status port "
            "is not on loopback.",
        ],
        [
            "state-dir",
            None,
            None,
            "Folder for the daemon's files (the self-signed certificate, "
            "the admin token it makes). "
            "Default: /var/lib/multiport as root, else "
            "$XDG_STATE_HOME/multiport or ~/.local/state/multiport.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["ports"] = []
        self.config: Config | None = None
        self.handlers: Mapping[str, IHandler] = {}
        self.certificates: dict[TLSConfig, LoadedCertificate] = {}
        #: The admin token the operator gave, and where from (L{givenToken}).
        self.adminToken: tuple[str, str] | None = None
        #: C{--worker-sockets reuseport}: a socket per worker.
        self.reusePort = False
        #: C{--transport}: the class of every port's accepted connections.
        self.transport: type[tcp.Server] = FastServer
        #: C{--upgrade-timeout} in seconds.
        self.upgradeTimeout = DEFAULT_UPGRADE_TIMEOUT

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as L{usage.Options} does; under twistd, a usage error prints
        the usage and the error and exits 1 here, since twistd before 26.10
        exits 0 after printing them.
        """
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            parent = getattr(self, "parent", None)
            if parent is None:
                raise
            print(parent)
            print(f"{sys.argv[0]}: {e}")
            raise SystemExit(1) from None

    def opt_ports(self, value: str) -> None:
        """
        Ports to serve: [HOST:]PORT[=HANDLER[+tls]],... (may be repeated).
        """
        self["ports"].append(value)

    opt_p = opt_ports

    def opt_version(self) -> None:
        """
        Print multiport's version and exit.
        """
        print(f"multiport {__version__}")
        raise SystemExit(0)

    #: Whether the self-signed certificate C{--check} built its contexts
    #: with is one a start would make (none usable is kept).
    selfSignedMade = False

    #: When the command line was read (C{time.monotonic()}): the start of
    #: the start-up time the ready line reports.
    startedAt: float | None = None

    def postOptions(self) -> None:
        """
        Build and validate the configuration model.
        """
        self.startedAt = time.monotonic()
        self.handlers = findHandlers()
        if self["list-handlers"]:
            for name in sorted(self.handlers):
                handler = self.handlers[name]
                protocols = "/".join(checkProtocols(handler))
                print(f"{name:<12} {protocols:<8} {handler.description}")
            raise SystemExit(0)
        try:
            self._configureLogFormat()
            self.workers = workerCount(self["workers"])
            self.reusePort = workerSockets(self["worker-sockets"]) == "reuseport"
            self.transport = transportNamed(self["transport"])
            self.upgradeTimeout = seconds(
                self["upgrade-timeout"], "--upgrade-timeout", above=True
            )
            self.adminToken = givenToken(self["admin-token-file"], os.environ)
            self.config = self._buildConfig()
        except ConfigError as e:
            if e.where.startswith("--") and not self["check"]:
                raise usage.UsageError(str(e)) from None
            raise SystemExit(f"multiport: {e}") from None
        try:
            self.certificates = self._loadCertificates(self.config)
        except ConfigError as e:
            # A certificate problem is about a file, not the command's
            # syntax: one line, without the usage text.
            raise SystemExit(f"multiport: {e}") from None
        if self["check"]:
            if self.adminToken is None:
                self._checkAdminToken(self.config.stateDir)
            self._printCheck(self.config)
            raise SystemExit(0)

    def _checkAdminToken(self, stateDir: Path) -> None:
        """
        Fail C{--check} where a start would fail to keep its admin token in
        C{stateDir}, without writing it.
        """
        try:
            unwritable = checkAdminToken(stateDir)
        except (FileError, ConfigError) as e:
            raise SystemExit(tokenFailure(stateDir, None, e)) from None
        if unwritable is not None:
            raise SystemExit(tokenFailure(stateDir, unwritable))

    def _statusRequest(
        self, requests: list[PortRequest], drainTimeout: float | None
    ) -> PortRequest | None:
        """
        The default status port, unless the configuration has its own or
        none is wanted.

        @param drainTimeout: C{--drain-timeout}, if given.
        """
        configured = [r for r in requests if r.handler == STATUS_HANDLER]
        if self["status"] is not None and self["no-status"]:
            raise ConfigError("--status", "can't be combined with --no-status")
        if configured:
            if self["status"] is not None:
                where = configured[0].where
                raise ConfigError(
                    "--status", f"the configuration has a status port already ({where})"
                )
            return None
        if self["no-status"]:
            return None
        value = DEFAULT_STATUS if self["status"] is None else self["status"]
        item = parsePortItem(value, f"--status {value!r}")
        if item.handler is not None:
            raise ConfigError(f"--status {value!r}", "takes [HOST:]PORT, no handler")
        # Dashboards poll it every second and Prometheus scrapes it: a log
        # line for each would drown the daemon's own.
        return PortRequest(
            where=item.where,
            port=item.port,
            host="127.0.0.1" if item.host is None else item.host,
            handler=STATUS_HANDLER,
            logConnections=False,
            # [defaults] policies (allow lists, PROXY protocol) are written
            # for the served ports; they would lock the operator out of a
            # status port they never configured.  --drain-timeout is for
            # every port, this one too (a stop waits for it as well).
            policy=Policy(drainTimeout=drainTimeout),
            inheritPolicy=False,
        )

    def _configureLogFormat(self) -> None:
        format = self["log-format"]
        if format not in ("text", "json"):
            raise ConfigError("--log-format", f"{format!r} is not text or json")
        rotateSize = wholeNumber(
            self["log-rotate-size"], "--log-rotate-size", 0, 1 << 50
        )
        rotateKeep = wholeNumber(self["log-rotate-keep"], "--log-rotate-keep", 1, 1000)
        parent = getattr(self, "parent", None)
        if parent is None:
            return
        logfile = parent.get("logfile")
        nodaemon = parent.get("nodaemon")
        if format == "text" and (
            parent.get("logger") is not None
            or parent.get("syslog")
            or (logfile == "-" and not nodaemon)
        ):
            # The command line chose where the log goes (or twistd will
            # refuse it): twistd's own observer.
            return
        # twistd makes its log observer from --logger after makeService;
        # point it at ours, writing where twistd would have.
        if logfile in (None, "") and not nodaemon:
            logfile = "twistd.log"
        logformat.configure(logfile or "-", rotateSize, rotateKeep)
        parent["logger"] = f"multiport.daemon.logformat.{format}Logger"

    def _drainTimeout(self) -> float | None:
        """
        C{--drain-timeout} in seconds, or C{None} when it is not given.
        """
        if self["drain-timeout"] is None:
            return None
        return seconds(self["drain-timeout"], "--drain-timeout", above=False)

    def _buildConfig(self) -> Config:
        if self["tls-key"] and not self["tls-cert"]:
            raise ConfigError("--tls-key", "needs --tls-cert")
        interface = parseInterface(self["interface"], "--interface")
        drainTimeout = self._drainTimeout()
        defaults = Defaults(
            interface=interface,
            backlog=wholeNumber(str(self["backlog"]), "--backlog", 1, MAX_BACKLOG),
            tls=TLSConfig(
                cert=Path(self["tls-cert"]).absolute() if self["tls-cert"] else None,
                key=Path(self["tls-key"]).absolute() if self["tls-key"] else None,
            ),
            policy=Policy(drainTimeout=drainTimeout),
        )
        requests: list[PortRequest] = []
        acme = None
        peers: tuple[str, ...] = ()
        for value in self["ports"]:
            requests.extend(parsePorts(value, first=len(requests) + 1))
        if self["config"]:
            fileConfig = readConfigFile(Path(self["config"]))
            defaults = fileConfig.defaults.over(defaults)
            requests.extend(fileConfig.ports)
            acme = fileConfig.acme
            peers = fileConfig.peers
        elif not requests:
            requests = parsePorts(DEFAULT_PORTS)
        status = self._statusRequest(requests, drainTimeout)
        if status is not None:
            requests.append(status)
        stateDir = Path(
            self["state-dir"] if self["state-dir"] else defaultStateDir()
        ).absolute()
        self.portDefaults = defaults
        config = buildConfig(
            requests, defaults, self.handlers, stateDir, acme=acme, peers=peers
        )
        if self.adminToken is None:
            refuseExposedStatus(config)
        return config

    def rebuildConfig(self) -> Config:
        """
        The configuration as the command line and the file say now (for a
        reload: the file is read again).

        @raise ConfigError: if it is wrong.
        """
        return self._buildConfig()

    def _loadCertificates(self, config: Config) -> dict[TLSConfig, LoadedCertificate]:
        """
        Load every certificate the ports name and build their TLS contexts.
        The self-signed certificate is made (or loaded) by makeService,
        which knows C{--uid}; C{--check} builds its contexts too, from the
        files a start would keep or from a pair made in memory, so that it
        fails where a start would, and writes nothing.
        """
        loader = CertificateLoader(
            config.stateDir,
            selfSigned=SelfSigned.PREVIEW if self["check"] else SelfSigned.SKIP,
            where=self._certificateSource,
        )
        certificates = loader.load(config.ports)
        self.selfSignedMade = loader.selfSignedMade
        return certificates

    def _certificateSource(self, port: PortConfig) -> str:
        """
        Where the certificate of C{port} was named: C{--tls-cert} when the
        port took it from there, else the port's own item or table.
        """
        given = self["tls-cert"]
        if given and port.tls is not None and port.tls.cert == Path(given).absolute():
            return f"--tls-cert {given!r} (for {port.where})"
        return port.where

    def _printCheck(self, config: Config) -> None:
        for port in config.ports:
            tls = "plain"
            if port.tls is not None:
                loaded = self.certificates[port.tls]
                if not port.tls.selfSigned or port.tls.acme:
                    source = port.tls.describe()
                elif self.selfSignedMade:
                    source = f"self-signed (made at first start in {config.stateDir})"
                else:
                    source = f"self-signed {selfSignedPaths(config.stateDir).cert}"
                tls = f"TLS {source} (SHA-256 {loaded.fingerprint})"
            # A UDP socket has neither TLS nor a listen backlog.
            served = "" if port.datagram else f" {tls} backlog {port.backlog}"
            print(f"{port.name} {port.handler}{served} [{port.where}]")
        for peer in config.peers:
            print(f"peer {peer} [cluster.peers]")
        print(f"multiport: configuration ok, {plural(len(config.ports), 'port')}")
