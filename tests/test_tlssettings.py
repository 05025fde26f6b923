"""
Per-port TLS settings against real TLS clients: minimum version, ciphers,
ALPN, handshake timeout and HSTS.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from multiport.config.model import PortConfig, TLSConfig
from multiport.handlers.interface import HandlerContext
from multiport.handlers.simple import Echo
from multiport.ports.counters import PortCounters
from multiport.ports.factory import PortFactory
from tests.support import Daemon, accepting, waitUntil
from tests.test_policies import v4
from tests.test_twistd import LISTENING

CONFIG = """
[defaults]
interface = "127.0.0.1"
tls = {{ handshake_timeout = 30 }}

[[port]]
port = 0
handler = "echo"
tls = {{ min_version = "1.3" }}

[[port]]
port = 0
handler = "echo"
tls = {{ alpn = ["x-test"] }}

[[port]]
port = 0
handler = "echo"
tls = {{ min_version = "1.2", ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384" }}

[[port]]
port = 0
handler = "https"
options = {{ hsts_max_age = 31536000 }}

[[port]]
port = 0
handler = "echo"
tls = {{ handshake_timeout = 0.5 }}
"""


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    A TLS client that never finishes its handshake is closed.
    """

    def connect(self, timeout: float | None):
        clock = Clock()
        config = PortConfig(
            "127.0.0.1", 7443, "echo", TLSConfig(handshakeTimeout=timeout), 50, None
        )
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        factory = PortFactory(Factory.forProtocol(Echo), PortCounters(), context)
        protocol = factory.buildProtocol(v4("192.0.2.1"))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        transport.abortConnection = transport.loseConnection
        protocol.makeConnection(transport)
        return clock, protocol, transport

    def test_default(self):
        """
        Without a setting the client has 10 seconds; then reason timeout.
        """
        clock, protocol, transport = self.connect(None)
        clock.advance(9.9)
        self.assertTrue(transport.connected)
        clock.advance(0.1)
        self.assertFalse(transport.connected)
        self.assertEqual(
            (protocol.closeReason, protocol.timeoutKind),
            ("timeout", "handshake_timeout"),
        )

    def test_completed(self):
        """
        A finished handshake cancels the deadline.
        """
        clock, protocol, transport = self.connect(2.0)
        protocol.handshakeCompleted()
        clock.advance(60)
        self.assertTrue(transport.connected)
        self.assertEqual(clock.getDelayedCalls(), [])


class RealClientTests(SynchronousTestCase):
    """
    One real twistd with a TLS port per setting, and Python's ssl clients.
    """

    def setUp(self) -> None:
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        (folder / "multiport.toml").write_text(CONFIG.format())
        self.stateDir = folder / "state"
        self.daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(self.stateDir),
                "--config",
                str(folder / "multiport.toml"),
            ],
            str(folder),
        )
        self.addCleanup(self.daemon.stop)
        self.ports = [int(m.group(2)) for m in self.daemon.waitFor(LISTENING, 5)]
        self.certificate = self.stateDir / "selfsigned-cert.pem"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))

    def handshake(self, port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection = context.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(connection.close)
        return connection

    def test_minimumVersion(self):
        """
        A port with min_version 1.3 refuses a TLS 1.2 client; the same
        client reaches a port that allows 1.2 (the control).
        """
        old = self.context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        self.assertRaises(ssl.SSLError, self.handshake, self.ports[0], old)
        connection = self.handshake(self.ports[1], old)
        self.assertEqual(connection.version(), "TLSv1.2")
        self.assertEqual(
            self.handshake(self.ports[0], self.context()).version(), "TLSv1.3"
        )

    def test_opensslClient(self):
        """
        openssl s_client: TLS 1.2 is refused by the port whose minimum is 1.3,
        TLS 1.3 gets in, and ALPN is negotiated as configured.
        """
        import shutil
        import subprocess

        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed: apt-get install openssl")

        def sClient(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["openssl", "s_client", *args],
                input="",
                capture_output=True,
                text=True,
                timeout=30,
            )

        old = sClient("-tls1_2", "-connect", f"127.0.0.1:{self.ports[0]}")
        self.assertNotEqual(old.returncode, 0)
        new = sClient("-tls1_3", "-connect", f"127.0.0.1:{self.ports[0]}")
        self.assertIn("TLSv1.3", new.stdout + new.stderr)
        self.assertEqual(new.returncode, 0)
        alpn = sClient("-alpn", "x-test", "-connect", f"127.0.0.1:{self.ports[1]}")
        self.assertIn("ALPN protocol: x-test", alpn.stdout + alpn.stderr)

    def test_alpn(self):
        """
        The port negotiates the ALPN protocol it is configured with.
        """
        context = self.context()
        context.set_alpn_protocols(["x-other", "x-test"])
        connection = self.handshake(self.ports[1], context)
        self.assertEqual(connection.selected_alpn_protocol(), "x-test")
        context.set_alpn_protocols(["x-other"])
        self.assertIsNone(
            self.handshake(self.ports[1], context).selected_alpn_protocol()
        )

    def test_ciphers(self):
        """
        A TLS 1.2 client gets the configured cipher, and is refused when it
        offers only others.
        """
        context = self.context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        connection = self.handshake(self.ports[2], context)
        self.assertEqual(connection.cipher()[0], "ECDHE-ECDSA-AES256-GCM-SHA384")
        context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertRaises(ssl.SSLError, self.handshake, self.ports[2], context)

    def test_noCBCByDefault(self):
        """
        By default TLS 1.2 offers only AEAD suites: a client offering only
        CBC ones (LUCKY13's family) is refused, and the same client with an
        AEAD suite gets in.
        """
        context = self.context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
        self.assertRaises(ssl.SSLError, self.handshake, self.ports[1], context)
        context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertEqual(
            self.handshake(self.ports[1], context).cipher()[0],
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        )

    def test_hsts(self):
        """
        hsts_max_age sends Strict-Transport-Security over TLS.
        """
        import http.client

        connection = http.client.HTTPSConnection(
            "localhost", self.ports[3], timeout=10, context=self.context()
        )
        self.addCleanup(connection.close)
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        self.assertEqual(
            response.getheader("strict-transport-security"), "max-age=31536000"
        )

    def test_handshakeTimeout(self):
        """
        A client that connects and never starts its handshake is closed after
        the port's handshake_timeout, and the log says timeout.
        """
        started = time.monotonic()
        raw = socket.create_connection(("127.0.0.1", self.ports[4]), timeout=15)
        self.addCleanup(raw.close)
        try:
            received = raw.recv(10)
        except ConnectionResetError:  # the daemon aborts: a reset
            received = b""
        elapsed = time.monotonic() - started
        self.assertEqual(received, b"")
        # The port's 0.5 s, not the [defaults] 30 s (recv would time out).
        self.assertGreaterEqual(elapsed, 0.5)
        self.daemon.waitFor(rf"tcp:127\.0\.0\.1:{self.ports[4]} echo .* closed timeout")


class SNITests(SynchronousTestCase):
    """
    One port, several certificates, chosen by the name the client asks for.
    """

    def setUp(self) -> None:
        import datetime

        from multiport.ports.tls import makeSelfSigned

        folder = Path(self.mktemp()).absolute()
        (folder / "certs").mkdir(parents=True)
        now = datetime.datetime.now(datetime.UTC)
        self.pems = {}
        for name, where in (
            ("a.test", folder / "a.pem"),
            ("*.wild.test", folder / "wild.pem"),
            ("*.dir.test", folder / "certs" / "b.pem"),
            ("default.test", folder / "default.pem"),
        ):
            cert, key = makeSelfSigned(now, name)
            where.write_bytes(cert + key)
            self.pems[name] = cert
        (folder / "multiport.toml").write_text(
            '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "echo"\n'
            'tls = { cert = "default.pem", cert_dir = "certs", sni = { '
            '"a.test" = { cert = "a.pem" }, '
            '"*.wild.test" = { cert = "wild.pem" } } }\n'
        )
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--config",
                str(folder / "multiport.toml"),
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        [match] = daemon.waitFor(LISTENING, 1)
        self.port = int(match.group(2))

    def served(self, name: str | None) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        with context.wrap_socket(raw, server_hostname=name) as connection:
            return connection.getpeercert(binary_form=True)

    def der(self, name: str) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.pems[name].decode())

    def test_exactName(self):
        """
        A name in the sni table gets its certificate.
        """
        self.assertEqual(self.served("a.test"), self.der("a.test"))

    def test_wildcard(self):
        """
        A wildcard entry answers one label below it.
        """
        self.assertEqual(self.served("x.wild.test"), self.der("*.wild.test"))

    def test_certDir(self):
        """
        A wildcard certificate in cert_dir answers the names its
        subjectAltName covers.
        """
        self.assertEqual(self.served("b.dir.test"), self.der("*.dir.test"))

    def test_unknownAndNoName(self):
        """
        Unknown names and clients that send no name get the port's own.
        """
        self.assertEqual(self.served("unknown.test"), self.der("default.test"))
        self.assertEqual(self.served(None), self.der("default.test"))


def authority(name: str):
    """
    A CA key and certificate named C{name}.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def clientCertificate(
    folder: Path, caKey, caCertificate, name: str
) -> tuple[Path, Path]:
    """
    Write a client certificate for C{name} signed by the CA; its paths.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(caCertificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(caKey, hashes.SHA256())
    )
    certPath, keyPath = folder / f"{name}.pem", folder / f"{name}.key"
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certPath, keyPath


class ClientCertificateTests(SynchronousTestCase):
    """
    client_ca with client_auth: only clients with a certificate from that
    CA get in, and the log names them.
    """

    def setUp(self) -> None:
        from cryptography.hazmat.primitives import serialization

        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        self.folder = folder
        caKey, ca = authority("multiport test CA")
        (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.good = clientCertificate(folder, caKey, ca, "alice")
        otherKey, other = authority("another CA")
        self.bad = clientCertificate(folder, otherKey, other, "mallory")
        (folder / "multiport.toml").write_text(
            '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "echo"\n'
            'tls = { client_ca = "ca.pem" }\n'
            '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "echo"\n'
            'tls = { client_ca = "ca.pem", client_auth = "optional" }\n'
        )
        self.daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--config",
                str(folder / "multiport.toml"),
            ],
            str(folder),
        )
        self.addCleanup(self.daemon.stop)
        self.required, self.optional = [
            int(m.group(2)) for m in self.daemon.waitFor(LISTENING, 2)
        ]

    def echo(self, port: int, certificate: tuple[Path, Path] | None) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if certificate is not None:
            context.load_cert_chain(*map(str, certificate))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as connection:
            connection.sendall(b"ping")
            return connection.recv(4)

    def test_required(self):
        """
        With client_auth required: a certificate from the CA gets in and
        is named in the log; none, or one from another CA, is refused.
        """
        self.assertEqual(self.echo(self.required, self.good), b"ping")
        self.daemon.waitFor(r"closed \w+ after .*, client CN=alice$")
        for certificate in (None, self.bad):
            with self.assertRaises((ssl.SSLError, ConnectionResetError)):
                self.echo(self.required, certificate)

    def test_optional(self):
        """
        With client_auth optional, a client without a certificate gets in;
        one with a certificate from another CA does not.
        """
        self.assertEqual(self.echo(self.optional, None), b"ping")
        self.assertEqual(self.echo(self.optional, self.good), b"ping")
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            self.echo(self.optional, self.bad)


class OldVersionTests(SynchronousTestCase):
    """
    TLS 1.0 and 1.1 are refused; the client used is shown able to speak them
    (the positive control: an openssl s_server that allows them).
    """

    def setUp(self) -> None:
        import shutil

        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed: apt-get install openssl")
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        self.folder = folder
        self.daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--ports",
                "127.0.0.1:0=echo+tls",
            ],
            str(folder),
        )
        self.addCleanup(self.daemon.stop)
        [match] = self.daemon.waitFor(LISTENING, 1)
        self.port = int(match.group(2))

    def oldClient(self, version: ssl.TLSVersion) -> ssl.SSLContext:
        import warnings

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = version
            context.maximum_version = version
        # Python's default security level can't offer these versions at all.
        context.set_ciphers("ALL:@SECLEVEL=0")
        return context

    def control(self, flag: str) -> int:
        """
        An openssl s_server that allows only the old version; its port.
        """
        import subprocess

        from benchmarks.processes import freePorts

        [port] = freePorts(1)
        state = self.folder / "state"
        server = subprocess.Popen(
            [
                "openssl",
                "s_server",
                "-accept",
                f"127.0.0.1:{port}",
                "-cert",
                str(state / "selfsigned-cert.pem"),
                "-key",
                str(state / "selfsigned-key.pem"),
                flag,
                "-cipher",
                "ALL:@SECLEVEL=0",
                "-quiet",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        waitUntil(
            lambda: server.poll() is not None or accepting(port),
            10,
            interval=0.05,
            what=f"openssl s_server to listen on 127.0.0.1:{port}",
        )
        self.assertIsNone(server.poll(), "openssl s_server ended")
        return port

    def handshake(self, port: int, context: ssl.SSLContext) -> str | None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as connection:
            return connection.version()

    def assertRefused(self, version: ssl.TLSVersion, flag: str, name: str) -> None:
        context = self.oldClient(version)
        self.assertEqual(self.handshake(self.control(flag), context), name)
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            self.handshake(self.port, context)

    def test_tls11(self):
        """
        A TLS 1.1 client, shown to connect to a TLS 1.1 server, is refused.
        """
        self.assertRefused(ssl.TLSVersion.TLSv1_1, "-tls1_1", "TLSv1.1")

    def test_tls10(self):
        """
        A TLS 1.0 client, shown to connect to a TLS 1.0 server, is refused.
        """
        self.assertRefused(ssl.TLSVersion.TLSv1, "-tls1", "TLSv1")
