"""
End-to-end tests of ACME against a real pebble on 127.0.0.1: issuance
through HTTP-01, the port switching to pebble's certificate on the same
socket, and a restart reusing what was stored.
"""

from __future__ import annotations

import socket
import ssl
import tomllib
from pathlib import Path
from typing import Any

from attrs import evolve
from cryptography import x509
from prometheus_client import generate_latest
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from multiport.acme import client
from multiport.acme.alpn import ACME_IDENTIFIER
from multiport.acme.attach import attachAcme
from multiport.acme.challenges import ChallengeTokens
from multiport.acme.service import AcmeService
from multiport.acme.store import ACCOUNT, ACCOUNT_CONTACT, ACCOUNT_KEY
from multiport.config.build import buildConfig
from multiport.config.model import Config, Defaults
from multiport.config.tomlfile import parseConfig
from multiport.daemon.service import PortsService
from multiport.ports.certificates import loadCertificates
from multiport.status.metrics import metricsRegistry
from multiport.status.report import portReport
from tests.pebble import Pebble, freeTCPPort, startPebble
from tests.support import HANDLERS, waitUntilOnReactor

NAME = "a.test"


def served(port: int, root: bytes | None, name: str = NAME) -> dict[str, Any] | None:
    """
    The certificate C{port} serves to a client asking for C{name},
    verified against C{root}; C{None} if it does not verify.
    """
    if root is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=root.decode("ascii"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                return tls.getpeercert() or {"binary": tls.getpeercert(True)}
    except (ssl.SSLError, OSError):
        return None


def acmeConfig(
    pebble: Pebble, stateDir: Path, http: int | None, https: int, extra: str = ""
) -> Config:
    """
    The configuration of an https port ordering C{NAME} from C{pebble},
    with an http port on C{http} if given.
    """
    text = (
        f"[acme]\nemail = 'ops@example.org'\ndirectory = '{pebble.directory}'\n"
        f"directory_ca = '{pebble.ca}'\n{extra}\n"
        f"[[port]]\nport = {https}\ninterface = '127.0.0.1'\nhandler = 'https'\n"
        f"tls = {{ acme = ['{NAME}'] }}\n"
    )
    if http is not None:
        text += (
            f"[[port]]\nport = {http}\ninterface = '127.0.0.1'\nhandler = 'http'\n"
            f"options = {{ redirect_https = {https} }}\n"
        )
    parsed = parseConfig(tomllib.loads(text), stateDir)
    return buildConfig(parsed.ports, Defaults(), HANDLERS, stateDir, acme=parsed.acme)


class PebbleTests(TestCase):
    """
    Certificates from a real pebble.
    """

    timeout = 120

    def daemon(self, config: Config) -> tuple[PortsService, AcmeService]:
        """
        A running daemon for C{config}, with ACME attached.
        """
        certificates = loadCertificates(config.ports, config.stateDir)
        service = PortsService(config, HANDLERS, certificates, reactor)
        acme = attachAcme(service, config, reactor)
        assert acme is not None
        service.startService()
        self.addCleanup(service.stopService)
        return service, acme

    @inlineCallbacks
    def issuedWithHTTP01(self) -> Any:
        """
        A daemon whose certificate pebble issued through HTTP-01: pebble,
        the configuration, the service, its ACME service and the https
        port (a Deferred).
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        stateDir = Path(self.mktemp()).absolute()
        config = acmeConfig(pebble, stateDir, http, https, "challenges = ['http-01']")
        service, acme = self.daemon(config)
        yield waitUntilOnReactor(lambda: acme.managed[(NAME,)].notAfter is not None, 60)
        return pebble, config, service, acme, https

    @inlineCallbacks
    def test_http01(self):
        """
        The port serves the self-signed certificate at once, then pebble's
        (verified against pebble's root), obtained through HTTP-01 on the
        http port whose job is a redirect, on the same listening socket.
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        stateDir = Path(self.mktemp()).absolute()
        service, acme = self.daemon(
            acmeConfig(pebble, stateDir, http, https, "challenges = ['http-01']")
        )
        port = service.ports()[0]
        listening = port._port
        first = yield deferToThread(served, https, None)
        self.assertIsNotNone(first)
        root = yield deferToThread(pebble.root)
        yield waitUntilOnReactor(lambda: acme.managed[(NAME,)].notAfter is not None, 60)
        peer = yield deferToThread(served, https, root)
        self.assertIsNotNone(peer, pebble.output())
        self.assertIn(("DNS", NAME), peer["subjectAltName"])
        self.assertIs(port._port, listening)
        self.assertEqual(acme.managed[(NAME,)].validatedWith, ("http-01",))

    @inlineCallbacks
    def test_http01Responder(self):
        """
        With no http port, a challenge-only responder listens on [acme]
        http_port while the order is pending, and only then.
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        stateDir = Path(self.mktemp()).absolute()
        config = acmeConfig(
            pebble,
            stateDir,
            None,
            https,
            f"challenges = ['http-01']\nhttp_port = {http}",
        )
        _, acme = self.daemon(config)
        yield waitUntilOnReactor(lambda: acme.managed[(NAME,)].notAfter is not None, 60)
        self.assertEqual(acme.managed[(NAME,)].validatedWith, ("http-01",))
        assert acme.responder is not None
        self.assertIsNone(acme.responder.listening)

    @inlineCallbacks
    def test_restartReuses(self):
        """
        A daemon started again on the same state directory serves the
        stored certificate and orders nothing.
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        stateDir = Path(self.mktemp()).absolute()
        config = acmeConfig(pebble, stateDir, http, https)
        service, acme = self.daemon(config)
        yield waitUntilOnReactor(lambda: acme.managed[(NAME,)].notAfter is not None, 60)
        yield service.stopService()
        again, acmeAgain = self.daemon(config)
        yield waitUntilOnReactor(
            lambda: acmeAgain.managed[(NAME,)].notAfter is not None, 30
        )
        self.assertEqual(acmeAgain.managed[(NAME,)].orders, 0)
        root = yield deferToThread(pebble.root)
        peer = yield deferToThread(served, https, root)
        self.assertIsNotNone(peer)

    @inlineCallbacks
    def test_twoDaemonsOrderOnce(self):
        """
        Two daemons sharing one state directory order the certificate once:
        the second waits on the lock, then serves what the first stored.
        """
        http, https, other = freeTCPPort(), freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        stateDir = Path(self.mktemp()).absolute()
        _, first = self.daemon(acmeConfig(pebble, stateDir, http, https))
        _, second = self.daemon(acmeConfig(pebble, stateDir, None, other))
        yield waitUntilOnReactor(
            lambda: all(
                a.managed[(NAME,)].notAfter is not None for a in (first, second)
            ),
            60,
        )
        self.assertEqual(
            first.managed[(NAME,)].orders + second.managed[(NAME,)].orders, 1
        )

    @inlineCallbacks
    def test_tlsAlpn01(self):
        """
        TLS-ALPN-01 is answered on the TLS port itself, while an ordinary
        client handshaking on the same port at the same moment still gets
        the port's own certificate; then the port serves pebble's.
        """
        https = freeTCPPort()
        pebble = startPebble(self, freeTCPPort(), https)
        stateDir = Path(self.mktemp()).absolute()
        config = acmeConfig(
            pebble, stateDir, None, https, "challenges = ['tls-alpn-01']"
        )
        certificates = loadCertificates(config.ports, config.stateDir)
        service = PortsService(config, HANDLERS, certificates, reactor)
        during: list[object] = []

        def finishing(f: Any, *args: object) -> Any:
            # An ordinary client handshakes while the challenge is pending.
            def both() -> object:
                if f is client.finish:
                    assert acme is not None
                    during.append(list(acme.tokens.alpn))
                    during.append(served(https, None))
                return f(*args)

            return deferToThread(both)

        acme = attachAcme(service, config, reactor, run=finishing)
        assert acme is not None
        service.startService()
        self.addCleanup(service.stopService)
        yield waitUntilOnReactor(lambda: acme.managed[(NAME,)].notAfter is not None, 60)
        self.assertEqual(acme.managed[(NAME,)].validatedWith, ("tls-alpn-01",))
        self.assertEqual(during[0], [NAME])
        ordinary = during[1]
        assert isinstance(ordinary, dict)
        leaf = x509.load_der_x509_certificate(ordinary["binary"])
        self.assertNotIn(
            ACME_IDENTIFIER, [extension.oid for extension in leaf.extensions]
        )
        self.assertEqual(acme.tokens.alpn, {})
        root = yield deferToThread(pebble.root)
        peer = yield deferToThread(served, https, root)
        self.assertIsNotNone(peer)

    @inlineCallbacks
    def test_renewAndFailedRenewal(self):
        """
        A renewal against pebble serves the new certificate on the same
        socket; a renewal whose validation fails keeps it and backs off.
        """
        pebble, config, service, acme, https = yield self.issuedWithHTTP01()
        managed = acme.managed[(NAME,)]
        root = yield deferToThread(pebble.root)
        first = yield deferToThread(served, https, root)
        yield ensureDeferred(acme.attempt(managed, force=True))
        self.assertEqual((managed.orders, managed.failures), (2, 0))
        second = yield deferToThread(served, https, root)
        self.assertNotEqual(first["serialNumber"], second["serialNumber"])
        # The http port now answers from tokens the service no longer fills.
        acme.tokens = ChallengeTokens()
        # And the order comes from a new account: pebble hands an account
        # one of its valid authorizations again one time in a hundred even
        # with PEBBLE_AUTHZREUSE=0 (it reuses unless rand.Intn(100) > 0),
        # and a reused one needs no validation.
        for kept in (ACCOUNT_KEY, ACCOUNT, ACCOUNT_CONTACT):
            (acme.store.root / kept).unlink(missing_ok=True)
        before = reactor.seconds()
        yield ensureDeferred(acme.attempt(managed, force=True))
        self.assertEqual(managed.failures, 1)
        self.assertIn("http-01", managed.lastError or "")
        self.assertGreaterEqual(managed.nextAttempt, before + 60)
        third = yield deferToThread(served, https, root)
        self.assertEqual(third["serialNumber"], second["serialNumber"])
        # /status, /metrics and the dashboard's data show the failure.
        report = portReport(service.portStatus()[0])
        acmeState = report["acme"]
        assert isinstance(acmeState, dict)
        self.assertEqual(acmeState["failures"], 1)
        self.assertEqual(acmeState["next_renewal"], managed.nextAttempt)
        self.assertIn("http-01", acmeState["last_error"])
        text = generate_latest(metricsRegistry(lambda: service)).decode()
        self.assertRegex(text, r"multiport_acme_renewal_failures_total\{[^}]*\} 1\.0")
        self.assertIn("multiport_acme_next_renewal_timestamp_seconds{", text)

    @inlineCallbacks
    def test_liveAddAndRemove(self):
        """
        A port with acme added while running starts an order and serves
        pebble's certificate; removing it stops its renewals.
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        stateDir = Path(self.mktemp()).absolute()
        full = acmeConfig(pebble, stateDir, http, https, "challenges = ['http-01']")
        plain = evolve(full, ports=full.ports[1:])
        service, acme = self.daemon(plain)
        self.assertEqual(acme.managed, {})
        service.reconcile(full, loadCertificates(full.ports, stateDir))
        yield waitUntilOnReactor(
            lambda: (
                (NAME,) in acme.managed and acme.managed[(NAME,)].notAfter is not None
            ),
            60,
        )
        root = yield deferToThread(pebble.root)
        peer = yield deferToThread(served, https, root)
        self.assertIsNotNone(peer)
        service.reconcile(plain, {})
        self.assertEqual(acme.managed, {})

    @inlineCallbacks
    def test_reloadChangesEmail(self):
        """
        A reload giving another email updates the account's contact at the
        server, orders nothing, and later orders use the same account.
        """
        pebble, config, service, acme, https = yield self.issuedWithHTTP01()
        managed = acme.managed[(NAME,)]
        account = acme.store.account()
        assert account is not None
        self.assertEqual(account["body"]["contact"], ["mailto:ops@example.org"])
        new = evolve(config, acme=evolve(config.acme, email="new@example.org"))
        service.reconcile(new, loadCertificates(new.ports, new.stateDir))
        yield waitUntilOnReactor(lambda: acme.store.contact() == "new@example.org", 30)
        updated = acme.store.account()
        assert updated is not None
        # What pebble answered to the update.
        self.assertEqual(updated["body"]["contact"], ["mailto:new@example.org"])
        self.assertEqual(updated["uri"], account["uri"])
        yield ensureDeferred(acme.attempt(managed, force=True))
        self.assertEqual((managed.orders, managed.failures), (2, 0))
        self.assertEqual(acme.store.account()["uri"], account["uri"])
