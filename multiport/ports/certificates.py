"""
The certificates of a configuration's TLS ports, loaded in one place: at
start, for C{--check}, for a port added while running, and again on a
reload (which notices a renewed certificate file by its fingerprint).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from pathlib import Path

from multiport.config.model import PortConfig, TLSConfig
from multiport.errors import ConfigError
from multiport.ports.tls import (
    LoadedCertificate,
    TLSError,
    certificateFromPEM,
    ensureSelfSigned,
    loadCertificate,
    previewSelfSigned,
    usingSelfSigned,
)


class SelfSigned(enum.Enum):
    """
    What to do for ports served with the self-signed certificate.
    """

    #: Make it in the state directory if it is not there, then load it.
    MAKE = "make"
    #: Build contexts from what a start would serve, writing nothing
    #: (C{--check}).
    PREVIEW = "preview"
    #: Leave those ports out (the command line's first pass: the
    #: certificate is made by makeService, which knows C{--uid}).
    SKIP = "skip"


def _portWhere(port: PortConfig) -> str:
    return port.where


class CertificateLoader:
    """
    Loads the certificates of TLS ports.

    @ivar selfSignedMade: After a L{SelfSigned.PREVIEW} load: whether the
        self-signed certificate would be made at the first start (none
        usable is kept in the state directory).
    """

    selfSignedMade = False

    def __init__(
        self,
        stateDir: Path,
        owner: tuple[int, int] | None = None,
        selfSigned: SelfSigned = SelfSigned.MAKE,
        where: Callable[[PortConfig], str] = _portWhere,
    ) -> None:
        """
        @param owner: The uid and gid a self-signed certificate made here
            is given to.
        @param where: Where a port's certificate was named, for errors.
        """
        self.stateDir = stateDir
        self.owner = owner
        self.selfSigned = selfSigned
        self.where = where

    def load(self, ports: Iterable[PortConfig]) -> dict[TLSConfig, LoadedCertificate]:
        """
        The certificate of every TLS port in C{ports}, read (again) from
        its files.

        @raise ConfigError: naming the port whose certificate can't be used.
        """
        certificates: dict[TLSConfig, LoadedCertificate] = {}
        made: LoadedCertificate | None = None
        preview: tuple[bytes, bytes, bool] | None = None
        for port in ports:
            tls = port.tls
            if tls is None or tls in certificates:
                continue
            try:
                if not tls.selfSigned:
                    certificates[tls] = loadCertificate(tls)
                elif self.selfSigned is SelfSigned.PREVIEW:
                    if preview is None:
                        preview = previewSelfSigned(self.stateDir)
                        self.selfSignedMade = preview[2]
                    certificates[tls] = certificateFromPEM(
                        usingSelfSigned(tls, self.stateDir), *preview[:2]
                    )
                elif self.selfSigned is SelfSigned.MAKE:
                    if made is None:
                        # Made (or loaded) once, whatever settings ports give it.
                        made = ensureSelfSigned(self.stateDir, self.owner)
                    certificates[tls] = (
                        made
                        if tls == TLSConfig()
                        else loadCertificate(usingSelfSigned(tls, self.stateDir))
                    )
            except TLSError as e:
                raise ConfigError(self.where(port), str(e)) from None
        return certificates


def loadCertificates(
    ports: Iterable[PortConfig],
    stateDir: Path,
    owner: tuple[int, int] | None = None,
) -> dict[TLSConfig, LoadedCertificate]:
    """
    Read (again) the certificate of every TLS port in C{ports}, making the
    self-signed one in C{stateDir} if a port uses it and it is not there.

    @raise ConfigError: naming the port whose certificate can't be used.
    """
    return CertificateLoader(stateDir, owner).load(ports)


def makeSelfSigned(
    ports: Iterable[PortConfig],
    stateDir: Path,
    owner: tuple[int, int] | None = None,
) -> dict[TLSConfig, LoadedCertificate]:
    """
    L{loadCertificates} for the ports of C{ports} served with the
    self-signed certificate: made in C{stateDir} if it is not there.

    @raise ConfigError: if it can't be made or read.
    """
    return loadCertificates(
        [p for p in ports if p.tls is not None and p.tls.selfSigned], stateDir, owner
    )


__all__ = ["CertificateLoader", "SelfSigned", "loadCertificates", "makeSelfSigned"]
