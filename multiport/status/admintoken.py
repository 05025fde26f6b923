"""
The admin API's bearer token: where it comes from, and how it is checked.

The operator gives it (C{--admin-token-file PATH}, or the environment
variable C{MULTIPORT_ADMIN_TOKEN}); only without both does the daemon make
one, kept in its state directory.  The daemon and C{multiport-ctl} read it
the same way, so this module imports nothing heavy.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from multiport.config.files import FileError, readRegularFile, whyNotWritable
from multiport.errors import ConfigError

#: The token's file in the state directory, when the daemon makes one.
TOKEN_FILE = "admin-token"

#: The environment variable that gives the token.
ENVIRONMENT = "MULTIPORT_ADMIN_TOKEN"

#: The option that names a file holding the token.
FILE_OPTION = "--admin-token-file"

#: A token file is a line of text: anything larger is not one (and reading
#: a device such as /dev/zero would never end).
MAX_TOKEN_FILE = 4096


def checkToken(token: str, where: str) -> str:
    """
    C{token} stripped, if it can be sent in an HTTP header.

    @param where: Where it came from, for the error.
    @raise ConfigError: if it is empty, or holds white space or anything
        but printable ASCII.
    """
    token = token.strip()
    if not token:
        raise ConfigError(where, "the admin token is empty")
    if not all("!" <= c <= "~" for c in token):
        raise ConfigError(
            where, "the admin token must be printable ASCII without spaces"
        )
    return token


def readTokenFile(path: Path, where: str) -> str:
    """
    The token in the file C{path}.

    @param where: Where the path came from, for the error.
    @raise ConfigError: naming C{where} and the path, if it is not a
        readable regular file of at most L{MAX_TOKEN_FILE} bytes holding a
        token.
    """
    try:
        data = readRegularFile(path, MAX_TOKEN_FILE, "the admin token")
    except FileError as e:
        raise ConfigError(where, str(e)) from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(where, f"the admin token {path} is not ASCII text") from None
    return checkToken(text, f"{where} {path}")


def givenToken(
    tokenFile: str | None, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """
    The token the operator gave, and where it came from: C{tokenFile} (the
    value of L{FILE_OPTION}) first, else the environment variable
    L{ENVIRONMENT}; L{None} when neither gives one.

    @raise ConfigError: naming the file or the variable, if what it gives
        is not a token.
    """
    if tokenFile is not None:
        return readTokenFile(Path(tokenFile), FILE_OPTION), f"{FILE_OPTION} {tokenFile}"
    if ENVIRONMENT in environ:
        return checkToken(environ[ENVIRONMENT], ENVIRONMENT), ENVIRONMENT
    return None


def _keptToken(path: Path) -> str | None:
    """
    The token in the daemon's own file C{path}, or C{None} if there is
    none yet.

    @raise FileError: if it is there but can't be read (not a regular file,
        too large).
    @raise ConfigError: if what it holds is not a token.
    """
    try:
        kept = readRegularFile(path, MAX_TOKEN_FILE, "the admin token").strip()
    except FileError as e:
        # Not there (nor, perhaps, its folder): it will be made, or fail
        # to be, with a reason about writing.
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
        return None
    if not kept:
        return None
    return checkToken(kept.decode("ascii", "replace"), str(path))


def ensureAdminToken(stateDir: Path, owner: tuple[int, int] | None = None) -> str:
    """
    The token the daemon keeps in C{stateDir/admin-token} (mode 0600, owned
    by the daemon's user): made on first start, the same after.

    @raise OSError: if it can't be written.
    @raise FileError: if it is there but can't be read (not a regular file,
        too large).
    @raise ConfigError: if what it holds is not a token.
    """
    path = stateDir / TOKEN_FILE
    kept = _keptToken(path)
    if kept is not None:
        return kept
    stateDir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, token.encode("ascii") + b"\n")
        if owner is not None:
            os.fchown(descriptor, *owner)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    return token


def checkAdminToken(stateDir: Path) -> str | None:
    """
    Whether L{ensureAdminToken} would work, asked without writing (for
    C{--check}): C{None} if it would, else why the token could not be
    written, in the system's words.

    @raise FileError: as L{ensureAdminToken}.
    @raise ConfigError: as L{ensureAdminToken}.
    """
    if _keptToken(stateDir / TOKEN_FILE) is not None:
        return None
    return whyNotWritable(stateDir)


def tokenMatches(expected: str | None, given: str) -> bool:
    """
    Whether C{given} is the token, compared in constant time.
    """
    if not expected:
        return False
    return hmac.compare_digest(
        expected.encode("ascii"), given.encode("ascii", "replace")
    )


def isLoopback(interface: str) -> bool:
    """
    Whether a listener on the numeric address C{interface} can be reached
    only from this machine (C{127.0.0.0/8}, C{::1}, and IPv4 loopback
    written as an IPv6-mapped address).
    """
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
