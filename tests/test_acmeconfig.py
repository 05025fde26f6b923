"""
Tests for L{multiport.acme.config}: the C{[acme]} table and a port's
C{tls.acme} names, in TOML, in the admin API and with C{--check}.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.acme.config import (
    LETSENCRYPT,
    LETSENCRYPT_STAGING,
    AcmeConfig,
    parseAcmeNames,
)
from multiport.config.model import ConfigError, TLSConfig
from multiport.config.tomlfile import parseConfig, portRequest
from multiport.daemon.tap import Options

BASE = Path("/etc/multiport")


def acmePort(**tls: object) -> dict[str, object]:
    """
    A C{[[port]]} table of an https port with C{tls}.
    """
    return {"port": 443, "handler": "https", "tls": tls}


class AcmeTableTests(SynchronousTestCase):
    """
    The C{[acme]} table.
    """

    def assertConfigError(self, data: dict[str, object], where: str) -> str:
        """
        Reading C{data} fails at C{where}; the message.
        """
        error = self.assertRaises(ConfigError, parseConfig, data, BASE, "f.toml")
        self.assertEqual(error.where, where)
        return error.message

    def test_absent(self):
        """
        Without an C{[acme]} table the file says nothing about ACME.
        """
        self.assertIsNone(parseConfig({}, BASE).acme)

    def test_defaults(self):
        """
        An empty table is Let's Encrypt, both challenges, HTTP-01 on 80.
        """
        acme = parseConfig({"acme": {}}, BASE).acme
        self.assertEqual(acme, AcmeConfig())
        assert acme is not None
        self.assertEqual(acme.directory, LETSENCRYPT)
        self.assertEqual(acme.challenges, ("tls-alpn-01", "http-01"))
        self.assertEqual(acme.httpPort, 80)

    def test_everyKey(self):
        """
        Every key is read; directory_ca is relative to the file.
        """
        acme = parseConfig(
            {
                "acme": {
                    "email": "ops@example.org",
                    "directory": "https://127.0.0.1:14000/dir",
                    "directory_ca": "ca.pem",
                    "challenges": ["http-01"],
                    "http_port": 8080,
                }
            },
            BASE,
        ).acme
        self.assertEqual(
            acme,
            AcmeConfig(
                email="ops@example.org",
                directory="https://127.0.0.1:14000/dir",
                directoryCA=BASE / "ca.pem",
                challenges=("http-01",),
                httpPort=8080,
            ),
        )
        assert acme is not None
        self.assertEqual(acme.directoryHost, "127.0.0.1_14000")

    def test_staging(self):
        """
        C{"letsencrypt-staging"} names Let's Encrypt's staging directory.
        """
        acme = parseConfig({"acme": {"directory": "letsencrypt-staging"}}, BASE).acme
        assert acme is not None
        self.assertEqual(acme.directory, LETSENCRYPT_STAGING)
        self.assertEqual(acme.directoryHost, "acme-staging-v02.api.letsencrypt.org")

    def test_badValues(self):
        """
        Each bad value is refused naming its key.
        """
        for key, value in (
            ("email", "nobody"),
            ("email", 5),
            ("directory", "ftp://x/"),
            ("directory", "letsencrypt-stagin"),
            ("directory", 1),
            ("directory_ca", ""),
            ("challenges", ["dns-01"]),
            ("challenges", []),
            ("challenges", ["http-01", "http-01"]),
            ("challenges", "http-01"),
            ("http_port", 0),
            ("http_port", "80"),
            ("http_port", True),
        ):
            message = self.assertConfigError(
                {"acme": {key: value}}, f"f.toml: acme.{key}"
            )
            self.assertIn(repr(value), message)

    def test_unknownKey(self):
        """
        An unknown key in the table is named.
        """
        self.assertConfigError({"acme": {"mail": "a@b"}}, "f.toml: acme.mail")

    def test_notTable(self):
        """
        C{acme} must be a table.
        """
        self.assertConfigError({"acme": "yes"}, "f.toml: acme")


class AcmeNamesTests(SynchronousTestCase):
    """
    A port's C{tls = { acme = [names] }}.
    """

    def test_names(self):
        """
        The names are kept in order, other TLS keys beside them.
        """
        config = parseConfig(
            {
                "port": [
                    acmePort(acme=["example.org", "www.example.org"], min_version="1.3")
                ]
            },
            BASE,
        )
        tls = config.ports[0].tls
        self.assertEqual(
            tls,
            TLSConfig(acme=("example.org", "www.example.org"), minVersion="1.3"),
        )
        assert isinstance(tls, TLSConfig)
        self.assertTrue(tls.selfSigned)
        self.assertEqual(
            tls.describe(),
            "ACME for example.org, www.example.org (self-signed until issued)",
        )

    def test_notOverDefaultCertificate(self):
        """
        An ACME port does not take C{[defaults].tls}'s certificate.
        """
        tls = TLSConfig(acme=("example.org",)).over(TLSConfig(cert=Path("/c.pem")))
        self.assertIsNone(tls.cert)
        self.assertEqual(tls.acme, ("example.org",))

    def test_badNames(self):
        """
        Only lowercase fully qualified DNS names, once each, are taken.
        """
        for names in (
            [],
            "example.org",
            ["*.example.org"],
            ["Example.org"],
            ["localhost"],
            ["127.0.0.1"],
            ["a..b"],
            ["-a.b"],
            ["a.org", "a.org"],
            [5],
        ):
            self.assertRaises(ConfigError, parseAcmeNames, names, "x")

    def test_withCert(self):
        """
        C{acme} and C{cert} in one table are refused.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {"port": [acmePort(acme=["a.org"], cert="c.pem")]},
            BASE,
        )
        self.assertEqual(error.where, "port[1].tls.acme")

    def test_notInDefaults(self):
        """
        Names are per port: C{[defaults].tls.acme} is refused.
        """
        error = self.assertRaises(
            ConfigError, parseConfig, {"defaults": {"tls": {"acme": ["a.org"]}}}, BASE
        )
        self.assertEqual(error.where, "defaults.tls.acme")

    def test_adminAPIBody(self):
        """
        The admin API's bodies are checked the same way, naming the key.
        """
        request = portRequest(acmePort(acme=["a.org"]), "POST /api/ports", BASE)
        assert isinstance(request.tls, TLSConfig)
        self.assertEqual(request.tls.acme, ("a.org",))
        error = self.assertRaises(
            ConfigError,
            portRequest,
            acmePort(acme=["A.org"]),
            "POST /api/ports",
            BASE,
        )
        self.assertEqual(error.where, "POST /api/ports.tls.acme[0]")


class CheckTests(SynchronousTestCase):
    """
    C{--check} with ACME ports.
    """

    def setUp(self) -> None:
        self.stateDir = self.mktemp()
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)

    def check(self, text: str) -> SystemExit:
        """
        C{--check} of a configuration file holding C{text}.
        """
        path = Path(self.mktemp())
        path.write_text(text)
        return self.assertRaises(
            SystemExit,
            Options().parseOptions,
            ["--state-dir", self.stateDir, "--no-status", "--check", "-c", str(path)],
        )

    def test_valid(self):
        """
        A valid table passes, contacting nobody and writing nothing (the
        directory is an address nothing listens on).
        """
        error = self.check(
            '[acme]\ndirectory = "https://127.0.0.1:1/dir"\n'
            '[[port]]\nport = 8443\nhandler = "https"\n'
            'tls = { acme = ["example.org"] }\n'
        )
        self.assertEqual(error.code, 0)
        self.assertIn("configuration ok", self.stdout.getvalue())
        self.assertIn("TLS ACME for example.org", self.stdout.getvalue())
        self.assertFalse(os.path.exists(self.stateDir))

    def test_invalid(self):
        """
        A bad key fails --check with its name.
        """
        error = self.check("[acme]\nhttp_port = 99999\n")
        self.assertIn("acme.http_port", str(error.code))

    def test_directoryCAChecked(self):
        """
        A directory_ca that can't be read, or holds no certificate, fails
        --check naming the key.
        """
        bad = Path(self.mktemp())
        bad.write_text("not a certificate")
        for path in (bad, Path(self.mktemp())):
            error = self.check(f"[acme]\ndirectory_ca = '{path.absolute()}'\n")
            self.assertIn("acme.directory_ca", str(error.code))
            self.assertIn(str(path.absolute()), str(error.code))
