"""
What live changes need around the service tree: certificates for ports
configured while running, the admin API's token, and SIGHUP.
"""

from __future__ import annotations

import hmac
import os
import secrets
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from multiport.config import PortConfig, TLSConfig
from multiport.errors import ConfigError
from multiport.signals import OnSignal
from multiport.tls import (
    LoadedCertificate,
    TLSError,
    ensureSelfSigned,
    loadCertificate,
    usingSelfSigned,
)

log = Logger()

#: The admin token's file in the state directory.
TOKEN_FILE = "admin-token"


def loadCertificates(
    ports: Iterable[PortConfig],
    stateDir: Path,
    owner: tuple[int, int] | None = None,
) -> dict[TLSConfig, LoadedCertificate]:
    """
    Read (again) the certificate of every TLS port in C{ports}: a reload
    notices a renewed certificate file by its fingerprint.

    @raise ConfigError: naming the port whose certificate can't be used.
    """
    certificates: dict[TLSConfig, LoadedCertificate] = {}
    made: LoadedCertificate | None = None
    for port in ports:
        tls = port.tls
        if tls is None or tls in certificates:
            continue
        try:
            if not tls.selfSigned:
                certificates[tls] = loadCertificate(tls)
                continue
            if made is None:
                # Made (or loaded) once, whatever settings ports give it.
                made = ensureSelfSigned(stateDir, owner)
            certificates[tls] = (
                made
                if tls == TLSConfig()
                else loadCertificate(usingSelfSigned(tls, stateDir))
            )
        except TLSError as e:
            raise ConfigError(port.where, str(e)) from None
    return certificates


def ensureAdminToken(stateDir: Path, owner: tuple[int, int] | None = None) -> str:
    """
    The admin API's bearer token, kept in C{stateDir/admin-token} (mode
    0600, owned by the daemon's user): made on first start, the same after.

    @raise OSError: if it can't be read or written.
    """
    path = stateDir / TOKEN_FILE
    try:
        token = path.read_text("ascii").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
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
    log.info("made the admin API token {path}", path=str(path))
    return token


def tokenMatches(expected: str | None, given: str) -> bool:
    """
    Whether C{given} is the token, compared in constant time.
    """
    if not expected:
        return False
    return hmac.compare_digest(
        expected.encode("ascii"), given.encode("ascii", "replace")
    )


class ReloadOnHangup(OnSignal):
    """
    Calls C{reload} on the reactor's thread when the process gets SIGHUP,
    while running.
    """

    def __init__(self, reload: Callable[[], object], reactor: Any) -> None:
        super().__init__(signal.SIGHUP, reload, reactor)
