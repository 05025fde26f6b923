"""
A real ACME server for tests: Let's Encrypt's pebble with its
pebble-challtestsrv answering every name with 127.0.0.1, on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import accepting, waitUntil


def freeTCPPort() -> int:
    """
    A TCP port number nothing listens on now on 127.0.0.1.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def freeUDPPort() -> int:
    """
    A UDP port number nothing is bound to now on 127.0.0.1.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serverCertificate(folder: Path) -> tuple[Path, Path]:
    """
    A certificate for pebble's own HTTPS (the Debian package ships none):
    127.0.0.1 and localhost, self-signed; also the CA a client trusts.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    certPath, keyPath = folder / "pebble-cert.pem", folder / "pebble-key.pem"
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certPath, keyPath


def available() -> str | None:
    """
    Why pebble can't run here, or C{None} if it can.
    """
    for program in ("pebble", "pebble-challtestsrv"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install pebble)"
    return None


class Pebble:
    """
    pebble and pebble-challtestsrv, started for one test.

    @ivar directory: The ACME directory URL.
    @ivar ca: The file to trust for pebble's own HTTPS.
    """

    def __init__(self, folder: Path, httpPort: int, tlsPort: int) -> None:
        folder = folder.absolute()
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca, key = serverCertificate(folder)
        self.port = freeTCPPort()
        self.management = freeTCPPort()
        dns = freeUDPPort()
        self.challtestsrv = freeTCPPort()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(self.ca),
                "privateKey": str(key),
                "httpPort": httpPort,
                "tlsPort": tlsPort,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        configPath = folder / "pebble-config.json"
        configPath.write_text(json.dumps(config))
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        # No reuse of valid authorizations (a failed renewal must really be
        # validated again) and no rejected nonces (fewer retries to wait for).
        environ = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_AUTHZREUSE": "0",
            "PEBBLE_WFE_NONCEREJECT": "0",
        }
        environ.pop("PEBBLE_VA_ALWAYS_VALID", None)
        self.log = (folder / "pebble.log").open("wb")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.processes.append(
            subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-dns01",
                    f"127.0.0.1:{dns}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-defaultIPv6",
                    "",
                    "-management",
                    f"127.0.0.1:{self.challtestsrv}",
                ],
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        )
        self.processes.append(
            subprocess.Popen(
                [
                    "pebble",
                    "-config",
                    str(configPath),
                    "-dnsserver",
                    f"127.0.0.1:{dns}",
                ],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        )
        waitUntil(
            lambda: all(
                accepting(p) for p in (self.port, self.management, self.challtestsrv)
            ),
            20,
        )

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def root(self) -> bytes:
        """
        The root pebble issues under (PEM), from its management interface.
        """
        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, context=self._context(), timeout=10) as r:
            data: bytes = r.read()
        return data

    def output(self) -> str:
        """
        What pebble and pebble-challtestsrv logged.
        """
        self.log.flush()
        return (self.folder / "pebble.log").read_text(errors="replace")

    def stop(self) -> None:
        """
        Stop both processes.
        """
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log.close()


def startPebble(testCase: Any, httpPort: int, tlsPort: int) -> Pebble:
    """
    A pebble for C{testCase}, stopped when it ends; skips without one.
    """
    reason = available()
    if reason is not None:
        raise testCase.skipTest(reason)
    pebble = Pebble(Path(testCase.mktemp()), httpPort, tlsPort)
    testCase.addCleanup(pebble.stop)
    return pebble
