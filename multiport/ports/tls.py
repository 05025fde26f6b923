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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet._sslverify import protosFromProtocol
from twisted.internet.interfaces import IAcceptableCiphers
from twisted.internet.ssl import (
    AcceptableCiphers as OpenSSLAcceptableCiphers,
)
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger

from multiport.config.files import FileError, readRegularFile, whyNotWritable
from multiport.config.model import TLSConfig

if TYPE_CHECKING:
    # pyOpenSSL names the type of its NO_OVERLAPPING_PROTOCOLS privately.
    from OpenSSL.SSL import _NoOverlappingProtocols

log = Logger()

#: Twisted's C{AcceptableCiphers.fromOpenSSLCipherString}, unannotated there.
_ciphersFromString: Callable[[str], IAcceptableCiphers] = (
    OpenSSLAcceptableCiphers.fromOpenSSLCipherString
)

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
    #: The DNS names of the leaf certificate's subjectAltName, lower case.
    dnsNames: tuple[str, ...] = ()


def _selectALPN(
    connection: SSL.Connection,
    offered: Sequence[bytes],
    configured: Sequence[bytes] = (),
) -> bytes | _NoOverlappingProtocols:
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


#: The largest certificate, key or CA file read: a chain of a dozen
#: certificates is some 20 KiB, a system CA bundle a few hundred.
MAX_PEM_FILE = 1 << 20


def _read(path: Path, what: str) -> bytes:
    try:
        return readRegularFile(path, MAX_PEM_FILE, what)
    except FileError as e:
        raise TLSError(str(e)) from None


def opensslReason(error: Exception) -> str:
    """
    What OpenSSL says went wrong in C{error} (an C{OpenSSL.SSL.Error}), in
    its own words: C{"no cipher match"}, C{"unsupported protocol"}.
    """
    reasons: list[str] = []
    queue = error.args[0] if error.args else None
    if isinstance(queue, list):
        for entry in queue:
            if isinstance(entry, tuple) and entry and entry[-1]:
                reasons.append(str(entry[-1]))
    elif len(error.args) == 2 and isinstance(error.args[1], str):
        # SysCallError: (errno, text), e.g. (-1, "Unexpected EOF").
        reasons.append(error.args[1])
    return "; ".join(dict.fromkeys(reasons)) or str(error) or type(error).__name__


def loadCertificate(tls: TLSConfig) -> LoadedCertificate:
    """
    Load and check the certificate, chain and key C{tls} names, and build
    the TLS context of its settings.

    @raise TLSError: if a file is missing, unreadable or not a regular
        file, holds no usable PEM data, the key does not match the
        certificate, or OpenSSL refuses a setting.
    """
    assert tls.cert is not None, "the self-signed default is loaded by path"
    certData = _read(tls.cert, "certificate")
    keyData = certData if tls.key is None else _read(tls.key, "private key")
    return certificateFromPEM(tls, certData, keyData)


def certificateFromPEM(
    tls: TLSConfig, certData: bytes, keyData: bytes
) -> LoadedCertificate:
    """
    L{loadCertificate} of files already read: C{certData} is what
    C{tls.cert} holds, C{keyData} what C{tls.key} holds (the same bytes
    when the key is in the certificate's file).  The files C{tls} names for
    SNI, C{cert_dir} and C{client_ca} are read here.

    @raise TLSError: as L{loadCertificate}.
    """
    assert tls.cert is not None, "the self-signed default is loaded by path"
    try:
        chain = x509.load_pem_x509_certificates(certData)
    except ValueError as e:
        raise TLSError(f"no PEM certificate in {tls.cert}: {e}") from e
    keyPath = tls.cert if tls.key is None else tls.key
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
    try:  # pyOpenSSL refuses key types that can't sign (DH, X25519, X448).
        privateKey = crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]
    except TypeError:
        kind = type(key).__name__.removesuffix("PrivateKey").lstrip("_")
        message = f"is of type {kind}, which TLS here can't sign with"
        raise TLSError(
            f"the private key in {keyPath} {message}: use an RSA, EC or Ed25519 key"
        ) from None
    # Twisted's defaults: no client certificates asked for.
    verify = False
    caCerts: list[crypto.X509] | None = None
    requireCertificate = True
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
        verify = True
        caCerts = [crypto.X509.from_cryptography(c) for c in authorities]
        requireCertificate = tls.clientAuth != "optional"
    byName = _serverNames(tls) if tls.sni or tls.certDir is not None else None
    offered = tuple(name.encode("ascii") for name in tls.alpn or ())
    try:
        ciphers = _ciphersFromString(
            DEFAULT_CIPHERS if tls.ciphers is None else tls.ciphers
        )
        options = CertificateOptions(
            privateKey=privateKey,
            certificate=crypto.X509.from_cryptography(leaf),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            raiseMinimumTo=TLSVersion.TLSv1_3
            if tls.minVersion == "1.3"
            else TLSVersion.TLSv1_2,
            verify=verify,
            caCerts=caCerts,
            requireCertificate=requireCertificate,
            acceptableCiphers=ciphers,
        )
        # Build the OpenSSL context now: errors surface at start (or in the
        # reload or API call that asked), not at the first handshake, and
        # nothing is left to import after a privilege drop.
        context = options.getContext()
        context.set_alpn_select_callback(
            lambda connection, protocols: _selectALPN(connection, protocols, offered)
        )
        if byName is not None:
            context.set_tlsext_servername_callback(
                lambda connection: _chooseByName(connection, byName)
            )
    except ValueError as e:
        # Twisted's words for a cipher string that leaves no cipher.
        if tls.ciphers is None:
            raise TLSError(f"cannot use these TLS settings: {e}") from None
        raise TLSError(
            f"tls.ciphers {tls.ciphers!r} selects no usable cipher: {e}"
        ) from None
    except (SSL.Error, crypto.Error) as e:
        raise TLSError(_contextError(tls, e)) from None
    return LoadedCertificate(
        tls=tls,
        contextFactory=options,
        fingerprint=fingerprint(leaf),
        notAfter=leaf.not_valid_after_utc,
        dnsNames=_dnsNames(leaf),
    )


def _contextError(tls: TLSConfig, error: Exception) -> str:
    """
    The one line for an OpenSSL error while building the context of
    C{tls}: the setting it is about, and OpenSSL's reason.
    """
    reason = opensslReason(error)
    if tls.ciphers is not None and "cipher" in reason:
        # Only set_cipher_list's errors speak of ciphers: a string of suites
        # OpenSSL won't use at its level (NULL, EXPORT) parses, then fails.
        return f"tls.ciphers {tls.ciphers!r}: OpenSSL refuses it: {reason}"
    return f"cannot build a TLS context for {tls.describe()}: OpenSSL: {reason}"


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
            for name in loaded.dnsNames:
                byName.setdefault(name, context)
    return byName


def _dnsNames(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in names.value.get_values_for_type(x509.DNSName))


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
        raise TLSError(_unwritable(stateDir, e.strerror or str(e))) from e
    loaded = loadCertificate(paths)
    log.warn(
        "made a self-signed certificate {path} (SHA-256 {fingerprint}); clients "
        "will not trust it: give --tls-cert and --tls-key for a real one",
        path=str(paths.cert),
        fingerprint=loaded.fingerprint,
    )
    return loaded


def _unwritable(stateDir: Path, reason: str) -> str:
    return (
        f"cannot write the self-signed certificate to the state directory "
        f"{stateDir}: {reason} (set --state-dir, or give --tls-cert and --tls-key)"
    )


def _usableSelfSigned(
    stateDir: Path, now: datetime.datetime
) -> tuple[bytes, bytes] | None:
    """
    The self-signed certificate and key in C{stateDir} (PEM) if
    L{ensureSelfSigned} would keep them, else C{None}.
    """
    paths = selfSignedPaths(stateDir)
    assert paths.cert is not None and paths.key is not None
    try:
        pem = _read(paths.cert, "certificate"), _read(paths.key, "private key")
        loaded = certificateFromPEM(paths, *pem)
    except TLSError:
        return None
    return pem if loaded.notAfter > now + datetime.timedelta(days=1) else None


def previewSelfSigned(
    stateDir: Path, now: datetime.datetime | None = None
) -> tuple[bytes, bytes, bool]:
    """
    The self-signed certificate and key (PEM) a start would serve from
    C{stateDir}, for C{--check}, which writes nothing: the files there if
    L{ensureSelfSigned} would keep them, else a pair made in memory once
    the state directory is shown writable.

    @return: The certificate, the key, and whether they are new (a start
        would make them).
    @raise TLSError: if a start could not write the state directory.
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    kept = _usableSelfSigned(stateDir, now)
    if kept is not None:
        return (*kept, False)
    reason = whyNotWritable(stateDir)
    if reason is not None:
        raise TLSError(_unwritable(stateDir, reason))
    return (*makeSelfSigned(now, socket.gethostname()), True)
