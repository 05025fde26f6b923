"""
Tests for L{multiport.ports.tls}: loading certificates and keys, the self-signed
default, and the TLS settings a loaded certificate serves with.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from multiport.config.model import TLSConfig
from multiport.ports.tls import (
    SELF_SIGNED_CERT,
    SELF_SIGNED_DAYS,
    SELF_SIGNED_KEY,
    LoadedCertificate,
    TLSError,
    _selectALPN,
    ensureSelfSigned,
    fingerprint,
    loadCertificate,
    makeSelfSigned,
    selfSignedPaths,
)

NOW = datetime.datetime(2026, 11, 26, 14, 25, 39, tzinfo=datetime.UTC)


def _name(commonName: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


def _certificate(
    commonName: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None = None,
    issuerKey: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """
    A certificate for C{key}, self-signed unless C{issuer} is given; a leaf
    is valid for localhost.
    """
    subject = _name(commonName)
    signingKey = key if issuerKey is None else issuerKey
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signingKey.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signingKey, hashes.SHA256())


def _newKey() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certPEM(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _keyPEM(
    key: ec.EllipticCurvePrivateKey,
    form: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    encryption: serialization.KeySerializationEncryption | None = None,
) -> bytes:
    if encryption is None:
        encryption = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, form, encryption)


@implementer(IHandshakeListener)
class _Recorder(Protocol):
    """
    Records whether the TLS handshake completed and why the connection ended.
    """

    handshook = False
    reason: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshook = True

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.reason = reason


@implementer(IProtocolNegotiationFactory)
class _NegotiatingFactory(Factory):
    """
    A factory that declares ALPN protocols, as C{Site} does.
    """

    def __init__(self, protocols: list[bytes]) -> None:
        self._protocols = protocols

    def acceptableProtocols(self) -> list[bytes]:
        return self._protocols


@implementer(IOpenSSLClientConnectionCreator)
class _RawClient:
    """
    A client connection creator using a plain pyOpenSSL context, to offer what
    Twisted's own client options would not.
    """

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        return SSL.Connection(self._context, None)


class _Handshake:
    """
    A TLS connection between a server and a client in memory.
    """

    def __init__(
        self,
        serverCreator: object,
        clientCreator: object,
        serverFactory: Factory | None = None,
    ) -> None:
        self.serverApp = _Recorder()
        self.clientApp = _Recorder()
        if serverFactory is None:
            serverFactory = Factory()
        serverFactory.protocol = lambda: self.serverApp  # type: ignore[assignment]
        serverTLS = TLSMemoryBIOFactory(serverCreator, False, serverFactory)
        clientTLS = TLSMemoryBIOFactory(
            clientCreator, True, Factory.forProtocol(lambda: self.clientApp)
        )
        self.server = serverTLS.buildProtocol(None)
        self.client = clientTLS.buildProtocol(None)
        connect(
            self.server,
            FakeTransport(self.server, isServer=True),
            self.client,
            FakeTransport(self.client, isServer=False),
        )


class _FilesTestCase(SynchronousTestCase):
    """
    A test case with temporary PEM files.
    """

    def folder(self) -> Path:
        """
        A new empty folder.
        """
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return path

    def write(self, name: str, data: bytes) -> Path:
        """
        A new file holding C{data}.
        """
        path = self.folder() / name
        path.write_bytes(data)
        return path


class FingerprintTests(SynchronousTestCase):
    """
    Tests for L{fingerprint}.
    """

    def test_sha256ColonHex(self) -> None:
        """
        The fingerprint is the SHA-256 of the DER certificate as upper-case
        hex pairs joined by colons.
        """
        certificate = _certificate("leaf", _newKey())
        digest = hashlib.sha256(
            certificate.public_bytes(serialization.Encoding.DER)
        ).hexdigest()
        expected = ":".join(digest[i : i + 2].upper() for i in range(0, len(digest), 2))
        self.assertEqual(fingerprint(certificate), expected)
        self.assertEqual(len(fingerprint(certificate)), 95)


class MakeSelfSignedTests(SynchronousTestCase):
    """
    Tests for L{makeSelfSigned}.
    """

    def setUp(self) -> None:
        certPEM, keyPEM = makeSelfSigned(NOW, "box.example")
        self.certificate = x509.load_pem_x509_certificate(certPEM)
        self.key = serialization.load_pem_private_key(keyPEM, password=None)

    def test_ecP256(self) -> None:
        """
        The key is an EC key on the P-256 curve.
        """
        self.assertIsInstance(self.key, ec.EllipticCurvePrivateKey)
        assert isinstance(self.key, ec.EllipticCurvePrivateKey)
        self.assertEqual(self.key.curve.name, "secp256r1")

    def test_keyMatchesCertificate(self) -> None:
        """
        The certificate carries the public half of the key.
        """
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        self.assertEqual(
            self.certificate.public_key().public_bytes(der, spki),
            self.key.public_key().public_bytes(der, spki),
        )

    def test_subjectAltNames(self) -> None:
        """
        The subjectAltName holds localhost, the host name, 127.0.0.1 and ::1.
        """
        names = self.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(
            names.get_values_for_type(x509.DNSName), ["localhost", "box.example"]
        )
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )

    def test_localhostOnce(self) -> None:
        """
        A host named localhost does not list localhost twice.
        """
        certPEM, _ = makeSelfSigned(NOW, "localhost")
        names = (
            x509.load_pem_x509_certificate(certPEM)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])

    def test_validity(self) -> None:
        """
        The certificate is valid from five minutes before C{now} for
        SELF_SIGNED_DAYS days.
        """
        self.assertEqual(
            self.certificate.not_valid_before_utc,
            NOW - datetime.timedelta(minutes=5),
        )
        self.assertEqual(
            self.certificate.not_valid_after_utc,
            NOW + datetime.timedelta(days=SELF_SIGNED_DAYS),
        )

    def test_notACertificateAuthority(self) -> None:
        """
        The certificate is marked as not a CA, critically.
        """
        constraints = self.certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        )
        self.assertTrue(constraints.critical)
        self.assertFalse(constraints.value.ca)

    def test_unencryptedPKCS8Key(self) -> None:
        """
        The key is written as unencrypted PKCS#8 PEM.
        """
        _, keyPEM = makeSelfSigned(NOW, "box.example")
        self.assertTrue(keyPEM.startswith(b"-----BEGIN PRIVATE KEY-----\n"))


class EnsureSelfSignedTests(_FilesTestCase):
    """
    Tests for L{ensureSelfSigned}.
    """

    def setUp(self) -> None:
        self.stateDir = Path(self.mktemp()) / "state"

    def test_createsFiles(self) -> None:
        """
        The certificate and key are written to the state directory under
        their fixed names, and what is returned is loaded from them.
        """
        loaded = ensureSelfSigned(self.stateDir, now=NOW)
        self.assertEqual(loaded.tls, selfSignedPaths(self.stateDir))
        self.assertEqual(
            loaded.tls,
            TLSConfig(
                cert=self.stateDir / SELF_SIGNED_CERT,
                key=self.stateDir / SELF_SIGNED_KEY,
            ),
        )
        certificate = x509.load_pem_x509_certificate(
            (self.stateDir / SELF_SIGNED_CERT).read_bytes()
        )
        self.assertEqual(loaded.fingerprint, fingerprint(certificate))
        self.assertEqual(loaded.notAfter, certificate.not_valid_after_utc)

    def test_keyMode0600(self) -> None:
        """
        The private key file is readable and writable by its owner only.
        """
        ensureSelfSigned(self.stateDir, now=NOW)
        mode = stat.S_IMODE(os.stat(self.stateDir / SELF_SIGNED_KEY).st_mode)
        self.assertEqual(mode, 0o600)

    def test_stateDirMode0700(self) -> None:
        """
        A state directory that did not exist is made private to its owner.
        """
        ensureSelfSigned(self.stateDir, now=NOW)
        self.assertEqual(stat.S_IMODE(os.stat(self.stateDir).st_mode), 0o700)

    def test_noTemporaryLeftBehind(self) -> None:
        """
        Only the certificate and the key are left in the state directory.
        """
        ensureSelfSigned(self.stateDir, now=NOW)
        self.assertEqual(
            sorted(os.listdir(self.stateDir)), [SELF_SIGNED_CERT, SELF_SIGNED_KEY]
        )

    def test_ecP256(self) -> None:
        """
        The generated certificate has an EC P-256 key.
        """
        ensureSelfSigned(self.stateDir, now=NOW)
        certificate = x509.load_pem_x509_certificate(
            (self.stateDir / SELF_SIGNED_CERT).read_bytes()
        )
        publicKey = certificate.public_key()
        assert isinstance(publicKey, ec.EllipticCurvePublicKey)
        self.assertEqual(publicKey.curve.name, "secp256r1")

    def test_subjectAltNames(self) -> None:
        """
        The generated certificate names localhost, this host, 127.0.0.1 and
        ::1.
        """
        ensureSelfSigned(self.stateDir, now=NOW)
        certificate = x509.load_pem_x509_certificate(
            (self.stateDir / SELF_SIGNED_CERT).read_bytes()
        )
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        hostname = socket.gethostname()
        self.assertEqual(
            names.get_values_for_type(x509.DNSName),
            ["localhost"] + ([hostname] if hostname != "localhost" else []),
        )
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )

    def test_reused(self) -> None:
        """
        A second call loads the same certificate instead of making a new one.
        """
        first = ensureSelfSigned(self.stateDir, now=NOW)
        certPEM = (self.stateDir / SELF_SIGNED_CERT).read_bytes()
        second = ensureSelfSigned(self.stateDir, now=NOW + datetime.timedelta(days=1))
        self.assertEqual(second.fingerprint, first.fingerprint)
        self.assertEqual((self.stateDir / SELF_SIGNED_CERT).read_bytes(), certPEM)

    def test_reusedUntilADayBeforeExpiry(self) -> None:
        """
        A certificate with more than a day left is reused.
        """
        first = ensureSelfSigned(self.stateDir, now=NOW)
        later = NOW + datetime.timedelta(days=SELF_SIGNED_DAYS - 1, seconds=-1)
        self.assertEqual(
            ensureSelfSigned(self.stateDir, now=later).fingerprint, first.fingerprint
        )

    def test_regeneratedADayBeforeExpiry(self) -> None:
        """
        A certificate with a day or less left is replaced.
        """
        first = ensureSelfSigned(self.stateDir, now=NOW)
        later = NOW + datetime.timedelta(days=SELF_SIGNED_DAYS - 1)
        second = ensureSelfSigned(self.stateDir, now=later)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        self.assertEqual(
            second.notAfter, later + datetime.timedelta(days=SELF_SIGNED_DAYS)
        )

    def test_regeneratedWhenExpired(self) -> None:
        """
        An expired certificate is replaced by a new one valid from C{now}, and
        the files on disk are the new ones.
        """
        first = ensureSelfSigned(self.stateDir, now=NOW)
        future = NOW + datetime.timedelta(days=10 * SELF_SIGNED_DAYS)
        second = ensureSelfSigned(self.stateDir, now=future)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        self.assertEqual(
            second.notAfter, future + datetime.timedelta(days=SELF_SIGNED_DAYS)
        )
        onDisk = x509.load_pem_x509_certificate(
            (self.stateDir / SELF_SIGNED_CERT).read_bytes()
        )
        self.assertEqual(fingerprint(onDisk), second.fingerprint)
        mode = stat.S_IMODE(os.stat(self.stateDir / SELF_SIGNED_KEY).st_mode)
        self.assertEqual(mode, 0o600)

    def test_regeneratedWhenKeyMissing(self) -> None:
        """
        A certificate whose key file is gone is replaced.
        """
        first = ensureSelfSigned(self.stateDir, now=NOW)
        (self.stateDir / SELF_SIGNED_KEY).unlink()
        second = ensureSelfSigned(self.stateDir, now=NOW)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        self.assertTrue((self.stateDir / SELF_SIGNED_KEY).exists())

    def test_regeneratedWhenBroken(self) -> None:
        """
        A self-signed pair that no longer matches (a crash between the two
        writes) is replaced, not a reason to refuse to start.
        """
        first = ensureSelfSigned(self.stateDir, now=NOW)
        other = self.mktemp()
        ensureSelfSigned(Path(other), now=NOW)
        (self.stateDir / SELF_SIGNED_KEY).write_bytes(
            (Path(other) / SELF_SIGNED_KEY).read_bytes()
        )
        second = ensureSelfSigned(self.stateDir, now=NOW)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        self.assertEqual(
            ensureSelfSigned(self.stateDir, now=NOW).fingerprint, second.fingerprint
        )

    def test_owner(self) -> None:
        """
        With C{owner}, the certificate and key are given to that uid and
        gid; the folder stays its creator's (searchable), so that user
        can't plant links in it.
        """
        if os.geteuid() != 0:
            raise self.skipTest("only root can give files away")
        ensureSelfSigned(self.stateDir, owner=(4321, 8765), now=NOW)
        for path in (self.stateDir / SELF_SIGNED_CERT, self.stateDir / SELF_SIGNED_KEY):
            info = os.stat(path)
            self.assertEqual((info.st_uid, info.st_gid), (4321, 8765), path)
        info = os.stat(self.stateDir)
        self.assertEqual((info.st_uid, info.st_mode & 0o777), (0, 0o755))

    def test_plantedLinkIgnored(self) -> None:
        """
        A link planted at the key's or the certificate's name is replaced
        by the new file, never written through.
        """
        self.stateDir.mkdir(parents=True)
        victims = {}
        for name in (SELF_SIGNED_KEY, SELF_SIGNED_CERT):
            victim = Path(self.mktemp()).absolute()
            victim.write_text("untouched")
            (self.stateDir / name).symlink_to(victim)
            victims[name] = victim
        ensureSelfSigned(self.stateDir, now=NOW)
        for name, victim in victims.items():
            self.assertEqual(victim.read_text(), "untouched", name)
            self.assertFalse((self.stateDir / name).is_symlink(), name)

    def test_unwritableStateDir(self) -> None:
        """
        A state directory that can't be made raises L{TLSError} naming it.
        """
        blocker = self.write("file", b"not a folder")
        stateDir = blocker / "state"
        error = self.assertRaises(TLSError, ensureSelfSigned, stateDir, now=NOW)
        self.assertIn(
            f"cannot write the self-signed certificate to the state directory "
            f"{stateDir}: ",
            str(error),
        )


class LoadCertificateTests(_FilesTestCase):
    """
    Tests for L{loadCertificate}.
    """

    def setUp(self) -> None:
        self.key = _newKey()
        self.leaf = _certificate("leaf", self.key)
        self.certPath = self.write("cert.pem", _certPEM(self.leaf))
        self.keyPath = self.write("key.pem", _keyPEM(self.key))

    def test_separateFiles(self) -> None:
        """
        A certificate and its key in two files load, with the leaf's
        fingerprint and expiry.
        """
        tls = TLSConfig(cert=self.certPath, key=self.keyPath)
        loaded = loadCertificate(tls)
        self.assertIsInstance(loaded, LoadedCertificate)
        self.assertEqual(loaded.tls, tls)
        self.assertEqual(loaded.fingerprint, fingerprint(self.leaf))
        self.assertEqual(loaded.notAfter, self.leaf.not_valid_after_utc)
        self.assertEqual(loaded.contextFactory.certificate.to_cryptography(), self.leaf)

    def test_keyInCertificateFile(self) -> None:
        """
        Without a key file, the key is read from the certificate file.
        """
        combined = self.write("combined.pem", _certPEM(self.leaf) + _keyPEM(self.key))
        loaded = loadCertificate(TLSConfig(cert=combined))
        self.assertEqual(loaded.fingerprint, fingerprint(self.leaf))

    def test_keyBeforeCertificate(self) -> None:
        """
        The key may come before the certificate in a combined file.
        """
        combined = self.write("combined.pem", _keyPEM(self.key) + _certPEM(self.leaf))
        loaded = loadCertificate(TLSConfig(cert=combined))
        self.assertEqual(loaded.fingerprint, fingerprint(self.leaf))

    def test_keyTypeOpenSSLRefuses(self) -> None:
        """
        A certificate whose key is of a type cryptography loads but
        pyOpenSSL's TLS can't use (X25519, a key-agreement key) is a
        L{TLSError} naming the key file and its type, not a C{TypeError}.
        """
        from cryptography.hazmat.primitives.asymmetric import x25519

        key = x25519.X25519PrivateKey.generate()
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name("leaf"))
            .issuer_name(self.leaf.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        certPath = self.write("x25519.pem", _certPEM(leaf))
        keyPath = self.write(
            "x25519-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=certPath, key=keyPath)
        )
        self.assertEqual(
            str(error),
            f"the private key in {keyPath} is of type X25519, which TLS here "
            "can't sign with: use an RSA, EC or Ed25519 key",
        )

    def test_traditionalKeyFormat(self) -> None:
        """
        An unencrypted key in OpenSSL's traditional format (BEGIN EC PRIVATE
        KEY) loads.
        """
        self.keyPath.write_bytes(
            _keyPEM(self.key, serialization.PrivateFormat.TraditionalOpenSSL)
        )
        self.assertTrue(self.keyPath.read_bytes().startswith(b"-----BEGIN EC "))
        loaded = loadCertificate(TLSConfig(cert=self.certPath, key=self.keyPath))
        self.assertEqual(loaded.fingerprint, fingerprint(self.leaf))

    def test_chain(self) -> None:
        """
        Certificates after the first in the file are the chain: the leaf is
        served first, the rest as extra chain certificates, in order.
        """
        rootKey, intermediateKey = _newKey(), _newKey()
        root = _certificate("root", rootKey, ca=True)
        intermediate = _certificate(
            "intermediate", intermediateKey, root, rootKey, ca=True
        )
        leaf = _certificate("leaf", self.key, intermediate, intermediateKey)
        self.certPath.write_bytes(_certPEM(leaf, intermediate, root))
        loaded = loadCertificate(TLSConfig(cert=self.certPath, key=self.keyPath))
        self.assertEqual(loaded.fingerprint, fingerprint(leaf))
        self.assertEqual(
            [c.to_cryptography() for c in loaded.contextFactory.extraCertChain],
            [intermediate, root],
        )

    def test_chainServed(self) -> None:
        """
        A client that trusts only the root CA verifies a leaf issued by an
        intermediate, because the intermediate is sent in the handshake.
        """
        rootKey, intermediateKey = _newKey(), _newKey()
        root = _certificate("root", rootKey, ca=True)
        intermediate = _certificate(
            "intermediate", intermediateKey, root, rootKey, ca=True
        )
        leaf = _certificate("leaf", self.key, intermediate, intermediateKey)
        self.certPath.write_bytes(_certPEM(leaf, intermediate))
        loaded = loadCertificate(TLSConfig(cert=self.certPath, key=self.keyPath))
        client = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(_certPEM(root))
        )
        connection = _Handshake(loaded.contextFactory, client)
        self.assertIsNone(connection.clientApp.reason)
        self.assertTrue(connection.clientApp.handshook)
        chain = connection.client.getHandle().get_peer_cert_chain()
        self.assertEqual([c.to_cryptography() for c in chain], [leaf, intermediate])

    def test_missingCertificate(self) -> None:
        """
        A certificate file that does not exist raises L{TLSError} naming it.
        """
        missing = self.folder() / "missing.pem"
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=missing, key=self.keyPath)
        )
        self.assertEqual(
            str(error), f"cannot read certificate {missing}: No such file or directory"
        )

    def test_missingKey(self) -> None:
        """
        A key file that does not exist raises L{TLSError} naming it.
        """
        missing = self.folder() / "missing.pem"
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=missing)
        )
        self.assertEqual(
            str(error), f"cannot read private key {missing}: No such file or directory"
        )

    def test_unreadableCertificate(self) -> None:
        """
        A certificate path that can't be read (here a folder) raises
        L{TLSError} naming it and the reason.
        """
        folder = self.folder()
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=folder, key=self.keyPath)
        )
        self.assertEqual(
            str(error), f"cannot read certificate {folder}: Is a directory"
        )

    def test_garbageCertificate(self) -> None:
        """
        A certificate file without PEM data raises L{TLSError} naming it.
        """
        self.certPath.write_bytes(b"this is not a certificate\n")
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertTrue(
            str(error).startswith(f"no PEM certificate in {self.certPath}: "),
            str(error),
        )

    def test_emptyCertificate(self) -> None:
        """
        An empty certificate file raises L{TLSError} naming it.
        """
        self.certPath.write_bytes(b"")
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertTrue(
            str(error).startswith(f"no PEM certificate in {self.certPath}: "),
            str(error),
        )

    def test_corruptCertificate(self) -> None:
        """
        A PEM certificate block whose contents are not a certificate raises
        L{TLSError} naming the file.
        """
        self.certPath.write_bytes(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertTrue(
            str(error).startswith(f"no PEM certificate in {self.certPath}: "),
            str(error),
        )

    def test_noKeyAnywhere(self) -> None:
        """
        A certificate file without a key, and no key file, raises L{TLSError}
        saying so.
        """
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath)
        )
        self.assertEqual(
            str(error),
            f"no PEM private key in {self.certPath} (and no key file given)",
        )

    def test_garbageKey(self) -> None:
        """
        A key file without a PEM key raises L{TLSError} naming it.
        """
        self.keyPath.write_bytes(b"this is not a key\n")
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertEqual(str(error), f"no PEM private key in {self.keyPath}")

    def test_corruptKey(self) -> None:
        """
        A PEM key block whose contents are not a key raises L{TLSError} naming
        the key file.
        """
        self.keyPath.write_bytes(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertTrue(
            str(error).startswith(f"cannot load the private key in {self.keyPath}: "),
            str(error),
        )

    def test_keyMismatch(self) -> None:
        """
        A key that is not the certificate's raises L{TLSError} naming both
        files.
        """
        self.keyPath.write_bytes(_keyPEM(_newKey()))
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertEqual(
            str(error),
            f"the private key in {self.keyPath} does not match the certificate "
            f"in {self.certPath}",
        )

    def test_keyMatchesChainNotLeaf(self) -> None:
        """
        The key must match the first certificate: the key of a chain
        certificate is refused.
        """
        caKey = _newKey()
        ca = _certificate("ca", caKey, ca=True)
        leaf = _certificate("leaf", self.key, ca, caKey)
        self.certPath.write_bytes(_certPEM(leaf, ca))
        self.keyPath.write_bytes(_keyPEM(caKey))
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertEqual(
            str(error),
            f"the private key in {self.keyPath} does not match the certificate "
            f"in {self.certPath}",
        )

    def test_encryptedKey(self) -> None:
        """
        An encrypted PKCS#8 key is refused with a message saying it is
        encrypted.
        """
        self.keyPath.write_bytes(
            _keyPEM(
                self.key,
                encryption=serialization.BestAvailableEncryption(b"secret"),
            )
        )
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertEqual(
            str(error),
            f"the private key in {self.keyPath} is encrypted; multiport needs it "
            "unencrypted",
        )

    def test_encryptedTraditionalKey(self) -> None:
        """
        An encrypted key in OpenSSL's traditional format (a Proc-Type header)
        is refused too, naming the file.
        """
        self.keyPath.write_bytes(
            _keyPEM(
                self.key,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        error = self.assertRaises(
            TLSError, loadCertificate, TLSConfig(cert=self.certPath, key=self.keyPath)
        )
        self.assertIn(str(self.keyPath), str(error))
        self.assertIn("encrypted", str(error))


class ServingTests(_FilesTestCase):
    """
    Tests for the TLS a L{LoadedCertificate}'s context factory serves.
    """

    def setUp(self) -> None:
        self.stateDir = Path(self.mktemp())
        self.loaded = ensureSelfSigned(self.stateDir, now=NOW)
        self.trustRoot = Certificate.loadPEM(
            (self.stateDir / SELF_SIGNED_CERT).read_bytes()
        )

    def test_minimumTLS12Options(self) -> None:
        """
        The context disables TLS 1.0 and 1.1, and leaves 1.2 and 1.3 on.
        """
        versions = (
            SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1 | SSL.OP_NO_TLSv1_2 | SSL.OP_NO_TLSv1_3
        )
        self.assertEqual(
            self.loaded.contextFactory._options & versions,
            SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1,
        )

    def test_tls11Refused(self) -> None:
        """
        A client that speaks at most TLS 1.1 is refused by the server.
        """
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_VERSION)
        context.set_max_proto_version(SSL.TLS1_1_VERSION)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        connection = _Handshake(self.loaded.contextFactory, _RawClient(context))
        self.assertFalse(connection.serverApp.handshook)
        reason = connection.serverApp.reason
        assert reason is not None
        self.assertIsInstance(reason.value, SSL.Error)
        self.assertIn("unsupported protocol", str(reason.value))

    def test_tls12Accepted(self) -> None:
        """
        A client that speaks at most TLS 1.2 gets TLS 1.2.
        """
        client = optionsForClientTLS(
            "localhost",
            trustRoot=self.trustRoot,
            extraCertificateOptions={"lowerMaximumSecurityTo": TLSVersion.TLSv1_2},
        )
        connection = _Handshake(self.loaded.contextFactory, client)
        self.assertTrue(connection.serverApp.handshook)
        self.assertEqual(
            connection.client.getHandle().get_protocol_version_name(), "TLSv1.2"
        )

    def test_selfSignedVerifiesForLocalNames(self) -> None:
        """
        A client trusting the self-signed certificate verifies it for
        localhost, 127.0.0.1 and ::1.
        """
        for name in ("localhost", "127.0.0.1", "::1"):
            client = optionsForClientTLS(name, trustRoot=self.trustRoot)
            connection = _Handshake(self.loaded.contextFactory, client)
            self.assertIsNone(connection.clientApp.reason, name)
            self.assertTrue(connection.clientApp.handshook, name)

    def test_alpnNoOverlapHandshakes(self) -> None:
        """
        A client offering ALPN h2 to a port whose factory declares no ALPN
        protocols completes the handshake with no protocol negotiated.
        """
        # The regression: Twisted's own select callback answers b"" here,
        # which OpenSSL turns into an "internal error" alert; loadCertificate
        # installs _selectALPN instead.
        client = optionsForClientTLS(
            "localhost", trustRoot=self.trustRoot, acceptableProtocols=[b"h2"]
        )
        connection = _Handshake(self.loaded.contextFactory, client)
        self.assertIsNone(connection.serverApp.reason)
        self.assertIsNone(connection.clientApp.reason)
        self.assertTrue(connection.serverApp.handshook)
        self.assertTrue(connection.clientApp.handshook)
        self.assertIsNone(connection.client.negotiatedProtocol)
        self.assertIsNone(connection.server.negotiatedProtocol)

    def test_alpnNoOverlapWithDeclaredProtocols(self) -> None:
        """
        A client offering only protocols the port's factory does not declare
        still completes the handshake, without ALPN.
        """
        client = optionsForClientTLS(
            "localhost", trustRoot=self.trustRoot, acceptableProtocols=[b"h2"]
        )
        connection = _Handshake(
            self.loaded.contextFactory,
            client,
            _NegotiatingFactory([b"http/1.1"]),
        )
        self.assertTrue(connection.clientApp.handshook)
        self.assertIsNone(connection.client.negotiatedProtocol)

    def test_alpnOverlapNegotiated(self) -> None:
        """
        When the client offers a protocol the port's factory declares, that
        protocol is negotiated.
        """
        client = optionsForClientTLS(
            "localhost",
            trustRoot=self.trustRoot,
            acceptableProtocols=[b"h2", b"http/1.1"],
        )
        connection = _Handshake(
            self.loaded.contextFactory,
            client,
            _NegotiatingFactory([b"http/1.1"]),
        )
        self.assertTrue(connection.clientApp.handshook)
        self.assertEqual(connection.client.negotiatedProtocol, b"http/1.1")
        self.assertEqual(connection.server.negotiatedProtocol, b"http/1.1")


class SelectALPNTests(SynchronousTestCase):
    """
    Tests for L{_selectALPN}.
    """

    def connection(self, factory: Factory) -> SSL.Connection:
        """
        A server connection whose application data is a TLS protocol wrapping
        C{factory}, as TLSMemoryBIOProtocol sets it up.
        """
        factory.protocol = Protocol
        tlsProtocol = TLSMemoryBIOFactory(
            CertificateOptions(), False, factory
        ).buildProtocol(None)
        connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        connection.set_app_data(tlsProtocol)
        return connection

    def test_noOverlap(self) -> None:
        """
        With nothing in common it answers NO_OVERLAPPING_PROTOCOLS, not b"".
        """
        connection = self.connection(Factory())
        self.assertIs(_selectALPN(connection, [b"h2"]), SSL.NO_OVERLAPPING_PROTOCOLS)

    def test_noOverlapDeclared(self) -> None:
        """
        A factory declaring other protocols than those offered also gets
        NO_OVERLAPPING_PROTOCOLS.
        """
        connection = self.connection(_NegotiatingFactory([b"http/1.1"]))
        self.assertIs(_selectALPN(connection, [b"h2"]), SSL.NO_OVERLAPPING_PROTOCOLS)

    def test_serverPreference(self) -> None:
        """
        Among protocols both sides speak, the factory's first choice wins.
        """
        connection = self.connection(_NegotiatingFactory([b"http/1.1", b"h2"]))
        self.assertEqual(_selectALPN(connection, [b"h2", b"http/1.1"]), b"http/1.1")
