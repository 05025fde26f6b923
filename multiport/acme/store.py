"""
What ACME keeps in the state directory, under C{acme/<directory host>/}:
the account key and registration, and per certificate its chain, its key
and a lock file.

Keys are mode 0600 and every file is written whole and renamed into place;
files and folders are given to C{--uid}'s user, who renews them later.
Several daemons may share one state directory (workers, instances on
shared storage): a lock file, taken with C{O_EXCL} and left alone until it
is older than L{STALE_LOCK} (certmagic's way), makes one of them order a
certificate while the others wait for it to appear.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from multiport.ports.tls import _writeAtomically

#: Seconds after which another daemon's lock is taken to be left by a
#: daemon that died while ordering: far above the seconds an order takes.
STALE_LOCK = 600.0
ACCOUNT_KEY = "account-key.pem"
ACCOUNT = "account.json"
ACCOUNT_CONTACT = "account-contact.json"
CERT = "cert.pem"
KEY = "key.pem"
LOCK = "lock"


@frozen
class StoredCertificate:
    """
    A certificate kept for some names.

    @ivar chain: The leaf certificate then its chain, PEM.
    @ivar key: Its private key, PEM.
    """

    chain: bytes
    key: bytes

    @property
    def leaf(self) -> x509.Certificate:
        """
        The leaf certificate.
        """
        return x509.load_pem_x509_certificates(self.chain)[0]

    def names(self) -> frozenset[str]:
        """
        The DNS names of the leaf's subjectAltName.
        """
        try:
            extension = self.leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
        except x509.ExtensionNotFound:
            return frozenset()
        return frozenset(extension.value.get_values_for_type(x509.DNSName))


class AcmeStore:
    """
    The ACME files of one directory in the state directory.
    """

    def __init__(
        self,
        stateDir: Path,
        directoryHost: str,
        owner: tuple[int, int] | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        """
        @param owner: The uid and gid files and folders are given to.
        @param now: The clock, in seconds since the epoch (the reactor's
            C{seconds}); the lock's age is measured with it.
        """
        self.root = stateDir / "acme" / directoryHost
        self.owner = owner
        self.now: Callable[[], float] = now if now is not None else _wallClock

    def prepare(self) -> None:
        """
        Make the folder now, while the daemon may still be root: after
        twistd drops privileges, C{--uid}'s user could not create it in
        the state directory (which stays root's).
        """
        self._folder(self.root)

    def _folder(self, path: Path) -> Path:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.owner is not None:
            for made in missing:
                if made.is_relative_to(self.root.parent):
                    os.chown(made, *self.owner)
        return path

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        self._folder(path.parent)
        _writeAtomically(path, data, mode, self.owner)

    def accountKey(self) -> bytes:
        """
        The account's private key (PEM), made the first time.
        """
        path = self.root / ACCOUNT_KEY
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._write(path, pem, 0o600)
        return pem

    def account(self) -> dict[str, object] | None:
        """
        The registration kept from the last time (JSON), if any.
        """
        try:
            data: dict[str, object] = json.loads((self.root / ACCOUNT).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def keepAccount(self, registration: dict[str, object], email: str | None) -> None:
        """
        Keep the account's registration, and the C{email} this daemon gave
        the server as its contact: what a server answers is no record of
        that (one may keep no contact at all).
        """
        self._write(
            self.root / ACCOUNT, json.dumps(registration).encode("utf-8"), 0o600
        )
        record = json.dumps({"email": email}).encode("utf-8")
        self._write(self.root / ACCOUNT_CONTACT, record, 0o600)

    def contact(self) -> str | None:
        """
        The email the account was last given as its contact; for an
        account kept without that record, the one its registration names.
        """
        try:
            record = json.loads((self.root / ACCOUNT_CONTACT).read_bytes())
        except (FileNotFoundError, ValueError):
            record = None
        if isinstance(record, dict):
            email = record.get("email")
            return email if isinstance(email, str) else None
        registration = self.account() or {}
        body = registration.get("body")
        contact = body.get("contact", ()) if isinstance(body, dict) else ()
        for entry in contact if isinstance(contact, list) else ():
            if isinstance(entry, str) and entry.startswith("mailto:"):
                return entry.removeprefix("mailto:")
        return None

    def _certFolder(self, names: Sequence[str]) -> Path:
        return self.root / "certificates" / names[0]

    def certificate(self, names: Sequence[str]) -> StoredCertificate | None:
        """
        The certificate kept for exactly C{names}, if there is one.
        """
        folder = self._certFolder(names)
        try:
            stored = StoredCertificate(
                chain=(folder / CERT).read_bytes(), key=(folder / KEY).read_bytes()
            )
            if stored.names() != frozenset(names):
                return None
        except (OSError, ValueError):
            # Unreadable is missing: ordering then says what is wrong
            # with the folder (it takes the lock there first).
            return None
        return stored

    def keepCertificate(self, names: Sequence[str], stored: StoredCertificate) -> None:
        """
        Keep a certificate for C{names}: the key first, so that a crash
        between the two writes leaves a chain that does not match its key
        at worst, which L{certificate}'s caller refuses and orders again.
        """
        folder = self._certFolder(names)
        self._write(folder / KEY, stored.key, 0o600)
        self._write(folder / CERT, stored.chain, 0o644)

    def lock(self, names: Sequence[str]) -> bool:
        """
        Take the lock for ordering C{names}: C{False} if another daemon
        holds it (and it is not stale).
        """
        path = self._folder(self._certFolder(names)) / LOCK
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                try:
                    age = self.now() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < STALE_LOCK:
                    return False
                # Left by a daemon that died: take it over.
                path.unlink(missing_ok=True)
                continue
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
                # The lock's age is measured on the injected clock.
                stamp = self.now()
                os.utime(fd, (stamp, stamp))
            finally:
                os.close(fd)
            return True
        return False

    def unlock(self, names: Sequence[str]) -> None:
        """
        Give the lock for C{names} back.
        """
        (self._certFolder(names) / LOCK).unlink(missing_ok=True)


def _wallClock() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


def newCertificateKey() -> bytes:
    """
    A private key for a new certificate (PEM): P-256, what Caddy uses.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
