"""
The configuration model: every port the daemon serves, validated once.

The command line (L{multiport.config.portspec}) and the TOML file
(L{multiport.config.tomlfile}) each turn their input into L{PortRequest}s: what
the user asked for, not yet checked against the handlers or the network.
L{multiport.config.build.buildConfig} turns those into one immutable
L{Config}; every error is a L{ConfigError} that names the bad value and
where it came from.  Everything after this module trusts the model.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from attrs import field, frozen

from multiport.errors import ConfigError, typeName
from multiport.ports.policies import Policy

if TYPE_CHECKING:
    from multiport.acme.config import AcmeConfig

#: The handler a bare port number gets, as in /etc/services.
WELL_KNOWN_PORTS: Mapping[int, str] = MappingProxyType(
    {
        7: "echo",
        9: "discard",
        13: "daytime",
        17: "qotd",
        19: "chargen",
        80: "http",
        443: "https",
        8080: "http",
        8443: "https",
    }
)

#: The transport protocols a port may use; C{"tcp"} unless said.
PROTOCOLS = ("tcp", "udp")

DEFAULT_PORTS = "8080,8443"
DEFAULT_INTERFACE = "0.0.0.0"
#: nginx's default on Linux; the kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 511
#: The largest backlog Linux takes (somaxconn's own limit).
MAX_BACKLOG = 65535


@frozen
class TLSConfig:
    """
    How a TLS port does TLS: its certificate and settings.  C{None} means
    "not set here" (a port's C{tls} table is laid over C{[defaults].tls}).

    @ivar cert: A PEM file: the certificate first, then any chain
        certificates; it may hold the private key too.  C{None} means the
        self-signed certificate kept in the state directory.
    @ivar key: A PEM file with the private key, or C{None} when the key sits
        in C{cert} (or for the self-signed certificate).
    @ivar minVersion: The oldest TLS version accepted, C{"1.2"} (by
        default) or C{"1.3"}.
    @ivar ciphers: An OpenSSL cipher string for TLS 1.2.
    @ivar alpn: ALPN protocols offered besides the handler's own.
    @ivar handshakeTimeout: Seconds a client has to finish its handshake.
    @ivar sni: Certificates by server name (C{*.example.com} wildcards
        too): (name, cert, key) triples.
    @ivar certDir: A folder of PEM files (certificate and key in each),
        served by the names in their subjectAltName.
    @ivar clientCA: PEM file of the CAs client certificates must come from.
    @ivar clientAuth: C{"required"} (the default with C{clientCA}) or
        C{"optional"}.
    @ivar acme: The DNS names to order a certificate for with ACME
        (L{multiport.acme}); until it is issued, the self-signed one serves.
    """

    cert: Path | None = None
    key: Path | None = None
    minVersion: str | None = None
    ciphers: str | None = None
    alpn: tuple[str, ...] | None = None
    handshakeTimeout: float | None = None
    sni: tuple[tuple[str, Path, Path | None], ...] | None = None
    certDir: Path | None = None
    clientCA: Path | None = None
    clientAuth: str | None = None
    acme: tuple[str, ...] | None = None

    def over(self, base: TLSConfig) -> TLSConfig:
        """
        These settings laid over C{base}; a certificate comes with its key.
        """
        cert, key = (
            (base.cert, base.key)
            if self.cert is None and self.acme is None
            else (self.cert, self.key)
        )
        return TLSConfig(
            cert=cert,
            key=key,
            minVersion=base.minVersion if self.minVersion is None else self.minVersion,
            ciphers=base.ciphers if self.ciphers is None else self.ciphers,
            alpn=base.alpn if self.alpn is None else self.alpn,
            handshakeTimeout=base.handshakeTimeout
            if self.handshakeTimeout is None
            else self.handshakeTimeout,
            sni=base.sni if self.sni is None else self.sni,
            certDir=base.certDir if self.certDir is None else self.certDir,
            clientCA=base.clientCA if self.clientCA is None else self.clientCA,
            clientAuth=base.clientAuth if self.clientAuth is None else self.clientAuth,
            acme=self.acme,
        )

    @property
    def selfSigned(self) -> bool:
        """
        Whether this is the generated self-signed certificate.
        """
        return self.cert is None

    def describe(self) -> str:
        """
        A short human description of where the certificate comes from.
        """
        if self.acme is not None:
            return f"ACME for {', '.join(self.acme)} (self-signed until issued)"
        if self.cert is None:
            return "self-signed"
        if self.key is None:
            return str(self.cert)
        return f"{self.cert} (key {self.key})"


def _frozenMapping(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(value))


@frozen
class PortRequest:
    """
    One port as an edge read it, before validation against the handlers and
    the network.  C{None} means "not said here": a default applies.

    @ivar where: Where it came from, for error messages
        (C{--ports item 2 "7000=echo"}, C{multiport.toml: port[1]}).
    @ivar optionsBase: The folder relative paths in handler options resolve
        against.
    """

    where: str
    port: int
    host: str | None = None
    handler: str | None = None
    tls: bool | TLSConfig | None = None
    backlog: int | None = None
    logConnections: bool | None = None
    policy: Policy = Policy()
    inheritPolicy: bool = True
    options: Mapping[str, object] = field(
        factory=dict, converter=_frozenMapping, eq=False
    )
    optionsBase: Path = field(factory=Path.cwd)
    protocol: str = "tcp"
    socketName: str | None = None


@frozen
class Defaults:
    """
    Values a port takes when it does not set its own.
    """

    interface: str = DEFAULT_INTERFACE
    backlog: int = DEFAULT_BACKLOG
    tls: TLSConfig = TLSConfig()
    logConnections: bool = True
    policy: Policy = Policy()


@frozen
class PartialDefaults:
    """
    A C{[defaults]} table: each value set overrides the command line's.
    """

    interface: str | None = None
    backlog: int | None = None
    tls: TLSConfig | None = None
    logConnections: bool | None = None
    policy: Policy = Policy()

    def over(self, base: Defaults) -> Defaults:
        """
        These defaults laid over C{base}.
        """
        return Defaults(
            interface=base.interface if self.interface is None else self.interface,
            backlog=base.backlog if self.backlog is None else self.backlog,
            tls=base.tls if self.tls is None else self.tls.over(base.tls),
            logConnections=base.logConnections
            if self.logConnections is None
            else self.logConnections,
            policy=self.policy.over(base.policy),
        )


@frozen
class PortConfig:
    """
    One listening port, fully validated.

    Two configurations compare equal when they would serve the same way;
    C{where} is left out of the comparison so that moving a table in the file
    is not a change.

    @ivar interface: A numeric address (C{0.0.0.0}, C{::1}).
    @ivar port: The port number; 0 picks a free one when bound.
    @ivar handler: The handler's name.
    @ivar tls: The certificate, or C{None} for a plain port.
    @ivar options: The handler's validated options (its own frozen type).
    @ivar logConnections: Whether each closed connection is logged.
    @ivar policy: Limits, rates, access rules and timeouts.
    @ivar protocol: C{"tcp"} or C{"udp"}.
    """

    interface: str
    port: int
    handler: str
    tls: TLSConfig | None
    backlog: int
    options: object
    where: str = field(eq=False, default="")
    logConnections: bool = True
    policy: Policy = Policy()
    protocol: str = "tcp"
    #: The C{name} key: the C{FileDescriptorName=} of the socket systemd
    #: passes for this port (socket activation).
    socketName: str | None = field(eq=False, default=None)

    @property
    def address(self) -> str:
        """
        C{HOST:PORT}, the IPv6 host bracketed.
        """
        return formatAddress(self.interface, self.port)

    @property
    def name(self) -> str:
        """
        The port's name, C{tcp:HOST:PORT} or C{udp:HOST:PORT}, as the
        service tree knows it.
        """
        return f"{self.protocol}:{self.address}"

    @property
    def datagram(self) -> bool:
        """
        Whether this is a UDP port.
        """
        return self.protocol == "udp"

    @property
    def ipv6(self) -> bool:
        """
        Whether this port listens on an IPv6 address.
        """
        return ":" in self.interface


@frozen
class Config:
    """
    Everything the daemon serves.
    """

    ports: tuple[PortConfig, ...]
    stateDir: Path
    #: The C{[acme]} table; C{None} when absent (its defaults apply).
    acme: AcmeConfig | None = None
    #: The C{[cluster]} table's peers: the other instances' status URLs.
    peers: tuple[str, ...] = ()

    def byName(self) -> Mapping[str, PortConfig]:
        """
        The ports with a fixed number, by name (ports 0 have no name yet).
        """
        return {p.name: p for p in self.ports if p.port != 0}


def formatAddress(host: str, port: int) -> str:
    """
    C{host:port}, bracketing an IPv6 host.
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def defaultStateDir(
    environ: Mapping[str, str] = os.environ, euid: int | None = None
) -> Path:
    """
    Where the daemon keeps its files when C{--state-dir} is not given.

    @param euid: The effective user id to decide for; this process's by
        default.
    """
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/multiport")
    xdg = environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "multiport"
    return Path.home() / ".local" / "state" / "multiport"


Resolver = Callable[[str], Sequence[str]]


def resolveHostName(name: str) -> Sequence[str]:
    """
    Every numeric address C{name} resolves to, in the resolver's order.
    """
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(sockaddr[0]).split("%", 1)[0]
            if address not in addresses:
                addresses.append(address)
    return addresses


def numericHost(host: str) -> str | None:
    """
    C{host} in canonical numeric form, or C{None} if it is not an address.
    """
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return None


def parseInterface(value: object, where: str) -> str:
    """
    Check an interface as a user wrote it: an address (IPv6 optionally in
    brackets) or a host name.
    """
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {typeName(value)} {value!r}")
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not host or any(c.isspace() for c in host):
        raise ConfigError(where, f"bad interface {value!r}")
    if ":" in host and numericHost(host) is None:
        raise ConfigError(where, f"{value!r} is not an IPv6 address")
    return host


def _interfaces(host: str, where: str, resolve: Resolver) -> Sequence[str]:
    numeric = numericHost(host)
    if numeric is not None:
        return [numeric]
    try:
        answers = resolve(host)
    except (OSError, UnicodeError, ValueError) as e:
        # The IDNA codec refuses some names (empty labels, labels over 63
        # characters) before any query is made.
        raise ConfigError(where, f"cannot resolve host name {host!r}: {e}") from e
    addresses: list[str] = []
    for answer in answers:
        address = numericHost(answer)
        if address is not None and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ConfigError(where, f"host name {host!r} resolves to no address")
    return addresses
