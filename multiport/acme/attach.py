"""
Wiring ACME into a running L{PortsService}: its plain C{http} ports answer
HTTP-01, its ACME ports answer TLS-ALPN-01 and serve each certificate as
it arrives, through their switchable creators (no new socket).  After
every live change (admin API, SIGHUP) the ports' names and the C{[acme]}
table are followed: in one process, in each worker of C{--workers}, and in
the main process that orders for those workers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.server import Site

from multiport.acme.alpn import answerOn
from multiport.acme.challenges import (
    ChallengeResponder,
    ChallengeTokens,
    answerChallenges,
)
from multiport.acme.config import CHALLENGES, AcmeConfig, changedKeys
from multiport.acme.service import AcmeService
from multiport.acme.store import CERT, KEY, AcmeStore, StoredCertificate
from multiport.config.model import Config, PortConfig, TLSConfig
from multiport.daemon.service import PortsService
from multiport.io.reactortype import ReactorLike
from multiport.ports.server import PortSSLServer
from multiport.ports.tls import certificateFromPEM

if TYPE_CHECKING:
    from multiport.daemon.pool import WorkerPool

log = Logger()


def _runner(reactor: ReactorLike) -> Callable[..., Deferred[Any]]:
    """
    Runs blocking calls in the reactor's thread pool (at once, for a
    reactor without one).
    """
    if IReactorThreads.providedBy(reactor):
        threaded: Any = reactor

        def run(f: Callable[..., Any], *args: object) -> Deferred[Any]:
            return deferToThreadPool(reactor, threaded.getThreadPool(), f, *args)

        return run
    return maybeDeferred


def acmeNames(config: Config) -> set[tuple[str, ...]]:
    """
    The sets of names the configuration's ports order certificates for.
    """
    return {p.tls.acme for p in config.ports if p.tls is not None and p.tls.acme}


def sharedAnswers(store: AcmeStore) -> Path:
    """
    Where the main process of C{--workers} writes the pending answers.
    """
    return store.root / "challenges"


class AcmeFollower:
    """
    One L{AcmeService} kept in step with the configuration: the names
    the ports list are managed, the others forgotten, and a changed
    C{[acme]} table is applied (L{AcmeService.reconfigure}).

    @ivar service: The ports that answer challenges and serve the
        certificates (in the main process of C{--workers}: its own ports).
    @ivar workers: In the main process of C{--workers}: the workers'
        configuration, whose names are ordered here and served there.
    """

    def __init__(
        self,
        service: PortsService,
        reactor: ReactorLike,
        owner: tuple[int, int] | None,
        run: Callable[..., Deferred[Any]],
        orders: bool,
        shared: bool,
        workers: Callable[[], Config] | None = None,
    ) -> None:
        """
        @param orders: Whether this process orders (a worker does not).
        @param shared: Whether the pending answers go through the state
            directory (C{--workers}: written by the main process, read by
            the workers).
        """
        self.service = service
        self.reactor = reactor
        self.owner = owner
        self.orders = orders
        self.shared = shared
        self.workers = workers
        acme = self._table()
        store = self._store(acme)
        self.tokens = ChallengeTokens(sharedAnswers(store) if shared else None)
        self.acme = AcmeService(
            acme,
            store,
            reactor,
            self.install,
            self.tokens,
            run=run,
            responder=self._responder(acme),
            available=CHALLENGES,
            orders=orders,
        )
        if self._configured().acme is not None or self._wanted():
            # While the daemon may still be root (see AcmeStore.prepare).
            store.prepare()

    def _configured(self) -> Config:
        return self.service.config if self.workers is None else self.workers()

    def _table(self) -> AcmeConfig:
        return self._configured().acme or AcmeConfig()

    def _store(self, acme: AcmeConfig) -> AcmeStore:
        stateDir = self._configured().stateDir
        return AcmeStore(stateDir, acme.directoryHost, self.owner, self.reactor.seconds)

    def _responder(self, acme: AcmeConfig) -> ChallengeResponder | None:
        if not self.orders:
            return None
        return ChallengeResponder(self.reactor, acme.httpPort, self.tokens)

    def _wanted(self) -> set[tuple[str, ...]]:
        wanted = acmeNames(self.service.config)
        if self.workers is not None:
            wanted |= acmeNames(self.workers())
        return wanted

    def install(self, names: tuple[str, ...], stored: StoredCertificate) -> None:
        """
        Serve C{stored} on every port of C{service} that lists C{names}.
        """
        folder = self.acme.store.root / "certificates" / names[0]
        done: set[TLSConfig] = set()
        for port in self.service.ports():
            tls = port.config.tls
            if tls is None or tls.acme != names or tls in done:
                continue
            done.add(tls)
            loaded = certificateFromPEM(
                attrs.evolve(tls, cert=folder / CERT, key=folder / KEY),
                stored.chain,
                stored.key,
            )
            answerOn(loaded.contextFactory.getContext(), tls, self.tokens)
            self.service.serveCertificate(tls, loaded)

    def status(self, port: PortConfig) -> dict[str, object] | None:
        """
        The renewal state of C{port}'s certificate, for C{/status}.
        """
        return self.acme.status(None if port.tls is None else port.tls.acme)

    def _reconfigure(self, acme: AcmeConfig) -> None:
        store = self._store(acme)
        if store.root != self.acme.store.root:
            try:
                store.prepare()
            except OSError as e:
                log.error(
                    "cannot make {folder} for the new ACME directory: {error}",
                    folder=str(store.root),
                    error=e.strerror or str(e),
                )
            if self.shared:
                self.tokens.folder = sharedAnswers(store)
        log.info(
            "[acme] {keys} changed: applied",
            keys=", ".join(changedKeys(self.acme.config, acme)),
        )
        self.acme.reconfigure(acme, store, self._responder(acme))

    def follow(self) -> None:
        """
        Bring the service in line with the configuration now (after a
        live change): every port answers challenges; the names the ports
        list are managed, the others forgotten; a port added or changed
        for names already issued serves their certificate at once.
        """
        acme = self._table()
        if acme != self.acme.config:
            self._reconfigure(acme)
        wanted = self._wanted()
        for gone in set(self.acme.managed) - wanted:
            log.info("no port orders {names} any more", names=", ".join(gone))
            self.acme.forget(gone)
        if not wanted:
            # A daemon without ACME ports keeps its sites untouched.
            return
        answering = self._answer()
        self.acme.useResponder = self.orders and not answering
        for names in sorted(wanted):
            if names in self.acme.managed:
                stored = self.acme.store.certificate(names)
                if stored is not None and self.acme.managed[names].notAfter:
                    self.install(names, stored)
            else:
                self.acme.manage(names)

    def _answer(self) -> bool:
        """
        Make the ports answer challenges; whether an http port answers
        HTTP-01 (else the challenge-only responder listens when needed).
        """
        answering = False
        for port in self.service.ports():
            inner = getattr(port.factory, "wrappedFactory", None)
            if port.config.tls is None and isinstance(inner, Site):
                answerChallenges(inner, self.tokens)
                answering = True
            elif isinstance(port, PortSSLServer) and port.config.tls is not None:
                if port.config.tls.acme:
                    context = port.creator.contextFactory.getContext()
                    answerOn(context, port.config.tls, self.tokens)
        if self.workers is not None:
            # A worker's http ports answer once it has ACME ports itself.
            workers = self.workers()
            answering = answering or bool(
                acmeNames(workers)
                and any(p.tls is None and p.handler == "http" for p in workers.ports)
            )
        return answering


def attachAcme(
    service: PortsService,
    config: Config,
    reactor: ReactorLike,
    owner: tuple[int, int] | None = None,
    run: Callable[..., Deferred[Any]] | None = None,
    orders: bool = True,
) -> AcmeService:
    """
    Add an L{AcmeService} to C{service} (running C{config}): it orders
    what the ports list now, and follows live changes (a port added with
    C{acme} starts an order, a port removed stops its renewals, a changed
    C{[acme]} table applies).

    @param orders: C{False} in a worker of C{--workers}: it serves what
        the main process orders (L{orderForWorkers}).
    """
    follower = AcmeFollower(
        service,
        reactor,
        owner,
        _runner(reactor) if run is None else run,
        orders=orders,
        shared=not orders,
    )
    service.acmeStatus = follower.status
    service.afterChange = follower.follow
    follower.follow()
    follower.acme.setServiceParent(service)  # type: ignore[no-untyped-call]
    return follower.acme


def orderForWorkers(
    pool: WorkerPool,
    reactor: ReactorLike,
    owner: tuple[int, int] | None = None,
    run: Callable[..., Deferred[Any]] | None = None,
) -> AcmeService:
    """
    With C{--workers}: the main process orders, writing the pending
    answers and the certificates to the state directory, where every
    worker finds them; it follows the live changes carried to the
    workers as one process does.  Its own ports (the status port) serve
    their certificates here.
    """
    follower = AcmeFollower(
        pool.status,
        reactor,
        owner,
        _runner(reactor) if run is None else run,
        orders=True,
        shared=True,
        workers=lambda: pool.config,
    )
    pool.acmeStatus = pool.status.acmeStatus = follower.status
    pool.afterChange = pool.status.afterChange = follower.follow
    follower.follow()
    follower.acme.setServiceParent(pool)  # type: ignore[no-untyped-call]
    return follower.acme
