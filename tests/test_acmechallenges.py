"""
Tests for L{multiport.acme.challenges} and L{multiport.acme.alpn}: where
pending challenges are answered, and RFC 8737's validation certificate.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from multiport.acme.alpn import ACME_IDENTIFIER, answerOn, validationCertificate
from multiport.acme.challenges import (
    ChallengeResource,
    ChallengeResponder,
    ChallengeTokens,
)
from multiport.config.model import TLSConfig
from multiport.handlers.webresources import RedirectToHTTPS


def render(root: object, path: bytes) -> DummyRequest:
    """
    C{path} requested from C{root}, traversed as twisted.web does.
    """
    from twisted.web.resource import getChildForRequest

    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.uri = path
    request.path = path
    resource = getChildForRequest(root, request)
    body = resource.render(request)
    if isinstance(body, bytes):
        request.write(body)
    return request


class ChallengeResourceTests(SynchronousTestCase):
    """
    HTTP-01 answers in front of a site's own root.
    """

    def setUp(self) -> None:
        self.tokens = ChallengeTokens()
        self.tokens.http["tok"] = b"tok.thumb"
        self.root = ChallengeResource(RedirectToHTTPS(443), self.tokens)

    def test_token(self):
        """
        A pending token is answered with its key authorization, before the
        redirect.
        """
        request = render(self.root, b"/.well-known/acme-challenge/tok")
        self.assertEqual(b"".join(request.written), b"tok.thumb")

    def test_unknownToken(self):
        """
        An unknown token goes to the site's own root (here, the redirect).
        """
        request = render(self.root, b"/.well-known/acme-challenge/other")
        self.assertEqual(request.responseCode, 301)

    def test_otherPath(self):
        """
        Every other path goes to the site's own root, unchanged.
        """
        request = render(self.root, b"/index.html")
        self.assertEqual(request.responseCode, 301)


class ResponderTests(SynchronousTestCase):
    """
    The challenge-only responder.
    """

    def test_listensWhilePending(self):
        """
        It listens from the first pending order to the end of the last.
        """
        reactor = MemoryReactorClock()
        responder = ChallengeResponder(reactor, 8080, ChallengeTokens())
        responder.start()
        responder.start()
        self.assertEqual([p[0] for p in reactor.tcpServers], [8080])
        responder.stop()
        self.assertIsNotNone(responder.listening)
        responder.stop()
        self.assertIsNone(responder.listening)


class ValidationCertificateTests(SynchronousTestCase):
    """
    RFC 8737 section 3.
    """

    def test_certificate(self):
        """
        The name is the only SAN; the critical acmeIdentifier extension
        holds the DER OCTET STRING of the key authorization's SHA-256.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        cert = validationCertificate("a.test", "tok.thumb", key)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["a.test"])
        extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        self.assertTrue(extension.critical)
        value = extension.value
        assert isinstance(value, x509.UnrecognizedExtension)
        self.assertEqual(
            value.value, b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
        )


class AnswerOnTests(SynchronousTestCase):
    """
    A TLS port's context made to answer TLS-ALPN-01.
    """

    def test_usedContextAgain(self):
        """
        Asked again for a context that has made connections since (a live
        change after the port served), nothing is changed: OpenSSL refuses
        to change such a context.
        """
        tokens = ChallengeTokens()
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        tls = TLSConfig(acme=("a.test",))
        answerOn(context, tls, tokens)
        SSL.Connection(context, None)
        answerOn(context, tls, tokens)
        self.assertIn(context, tokens.answering)
