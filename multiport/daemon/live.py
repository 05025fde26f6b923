"""
What live changes need around the service tree: certificates for ports
configured while running, and SIGHUP.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from multiport.config.model import PortConfig, TLSConfig
from multiport.daemon.signals import OnSignal
from multiport.errors import ConfigError
from multiport.ports.tls import (
    LoadedCertificate,
    TLSError,
    ensureSelfSigned,
    loadCertificate,
    usingSelfSigned,
)

log = Logger()


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


class ReloadOnHangup(OnSignal):
    """
    Calls C{reload} on the reactor's thread when the process gets SIGHUP,
    while running.
    """

    def __init__(self, reload: Callable[[], object], reactor: Any) -> None:
        super().__init__(signal.SIGHUP, reload, reactor)
