"""
C{twistd multiport}: the service the command line builds.

L{Options} parse and validate everything (L{multiport.daemon.options});
makeService only assembles the service tree from the validated model, and
installs multiport's reactor unless C{twistd --reactor} chose one.
"""

from __future__ import annotations

import gc
import importlib
import os
import pwd
import sys
import time
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python import usage

from multiport import __version__
from multiport.acme.attach import attachAcme, orderForWorkers
from multiport.config.files import FileError
from multiport.config.model import (
    Config,
)
from multiport.daemon.activation import ActivationError, activatedSockets
from multiport.daemon.daemonmode import reportStartupErrorsWhole
from multiport.daemon.dump import StatsDumpService
from multiport.daemon.handover import takeHandover
from multiport.daemon.notify import (
    SILENT,
    Notifier,
    NotifyService,
    watchdogSeconds,
)
from multiport.daemon.options import DEFAULT_STATUS, Options
from multiport.daemon.pool import WorkerPool
from multiport.daemon.reload import ReloadOnHangup
from multiport.daemon.service import PortsService
from multiport.daemon.signals import HurryOnSecondSignal
from multiport.daemon.startup import noCollections, reportStartupErrorsBriefly
from multiport.daemon.token import tokenFailure
from multiport.daemon.upgradestart import prepareUpgrades
from multiport.errors import ConfigError
from multiport.handlers.interface import IDaemonView
from multiport.io.reactortype import ReactorLike, globalReactor
from multiport.io.splice import poolSize
from multiport.io.transports import logTransport
from multiport.ports.admission import DaemonLimit
from multiport.ports.certificates import makeSelfSigned
from multiport.status.admintoken import (
    TOKEN_FILE,
    ensureAdminToken,
)
from multiport.text import plural

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

log = Logger()


def preferOurReactor() -> None:
    """
    Install multiport's epoll reactor unless one is installed already
    (C{twistd --reactor NAME} installs its choice while parsing the
    command line, before makeService; C{--reactor epoll} is how to get
    Twisted's own).
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    try:
        from multiport.io import reactor
    except ImportError:
        return
    try:
        reactor.install()
    except Exception as e:  # no epoll on this platform
        log.info("keeping Twisted's default reactor: {error}", error=str(e))


#: Modules the daemon may first need after twistd drops privileges; on
#: machines where Python lives in a folder only root can read, importing
#: them later would fail.
PRELOAD = (
    "encodings.idna",
    "json",
    "mimetypes",
    "twisted.internet._sslverify",
    "twisted.internet.ssl",
    "twisted.python.url",
    "twisted.web._flatten",
    "twisted.web._responses",
    "twisted.web.error",
    "twisted.web.resource",
    "twisted.web.static",
    "twisted.web.template",
    "twisted.web.util",
)


def _owner(options: usage.Options) -> tuple[int, int] | None:
    parent = getattr(options, "parent", None)
    if parent is None:
        return None
    uid, gid = parent.get("uid"), parent.get("gid")
    if uid is None:
        return None
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return uid, gid


def preload(modules: Sequence[str] = PRELOAD) -> None:
    """
    Import C{modules} now, while the process can still read them.
    """
    for name in modules:
        importlib.import_module(name)


def makeService(
    options: Options, reactor: ReactorLike | None = None
) -> PortsService | WorkerPool:
    """
    The service tree for validated C{options}.

    @param reactor: The reactor to listen with; the global one by default
        (twistd's case: then start-up's objects are frozen out of the
        garbage collector's sight once the ports listen, see L{ReadyLine}).
    """
    with noCollections():
        return _makeService(options, reactor)


def _makeService(
    options: Options, given: ReactorLike | None
) -> PortsService | WorkerPool:

    daemon = given is None
    if given is None:
        preferOurReactor()
        reactor = globalReactor()
        reportStartupErrorsBriefly()
        reportStartupErrorsWhole()
    else:
        reactor = given
    config = options.config
    assert config is not None, "postOptions builds the configuration"
    # Started by an upgrade: the old daemon's sockets and running
    # configuration replace the file's.
    taken = takeHandover(os.environ) if daemon else None
    if taken is not None:
        config = taken[1].config
    preload()
    certificates = dict(options.certificates)
    # The self-signed certificate is made (or loaded) here, knowing --uid.
    try:
        certificates.update(
            makeSelfSigned(config.ports, config.stateDir, _owner(options))
        )
    except ConfigError as e:
        # The same line as --check's for the same problem.
        raise SystemExit(f"multiport: {e}") from None
    log.info(
        "multiport {version} on Python {python}: {ports}",
        version=__version__,
        python=sys.version.split()[0],
        count=len(config.ports),
        ports=plural(len(config.ports), "port"),
    )
    limit = DaemonLimit.fromFileLimit(len(config.ports))
    log.info(
        "at most {maximum} descriptors for connections at once over all ports "
        "(one per connection, two per relayed one; from the file descriptor "
        "limit)",
        maximum=limit.maximum,
    )
    log.info(
        "splice(2) relays take pipes from a pool of at most {pipes} ({count} "
        "descriptors, lent by that limit), only while bytes are in flight",
        pipes=poolSize(limit.maximum),
        count=2 * poolSize(limit.maximum),
    )
    owner = _owner(options)
    if options.adminToken is not None:
        token, source = options.adminToken
    else:
        source = str(config.stateDir / TOKEN_FILE)
        try:
            token = ensureAdminToken(config.stateDir, owner)
        except OSError as e:
            raise SystemExit(
                tokenFailure(config.stateDir, str(e.strerror or e))
            ) from None
        except (FileError, ConfigError) as e:
            raise SystemExit(tokenFailure(config.stateDir, None, e)) from None
    log.info("the admin API's token is from {source}", source=source)
    logTransport(options["transport"])
    rebuild = options.rebuildConfig if options["config"] else None
    # systemd's variables are the daemon's own: a test's service never reads
    # them.
    notifier, watchdog, activated = SILENT, None, {}
    if daemon:
        notifier = Notifier.fromEnvironment()
        watchdog = watchdogSeconds(os.environ, os.getpid())
        try:
            activated = dict(activatedSockets(config.ports))
        except ActivationError as e:
            raise SystemExit(f"multiport: {e}") from None
        if taken is not None:
            activated.update(taken[2])

    def ports(config: Config, view: IDaemonView | None = None) -> PortsService:
        return PortsService(
            config,
            options.handlers,
            certificates,
            reactor,
            limit,
            defaults=options.portDefaults,
            rebuild=rebuild,
            adminToken=token,
            owner=owner,
            view=view,
            transport=options.transport,
            notifier=SILENT if view is not None else notifier,
            activated=activated,
        )

    service: PortsService | WorkerPool
    if options.workers > 1:
        service = WorkerPool(
            config,
            options.workers,
            reactor,
            options.handlers,
            lambda pool, own: ports(own, view=pool),
            rebuild=rebuild,
            adminToken=token,
            owner=owner,
            reusePort=options.reusePort,
            transport=options["transport"],
            notifier=notifier,
            activated=activated,
        )
        orderForWorkers(service, reactor, owner)
    else:
        service = ports(config)
        attachAcme(service, config, reactor, owner)
    StatsDumpService(service.portStatus, reactor).setServiceParent(service)  # type: ignore[no-untyped-call]
    if daemon:
        # Takes SIGTERM and SIGINT over from the reactor once stopping, in
        # the daemon only: a test's process keeps its own handlers.
        HurryOnSecondSignal(service.hurry, reactor).setServiceParent(service)  # type: ignore[no-untyped-call]
    ReloadOnHangup(service.reloadLogged, reactor).setServiceParent(service)  # type: ignore[no-untyped-call]
    ReadyLine(len(config.ports), options.startedAt, freeze=daemon).setServiceParent(  # type: ignore[no-untyped-call]
        service
    )
    # Last: READY=1 once every port listens.
    notify = NotifyService(
        notifier,
        reactor,
        service.portStatus,
        watchdog,
        whenReady=service.whenServing if isinstance(service, WorkerPool) else None,
    )
    notify.setServiceParent(service)  # type: ignore[no-untyped-call]
    if daemon:
        prepareUpgrades(
            service,
            reactor,
            options.upgradeTimeout,
            getattr(options, "parent", None),
            notify,
            taken,
        )
    return service


class ReadyLine(Service):
    """
    Logs, once every port listens, how many and how long start-up took
    from the moment the command line was read (the interpreter's own start
    and imports excluded): the start-up cost of many ports, measured
    where it is spent.  With C{freeze}, it then moves every object alive
    out of the garbage collector's generations (C{gc.freeze}).
    """

    def __init__(
        self,
        count: int,
        startedAt: float | None,
        clock: Callable[[], float] = time.monotonic,
        freeze: bool = False,
    ) -> None:
        self.count = count
        self.startedAt = startedAt
        self.clock = clock
        self.freeze = freeze

    def startService(self) -> None:
        # twistd starts services once the reactor runs, after the ports
        # were bound in privilegedStartService.
        super().startService()  # type: ignore[no-untyped-call]
        if self.freeze:
            # What start-up made (ports, factories, the configuration) lives
            # as long as the daemon: out of the collector's full passes.
            gc.freeze()
        if self.startedAt is not None:
            log.info(
                "ready: {ports} listening, {seconds:.3f} s after the command "
                "line was read",
                count=self.count,
                ports=plural(self.count, "port"),
                seconds=self.clock() - self.startedAt,
            )


__all__ = ["DEFAULT_STATUS", "Options", "ReadyLine", "makeService", "preload"]
