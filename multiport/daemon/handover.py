"""
An upgrade's handover, on the wire: the old daemon starts the new one
with a private UNIX socket (a socketpair) at descriptor L{HANDOVER_FD},
named by C{$MULTIPORT_UPGRADE_FD}, and sends over it every listening
socket (C{SCM_RIGHTS}) with a L{Handover}; the new daemon answers
C{ready PID} once it serves every port, and reads the old one's counts
from then on (L{multiport.daemon.upgradetotals}).
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Callable, MutableMapping, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from multiport.config.model import Config
from multiport.daemon.ipc import channelFactory
from multiport.daemon.totals import Retired
from multiport.daemon.upgradetotals import SETTLE_BOUND, TotalsReceiver
from multiport.errors import StartupError
from multiport.handlers.interface import PortStatus
from multiport.io.reactortype import ReactorLike

log = Logger(namespace="multiport.daemon.upgrade")

#: The variable naming the handover socket's descriptor in the new process.
UPGRADE_VARIABLE = "MULTIPORT_UPGRADE_FD"
#: Where the new process finds the handover socket.
HANDOVER_FD = 3
#: The length prefix of the handover's payload.
_LENGTH = struct.Struct("!Q")


@frozen
class Handover:
    """
    What the old daemon hands the new one.

    @ivar names: The listening sockets' names, in the order of the sockets:
        a port's name, or C{NAME#I} for the I-th extra socket of a port
        whose workers each have their own (C{--worker-sockets reuseport}).
    @ivar config: The running configuration, every port with its real number.
    @ivar addedLive: The names of the ports added through the admin API.
    @ivar statuses: Every port's status at the handover, its counters the
        totals so far (the new daemon's go on from them).
    """

    names: tuple[str, ...]
    config: Config
    addedLive: frozenset[str]
    statuses: tuple[PortStatus, ...]


def carriedTotals(statuses: Sequence[PortStatus]) -> dict[str, Retired]:
    """
    The old daemon's totals by port name, for the new daemon to add to its
    own: a Prometheus counter never goes backwards (as Envoy's hot restart
    keeps them); the connections still open on the old one count as closed.
    """
    totals: dict[str, Retired] = {}
    for status in statuses:
        totals.setdefault(status.name, Retired()).fold(status)
    return totals


def sendHandover(
    channel: socket.socket, handover: Handover, sockets: Sequence[int]
) -> None:
    """
    Send C{handover} with the listening C{sockets} (blocking).
    """
    payload = pickle.dumps(handover)
    socket.send_fds(channel, [_LENGTH.pack(len(payload))], list(sockets))
    channel.sendall(payload)


def receiveHandover(channel: socket.socket) -> tuple[Handover, dict[str, int]]:
    """
    The handover and its sockets' descriptors by port name (blocking).

    @raise StartupError: if the old daemon went away or sent nonsense.
    """
    header, descriptors, _, _ = socket.recv_fds(channel, _LENGTH.size, 4096)
    if len(header) != _LENGTH.size:
        raise StartupError("upgrade: the old daemon sent no handover")
    (length,) = _LENGTH.unpack(header)
    chunks = []
    while length:
        chunk = channel.recv(min(length, 1 << 20))
        if not chunk:
            raise StartupError("upgrade: the old daemon's handover was cut short")
        chunks.append(chunk)
        length -= len(chunk)
    # The peer is our own parent process, over a socketpair nobody else
    # holds: pickle is safe here, as in multiport.daemon.ipc.
    handover = pickle.loads(b"".join(chunks))
    if not isinstance(handover, Handover) or len(handover.names) != len(descriptors):
        raise StartupError("upgrade: the old daemon's handover is not understood")
    return handover, dict(zip(handover.names, descriptors, strict=True))


def takeHandover(
    environ: MutableMapping[str, str],
) -> tuple[socket.socket, Handover, dict[str, int]] | None:
    """
    In a new daemon started by an upgrade: the handover socket, what came
    over it and the sockets by port name; L{None} otherwise.  The variable
    is removed.
    """
    value = environ.pop(UPGRADE_VARIABLE, None)
    if value is None:
        return None
    if not value.isdigit():
        raise StartupError(f"{UPGRADE_VARIABLE}={value!r} is not a descriptor")
    channel = socket.socket(fileno=int(value))
    channel.setblocking(True)
    handover, descriptors = receiveHandover(channel)
    log.info(
        "upgrade: took over {count} listening sockets from the old daemon",
        count=len(descriptors),
    )
    return channel, handover, descriptors


def reportReady(
    reactor: ReactorLike,
    channel: socket.socket,
    pid: int,
    totals: Callable[[Sequence[PortStatus]], None],
    settled: Deferred[None],
) -> None:
    """
    Tell the old daemon this one serves every port: it may stop accepting.
    Its counts go on arriving over the same socket, each given to
    C{totals}; C{settled} fires once it accepts nothing any more (at the
    latest after L{SETTLE_BOUND} seconds).
    """

    def settle() -> None:
        if not settled.called:
            settled.callback(None)

    reactor.callLater(SETTLE_BOUND, settle)
    try:
        channel.sendall(b"ready %d\n" % pid)
    except OSError as e:
        log.warn("upgrade: cannot tell the old daemon: {reason}", reason=str(e))
        channel.close()
        settle()
        return
    channel.setblocking(False)
    reactor.adoptStreamConnection(
        channel.fileno(),
        socket.AF_UNIX,
        channelFactory(TotalsReceiver(totals, settled)),
    )
    channel.close()


__all__ = [
    "HANDOVER_FD",
    "UPGRADE_VARIABLE",
    "Handover",
    "carriedTotals",
    "receiveHandover",
    "reportReady",
    "sendHandover",
    "takeHandover",
]
