"""
The service that obtains and renews the ACME ports' certificates.

Each set of names a port lists is managed on its own: the certificate
kept in the state directory is served if it is still good (a restart
orders nothing), else one is ordered; then a timer renews it at the time
the server's ARI suggests, or at two thirds of its lifetime, less a random
jitter.  A failed order is retried with exponential backoff, capped at a
day, and the port goes on serving what it had.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from attrs import define
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from multiport.acme import client
from multiport.acme.challenges import ChallengeResponder, ChallengeTokens
from multiport.acme.config import HTTP_01, TLS_ALPN_01, AcmeConfig
from multiport.acme.store import AcmeStore, StoredCertificate, newCertificateKey

log = Logger()
_T = TypeVar("_T")

#: Seconds between looks at a lock another daemon holds.
LOCK_POLL = 5.0
#: Seconds between a worker's looks for a new certificate in the store.
FOLLOW_EVERY = 5.0
#: The first retry after a failure, doubled after each, capped at a day.
FIRST_RETRY = 60.0
MAX_RETRY = 86400.0
#: The largest jitter, as a share of the certificate's lifetime.
JITTER = 0.05

#: Runs a blocking function in a thread; its result as a Deferred.
Runner = Callable[..., "Deferred[Any]"]
Installer = Callable[[tuple[str, ...], StoredCertificate], None]


@define
class Managed:
    """
    One set of names and what is known of its certificate.

    @ivar notAfter: When the certificate served expires (epoch seconds),
        C{None} while only the self-signed one serves.
    @ivar nextAttempt: When the next order is due (epoch seconds).
    @ivar failures: Orders failed in a row.
    @ivar lastError: Why the last order failed, until one succeeds.
    """

    names: tuple[str, ...]
    notAfter: float | None = None
    nextAttempt: float | None = None
    failures: int = 0
    totalFailures: int = 0
    lastError: str | None = None
    call: IDelayedCall | None = None
    busy: bool = False
    #: Orders this daemon placed for these names.
    orders: int = 0
    #: The challenge types the last issued order was validated with.
    validatedWith: tuple[str, ...] = ()
    #: The chain served now.
    served: bytes | None = None


def renewAt(stored: StoredCertificate, suggested: float | None, jitter: float) -> float:
    """
    When to renew C{stored}: at C{suggested} (ARI's choice, already random
    within the server's window) if given, else at two thirds of its
    lifetime less C{jitter} (from 0 to 1) times L{JITTER} of it.
    """
    if suggested is not None:
        return suggested
    leaf = stored.leaf
    start = leaf.not_valid_before_utc.timestamp()
    end = leaf.not_valid_after_utc.timestamp()
    lifetime = end - start
    return float(start + lifetime * 2 / 3 - lifetime * JITTER * jitter)


def backoff(failures: int) -> float:
    """
    Seconds to wait after C{failures} failed orders in a row.
    """
    return min(FIRST_RETRY * float(2 ** (failures - 1)), MAX_RETRY)


class AcmeService(Service):
    """
    Obtains and renews the certificates of the names it manages, and
    hands each to C{install}.
    """

    def __init__(
        self,
        config: AcmeConfig,
        store: AcmeStore,
        clock: IReactorTime,
        install: Installer,
        tokens: ChallengeTokens,
        run: Runner,
        responder: ChallengeResponder | None = None,
        available: Sequence[str] = (HTTP_01,),
        jitter: Callable[[], float] = random.random,
        orders: bool = True,
    ) -> None:
        """
        @param run: Runs one blocking step of L{multiport.acme.client} in a
            thread (C{deferToThread}), or at once in tests.
        @param responder: Listens for HTTP-01 while orders are pending,
            when no C{http} port answers them; C{None} when one does.
        @param available: The challenges this daemon can answer.
        @param orders: Whether this process orders; a worker of
            C{--workers} does not: it serves what the main process keeps
            in the state directory, looking every L{followEvery} seconds.
        """
        self.config = config
        self.store = store
        self.clock = clock
        self.install = install
        self.tokens = tokens
        self.run = run
        self.responder = responder
        self.available = available
        self.jitter = jitter
        self.managed: dict[tuple[str, ...], Managed] = {}
        self.orders = orders
        self.followEvery = FOLLOW_EVERY
        #: Whether the responder is needed (no http port answers).
        self.useResponder = responder is not None

    def preferred(self, config: AcmeConfig) -> tuple[str, ...]:
        """
        The challenges tried, in C{config}'s order.
        """
        return tuple(c for c in config.challenges if c in self.available)

    def manage(self, names: tuple[str, ...]) -> None:
        """
        Obtain a certificate for C{names} and keep it renewed.
        """
        if names in self.managed:
            return
        self.managed[names] = Managed(names)
        if self.running:
            self._schedule(self.managed[names], 0)

    def forget(self, names: tuple[str, ...]) -> None:
        """
        Stop renewing the certificate of C{names}.
        """
        managed = self.managed.pop(names, None)
        if managed is not None:
            self._cancel(managed)

    def reconfigure(
        self,
        config: AcmeConfig,
        store: AcmeStore,
        responder: ChallengeResponder | None,
    ) -> None:
        """
        Go on with a changed C{[acme]} table (a reload): the next step of
        every order uses it.  Another directory (C{store} elsewhere) means
        another CA and account: every certificate is ordered from it at
        once, while the ports go on serving what they have until it
        arrives; the orders of the old one still in flight finish into
        its own store and are served no more.  Another email, same
        directory: the account's contact is updated.

        @param responder: Listens for HTTP-01 on the new C{http_port};
            one listening for an order in flight stops when that ends.
        """
        previous, self.config = self.config, config
        self.responder = responder
        if store.root == self.store.root and config.directory == previous.directory:
            if self.orders and config.email != previous.email:
                self.run(client.updateContact, config, store).addCallbacks(
                    lambda updated: _contactUpdated(updated, config.email),
                    lambda failure: log.error(
                        "updating the ACME account's contact failed: {error}; "
                        "tried again before the next order",
                        error=failure.getErrorMessage(),
                    ),
                )
            return
        self.store = store
        log.info(
            "ACME directory is now {directory}: its certificates replace the "
            "ones served as they arrive",
            directory=config.directory,
        )
        for names, old in list(self.managed.items()):
            self._cancel(old)
            # An order of the old directory still in flight holds the old
            # entry: it is not served when it ends.
            self.managed[names] = Managed(
                names,
                notAfter=old.notAfter,
                served=old.served,
                totalFailures=old.totalFailures,
            )
            if self.running:
                self._schedule(self.managed[names], 0)

    def _current(self, managed: Managed) -> bool:
        """
        Whether C{managed} is still what this service manages for its
        names (not forgotten, nor replaced by a change of directory).
        """
        return self.managed.get(managed.names) is managed

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        for managed in self.managed.values():
            self._schedule(managed, 0)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        for managed in self.managed.values():
            self._cancel(managed)

    def _cancel(self, managed: Managed) -> None:
        if managed.call is not None and managed.call.active():
            managed.call.cancel()
        managed.call = None

    def _schedule(self, managed: Managed, delay: float) -> None:
        if not self._current(managed):
            # Forgotten, or ordered from another directory now.
            return
        self._cancel(managed)
        managed.nextAttempt = self.clock.seconds() + delay
        managed.call = self.clock.callLater(delay, self._due, managed)

    def _due(self, managed: Managed) -> None:
        managed.call = None
        if self._current(managed) and not managed.busy:
            ensureDeferred(self.attempt(managed))

    async def attempt(self, managed: Managed, force: bool = False) -> None:
        """
        Serve the stored certificate if it is still good, else order one
        (unless another daemon is ordering it); then schedule the next look.

        @param force: Order even if the stored certificate is still good.
        """
        managed.busy = True
        try:
            await self._attempt(managed, force)
        finally:
            managed.busy = False

    async def _attempt(self, managed: Managed, force: bool) -> None:
        names = managed.names
        # An attempt runs to its end with the directory it began with.
        config, store = self.config, self.store
        stored = store.certificate(names)
        if not self.orders:
            now = self.clock.seconds()
            if (
                stored is not None
                and stored.chain != managed.served
                and stored.leaf.not_valid_after_utc.timestamp() > now
            ):
                self._serve(managed, stored)
            self._schedule(managed, self.followEvery)
            return
        if (
            not force
            and stored is not None
            and await self._stillGood(managed, stored, config, store)
        ) or not self._current(managed):
            return
        try:
            locked = store.lock(names)
        except OSError as e:
            # The store's folder can't be made (a port added live under
            # --uid, into a state directory only root may write).
            self._failed(managed, f"{e.strerror or e}: {e.filename}")
            return
        if not locked:
            log.info(
                "another daemon is ordering the certificate for {names}; waiting",
                names=", ".join(names),
            )
            self._schedule(managed, LOCK_POLL)
            return
        try:
            await self._order(managed, config, store)
        except Exception as e:
            self._failed(managed, str(e) or type(e).__name__)
        finally:
            store.unlock(names)

    def _failed(self, managed: Managed, error: str) -> None:
        """
        An order failed: count it, say so, and try again later.
        """
        managed.failures += 1
        managed.totalFailures += 1
        managed.lastError = error
        delay = backoff(managed.failures)
        log.error(
            "ordering the certificate for {names} failed ({failures} in a "
            "row): {error}; still serving the certificate it had, next "
            "attempt in {delay:.0f} s",
            names=", ".join(managed.names),
            failures=managed.failures,
            error=error,
            delay=delay,
        )
        self._schedule(managed, delay)

    async def _stillGood(
        self,
        managed: Managed,
        stored: StoredCertificate,
        config: AcmeConfig,
        store: AcmeStore,
    ) -> bool:
        """
        Serve C{stored} and schedule its renewal, unless it is due now.
        """
        suggested: float | None = None
        try:
            when = await self.run(client.renewalTime, config, store, stored.chain)
            if isinstance(when, datetime.datetime):
                suggested = when.timestamp()
        except Exception as e:
            log.info("no renewal info from the server: {error}", error=str(e))
        at = renewAt(stored, suggested, self.jitter())
        now = self.clock.seconds()
        if at <= now:
            return False
        self._serve(managed, stored)
        self._schedule(managed, at - now)
        return True

    def status(self, names: tuple[str, ...] | None) -> dict[str, object] | None:
        """
        What C{/status} shows of the certificate of C{names}.
        """
        managed = self.managed.get(names) if names else None
        if managed is None:
            return None
        return {
            "names": list(managed.names),
            "next_renewal": managed.nextAttempt,
            "failures": managed.failures,
            "renewal_failures_total": managed.totalFailures,
            "last_error": managed.lastError,
            "validated_with": list(managed.validatedWith),
            "issued": managed.notAfter is not None,
        }

    def _serve(self, managed: Managed, stored: StoredCertificate) -> None:
        if not self._current(managed):
            return
        managed.notAfter = stored.leaf.not_valid_after_utc.timestamp()
        managed.served = stored.chain
        self.install(managed.names, stored)

    async def _order(
        self, managed: Managed, config: AcmeConfig, store: AcmeStore
    ) -> None:
        names = managed.names
        log.info("ordering a certificate for {names}", names=", ".join(names))
        key = newCertificateKey()
        pending: client.Pending = await self.run(
            client.placeOrder, config, store, names, key, self.preferred(config)
        )
        managed.orders += 1
        usesHTTP = any(c.kind == HTTP_01 for c in pending.challenges)
        responder = self.responder if self.useResponder else None
        if usesHTTP and responder is not None:
            responder.start()
        try:
            for challenge in pending.challenges:
                self._publish(challenge)
            chain: bytes = await self.run(client.finish, pending)
        finally:
            for challenge in pending.challenges:
                self.tokens.withdraw("http", challenge.token)
                self.tokens.withdraw("alpn", challenge.name)
            if usesHTTP and responder is not None:
                responder.stop()
        stored = StoredCertificate(chain=chain, key=key)
        store.keepCertificate(names, stored)
        managed.failures = 0
        managed.lastError = None
        managed.validatedWith = tuple(sorted({c.kind for c in pending.challenges}))
        log.info(
            "obtained a certificate for {names}, valid until {notAfter}",
            names=", ".join(names),
            notAfter=stored.leaf.not_valid_after_utc.isoformat(),
        )
        self._serve(managed, stored)
        self._schedule(
            managed, renewAt(stored, None, self.jitter()) - self.clock.seconds()
        )

    def _publish(self, challenge: client.Challenge) -> None:
        if challenge.kind == HTTP_01:
            self.tokens.publish("http", challenge.token, challenge.keyAuthorization)
        elif challenge.kind == TLS_ALPN_01:
            self.tokens.publish("alpn", challenge.name, challenge.keyAuthorization)


def _contactUpdated(updated: bool, email: str | None) -> None:
    if updated:
        log.info(
            "the ACME account's contact is now {email}",
            email=email or "none",
        )
