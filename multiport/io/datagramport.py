"""
A UDP port that reads with less Python work per datagram:
L{DatagramPort}, the socket of every UDP port and of every relay session.

Twisted's L{udp.Port.doRead} reads until the socket is empty, so every
readiness event ends in a C{recvfrom} that fails with C{EAGAIN}: a system
call and a Python exception, as dear as the read of a datagram.  Under
request/response traffic most events find one datagram, and that empty
read was a third of the reads.  L{DatagramPort} reads at most as many
datagrams as the last events found (L{DatagramPort.burst}), and only
tries for more after several events that all found that many; the epoll
reactor is level-triggered, so a datagram left in the socket brings the
next event.  A connected socket (a relay session's) reads with C{recv}:
its peer is known, and C{recvfrom} would make a new address tuple for
every datagram.

It also leaves out Twisted's log lines for each port opening and closing
(C{<protocol> starting on N}, C{(UDP Port N Closed)}): a port's own
C{listening on} line says when it opens, and a relay opens a socket for
every new client, which must not cost a log line each.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Protocol

from twisted.internet import udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log as legacyLog

from multiport.daemon.logformat import PORT_START_SYSTEM

__all__ = ["DatagramPort", "adoptDatagramPort", "listenConnected"]

#: Most datagrams one readiness event reads, as libuv's UDP reads: the
#: other sockets get their turn.
MAX_BURST = 32
#: Events in a row that each read all they asked for before one asks for
#: twice as many.
GROW_AFTER = 4

_IGNORED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class DatagramPort(udp.Port):
    """
    Twisted's UDP port, reading an adaptive number of datagrams per event,
    connected ones with C{recv}, and without a log line per socket.

    @ivar burst: How many datagrams the next event reads at most.
    """

    burst = 1
    _full = 0
    #: What reads the socket instead, when set: a relay's
    #: L{multiport.io.udppump.UDPPump.readPort}, which relays its sessions'
    #: datagrams in C and hands the others to the protocol.
    divert: Callable[[], object] | None = None

    def doRead(self) -> None:
        """
        Read up to L{burst} datagrams and hand each to the protocol (or
        let L{divert} read).
        """
        divert = self.divert
        if divert is not None:
            divert()
            return
        skt = self.socket
        size = self.maxPacketSize
        received = self.protocol.datagramReceived
        peer = self._connectedAddr
        recv = skt.recv if peer is not None else None
        recvfrom = skt.recvfrom
        ipv6 = self.addressFamily == socket.AF_INET6
        limit = self.burst
        count = 0
        while count < limit:
            try:
                if recv is not None:
                    data = recv(size)
                    addr = peer
                else:
                    data, addr = recvfrom(size)
                    if ipv6:
                        # Flow and scope ids left out, as Twisted's port
                        # does.
                        addr = addr[:2]
            except OSError as e:
                # Empty (or a refusal) before the limit: that is how many
                # the next events will ask for.
                self.burst = count or 1
                self._full = 0
                if e.errno in _IGNORED:
                    return
                if e.errno == errno.ECONNREFUSED:
                    if peer is not None:
                        self.protocol.connectionRefused()
                    return
                raise
            count += 1
            try:
                received(data, addr)
            except BaseException:
                legacyLog.err()  # type: ignore[no-untyped-call]
        # Every datagram asked for was there: more may be.
        self._full += 1
        if self._full >= GROW_AFTER and limit < MAX_BURST:
            self._full = 0
            self.burst = min(2 * limit, MAX_BURST)

    def _bindSocket(self) -> None:
        # Twisted logs "<protocol> starting on N" here; the daemon's
        # observers leave out the lines of this log system.
        legacyLog.callWithContext({"system": PORT_START_SYSTEM}, super()._bindSocket)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: object = None) -> None:
        # Twisted logs "(UDP Port N Closed)" here, left out as the
        # "starting on" line is: a port says its own line, a relay session
        # none.
        legacyLog.callWithContext(  # type: ignore[no-untyped-call]
            {"system": PORT_START_SYSTEM}, super().connectionLost, reason
        )


class _AdoptingReactor(Protocol):
    """
    The reactor method a test double (a C{MemoryReactor}) is asked for.
    """

    def adoptDatagramPort(
        self,
        fileDescriptor: int,
        addressFamily: socket.AddressFamily,
        protocol: DatagramProtocol,
        maxPacketSize: int,
    ) -> udp.Port: ...


def adoptDatagramPort(
    reactor: object,
    descriptor: int,
    family: int,
    protocol: DatagramProtocol,
    maxPacketSize: int,
) -> udp.Port:
    """
    A L{DatagramPort} reading a duplicate of C{descriptor} (a bound UDP
    socket, non-blocking) on a real reactor, or the reactor's own
    C{adoptDatagramPort} on a test double (a C{MemoryReactor}).
    """
    if not isinstance(reactor, PosixReactorBase):
        double: _AdoptingReactor = reactor  # type: ignore[assignment]
        return double.adoptDatagramPort(
            descriptor, socket.AddressFamily(family), protocol, maxPacketSize
        )
    port: DatagramPort = DatagramPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
        reactor, descriptor, family, protocol, maxPacketSize
    )
    port.startListening()  # type: ignore[no-untyped-call]
    return port


class _ListeningReactor(Protocol):
    """
    The reactor method a reactor that is not Twisted's own is asked for.
    """

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> udp.Port: ...


def listenConnected(
    reactor: object,
    protocol: DatagramProtocol,
    interface: str,
    host: str,
    port: int,
    maxPacketSize: int,
) -> udp.Port:
    """
    A UDP socket on a free port of C{interface}, connected to
    C{host}:C{port} (a relay session's upstream socket): a L{DatagramPort}
    on a real reactor, else the reactor's own C{listenUDP}.

    @raise OSError: if it can't be bound or connected; nothing is left
        open then.
    """
    listening: udp.Port
    if isinstance(reactor, PosixReactorBase):
        listening = DatagramPort(0, protocol, interface, maxPacketSize, reactor)  # type: ignore[no-untyped-call]
        listening.startListening()  # type: ignore[no-untyped-call]
    else:
        other: _ListeningReactor = reactor  # type: ignore[assignment]
        listening = other.listenUDP(
            0, protocol, interface=interface, maxPacketSize=maxPacketSize
        )
    try:
        listening.connect(host, port)  # type: ignore[no-untyped-call]
    except OSError:
        listening.connectionLost()  # type: ignore[no-untyped-call]
        raise
    return listening
