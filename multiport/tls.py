"""
TLS material: loading certificates and keys, and the self-signed default.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet._sslverify import protosFromProtocol
from twisted.internet.ssl import (
    AcceptableCiphers as OpenSSLAcceptableCiphers,
)
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger

from multiport.config import TLSConfig

log = Logger()

SELF_SIGNED_CERT = "selfsigned-cert.pem"
SELF_SIGNED_KEY = "selfsigned-key.pem"
SELF_SIGNED_DAYS = 365
#: TLS 1.2 ciphers unless a port sets its own: forward-secret AEAD suites
#: only (Mozilla's "intermediate" list), so testssl.sh flags no CBC suite
#: (LUCKY13) and no static RSA key exchange.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:[A-Z]+ )*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----",
    re.DOTALL,
)


class TLSError(Exception):
    """
    A certificate or key can't be used; the message names the file.
    """


@frozen
class LoadedCertificate:
    """
    A certificate ready to serve.

    @ivar contextFactory: What a TLS port hands to C{SSLServer}.
    @ivar fingerprint: SHA-256 of the leaf certificate, colon-separated hex.
    @ivar notAfter: When the leaf certificate expires.
    """

    tls: TLSConfig
    contextFactory: CertificateOptions
    fingerprint: str
    notAfter: datetime.datetime


def _selectALPN(
    connection: SSL.Connection,
    offered: Sequence[bytes],
    configured: Sequence[bytes] = (),
) -> object:
    """
    Pick the first protocol the port's factory speaks that the client
    offered.

    Twisted's own callback answers b"" when nothing overlaps, which OpenSSL
    turns into an "internal error" alert for every client that offers ALPN
    to a port that declares none (curl, browsers); the right answer is "no
    overlap": the handshake then goes on without ALPN.
    """
    acceptable = protosFromProtocol(connection.get_app_data(), configured)
    for protocol in acceptable:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def fingerprint(certificate: x509.Certificate) -> str:
    """
    The SHA-256 fingerprint of C{certificate} as colon-separated hex.
    """
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read {what} {path}: {e.strerror}") from e
    except ValueError as e:
        raise TLSError(f"cannot read {what} {path!r}: {e}") from e


def loadCertificate(tls: TLSConfig) -> LoadedCertificate:
    """
    Load and check the certificate, chain and key C{tls} names.

    @raise TLSError: if a file is missing or unreadable, holds no usable
        PEM data, or the key does not match the certificate.
    """
    assert tls.cert is not None, "the self-signed default is loaded by path"
    certData = _read(tls.cert, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(certData)
    except ValueError as e:
        raise TLSError(f"no PEM certificate in {tls.cert}: {e}") from e
    keyPath = tls.cert if tls.key is None else tls.key
    keyData = certData if tls.key is None else _read(tls.key, "private key")
    block = _KEY_BLOCK.search(keyData)
    if block is None:
        where = "" if tls.key is not None else " (and no key file given)"
        raise TLSError(f"no PEM private key in {keyPath}{where}")
    if b"ENCRYPTED" in block.group(1) or b"Proc-Type: 4,ENCRYPTED" in block.group(0):
        raise TLSError(
            f"the private key in {keyPath} is encrypted; multiport needs it unencrypted"
        )
    try:
        key = serialization.load_pem_private_key(block.group(0), password=None)
    except (ValueError, TypeError) as e:
        raise TLSError(f"cannot load the private key in {keyPath}: {e}") from e
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(
        der, spki
    ):
        raise TLSError(
            f"the private key in {keyPath} does not match the certificate in {tls.cert}"
        )
    extra: dict[str, Any] = {}
    if tls.clientAuth is not None and tls.clientCA is None:
        raise TLSError(
            "client_auth needs client_ca: the CAs client certificates come from"
        )
    if tls.clientCA is not None:
        try:
            authorities = x509.load_pem_x509_certificates(
                _read(tls.clientCA, "client CA file")
            )
        except ValueError as e:
            raise TLSError(f"no PEM certificate in {tls.clientCA}: {e}") from e
        extra["verify"] = True
        extra["caCerts"] = [crypto.X509.from_cryptography(c) for c in authorities]
        extra["requireCertificate"] = tls.clientAuth != "optional"
    extra["acceptableCiphers"] = OpenSSLAcceptableCiphers.fromOpenSSLCipherString(
        DEFAULT_CIPHERS if tls.ciphers is None else tls.ciphers
    )
    try:
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(leaf),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            raiseMinimumTo=TLSVersion.TLSv1_3
            if tls.minVersion == "1.3"
            else TLSVersion.TLSv1_2,
            **extra,
        )
    except ValueError as e:
        if tls.ciphers is None:
            raise TLSError(f"cannot use these TLS settings: {e}") from None
        raise TLSError(
            f"cipher string {tls.ciphers!r} selects no usable cipher: {e}"
        ) from None
    # Build the OpenSSL context now: errors surface at start, not at the
    # first handshake, and nothing is left to import after a privilege drop.
    offered = tuple(name.encode("ascii") for name in tls.alpn or ())
    options.getContext().set_alpn_select_callback(
        lambda connection, protocols: _selectALPN(connection, protocols, offered)
    )
    if tls.sni or tls.certDir is not None:
        byName = _serverNames(tls)
        options.getContext().set_tlsext_servername_callback(
            lambda connection: _chooseByName(connection, byName)
        )
    return LoadedCertificate(
        tls=tls,
        contextFactory=options,
        fingerprint=fingerprint(leaf),
        notAfter=leaf.not_valid_after_utc,
    )


def _serverNames(tls: TLSConfig) -> dict[str, SSL.Context]:
    """
    The OpenSSL contexts of C{tls}'s SNI certificates, by server name: the
    C{sni} table's first, then each file of C{cert_dir} under the DNS names
    of its subjectAltName (a name already taken keeps its certificate).
    """
    plain = attrs.evolve(tls, sni=None, certDir=None)
    byName: dict[str, SSL.Context] = {}
    for name, cert, key in tls.sni or ():
        loaded = loadCertificate(attrs.evolve(plain, cert=cert, key=key))
        byName[name] = loaded.contextFactory.getContext()
    if tls.certDir is not None:
        try:
            files = sorted(p for p in tls.certDir.iterdir() if p.suffix == ".pem")
        except OSError as e:
            raise TLSError(f"cannot read cert_dir {tls.certDir}: {e.strerror}") from e
        for path in files:
            loaded = loadCertificate(attrs.evolve(plain, cert=path, key=None))
            context = loaded.contextFactory.getContext()
            for name in _dnsNames(path):
                byName.setdefault(name, context)
    return byName


def _dnsNames(path: Path) -> list[str]:
    leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in names.value.get_values_for_type(x509.DNSName)]


def _chooseByName(connection: SSL.Connection, byName: dict[str, SSL.Context]) -> None:
    """
    Switch the connection to the certificate for the name the client asked
    for: the exact name, else a wildcard one label up; unknown names and
    clients that send none keep the port's own certificate.
    """
    requested = connection.get_servername()
    if not requested:
        return
    name = requested.decode("ascii", "replace").lower().rstrip(".")
    context = byName.get(name)
    if context is None and "." in name:
        context = byName.get("*." + name.split(".", 1)[1])
    if context is not None:
        connection.set_context(context)


def selfSignedPaths(stateDir: Path) -> TLSConfig:
    """
    Where the self-signed certificate and key live in C{stateDir}.
    """
    return TLSConfig(cert=stateDir / SELF_SIGNED_CERT, key=stateDir / SELF_SIGNED_KEY)


def usingSelfSigned(tls: TLSConfig, stateDir: Path) -> TLSConfig:
    """
    C{tls} with the self-signed certificate of C{stateDir}, settings kept.
    """
    paths = selfSignedPaths(stateDir)
    return attrs.evolve(tls, cert=paths.cert, key=paths.key)


def makeSelfSigned(now: datetime.datetime, hostname: str) -> tuple[bytes, bytes]:
    """
    A new self-signed EC P-256 certificate and its key, as PEM.

    Its subjectAltName holds localhost, C{hostname}, 127.0.0.1 and ::1 (TLS
    clients check names there, not in the common name).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "multiport self-signed")])
    dnsNames = ["localhost"] + ([hostname] if hostname != "localhost" else [])
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in dnsNames]
    alternatives += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), keyPEM


def _writeAtomically(
    path: Path, data: bytes, mode: int, owner: tuple[int, int] | None
) -> None:
    """
    Replace C{path} with C{data} in one step: a new file made with
    C{O_EXCL} (never following a link someone planted), given C{mode} and
    C{owner}, then renamed over C{path}.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(temporary)
        raise
    os.close(fd)
    os.replace(temporary, path)


def ensureSelfSigned(
    stateDir: Path,
    owner: tuple[int, int] | None = None,
    now: datetime.datetime | None = None,
) -> LoadedCertificate:
    """
    Load the self-signed certificate from C{stateDir}, making it first if
    it is missing or expired.

    @param owner: The uid and gid the daemon will run as (C{--uid}/C{--gid});
        the folder and files are given to them.
    @raise TLSError: if the state directory can't be written.
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    paths = selfSignedPaths(stateDir)
    assert paths.cert is not None and paths.key is not None
    if paths.cert.exists() and paths.key.exists():
        try:
            loaded = loadCertificate(paths)
        except TLSError as e:
            # Our own files, broken (say by a crash between the two writes):
            # make new ones rather than refuse to start.
            log.warn(
                "replacing the unusable self-signed certificate: {error}", error=str(e)
            )
        else:
            if loaded.notAfter > now + datetime.timedelta(days=1):
                log.info(
                    "using the self-signed certificate {path} (SHA-256 {fingerprint})",
                    path=str(paths.cert),
                    fingerprint=loaded.fingerprint,
                )
                return loaded
    try:
        # The folder stays its creator's (root's, under --uid): a folder the
        # daemon's user owned would let that user plant links in it.  It is
        # searchable so that user can read the files given to it.
        stateDir.mkdir(parents=True, exist_ok=True, mode=0o755 if owner else 0o700)
        certPEM, keyPEM = makeSelfSigned(now, socket.gethostname())
        _writeAtomically(paths.key, keyPEM, 0o600, owner)
        _writeAtomically(paths.cert, certPEM, 0o644, owner)
    except OSError as e:
        raise TLSError(
            f"cannot write the self-signed certificate to the state directory "
            f"{stateDir}: {e.strerror} (set --state-dir, or give --tls-cert "
            "and --tls-key)"
        ) from e
    loaded = loadCertificate(paths)
    log.warn(
        "made a self-signed certificate {path} (SHA-256 {fingerprint}); clients "
        "will not trust it: give --tls-cert and --tls-key for a real one",
        path=str(paths.cert),
        fingerprint=loaded.fingerprint,
    )
    return loaded
