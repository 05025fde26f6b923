"""
TLS settings and the files the daemon reads, through the doors an operator
or a client comes in by (issue 18, section 3): real C{twistd multiport}
processes, their admin API, SIGHUP and real TLS clients.

  - a cipher string the parser takes and OpenSSL refuses (C{NULL});
  - C{--check} failing exactly where a start fails, writing nothing;
  - paths that are FIFOs, devices, folders or too large;
  - the connection log of failed handshakes, of plain HTTP sent to a TLS
    port (answered with nginx's 400), and of clean closes.

Every daemon is another process, so blocking sockets are fine here; every
wait is bounded.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import textwrap
import time
import warnings
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from multiport.ports.handshake import PLAIN_HTTP_MESSAGE
from multiport.ports.tls import makeSelfSigned
from multiport.status.admintoken import ENVIRONMENT
from tests.support import TWISTD, Daemon
from tests.test_live import freePort
from tests.test_twistd import LISTENING

#: Seconds any one twistd run may take before the test fails: a daemon that
#: blocks on a FIFO must fail the test, not hang it.
WAIT = 30

#: The most address space a twistd run under test may take (it needs under
#: 100 MiB): one that reads /dev/zero fails with MemoryError instead of
#: taking the machine's memory.
MEMORY = 1 << 30


def _boundMemory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def twistd(*args: str, cwd: Path) -> tuple[int, str]:
    """
    Run C{twistd -n multiport ARGS} to its end (within L{WAIT} seconds);
    its exit status and output (standard output and error together).
    """
    environment = dict(os.environ)
    environment.pop(ENVIRONMENT, None)
    try:
        result = subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "multiport", *args],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT,
            preexec_fn=_boundMemory,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"twistd multiport {' '.join(args)} still ran after {WAIT} s"
        ) from e
    return result.returncode, result.stdout + result.stderr


def lastLine(output: str) -> str:
    """
    The last line of C{output} that is not empty.
    """
    return [line for line in output.splitlines() if line.strip()][-1]


def certificate(folder: Path, name: str = "site") -> tuple[Path, Path]:
    """
    A certificate and key for localhost written into C{folder}; their paths.
    """
    cert, key = makeSelfSigned(datetime.datetime.now(datetime.UTC), "localhost")
    (folder / f"{name}.pem").write_bytes(cert)
    (folder / f"{name}.key").write_bytes(key)
    return folder / f"{name}.pem", folder / f"{name}.key"


def tlsPort(table: str, handler: str = "echo", port: int = 0) -> str:
    """
    A C{[[port]]} table on 127.0.0.1 with C{tls = {table}}.
    """
    return (
        f'[[port]]\nport = {port}\ninterface = "127.0.0.1"\n'
        f'handler = "{handler}"\ntls = {{ {table} }}\n'
    )


def unverified() -> ssl.SSLContext:
    """
    A TLS client context that takes any certificate (as C{curl -k}).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def echoes(port: int) -> bool:
    """
    Whether a TLS echo port on 127.0.0.1 answers a handshake and a ping.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with unverified().wrap_socket(raw, server_hostname="localhost") as connection:
        connection.sendall(b"ping")
        return connection.recv(4) == b"ping"


class CheckAgreesWithStartTests(SynchronousTestCase):
    """
    C{--check} builds every TLS context a start would (the self-signed
    certificate's too, from a pair made in memory), so the two fail alike,
    with the same one line and no traceback; C{--check} writes nothing.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.state = self.folder / "state"

    def runBoth(self, toml: str, *args: str) -> tuple[tuple[int, str], tuple[int, str]]:
        """
        C{--check}, then a start, of the configuration C{toml}: each one's
        exit status and output.
        """
        config = self.folder / "multiport.toml"
        config.write_text(textwrap.dedent(toml))
        common = [
            "--config",
            str(config),
            "--status",
            "127.0.0.1:0",
            "--state-dir",
            str(self.state),
            *args,
        ]
        checked = twistd("--check", *common, cwd=self.folder)
        self.assertFalse(self.state.exists(), "--check wrote the state directory")
        started = twistd(*common, cwd=self.folder)
        return checked, started

    def assertBothRefuse(self, toml: str, message: str, *args: str) -> None:
        """
        C{--check} and a start of C{toml} both exit 1 with the same last
        line, which holds C{message}, and no traceback.
        """
        (checkCode, checkOutput), (startCode, startOutput) = self.runBoth(toml, *args)
        for output in (checkOutput, startOutput):
            self.assertNotIn("Traceback", output)
        self.assertEqual((checkCode, startCode), (1, 1), checkOutput + startOutput)
        self.assertEqual(lastLine(checkOutput), lastLine(startOutput))
        self.assertIn(message, lastLine(checkOutput))

    def test_certDirWithSelfSigned(self):
        """
        A missing cert_dir on a port with the self-signed certificate.
        """
        self.assertBothRefuse(
            tlsPort('cert_dir = "/nonexistent"'),
            "multiport.toml: port[1]: cannot read cert_dir /nonexistent: "
            "No such file or directory",
        )

    def test_nullCiphersWithSelfSigned(self):
        """
        ciphers = "NULL" (the parser takes it; OpenSSL selects nothing from
        it) on a port with the self-signed certificate: the key and
        OpenSSL's reason.
        """
        self.assertBothRefuse(
            tlsPort('ciphers = "NULL"'),
            "multiport.toml: port[1]: tls.ciphers 'NULL': OpenSSL refuses it: "
            "no cipher match",
        )

    def test_nullCiphersWithCertificate(self):
        """
        The same with a certificate of the operator's.
        """
        cert, key = certificate(self.folder)
        self.assertBothRefuse(
            tlsPort(f'cert = "{cert}", key = "{key}", ciphers = "NULL"'),
            "tls.ciphers 'NULL': OpenSSL refuses it: no cipher match",
        )

    def test_nullCiphersInDefaults(self):
        """
        ciphers = "NULL" in [defaults].tls fails the ports that take it.
        """
        self.assertBothRefuse(
            '[defaults]\ntls = { ciphers = "NULL" }\n'
            '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "https"\n',
            "port[1]: tls.ciphers 'NULL'",
        )

    def test_clientCAWithSelfSigned(self):
        """
        A missing client_ca on a port with the self-signed certificate.
        """
        self.assertBothRefuse(
            tlsPort('client_ca = "/nonexistent/ca.pem"'),
            "cannot read client CA file /nonexistent/ca.pem",
        )

    def test_stateDirectoryNotAFolder(self):
        """
        A state directory under a file: the self-signed certificate can't
        be written, and neither can the admin token of a daemon without TLS
        ports.
        """
        blocker = self.folder / "file"
        blocker.write_text("")
        self.state = blocker / "state"
        self.assertBothRefuse(
            tlsPort(""),
            f"cannot write the self-signed certificate to the state directory "
            f"{self.state}: Not a directory",
        )
        self.assertBothRefuse(
            '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "echo"\n',
            f"cannot write the admin token in {self.state}: Not a directory",
        )

    def test_goodConfiguration(self):
        """
        A good configuration passes --check, which shows the fingerprint
        of a certificate it made in memory and writes nothing; once a
        start has made the real one, --check shows that one.
        """
        config = self.folder / "multiport.toml"
        config.write_text(tlsPort('min_version = "1.3"', handler="https"))
        args = ["--config", str(config), "--no-status", "--state-dir", str(self.state)]
        code, output = twistd("--check", *args, cwd=self.folder)
        self.assertEqual(code, 0, output)
        self.assertIn(
            f"TLS self-signed (made at first start in {self.state}) (SHA-256 ", output
        )
        self.assertFalse(self.state.exists())
        daemon = Daemon(args, str(self.folder))
        self.addCleanup(daemon.stop)
        daemon.waitFor(LISTENING)
        [made] = daemon.waitFor(r"self-signed certificate \S+ \(SHA-256 ([0-9A-F:]+)\)")
        code, output = twistd("--check", *args, cwd=self.folder)
        self.assertEqual(code, 0, output)
        self.assertIn(
            f"TLS self-signed {self.state / 'selfsigned-cert.pem'} "
            f"(SHA-256 {made.group(1)})",
            output,
        )


class LiveDaemonTests(SynchronousTestCase):
    """
    A running daemon refuses, through its admin API (400) and SIGHUP
    (nothing changes), a TLS setting OpenSSL refuses or a file that is not
    one, and goes on serving.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.cert, self.key = certificate(self.folder)
        self.fifo = self.folder / "fifo.pem"
        os.mkfifo(self.fifo)
        self.port = freePort()
        self.config = self.folder / "multiport.toml"
        self.write("")
        self.daemon = Daemon(
            [
                "--config",
                str(self.config),
                "--status",
                "127.0.0.1:0",
                "--state-dir",
                str(self.folder / "state"),
            ],
            str(self.folder),
        )
        self.addCleanup(self.daemon.stop)
        self.status = self.daemon.listening(2)["status"][1]
        # Logged once every service has started: SIGHUP is handled from then.
        self.daemon.waitFor(r"ready: 2 ports listening")
        self.token = (self.folder / "state" / "admin-token").read_text().strip()
        self.name = f"tcp:127.0.0.1:{self.port}"

    def write(self, extra: str) -> None:
        cert = f'cert = "{self.cert}", key = "{self.key}"'
        self.config.write_text(
            tlsPort(f"{cert}{', ' if extra else ''}{extra}", port=self.port)
        )

    def call(self, method: str, path: str, body: object) -> tuple[int, dict]:
        """
        An admin API call; its status and JSON answer, within seconds.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.status, timeout=10)
        self.addCleanup(connection.close)
        connection.request(
            method,
            path,
            json.dumps(body),
            {"Authorization": f"Bearer {self.token}"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    def assertRefused(self, method: str, path: str, body: object, message: str):
        status, answer = self.call(method, path, body)
        self.assertEqual(status, 400, answer)
        self.assertIn(message, answer["error"])
        self.assertTrue(echoes(self.port))

    def test_apiChangeNullCiphers(self):
        """
        PUT with ciphers = "NULL": 400 naming the key and OpenSSL's reason.
        """
        self.assertRefused(
            "PUT",
            f"/api/ports/{self.name}",
            {
                "handler": "echo",
                "tls": {
                    "cert": str(self.cert),
                    "key": str(self.key),
                    "ciphers": "NULL",
                },
            },
            "tls.ciphers 'NULL': OpenSSL refuses it: no cipher match",
        )

    def test_apiAddNullCiphers(self):
        """
        POST of a port with the self-signed certificate and ciphers = "NULL".
        """
        self.assertRefused(
            "POST",
            "/api/ports",
            {
                "port": 0,
                "interface": "127.0.0.1",
                "handler": "https",
                "tls": {"ciphers": "NULL"},
            },
            "tls.ciphers 'NULL': OpenSSL refuses it: no cipher match",
        )

    def test_apiNamesFIFO(self):
        """
        A certificate path that is a FIFO with no writer: 400 at once.
        """
        self.assertRefused(
            "PUT",
            f"/api/ports/{self.name}",
            {"handler": "echo", "tls": {"cert": str(self.fifo)}},
            f"cannot read certificate {self.fifo}: not a regular file (a FIFO)",
        )

    def test_apiNamesDevice(self):
        """
        A key path that is /dev/zero: 400 at once, nothing read.
        """
        self.assertRefused(
            "PUT",
            f"/api/ports/{self.name}",
            {"handler": "echo", "tls": {"cert": str(self.cert), "key": "/dev/zero"}},
            "cannot read private key /dev/zero: not a regular file "
            "(a character device)",
        )

    def test_sighupNullCiphers(self):
        """
        SIGHUP after ciphers = "NULL" was written: the reload is refused in
        one line, and the port goes on serving with its old settings.
        """
        self.write('ciphers = "NULL"')
        self.daemon.process.send_signal(signal.SIGHUP)
        self.daemon.waitFor(
            r"reload failed, nothing changed: .*port\[1\]: tls\.ciphers 'NULL': "
            r"OpenSSL refuses it: no cipher match"
        )
        self.assertTrue(echoes(self.port))
        self.assertNotIn("Traceback", "".join(self.daemon.lines))

    def test_sighupFIFO(self):
        """
        SIGHUP after the certificate was replaced by a FIFO: refused at
        once, and the daemon answers.
        """
        self.cert.unlink()
        os.mkfifo(self.cert)
        self.daemon.process.send_signal(signal.SIGHUP)
        self.daemon.waitFor(
            rf"reload failed, nothing changed: .*cannot read certificate "
            rf"{re.escape(str(self.cert))}: not a regular file \(a FIFO\)"
        )
        self.assertTrue(echoes(self.port))


class NotARegularFileTests(SynchronousTestCase):
    """
    Every path the daemon reads (certificate, key, CA, configuration file,
    relay CA, its own admin token) that is a FIFO, a device or a folder is
    refused at once with one line; so is a certificate chain over 1 MiB.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.cert, self.key = certificate(self.folder)
        self.fifo = self.folder / "fifo"
        os.mkfifo(self.fifo)
        self.directory = self.folder / "dir"
        self.directory.mkdir()
        self.kinds = (
            (self.fifo, "not a regular file (a FIFO)"),
            (Path("/dev/zero"), "not a regular file (a character device)"),
            (self.directory, "Is a directory"),
        )

    def check(self, *args: str, toml: str | None = None) -> str:
        """
        C{twistd multiport --check ARGS}, with C{toml} as its configuration
        file: it must fail; its last line.
        """
        if toml is not None:
            config = self.folder / "multiport.toml"
            config.write_text(toml)
            args = ("--config", str(config), *args)
        code, output = twistd(
            "--check",
            "--no-status",
            "--state-dir",
            str(self.folder / "state"),
            *args,
            cwd=self.folder,
        )
        self.assertEqual(code, 1, output)
        self.assertNotIn("Traceback", output)
        return lastLine(output)

    def test_certificate(self):
        """
        The certificate.
        """
        for path, reason in self.kinds:
            self.assertIn(
                f"cannot read certificate {path}: {reason}",
                self.check(toml=tlsPort(f'cert = "{path}", key = "{self.key}"')),
            )

    def test_key(self):
        """
        The key.
        """
        for path, reason in self.kinds:
            self.assertIn(
                f"cannot read private key {path}: {reason}",
                self.check(toml=tlsPort(f'cert = "{self.cert}", key = "{path}"')),
            )

    def test_clientCA(self):
        """
        The client CA file.
        """
        for path, reason in self.kinds:
            self.assertIn(
                f"cannot read client CA file {path}: {reason}",
                self.check(toml=tlsPort(f'client_ca = "{path}"')),
            )

    def test_certDirFile(self):
        """
        A .pem in cert_dir that is a FIFO.
        """
        folder = self.folder / "certs"
        folder.mkdir()
        os.mkfifo(folder / "a.pem")
        self.assertIn(
            f"cannot read certificate {folder / 'a.pem'}: not a regular file (a FIFO)",
            self.check(toml=tlsPort(f'cert_dir = "{folder}"')),
        )

    def test_configurationFile(self):
        """
        The configuration file.
        """
        for path, reason in self.kinds:
            self.assertEqual(
                self.check("--config", str(path)),
                f"multiport: {path}: cannot read: {reason}",
            )

    def test_commandLineCertificate(self):
        """
        --tls-cert.
        """
        self.assertIn(
            f"cannot read certificate {self.fifo}: not a regular file (a FIFO)",
            self.check("--tls-cert", str(self.fifo), "--ports", "127.0.0.1:0=https"),
        )

    def test_relayCA(self):
        """
        The relay's upstream_ca.
        """
        for path, reason in self.kinds:
            toml = (
                '[[port]]\nport = 0\ninterface = "127.0.0.1"\nhandler = "relay"\n'
                "[port.options]\n"
                f'upstream = "127.0.0.1:1"\nupstream_tls = true\n'
                f'upstream_ca = "{path}"\n'
            )
            self.assertIn(
                f"port[1].options.upstream_ca: '{path}': {reason}",
                self.check(toml=toml),
            )

    def test_adminTokenFile(self):
        """
        The daemon's own admin token in its state directory, at a start as
        at --check.
        """
        state = self.folder / "state"
        state.mkdir()
        os.mkfifo(state / "admin-token")
        message = (
            f"cannot read the admin token {state / 'admin-token'}: "
            "not a regular file (a FIFO)"
        )
        self.assertIn(message, self.check("--ports", "127.0.0.1:0=echo"))
        code, output = twistd(
            "--ports",
            "127.0.0.1:0=echo",
            "--no-status",
            "--state-dir",
            str(state),
            cwd=self.folder,
        )
        self.assertEqual(code, 1, output)
        self.assertIn(message, lastLine(output))

    def test_chainOverOneMiB(self):
        """
        A certificate file over 1 MiB (a chain no server sends) is refused;
        one just under is read.
        """
        pem = self.cert.read_bytes()
        copies = (1 << 20) // len(pem)
        self.cert.write_bytes(pem * copies)
        code, output = twistd(
            "--check",
            "--no-status",
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
            "--ports",
            "127.0.0.1:0=https",
            "--state-dir",
            str(self.folder / "state"),
            cwd=self.folder,
        )
        self.assertEqual(code, 0, output)
        self.cert.write_bytes(pem * (copies + 1))
        self.assertIn(
            f"cannot read certificate {self.cert}: larger than 1 MiB",
            self.check(
                "--tls-cert",
                str(self.cert),
                "--tls-key",
                str(self.key),
                "--ports",
                "127.0.0.1:0=https",
            ),
        )

    def test_startWithFIFOCertificate(self):
        """
        A real start (not --check) with a FIFO as the certificate ends at
        once with the one line.
        """
        config = self.folder / "multiport.toml"
        config.write_text(tlsPort(f'cert = "{self.fifo}"'))
        started = time.monotonic()
        code, output = twistd(
            "--config",
            str(config),
            "--no-status",
            "--state-dir",
            str(self.folder / "state"),
            cwd=self.folder,
        )
        self.assertEqual(code, 1, output)
        self.assertIn(
            f"cannot read certificate {self.fifo}: not a regular file (a FIFO)",
            lastLine(output),
        )
        self.assertLess(time.monotonic() - started, WAIT)


def closeNotifyThenReset(port: int) -> int:
    """
    What C{curl -k} does, made certain: a TLS client echoes a ping, sends
    its close_notify and closes its socket at once without reading the
    server's (here with a reset, as its kernel answers the unread bytes);
    the client's port.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    local = raw.getsockname()[1]
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = unverified().wrap_bio(incoming, outgoing, server_hostname="localhost")

    def flush() -> None:
        data = outgoing.read()
        if data:
            raw.sendall(data)

    def read() -> None:
        flush()
        chunk = raw.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        incoming.write(chunk)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            read()
    tls.write(b"ping")
    received = b""
    while len(received) < 4:
        try:
            received += tls.read(4)
        except ssl.SSLWantReadError:
            read()
    assert received == b"ping", received
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    flush()
    abortOnClose(raw)
    raw.close()
    return local


def abortOnClose(connection: socket.socket) -> None:
    """
    Make closing C{connection} send a reset.
    """
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class HandshakeLogTests(SynchronousTestCase):
    """
    The connection log says why a TLS handshake failed, answers plain HTTP
    sent to a TLS port as nginx does, and calls a close after a
    close_notify clean.
    """

    def setUp(self) -> None:
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        self.daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--ports",
                "127.0.0.1:0=echo+tls,127.0.0.1:0=https,127.0.0.1:0=daytime+tls",
            ],
            str(folder),
        )
        self.addCleanup(self.daemon.stop)
        self.echo, self.https, self.daytime = [
            int(m.group(2)) for m in self.daemon.waitFor(LISTENING, 3)
        ]

    def closed(self, local: int) -> str:
        """
        The rest of the log line of the connection from C{local}: from its
        reason on.
        """
        [match] = self.daemon.waitFor(rf"127\.0\.0\.1:{local} closed (.*)$")
        return match.group(1)

    def handshake(self, context: ssl.SSLContext, port: int) -> int:
        """
        A handshake with C{context} that the port refuses; the client's
        port.
        """
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(raw.close)
        local = raw.getsockname()[1]
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            context.wrap_socket(raw, server_hostname="localhost").close()
        return local

    def test_oldProtocol(self):
        """
        A TLS 1.0 client: OpenSSL's "unsupported protocol".  (The reason
        itself shows the client sent a TLS 1.0 hello: a client that could
        not would have sent nothing.)
        """
        context = unverified()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("ALL:@SECLEVEL=0")
        local = self.handshake(context, self.echo)
        self.assertRegex(
            self.closed(local),
            r"^error after .*, TLS handshake failed: unsupported protocol$",
        )

    def test_noSharedCipher(self):
        """
        A TLS 1.2 client offering only a cipher the port does not (static
        RSA key exchange): "no shared cipher".
        """
        context = unverified()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("AES128-SHA")
        local = self.handshake(context, self.echo)
        self.assertRegex(
            self.closed(local),
            r"^error after .*, TLS handshake failed: no shared cipher$",
        )

    def plain(self, port: int, *parts: bytes) -> tuple[int, bytes]:
        """
        Send C{parts} in plain text, read to the end; the client's port
        and what came back.
        """
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(connection.close)
        local = connection.getsockname()[1]
        for part in parts:
            connection.sendall(part)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return local, received

    def test_plainHTTP(self):
        """
        Plain HTTP to a TLS port gets a 400 saying so, then the connection
        closes; the log says why.
        """
        local, answer = self.plain(self.https, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertEqual(head.split(b"\r\n")[0], b"HTTP/1.1 400 Bad Request")
        self.assertEqual(body, PLAIN_HTTP_MESSAGE.encode() + b"\n")
        self.assertRegex(
            self.closed(local),
            r"^error after .*, TLS handshake failed: plain HTTP sent to a TLS port$",
        )

    def test_notTLS(self):
        """
        Something that is neither TLS nor HTTP is closed unanswered.
        """
        local, answer = self.plain(self.echo, b"SSH-2.0-OpenSSH_9.6\r\n")
        self.assertEqual(answer, b"")
        self.assertRegex(
            self.closed(local),
            r"^error after .*, TLS handshake failed: not TLS \(it began "
            r"b'SSH-2.0-'\)$",
        )

    def test_closeNotifyThenReset(self):
        """
        A client that sends close_notify and closes with a reset (curl's
        way) closed clean.
        """
        for _ in range(5):
            local = closeNotifyThenReset(self.echo)
            self.assertRegex(self.closed(local), r"^clean after ")

    def test_serverClosesFirst(self):
        """
        A port that ends the connection itself (daytime: its close_notify
        goes out) and a client that then closes its socket without one of
        its own: clean.
        """
        raw = socket.create_connection(("127.0.0.1", self.daytime), timeout=10)
        local = raw.getsockname()[1]
        with unverified().wrap_socket(raw, server_hostname="localhost") as connection:
            received = b""
            while chunk := connection.recv(100):
                received += chunk
        self.assertTrue(received.endswith(b"-UTC\r\n"), received)
        self.assertRegex(self.closed(local), r"^clean after ")

    def test_resetWithoutCloseNotify(self):
        """
        The control: a reset with no close_notify is still a reset.
        """
        raw = socket.create_connection(("127.0.0.1", self.echo), timeout=10)
        local = raw.getsockname()[1]
        connection = unverified().wrap_socket(raw, server_hostname="localhost")
        connection.sendall(b"ping")
        self.assertEqual(connection.recv(4), b"ping")
        abortOnClose(connection)
        connection.close()
        self.assertRegex(self.closed(local), r"^reset after ")

    def keptAlive(self, request: bytes) -> int:
        """
        Send C{request} over TLS (HTTP/1.1: no ALPN) to the https port, read
        the whole answer if it was a whole request, then close the socket
        without a close_notify (Python's own C{SSLSocket.close}, as many
        clients do); the client's port.
        """
        raw = socket.create_connection(("127.0.0.1", self.https), timeout=10)
        local = raw.getsockname()[1]
        connection = unverified().wrap_socket(raw, server_hostname="localhost")
        connection.sendall(request)
        if request.endswith(b"\r\n\r\n"):
            answer = http.client.HTTPResponse(connection)  # type: ignore[arg-type]
            answer.begin()
            self.assertEqual((answer.status, answer.will_close), (200, False))
            answer.read()
        connection.close()
        return local

    def test_keepAliveClosedWithoutCloseNotify(self):
        """
        An HTTP/1.1 client that ends a kept-alive connection between
        requests without a close_notify closed clean (RFC 9112 section 9.8:
        servers should expect that).
        """
        local = self.keptAlive(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertRegex(self.closed(local), r"^clean after ")

    def test_halfRequestClosedWithoutCloseNotify(self):
        """
        The control: one that leaves that way in the middle of a request
        head is a reset.
        """
        local = self.keptAlive(b"GET / HTTP/1.1\r\nHo")
        self.assertRegex(self.closed(local), r"^reset after ")

    def test_curl(self):
        """
        Ordinary C{curl -k} requests all close clean (curl speaks HTTP/2
        here, and ends without a close_notify).
        """
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed: apt-get install curl")
        url = f"https://127.0.0.1:{self.https}/"
        for _ in range(20):
            subprocess.run(
                ["curl", "-sk", "-o", "/dev/null", url], check=True, timeout=WAIT
            )
        endings = [
            m.group(1)
            for m in self.daemon.waitFor(
                rf"tcp:127\.0\.0\.1:{self.https} https \S+ closed (\w+)", 20
            )
        ]
        self.assertEqual(endings, ["clean"] * 20)


class PlainHTTPLikeNginxTests(SynchronousTestCase):
    """
    The anchor: nginx's answer to plain HTTP on its TLS port, and ours to
    the same bytes.
    """

    def test_sameAnswer(self):
        """
        The same status line, the same sentence in the body, and the
        connection closed after it.
        """
        from benchmarks import servers, tools

        if not tools.have("nginx"):
            raise SkipTest(f"nginx is not installed: {tools.INSTALL['nginx']}")
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--ports",
                "127.0.0.1:0=https",
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        [match] = daemon.waitFor(LISTENING)
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        answers = []
        with servers.nginx(folder, freePort(), tls=True) as nginx:
            for port in (nginx.port, int(match.group(2))):
                connection = socket.create_connection(("127.0.0.1", port), timeout=10)
                self.addCleanup(connection.close)
                connection.sendall(request)
                received = b""
                while chunk := connection.recv(65536):
                    received += chunk
                answers.append(received)
        statusLines = [answer.split(b"\r\n")[0] for answer in answers]
        self.assertEqual(statusLines, [b"HTTP/1.1 400 Bad Request"] * 2)
        for answer in answers:
            self.assertIn(PLAIN_HTTP_MESSAGE.encode(), answer)
            self.assertIn(b"\r\nConnection: close\r\n", answer)
