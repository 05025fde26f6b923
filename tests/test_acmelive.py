"""
Tests for ACME following live changes (L{multiport.acme.attach} and
L{multiport.acme.service.AcmeService.reconfigure}): ports with C{acme}
added and removed under C{--workers}, and a changed C{[acme]} table, with
a memory reactor and blocking steps that are recorded, never run.
"""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from multiport.acme import client
from multiport.acme.attach import attachAcme, orderForWorkers, sharedAnswers
from multiport.acme.challenges import ChallengeResponder, ChallengeTokens
from multiport.acme.config import AcmeConfig, changedKeys
from multiport.acme.service import AcmeService
from multiport.acme.store import AcmeStore, StoredCertificate
from multiport.config.build import buildConfig
from multiport.config.model import Config, Defaults
from multiport.config.tomlfile import parseConfig
from multiport.daemon.service import PortsService
from multiport.errors import ReconcileError
from multiport.ports.certificates import loadCertificates
from tests.support import HANDLERS
from tests.test_acmestore import certificateFor
from tests.test_workers import FakeChannel, fakePool

NAMES = ("a.test",)
ACME_PORT = {
    "port": 0,
    "interface": "127.0.0.1",
    "handler": "https",
    "tls": {"acme": list(NAMES)},
}


class Steps:
    """
    The service's blocking steps, recorded; each answered by hand (an
    order stays in flight until then), or at once from C{answers}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []
        self.answers: dict[Any, Any] = {}

    def run(self, f: Any, *args: Any) -> Deferred[Any]:
        if f in self.answers:
            answer = self.answers[f]
            return succeed(answer(*args) if callable(answer) else answer)
        waiting: Deferred[Any] = Deferred()
        self.calls.append((f, args, waiting))
        return waiting

    def of(self, f: Any) -> list[tuple[Any, ...]]:
        """
        The arguments of each call of C{f} still waiting or answered.
        """
        return [args for called, args, _ in self.calls if called is f]


def tomlConfig(text: str, stateDir: Path) -> Config:
    """
    The configuration a TOML document gives.
    """
    parsed = parseConfig(tomllib.loads(text), stateDir)
    return buildConfig(parsed.ports, Defaults(), HANDLERS, stateDir, acme=parsed.acme)


class WorkersFollowTests(SynchronousTestCase):
    """
    Under C{--workers}, the main process orders for the ports the workers
    were told to serve, following every live change.
    """

    def setUp(self) -> None:
        self.steps = Steps()
        self.pool = fakePool(self, FakeChannel(), FakeChannel())
        self.addCleanup(lambda: [s.close() for s in self.pool.sockets.values()])
        self.reactor = self.pool._reactor
        self.acme = orderForWorkers(self.pool, self.reactor, run=self.steps.run)
        self.acme.startService()
        self.addCleanup(self.acme.stopService)

    def test_addThroughAPIOrders(self):
        """
        A port with C{acme} added through the admin API, once every worker
        serves it, is ordered here.
        """
        self.assertEqual(self.acme.managed, {})
        self.successResultOf(self.pool.addPort(ACME_PORT))
        self.assertEqual(list(self.acme.managed), [NAMES])
        self.reactor.advance(0)
        [(_, _, names, _, _)] = self.steps.of(client.placeOrder)
        self.assertEqual(names, NAMES)

    def test_refusedAddOrdersNothing(self):
        """
        A port a worker refused is not ordered.
        """
        pool = fakePool(self, FakeChannel(), FakeChannel(refuse=True))
        self.addCleanup(lambda: [s.close() for s in pool.sockets.values()])
        acme = orderForWorkers(pool, pool._reactor, run=self.steps.run)
        self.failureResultOf(pool.addPort(ACME_PORT), ReconcileError)
        self.assertEqual(acme.managed, {})

    def test_removeStopsRenewals(self):
        """
        Removing the port forgets its names: no renewal is left scheduled.
        """
        added = self.successResultOf(self.pool.addPort(ACME_PORT))
        self.assertNotEqual(self.reactor.getDelayedCalls(), [])
        self.successResultOf(self.pool.removePort(added.name))
        self.assertEqual(self.acme.managed, {})
        self.assertEqual(
            [c for c in self.reactor.getDelayedCalls() if c.func == self.acme._due],
            [],
        )

    def test_statusShowsMainProcessRenewals(self):
        """
        C{/status} shows the renewal state kept here for a worker port
        (the workers only serve what this process orders).
        """
        added = self.successResultOf(self.pool.addPort(ACME_PORT))
        [port] = [s for s in self.pool.portStatus() if s.name == added.name]
        assert port.acme is not None
        self.assertEqual((port.acme["names"], port.acme["issued"]), (["a.test"], False))

    def reloadTo(self, text: str) -> None:
        """
        SIGHUP's reload, with C{text} (TOML) besides the pool's two ports.
        """
        stateDir = self.pool.config.stateDir
        self.pool.rebuild = lambda: tomlConfig(
            text + "\n[[port]]\nport = 0\ninterface = '127.0.0.1'\nhandler = 'echo'\n"
            "[[port]]\nport = 0\ninterface = '127.0.0.1'\nhandler = 'status'\n",
            stateDir,
        )
        self.successResultOf(self.pool.reload())

    def test_reloadAddsAndRemoves(self):
        """
        A reload that adds a port with C{acme} orders it; one that removes
        it stops its renewals.
        """
        self.reloadTo(
            "[[port]]\nport = 0\ninterface = '127.0.0.1'\nhandler = 'https'\n"
            "tls = { acme = ['a.test'] }\n"
        )
        self.assertEqual(list(self.acme.managed), [NAMES])
        self.reloadTo("")
        self.assertEqual(self.acme.managed, {})

    def test_reloadNewDirectory(self):
        """
        A reload naming another directory moves the store and the answers
        the workers read to that directory's folder, and orders from it.
        """
        port = (
            "[[port]]\nport = 0\ninterface = '127.0.0.1'\nhandler = 'https'\n"
            "tls = { acme = ['a.test'] }\n"
        )
        self.reloadTo("[acme]\ndirectory = 'https://one.test/dir'\n" + port)
        self.reactor.advance(0)
        self.reloadTo("[acme]\ndirectory = 'https://two.test/dir'\n" + port)
        self.assertEqual(self.acme.store.root.name, "two.test")
        self.assertEqual(self.acme.tokens.folder, sharedAnswers(self.acme.store))
        self.reactor.advance(0)
        orders = self.steps.of(client.placeOrder)
        self.assertEqual(
            [(config.directory, store.root.name) for config, store, *_ in orders],
            [
                ("https://one.test/dir", "one.test"),
                ("https://two.test/dir", "two.test"),
            ],
        )


class OneProcessFollowTests(SynchronousTestCase):
    """
    In one process (and in each worker), a reload carries the C{[acme]}
    table to the ports' service, which applies it.
    """

    def service(self, text: str, orders: bool = True) -> tuple[PortsService, Any]:
        stateDir = Path(self.mktemp())
        config = tomlConfig(text, stateDir)
        service = PortsService(
            config,
            HANDLERS,
            loadCertificates(config.ports, stateDir),
            MemoryReactorClock(),
        )
        acme = attachAcme(
            service, config, service._reactor, run=Steps().run, orders=orders
        )
        return service, acme

    def test_reloadAppliesTable(self):
        """
        The new table's email, challenges and http_port apply to the
        running service: no new order, a responder on the new port.
        """
        service, acme = self.service("[acme]\nemail = 'a@example.org'\n")
        new = tomlConfig(
            "[acme]\nemail = 'b@example.org'\nchallenges = ['http-01']\n"
            "http_port = 8080\n",
            service.config.stateDir,
        )
        service.reconcile(new, {})
        self.assertEqual(service.config.acme, new.acme)
        self.assertEqual(acme.config, new.acme)
        self.assertEqual(acme.preferred(acme.config), ("http-01",))
        assert acme.responder is not None
        self.assertEqual(acme.responder.port, 8080)

    def test_reloadKeepsIssuedCertificate(self):
        """
        A reload that leaves an ACME port alone keeps the certificate ACME
        issued for it, not the self-signed one its configuration loads.
        """
        service, acme = self.service(
            "[[port]]\nport = 0\ninterface = '127.0.0.1'\nhandler = 'https'\n"
            "tls = { acme = ['a.test'] }\n"
        )
        [port] = service.ports()
        tls = port.config.tls
        issued = certificateFor(list(NAMES))
        acme.store.keepCertificate(NAMES, issued)
        acme.install(NAMES, issued)
        served = port.creator.contextFactory
        summary = service.reconcile(
            service.config,
            loadCertificates(service.config.ports, service.config.stateDir),
        )
        self.assertEqual(summary["changed"], [])
        self.assertIs(service.ports()[0].creator.contextFactory, served)
        self.assertIs(service._certificates[tls].contextFactory, served)

    def test_failedReloadKeepsTable(self):
        """
        A reload that cannot be applied leaves the C{[acme]} table as it
        was.
        """
        service, acme = self.service("[acme]\nemail = 'a@example.org'\n")
        new = tomlConfig(
            "[acme]\nemail = 'b@example.org'\n[[port]]\nport = 0\n"
            "interface = '127.0.0.1'\nhandler = 'https'\n",
            service.config.stateDir,
        )
        # No certificate given for the new TLS port: it cannot be built.
        self.assertRaises(ReconcileError, service.reconcile, new, {})
        self.flushLoggedErrors(KeyError)
        self.assertEqual(service.config.acme, AcmeConfig(email="a@example.org"))
        self.assertEqual(acme.config.email, "a@example.org")

    def test_workerMovesToNewDirectory(self):
        """
        A worker (which orders nothing) reads the answers and the
        certificates of the new directory after a reload.
        """
        port = (
            "[[port]]\nport = 0\ninterface = '127.0.0.1'\nhandler = 'https'\n"
            "tls = { acme = ['a.test'] }\n"
        )
        service, acme = self.service(
            "[acme]\ndirectory = 'https://one.test/dir'\n" + port, orders=False
        )
        new = tomlConfig(
            "[acme]\ndirectory = 'https://two.test/dir'\n" + port,
            service.config.stateDir,
        )
        service.reconcile(new, loadCertificates(new.ports, new.stateDir))
        self.assertEqual(acme.store.root.name, "two.test")
        self.assertEqual(acme.tokens.folder, sharedAnswers(acme.store))
        self.assertIsNone(acme.responder)


DAY = 86400.0
START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


class ReconfigureTests(SynchronousTestCase):
    """
    L{AcmeService.reconfigure}: what a changed C{[acme]} table does to the
    certificates managed.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.steps = Steps()
        self.steps.answers[client.renewalTime] = None
        self.installed: list[StoredCertificate] = []
        self.folder = Path(self.mktemp())
        self.one = self.store("one.test")
        self.service = AcmeService(
            AcmeConfig(directory="https://one.test/dir", email="a@example.org"),
            self.one,
            self.clock,
            lambda names, stored: self.installed.append(stored),
            ChallengeTokens(),
            run=self.steps.run,
            jitter=lambda: 0.0,
        )
        self.service.manage(NAMES)
        self.addCleanup(self.service.stopService)

    def store(self, host: str) -> AcmeStore:
        return AcmeStore(self.folder, host, now=self.clock.seconds)

    def chainIn(self, store: AcmeStore) -> bytes | None:
        stored = store.certificate(NAMES)
        return None if stored is None else stored.chain

    def issue(self) -> StoredCertificate:
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        return certificateFor(list(NAMES), 90, now)

    def answerOrder(self, index: int, stored: StoredCertificate) -> None:
        """
        Let the C{index}th order placed be validated and issue C{stored}.
        """
        placed = [d for f, _, d in self.steps.calls if f is client.placeOrder]
        pending = client.Pending(
            acme=None,  # type: ignore[arg-type]  # never used: finish is recorded
            order=None,  # type: ignore[arg-type]
            challenges=(),
            key=stored.key,
        )
        placed[index].callback(pending)
        finishing = [d for f, _, d in self.steps.calls if f is client.finish]
        finishing[-1].callback(stored.chain)

    def test_newDirectoryOrdersAgain(self):
        """
        Another directory: the certificate is ordered from it at once, the
        old one served until the new one arrives; the failures counted
        so far are kept.
        """
        old = self.issue()
        self.one.keepCertificate(NAMES, old)
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual(self.installed, [old])
        self.service.managed[NAMES].totalFailures = 3
        two = self.store("two.test")
        self.service.reconfigure(
            AcmeConfig(directory="https://two.test/dir"), two, None
        )
        self.clock.advance(0)
        [(config, store, *_)] = self.steps.of(client.placeOrder)
        self.assertEqual((config.directory, store), ("https://two.test/dir", two))
        self.assertEqual(self.installed, [old])
        new = self.issue()
        self.answerOrder(0, new)
        self.assertEqual([s.chain for s in self.installed], [old.chain, new.chain])
        self.assertEqual(self.chainIn(two), new.chain)
        self.assertEqual(self.chainIn(self.one), old.chain)
        self.assertEqual(self.service.status(NAMES)["renewal_failures_total"], 3)

    def test_oldOrderInFlightNotServed(self):
        """
        An order of the old directory that ends after the change is kept
        in the old directory's folder but not served, nor renewed.
        """
        self.service.startService()
        self.clock.advance(0)
        two = self.store("two.test")
        self.service.reconfigure(
            AcmeConfig(directory="https://two.test/dir"), two, None
        )
        self.clock.advance(0)
        late = self.issue()
        self.answerOrder(0, late)
        self.assertEqual(self.installed, [])
        self.assertEqual(self.chainIn(self.one), late.chain)
        # Its lock was given back.
        self.assertTrue(self.one.lock(NAMES))
        new = self.issue()
        self.answerOrder(1, new)
        self.assertEqual([s.chain for s in self.installed], [new.chain])
        [renewal] = self.clock.getDelayedCalls()
        self.assertIs(renewal.args[0], self.service.managed[NAMES])

    def test_sameDirectoryKeepsCertificates(self):
        """
        Other keys changed, same directory: nothing is ordered again and
        the renewal stays where it was; the new responder is used.
        """
        self.one.keepCertificate(NAMES, self.issue())
        self.service.startService()
        self.clock.advance(0)
        managed = self.service.managed[NAMES]
        due = managed.nextAttempt
        responder = ChallengeResponder(MemoryReactorClock(), 8080, ChallengeTokens())
        self.service.reconfigure(
            evolve(self.service.config, challenges=("http-01",), httpPort=8080),
            self.store("one.test"),
            responder,
        )
        self.clock.advance(0)
        self.assertIs(self.service.managed[NAMES], managed)
        self.assertEqual(managed.nextAttempt, due)
        self.assertEqual(self.steps.of(client.placeOrder), [])
        self.assertIs(self.service.responder, responder)

    def test_newEmailUpdatesContact(self):
        """
        Another email, same directory: the account's contact is updated
        (once), with the new table.
        """
        self.service.startService()
        new = evolve(self.service.config, email="b@example.org")
        self.service.reconfigure(new, self.one, None)
        self.assertEqual(self.steps.of(client.updateContact), [(new, self.one)])
        self.service.reconfigure(new, self.one, None)
        self.assertEqual(len(self.steps.of(client.updateContact)), 1)

    def test_storeUnwritable(self):
        """
        A store whose folder can't be made (a state directory only root may
        write, after --uid) is a failed order, counted, retried later.
        """
        blocked = Path(self.mktemp())
        blocked.write_text("a file where the state directory should be")
        self.service.reconfigure(
            AcmeConfig(directory="https://two.test/dir"),
            AcmeStore(blocked, "two.test", now=self.clock.seconds),
            None,
        )
        self.service.startService()
        self.clock.advance(0)
        managed = self.service.managed[NAMES]
        self.assertEqual(managed.failures, 1)
        self.assertIn(str(blocked), managed.lastError or "")
        self.assertEqual(managed.nextAttempt, self.clock.seconds() + 60)
        self.assertEqual(self.steps.of(client.placeOrder), [])

    def test_changedKeys(self):
        """
        The keys a log line names for a changed table.
        """
        old = AcmeConfig(email="a@example.org")
        self.assertEqual(changedKeys(old, old), [])
        self.assertEqual(
            changedKeys(
                old, AcmeConfig(directory="https://two.test/dir", httpPort=8080)
            ),
            ["email", "directory", "http_port"],
        )
