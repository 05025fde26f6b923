"""
Tests for L{multiport.acme.store}: the account and certificates kept in
the state directory, and the lock between daemons sharing it.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from multiport.acme.store import STALE_LOCK, AcmeStore, StoredCertificate


def certificateFor(
    names: list[str], days: float = 90, now: datetime.datetime | None = None
) -> StoredCertificate:
    """
    A self-signed certificate for C{names}, valid C{days} from C{now}.
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return StoredCertificate(
        chain=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class Clock:
    """
    A settable clock, in seconds since the epoch.
    """

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class StoreTests(SynchronousTestCase):
    """
    L{AcmeStore}.
    """

    def setUp(self) -> None:
        self.stateDir = Path(self.mktemp())
        self.clock = Clock()
        self.store = AcmeStore(self.stateDir, "pebble_14000", now=self.clock)

    def test_accountKeyKept(self):
        """
        The account key is made once, mode 0600, under acme/<host>/.
        """
        key = self.store.accountKey()
        path = self.stateDir / "acme" / "pebble_14000" / "account-key.pem"
        self.assertEqual(path.read_bytes(), key)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(AcmeStore(self.stateDir, "pebble_14000").accountKey(), key)

    def test_contactRecorded(self):
        """
        The email the account was given is recorded beside it (none too),
        whatever the server's answer says.
        """
        registration = {"body": {}, "uri": "https://ca.test/acct/1"}
        self.store.keepAccount(registration, "a@example.org")
        self.assertEqual(self.store.account(), registration)
        self.assertEqual(self.store.contact(), "a@example.org")
        self.store.keepAccount(registration, None)
        self.assertIsNone(self.store.contact())

    def test_contactOfOlderAccount(self):
        """
        An account kept without that record: its registration's email.
        """
        folder = self.stateDir / "acme" / "pebble_14000"
        folder.mkdir(parents=True)
        (folder / "account.json").write_text(
            '{"body": {"contact": ["tel:+1", "mailto:a@example.org"]}, "uri": "u"}'
        )
        self.assertEqual(self.store.contact(), "a@example.org")
        (folder / "account.json").write_text('{"body": {}, "uri": "u"}')
        self.assertIsNone(self.store.contact())

    def test_certificateKept(self):
        """
        A kept certificate is found again for the same names, its key 0600,
        with no temporary file left beside it.
        """
        stored = certificateFor(["a.test", "b.test"])
        self.store.keepCertificate(["a.test", "b.test"], stored)
        self.assertEqual(self.store.certificate(["a.test", "b.test"]), stored)
        folder = self.stateDir / "acme" / "pebble_14000" / "certificates" / "a.test"
        self.assertEqual(sorted(os.listdir(folder)), ["cert.pem", "key.pem"])
        self.assertEqual(stat.S_IMODE((folder / "key.pem").stat().st_mode), 0o600)

    def test_otherNames(self):
        """
        A certificate kept for other names is not used.
        """
        self.store.keepCertificate(["a.test"], certificateFor(["a.test"]))
        self.assertIsNone(self.store.certificate(["a.test", "b.test"]))
        self.assertIsNone(self.store.certificate(["c.test"]))

    def test_owner(self):
        """
        Files and folders are given to the owner.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root to give files away")
        store = AcmeStore(self.stateDir, "h", owner=(65534, 65534))
        store.keepCertificate(["a.test"], certificateFor(["a.test"]))
        store.accountKey()
        root = self.stateDir / "acme"
        for path in [root, *root.rglob("*")]:
            self.assertEqual(path.stat().st_uid, 65534, path)

    def test_lockOnce(self):
        """
        A second daemon on the same state directory can't take the lock
        while the first holds it; it can once given back.
        """
        other = AcmeStore(self.stateDir, "pebble_14000", now=self.clock)
        self.assertTrue(self.store.lock(["a.test"]))
        self.assertFalse(other.lock(["a.test"]))
        self.store.unlock(["a.test"])
        self.assertTrue(other.lock(["a.test"]))

    def test_staleLock(self):
        """
        A lock older than STALE_LOCK was left by a daemon that died: taken
        over.
        """
        self.assertTrue(self.store.lock(["a.test"]))
        other = AcmeStore(self.stateDir, "pebble_14000", now=self.clock)
        self.clock.now += STALE_LOCK - 1
        self.assertFalse(other.lock(["a.test"]))
        self.clock.now += 2
        self.assertTrue(other.lock(["a.test"]))
