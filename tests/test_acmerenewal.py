"""
Tests for L{multiport.acme.service}'s renewal, driven by an injected clock
and a fake ACME server.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from multiport.acme import client
from multiport.acme.challenges import ChallengeTokens
from multiport.acme.config import AcmeConfig
from multiport.acme.service import MAX_RETRY, AcmeService, backoff
from multiport.acme.store import AcmeStore, StoredCertificate
from tests.test_acmestore import certificateFor

NAMES = ("a.test",)
DAY = 86400.0
START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


class FakeServer:
    """
    Answers the service's blocking steps at once: each order issues a
    90-day certificate from the clock's now, or fails while C{failing}.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.orders = 0
        self.failing = False
        self.suggested: datetime.datetime | None = None
        self.key = b""

    def run(self, f: Any, *args: Any) -> Deferred[Any]:
        if f is client.renewalTime:
            return succeed(self.suggested)
        if f is client.placeOrder:
            self.orders += 1
            self.key = args[3]
            pending = client.Pending(
                acme=None,  # type: ignore[arg-type]  # never used by the fake
                order=None,  # type: ignore[arg-type]  # never used by the fake
                challenges=(),
                key=args[3],
            )
            return succeed(pending)
        if f is client.finish:
            if self.failing:
                return fail(client.AcmeError("validation failed"))
            now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
            return succeed(certificateFor(list(NAMES), 90, now).chain)
        raise AssertionError(f)


class RenewalTests(SynchronousTestCase):
    """
    When certificates are renewed, and what a failure does.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.server = FakeServer(self.clock)
        self.installed: list[StoredCertificate] = []
        self.store = AcmeStore(Path(self.mktemp()), "h", now=self.clock.seconds)
        self.service = AcmeService(
            AcmeConfig(),
            self.store,
            self.clock,
            lambda names, stored: self.installed.append(stored),
            ChallengeTokens(),
            run=self.server.run,
            jitter=lambda: 0.0,
        )
        self.service.manage(NAMES)
        self.addCleanup(self.service.stopService)

    def keep(self, days: float = 90) -> StoredCertificate:
        """
        A certificate issued now, in the store.
        """
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        stored = certificateFor(list(NAMES), days, now)
        self.store.keepCertificate(NAMES, stored)
        return stored

    def test_firstOrder(self):
        """
        With nothing stored, a certificate is ordered at start and served.
        """
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual(self.server.orders, 1)
        self.assertEqual(len(self.installed), 1)

    def test_twoThirds(self):
        """
        Without ARI, a stored certificate is served and renewed at two
        thirds of its lifetime, not before.
        """
        stored = self.keep(90)
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual((self.server.orders, self.installed), (0, [stored]))
        managed = self.service.managed[NAMES]
        start = stored.leaf.not_valid_before_utc.timestamp()
        self.assertAlmostEqual(managed.nextAttempt, start + (90 * DAY + 60) * 2 / 3)
        self.clock.advance(managed.nextAttempt - self.clock.seconds() - 1)
        self.assertEqual(self.server.orders, 0)
        self.clock.advance(1)
        self.assertEqual(self.server.orders, 1)
        self.assertEqual(len(self.installed), 2)

    def test_jitter(self):
        """
        The jitter moves the renewal earlier, by at most 5% of the lifetime.
        """
        self.service.jitter = lambda: 1.0
        stored = self.keep(90)
        self.service.startService()
        self.clock.advance(0)
        start = stored.leaf.not_valid_before_utc.timestamp()
        lifetime = 90 * DAY + 60
        self.assertAlmostEqual(
            self.service.managed[NAMES].nextAttempt,
            start + lifetime * 2 / 3 - lifetime * 0.05,
        )

    def test_ari(self):
        """
        When the server's renewalInfo suggests a time, that time is used.
        """
        self.keep(90)
        self.server.suggested = START + datetime.timedelta(days=10)
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual(
            self.service.managed[NAMES].nextAttempt, self.server.suggested.timestamp()
        )

    def test_failureKeepsOldAndBacksOff(self):
        """
        A renewal that fails keeps the certificate served, counts the
        failure, and is retried after 1, 2, 4... minutes, capped at a day.
        """
        stored = self.keep(90)
        self.service.startService()
        self.clock.advance(0)
        managed = self.service.managed[NAMES]
        self.server.failing = True
        self.clock.advance(managed.nextAttempt - self.clock.seconds())
        self.assertEqual(self.installed, [stored])
        self.assertEqual(managed.failures, 1)
        self.assertEqual(managed.lastError, "validation failed")
        delays = []
        for _ in range(12):
            delay = managed.nextAttempt - self.clock.seconds()
            delays.append(delay)
            self.clock.advance(delay)
        self.assertEqual(delays[:4], [60, 120, 240, 480])
        self.assertEqual(delays[-1], MAX_RETRY)
        self.assertEqual(self.installed, [stored])
        self.assertEqual(self.service.status(NAMES)["renewal_failures_total"], 13)
        self.server.failing = False
        self.clock.advance(managed.nextAttempt - self.clock.seconds())
        self.assertEqual(len(self.installed), 2)
        self.assertEqual(managed.failures, 0)
        self.assertIsNone(managed.lastError)

    def test_backoffCap(self):
        """
        The backoff doubles from a minute and stops at a day.
        """
        self.assertEqual([backoff(n) for n in (1, 2, 3)], [60, 120, 240])
        self.assertEqual(backoff(40), MAX_RETRY)

    def test_forget(self):
        """
        A forgotten set of names is no longer renewed.
        """
        self.keep(90)
        self.service.startService()
        self.clock.advance(0)
        self.service.forget(NAMES)
        self.clock.advance(100 * DAY)
        self.assertEqual(self.server.orders, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
