"""
The C{[acme]} table and a port's C{tls.acme} names, validated once.

Only the names a configuration lists are ever ordered: nothing here (or
anywhere) orders a certificate for a name a client asks for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from attrs import frozen
from cryptography import x509

from multiport.config.files import FileError, readRegularFile
from multiport.config.model import numericHost
from multiport.errors import ConfigError, knownTable, typeName

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
#: Directory names a user may give instead of a URL.
DIRECTORIES: Mapping[str, str] = {
    "letsencrypt": LETSENCRYPT,
    "letsencrypt-staging": LETSENCRYPT_STAGING,
}
HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
#: Every challenge multiport answers, in the order it prefers them: the
#: TLS port answers TLS-ALPN-01 itself, with no other port needed.
CHALLENGES = (TLS_ALPN_01, HTTP_01)
#: The C{[acme]} key of each of L{AcmeConfig}'s attributes.
_KEY_OF = {
    "email": "email",
    "directory": "directory",
    "directoryCA": "directory_ca",
    "challenges": "challenges",
    "httpPort": "http_port",
}
KEYS = set(_KEY_OF.values())

# RFC 1123 labels; an ACME CA issues only for names in public DNS, but a
# test CA resolves anything, so no public-suffix check is made here.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@frozen
class AcmeConfig:
    """
    How certificates are ordered.

    @ivar email: The account's contact address, or C{None}.
    @ivar directory: The ACME directory URL.
    @ivar directoryCA: A PEM file trusted for the directory's own HTTPS
        (a private or test CA), or C{None} for the system's trust.
    @ivar challenges: The challenge types tried, in order of preference.
    @ivar httpPort: Where a challenge-only responder listens for HTTP-01
        when no C{http} port is configured.
    """

    email: str | None = None
    directory: str = LETSENCRYPT
    directoryCA: Path | None = None
    challenges: tuple[str, ...] = CHALLENGES
    httpPort: int = 80

    @property
    def directoryHost(self) -> str:
        """
        The directory's host (and port, when not the default), the folder
        its account and certificates are kept under.
        """
        parts = urlsplit(self.directory)
        host = parts.hostname or "directory"
        return host if parts.port is None else f"{host}_{parts.port}"


def changedKeys(old: AcmeConfig, new: AcmeConfig) -> list[str]:
    """
    The C{[acme]} keys whose values differ from C{old} to C{new}.
    """
    return [
        key for name, key in _KEY_OF.items() if getattr(old, name) != getattr(new, name)
    ]


def parseAcmeTable(value: object, where: str, base: Path) -> AcmeConfig:
    """
    An C{[acme]} table read from TOML (or JSON).

    @param base: The folder a relative C{directory_ca} is resolved against.
    @raise ConfigError: naming the bad key.
    """
    value = knownTable(value, where, KEYS)
    email = value.get("email")
    if email is not None and (
        not isinstance(email, str)
        or "@" not in email
        or any(c.isspace() for c in email)
    ):
        raise ConfigError(f"{where}.email", f"expected an email address, got {email!r}")
    directory = value.get("directory", LETSENCRYPT)
    if not isinstance(directory, str):
        raise ConfigError(
            f"{where}.directory",
            f"expected a URL or {' or '.join(map(repr, DIRECTORIES))}, got "
            f"{typeName(directory)} {directory!r}",
        )
    directory = DIRECTORIES.get(directory, directory)
    parts = urlsplit(directory)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            f"{where}.directory",
            f"expected an https URL or {' or '.join(map(repr, DIRECTORIES))}, got "
            f"{directory!r}",
        )
    directoryCA = None
    if "directory_ca" in value:
        given = value["directory_ca"]
        if not isinstance(given, str) or not given:
            raise ConfigError(
                f"{where}.directory_ca", f"expected a PEM file's path, got {given!r}"
            )
        directoryCA = base / given
    challenges = CHALLENGES
    if "challenges" in value:
        listed = value["challenges"]
        if (
            not isinstance(listed, list)
            or not listed
            or any(c not in CHALLENGES for c in listed)
            or len(set(listed)) != len(listed)
        ):
            raise ConfigError(
                f"{where}.challenges",
                f"expected a list of {' and '.join(map(repr, CHALLENGES))} without "
                f"repeats, got {listed!r}",
            )
        challenges = tuple(listed)
    httpPort = value.get("http_port", 80)
    if type(httpPort) is not int or not 1 <= httpPort <= 65535:
        raise ConfigError(
            f"{where}.http_port", f"expected a port from 1 to 65535, got {httpPort!r}"
        )
    return AcmeConfig(
        email=email,
        directory=directory,
        directoryCA=directoryCA,
        challenges=challenges,
        httpPort=httpPort,
    )


#: The largest directory_ca file read (a system bundle is a few hundred KiB).
MAX_CA_FILE = 1 << 20


def checkDirectoryCA(acme: AcmeConfig, where: str) -> None:
    """
    Check that C{acme}'s C{directory_ca} holds PEM certificates, without
    contacting anyone (at start and for C{--check}).

    @raise ConfigError: naming C{where} and the file.
    """
    if acme.directoryCA is None:
        return
    try:
        data = readRegularFile(acme.directoryCA, MAX_CA_FILE, "directory CA file")
        x509.load_pem_x509_certificates(data)
    except FileError as e:
        raise ConfigError(where, str(e)) from None
    except ValueError as e:
        raise ConfigError(
            where, f"no PEM certificate in {acme.directoryCA}: {e}"
        ) from None


def parseAcmeNames(value: object, where: str) -> tuple[str, ...]:
    """
    A port's C{tls.acme}: the DNS names its certificate is ordered for.

    @raise ConfigError: naming the bad entry.
    """
    if not isinstance(value, list) or not value:
        raise ConfigError(
            where, f"expected a non-empty array of DNS names, got {value!r}"
        )
    names: list[str] = []
    for index, name in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(name, str):
            raise ConfigError(here, f"expected a DNS name, got {typeName(name)}")
        if name.startswith("*."):
            raise ConfigError(
                here,
                f"{name!r}: wildcard names need DNS-01, which multiport does not "
                "answer",
            )
        if numericHost(name) is not None:
            raise ConfigError(here, f"{name!r} is an address, not a DNS name")
        labels = name.split(".")
        if (
            name != name.lower()
            or len(name) > 253
            or len(labels) < 2
            or not all(_LABEL.match(label) for label in labels)
        ):
            raise ConfigError(
                here, f"{name!r} is not a lowercase fully qualified DNS name"
            )
        if name in names:
            raise ConfigError(here, f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)
