"""
systemd's socket activation: the sockets the service manager passed
(C{LISTEN_PID}, C{LISTEN_FDS}, C{LISTEN_FDNAMES}): listening TCP sockets
(C{ListenStream=}) and UDP sockets (C{ListenDatagram=}), and which
configured port each one is.

The variables are read once, here (L{readActivation}).  Twisted's
C{ListenFDs.fromEnvironment} is not used: it gives no socket at all,
silently, when the names and descriptors differ in number; multiport says
what is wrong instead.  A socket is matched to a port by its name
(C{FileDescriptorName=} and the port's C{name} key), else by the address
it is bound to and its type (L{matchActivated}): a TCP socket is a TCP
port's, a UDP socket a UDP port's.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import stat
from collections.abc import Mapping, MutableMapping, Sequence

from attrs import frozen
from twisted.logger import Logger

from multiport.config.model import PortConfig, formatAddress
from multiport.errors import StartupError

log = Logger()

#: systemd passes its sockets from descriptor 3 on (C{SD_LISTEN_FDS_START}).
FIRST_DESCRIPTOR = 3

#: The variables, removed once read so no child process takes them for its
#: own.
VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(StartupError):
    """
    The sockets the service manager passed can't be used as they are.
    """


@frozen
class ActivatedSocket:
    """
    One socket the service manager passed.

    @ivar name: Its C{FileDescriptorName=}, if C{LISTEN_FDNAMES} was set.
    @ivar address: The address it is bound to (C{getsockname}).
    @ivar kind: C{SOCK_STREAM}, C{SOCK_DGRAM} or another socket type.
    @ivar listening: Whether it listens (C{SO_ACCEPTCONN}; never for UDP).
    """

    descriptor: int
    name: str | None
    family: int
    kind: int
    address: tuple[str, int] | None
    listening: bool

    def describe(self) -> str:
        """
        How an error message names this socket.
        """
        named = f" named {self.name!r}" if self.name is not None else ""
        if self.address is None:
            where = "not an Internet socket"
        else:
            where = f"bound to {formatAddress(*self.address)}"
        return f"inherited socket {self.descriptor}{named} ({where})"


def _inspect(descriptor: int, name: str | None) -> ActivatedSocket:
    try:
        mode = os.fstat(descriptor).st_mode
    except OSError as e:
        raise ActivationError(
            f"LISTEN_FDS: descriptor {descriptor} is not open ({e.strerror})"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"LISTEN_FDS: descriptor {descriptor} is not a socket")
    # No other process is ever started with these: systemd leaves them
    # inheritable.
    flags = fcntl.fcntl(descriptor, fcntl.F_GETFD)
    fcntl.fcntl(descriptor, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    skt = socket.socket(fileno=descriptor)
    try:
        address: tuple[str, int] | None = None
        if skt.family in (socket.AF_INET, socket.AF_INET6):
            bound = skt.getsockname()
            address = (str(bound[0]), int(bound[1]))
        listening = bool(skt.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        return ActivatedSocket(
            descriptor, name, int(skt.family), int(skt.type), address, listening
        )
    finally:
        skt.detach()


def readActivation(
    environ: MutableMapping[str, str], pid: int
) -> tuple[ActivatedSocket, ...]:
    """
    The sockets C{environ} says the service manager passed to process
    C{pid}; none without C{LISTEN_FDS}.  The variables are removed from
    C{environ}.

    @raise ActivationError: if the variables contradict each other or a
        descriptor is not a socket.
    """
    given = {key: environ.pop(key) for key in VARIABLES if key in environ}
    if "LISTEN_FDS" not in given:
        if given:
            log.warn(
                "{names} set without LISTEN_FDS: no socket activation",
                names=" and ".join(sorted(given)),
            )
        return ()
    count = given["LISTEN_FDS"]
    if not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number of descriptors")
    owner = given.get("LISTEN_PID")
    if owner is None:
        raise ActivationError(
            f"LISTEN_FDS={count} is set but LISTEN_PID is not: whose "
            "sockets these are is unknown"
        )
    if owner != str(pid):
        # sd_listen_fds(3): the variables were meant for another process
        # (this one's parent, say), which leaves them behind.
        log.warn(
            "LISTEN_PID={owner} is not this process ({pid}): the inherited "
            "sockets are not for this process; binding as usual",
            owner=owner,
            pid=pid,
        )
        return ()
    descriptors = range(FIRST_DESCRIPTOR, FIRST_DESCRIPTOR + int(count))
    names: Sequence[str | None] = [None] * len(descriptors)
    if "LISTEN_FDNAMES" in given:
        listed = given["LISTEN_FDNAMES"].split(":")
        if len(listed) != len(descriptors):
            raise ActivationError(
                f"LISTEN_FDNAMES={given['LISTEN_FDNAMES']!r} has {len(listed)} "
                f"names for LISTEN_FDS={count} descriptors: the two must "
                "match (the service manager, or whatever set them, is wrong)"
            )
        names = listed
    return tuple(
        _inspect(fd, name) for fd, name in zip(descriptors, names, strict=True)
    )


def _sameAddress(config: PortConfig, address: tuple[str, int]) -> bool:
    host, number = address
    if config.port != number:
        return False
    try:
        return ipaddress.ip_address(config.interface) == ipaddress.ip_address(host)
    except ValueError:
        return config.interface == host


#: The transport protocol of each socket type a port can adopt.
_PROTOCOLS: dict[int, str] = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}


def _protocolOf(skt: ActivatedSocket) -> str | None:
    """
    C{"tcp"} or C{"udp"} for an Internet socket of either kind, else
    C{None}.
    """
    if skt.address is None or skt.kind not in _PROTOCOLS:
        return None
    return _PROTOCOLS[skt.kind]


def _byAddress(skt: ActivatedSocket, ports: Sequence[PortConfig]) -> PortConfig | None:
    """
    The port configured for the address C{skt} is bound to: of the socket's
    own protocol if there is one (C{53} and C{53/udp} may share a number),
    else of the other, which L{_check} refuses by name.
    """
    if skt.address is None:
        return None
    address = skt.address
    found = [c for c in ports if _sameAddress(c, address)]
    protocol = _protocolOf(skt)
    return next((c for c in found if c.protocol == protocol), None) or next(
        iter(found), None
    )


def _check(skt: ActivatedSocket, config: PortConfig) -> None:
    """
    Refuse C{skt} for C{config} unless it is a socket of the port's
    protocol: a listening TCP socket for a TCP port, a UDP socket for a
    UDP one.

    @raise ActivationError: naming the socket and the port.
    """
    port = config.where or config.name
    protocol = _protocolOf(skt)
    setting = "ListenDatagram=" if config.datagram else "ListenStream="
    if protocol is None:
        raise ActivationError(
            f"{skt.describe()}: not a TCP or UDP socket, but {port} is a "
            f"{config.protocol.upper()} port ({setting} in the socket unit)"
        )
    if protocol != config.protocol:
        raise ActivationError(
            f"{skt.describe()}: a {protocol.upper()} socket, but {port} is a "
            f"{config.protocol.upper()} port ({setting} in the socket unit)"
        )
    if not config.datagram and not skt.listening:
        raise ActivationError(
            f"{skt.describe()}: not listening (Accept=yes in the socket unit "
            "is not supported; multiport accepts its own connections)"
        )


def matchActivated(
    sockets: Sequence[ActivatedSocket], ports: Sequence[PortConfig]
) -> Mapping[str, int]:
    """
    Which port each of C{sockets} is: the descriptor by port name
    (C{tcp:HOST:PORT}, C{udp:HOST:PORT}).  A socket whose name is a port's
    C{name} is that port's; another is the port configured for the address
    it is bound to, of its own protocol.  Ports with no socket are bound
    as usual.

    @raise ActivationError: naming the socket, for a socket that no port
        claims, that is not of its port's protocol (a UDP socket for a TCP
        port, a TCP socket for a UDP one, or neither), that is a TCP socket
        not listening, or that is a second one for a port.
    """
    byName: dict[str, PortConfig] = {}
    for named in ports:
        if named.socketName is not None:
            other = byName.setdefault(named.socketName, named)
            if other is not named:
                raise ActivationError(
                    f"{named.where}: name {named.socketName!r} is also "
                    f"{other.where}'s; a socket name must pick one port"
                )
    matched: dict[str, int] = {}
    claimedBy: dict[str, ActivatedSocket] = {}
    for skt in sockets:
        config: PortConfig | None = (
            byName.get(skt.name) if skt.name is not None else None
        )
        if config is None:
            config = _byAddress(skt, ports)
        if config is None:
            unnamed = (
                f"no [[port]] has name = {skt.name!r} and "
                if skt.name is not None
                else ""
            )
            raise ActivationError(
                f"{skt.describe()}: no port claims it ({unnamed}no port is "
                "configured for its address)"
            )
        _check(skt, config)
        if config.name in claimedBy:
            raise ActivationError(
                f"{skt.describe()}: {config.name} already has "
                f"{claimedBy[config.name].describe()}"
            )
        claimedBy[config.name] = skt
        matched[config.name] = skt.descriptor
        log.info(
            "{socket} is {port}'s: adopted, not bound",
            socket=skt.describe(),
            port=config.where or config.name,
        )
    return matched


def activatedSockets(
    ports: Sequence[PortConfig],
    environ: MutableMapping[str, str] = os.environ,
    pid: int | None = None,
) -> Mapping[str, int]:
    """
    L{readActivation} then L{matchActivated}: the descriptors systemd
    passed, by the name of the port each is.

    @raise ActivationError: as those do.
    """
    sockets = readActivation(environ, os.getpid() if pid is None else pid)
    return matchActivated(sockets, ports) if sockets else {}


__all__ = [
    "ActivatedSocket",
    "ActivationError",
    "activatedSockets",
    "matchActivated",
    "readActivation",
]
