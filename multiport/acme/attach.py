"""
Wiring ACME into a running L{PortsService}: its plain C{http} ports answer
HTTP-01, its ACME ports answer TLS-ALPN-01 and serve each certificate as
it arrives, through their switchable creators (no new socket).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import MultiService
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
from multiport.acme.config import CHALLENGES, AcmeConfig
from multiport.acme.service import AcmeService
from multiport.acme.store import CERT, KEY, AcmeStore, StoredCertificate
from multiport.config.model import Config, TLSConfig
from multiport.daemon.service import PortsService
from multiport.io.reactortype import ReactorLike
from multiport.ports.server import PortSSLServer
from multiport.ports.tls import certificateFromPEM

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


def attachAcme(
    service: PortsService,
    config: Config,
    reactor: ReactorLike,
    owner: tuple[int, int] | None = None,
    run: Callable[..., Deferred[Any]] | None = None,
    orders: bool = True,
) -> AcmeService:
    """
    Add an L{AcmeService} to C{service}: it orders what the ports list
    now, and follows live changes (a port added with C{acme} starts an
    order, a port removed stops its renewals).
    """
    acme = config.acme or AcmeConfig()
    store = AcmeStore(config.stateDir, acme.directoryHost, owner, reactor.seconds)
    # A worker answers from the answers the main process writes down.
    tokens = ChallengeTokens(None if orders else sharedAnswers(store))

    def install(names: tuple[str, ...], stored: StoredCertificate) -> None:
        folder = store.root / "certificates" / names[0]
        done: set[TLSConfig] = set()
        for port in service.ports():
            tls = port.config.tls
            if tls is None or tls.acme != names or tls in done:
                continue
            done.add(tls)
            loaded = certificateFromPEM(
                attrs.evolve(tls, cert=folder / CERT, key=folder / KEY),
                stored.chain,
                stored.key,
            )
            answerOn(loaded.contextFactory.getContext(), tls, acmeService.tokens)
            service.serveCertificate(tls, loaded)

    acmeService = AcmeService(
        acme,
        store,
        reactor,
        install,
        tokens,
        run=_runner(reactor) if run is None else run,
        responder=ChallengeResponder(reactor, acme.httpPort, tokens),
        available=CHALLENGES,
        orders=orders,
    )

    def follow() -> None:
        # Every port answers challenges; the names the ports list now are
        # managed, the others forgotten; a port added or changed for names
        # already issued serves their certificate at once.
        wanted = acmeNames(service.config)
        for gone in set(acmeService.managed) - wanted:
            log.info("no port orders {names} any more", names=", ".join(gone))
            acmeService.forget(gone)
        if not wanted:
            # A daemon without ACME ports keeps its sites untouched.
            return
        answering = False
        for port in service.ports():
            inner = getattr(port.factory, "wrappedFactory", None)
            if port.config.tls is None and isinstance(inner, Site):
                answerChallenges(inner, acmeService.tokens)
                answering = True
            elif isinstance(port, PortSSLServer) and port.config.tls is not None:
                if port.config.tls.acme:
                    context = port.creator.contextFactory.getContext()
                    answerOn(context, port.config.tls, acmeService.tokens)
        acmeService.useResponder = orders and not answering
        for names in sorted(wanted):
            if names in acmeService.managed:
                stored = store.certificate(names)
                if stored is not None and acmeService.managed[names].notAfter:
                    install(names, stored)
            else:
                acmeService.manage(names)

    service.acmeStatus = lambda port: acmeService.status(
        None if port.tls is None else port.tls.acme
    )
    service.afterChange = follow
    follow()
    if acmeNames(config):
        store.prepare()
    acmeService.setServiceParent(service)  # type: ignore[no-untyped-call]
    return acmeService


def sharedAnswers(store: AcmeStore) -> Path:
    """
    Where the main process of C{--workers} writes the pending answers.
    """
    return store.root / "challenges"


def orderForWorkers(
    pool: MultiService,
    config: Config,
    reactor: ReactorLike,
    owner: tuple[int, int] | None = None,
) -> AcmeService:
    """
    With C{--workers}: the main process orders (it has no ports of its
    own), writing the pending answers and the certificates to the state
    directory, where every worker finds them.
    """
    acme = config.acme or AcmeConfig()
    store = AcmeStore(config.stateDir, acme.directoryHost, owner, reactor.seconds)
    tokens = ChallengeTokens(sharedAnswers(store))
    answering = any(p.tls is None and p.handler == "http" for p in config.ports)
    acmeService = AcmeService(
        acme,
        store,
        reactor,
        lambda names, stored: None,
        tokens,
        run=_runner(reactor),
        responder=None
        if answering
        else ChallengeResponder(reactor, acme.httpPort, tokens),
        available=CHALLENGES,
    )
    for names in sorted(acmeNames(config)):
        acmeService.manage(names)
    if acmeNames(config):
        store.prepare()
    acmeService.setServiceParent(pool)  # type: ignore[no-untyped-call]
    return acmeService
