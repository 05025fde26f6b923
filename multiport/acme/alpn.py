"""
TLS-ALPN-01 (RFC 8737), answered on the TLS port itself.

The validation certificate is built here with C{cryptography} (the C{acme}
library has no support for this challenge).  A port's ALPN callback sees
the ClientHello's protocols after its server name and before OpenSSL
chooses a certificate: when C{acme-tls/1} is offered for a name with a
pending challenge, the connection switches to that name's validation
context; every other handshake goes on as before.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL, crypto

from multiport.acme.challenges import ChallengeTokens
from multiport.config.model import TLSConfig

if TYPE_CHECKING:
    # pyOpenSSL names the type of its NO_OVERLAPPING_PROTOCOLS privately.
    from OpenSSL.SSL import _NoOverlappingProtocols

#: The ALPN protocol of TLS-ALPN-01.
ACME_TLS_1 = b"acme-tls/1"
#: id-pe-acmeIdentifier.
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def validationCertificate(
    name: str, keyAuthorization: str, key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """
    RFC 8737 section 3's certificate: C{name} as its only subjectAltName,
    and the critical acmeIdentifier extension holding the SHA-256 digest
    of C{keyAuthorization}.
    """
    digest = hashlib.sha256(keyAuthorization.encode("ascii")).digest()
    # The extension's value is the DER of an OCTET STRING of 32 bytes.
    value = b"\x04\x20" + digest
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, value), True)
        .sign(key, hashes.SHA256())
    )


def validationContext(name: str, keyAuthorization: str) -> SSL.Context:
    """
    An OpenSSL context serving C{name}'s validation certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = validationCertificate(name, keyAuthorization, key)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate(crypto.X509.from_cryptography(certificate))
    context.use_privatekey(crypto.PKey.from_cryptography_key(key))
    context.set_alpn_select_callback(lambda connection, offered: ACME_TLS_1)
    return context


def contextFor(
    tokens: ChallengeTokens, name: str, keyAuthorization: str
) -> SSL.Context:
    """
    L{validationContext}, built once per challenge (the CA validates one
    from several vantage points) and kept with C{tokens}.
    """
    key = (name, keyAuthorization)
    context = tokens.contexts.get(key)
    if not isinstance(context, SSL.Context):
        if len(tokens.contexts) > 64:
            tokens.contexts.clear()
        context = validationContext(name, keyAuthorization)
        tokens.contexts[key] = context
    return context


def answerOn(context: SSL.Context, tls: TLSConfig, tokens: ChallengeTokens) -> None:
    """
    Make the port's C{context} answer TLS-ALPN-01 for C{tokens}' pending
    names; other clients get the port's own ALPN choice, as before.
    Once per context: after a live change the same port's context comes
    again, and may have served connections since.
    """
    if context in tokens.answering:
        return
    # The port's own choice, as multiport.ports.tls sets it up.
    from multiport.ports.tls import _selectALPN

    configured = tuple(name.encode("ascii") for name in tls.alpn or ())

    def select(
        connection: SSL.Connection, offered: Sequence[bytes]
    ) -> bytes | _NoOverlappingProtocols:
        if ACME_TLS_1 in offered:
            name = (connection.get_servername() or b"").decode("ascii", "replace")
            name = name.lower().rstrip(".")
            keyAuthorization = tokens.answer("alpn", name)
            if keyAuthorization is not None:
                connection.set_context(contextFor(tokens, name, keyAuthorization))
                return ACME_TLS_1
        return _selectALPN(connection, offered, configured)

    context.set_alpn_select_callback(select)
    tokens.answering.add(context)
