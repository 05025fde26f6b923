"""
The per-port wrapper of a UDP port: L{DatagramGate} sits between the
listening UDP socket and the handler's datagram protocol.  It admits each
datagram (access rules, rates in datagrams, C{max_datagram_size}), drops
what must never be answered (reflection), counts datagrams and bytes both
ways and drops by reason, and hands the handler a transport
(L{GatedTransport}) whose replies are counted and checked the same way.

It plays the part L{multiport.ports.factory.PortFactory} plays for a TCP
port, with the same names (C{counters}, C{handlerContext}, C{portName},
C{drain}, C{closeNow}), so that the service tree, live changes and the
status pages treat both alike.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from multiport.handlers.interface import HandlerContext
from multiport.io.datagramport import DatagramPort
from multiport.ports.admission import Admission
from multiport.ports.datagramcounters import DatagramCounters, PumpCounts

log = Logger()

#: What the socket reads at most: the largest UDP payload, so that an
#: oversized datagram is seen whole (and dropped as C{too_large}) rather
#: than cut short without a word.
MAX_READ = 65535

#: The reasons a datagram is dropped; each is counted.
DROP_REASONS = (
    "access",
    "rate",
    "too_large",
    "reflection",
    "send_error",
    "no_upstream",
    "sessions_full",
)

#: Errors of a send the kernel can't take now: the datagram is dropped
#: and counted (UDP gives no delivery promise to keep).
_SEND_DROPS = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED, errno.EPERM}
)

Peer = tuple[str, int]


def _address(peer: Peer) -> IPv4Address | IPv6Address:
    if ":" in peer[0]:
        return IPv6Address("UDP", peer[0], peer[1])
    return IPv4Address("UDP", peer[0], peer[1])


@implementer(IUDPTransport)
class GatedTransport:
    """
    What the handler's datagram protocol writes its replies to: the port's
    socket, with every reply counted, and never sent to a source port 0 or
    to the port's own address (a reply there would loop).
    """

    def __init__(self, gate: DatagramGate) -> None:
        self._gate = gate
        #: The port whose reads L{divert} handed to a relay's C data path:
        #: remembered, since the gate forgets its port when it stops.
        self._diverted: DatagramPort | None = None
        # write, one call shorter: a handler calls it for every reply.
        self.write = gate.send  # type: ignore[method-assign]

    def write(self, datagram: bytes, addr: Peer | None = None) -> None:
        """
        Send C{datagram} to C{addr} from the port's socket, or drop and
        count it.
        """
        self._gate.send(datagram, addr)

    def replyTo(self, addr: Peer) -> Callable[[bytes], None]:
        """
        A function that sends a datagram to C{addr} as L{write} does, for a
        handler that answers one address many times (a relay's session):
        C{addr} is checked once, here, not for every datagram.
        """
        return self._gate.replyTo(addr)

    def drop(self, reason: str) -> None:
        """
        Count a datagram the handler dropped for C{reason} (a relay:
        C{no_upstream}, C{sessions_full}).
        """
        self._gate.counters.drop(reason)

    def socket(self) -> socket.socket | None:
        """
        The port's socket, for a handler that reads and sends in C (the
        relay's L{multiport.io.udppump.UDPPump}); C{None} when there is no
        real one (a test double).
        """
        port = self._gate.port
        skt = getattr(port, "socket", None)
        return skt if isinstance(skt, socket.socket) else None

    def reflects(self, addr: Peer) -> bool:
        """
        Whether nothing may be sent to C{addr} (source port 0, or the
        port's own address): a relay checks it once per session.
        """
        return self._gate._reflects(addr)

    def maxDatagramSize(self) -> int:
        """
        The largest datagram the port takes (its C{max_datagram_size}, else
        the largest UDP payload).
        """
        maxSize = self._gate.maxSize
        return MAX_READ if maxSize is None else maxSize

    def divert(
        self, counts: PumpCounts, read: Callable[[], object]
    ) -> Callable[[bytes, Peer], None] | None:
        """
        Count C{counts}' datagrams (a relay's C data path) with the port's
        own from now on, and have C{read} read the port's socket if no
        policy must judge every datagram (allow/deny, rate, rate_per_ip:
        Python applies those, so the port's reads stay in Python).

        @return: What C{read} hands the datagrams it does not relay to (the
            gate, which judges them), or C{None} if C{read} is not used.
        """
        gate = self._gate
        gate.counters.detach()
        gate.counters.pump = counts
        port = gate.port
        if gate.admission is not None or not isinstance(port, DatagramPort):
            return None
        port.divert = read
        self._diverted = port
        return gate.datagramReceived

    def undivert(self, counts: PumpCounts) -> None:
        """
        C{counts} stops: its counts join the port's own, and the port's
        socket is read in Python again.
        """
        gate = self._gate
        if gate.counters.pump is counts:
            gate.counters.detach()
        port, self._diverted = self._diverted, None
        if port is not None:
            port.divert = None

    def setSessions(self, count: int) -> None:
        """
        Publish the sessions the handler has open now (a relay's).
        """
        self._gate.counters.sessions = count

    def getHost(self) -> IPv4Address | IPv6Address:
        """
        The port's own address.
        """
        port = self._gate.port
        assert port is not None, "the port is bound"
        return port.getHost()

    def connect(self, host: str, port: int) -> None:
        """
        Refused: the port's socket answers every client.
        """
        raise RuntimeError("a port's socket can't be connected")

    def stopListening(self) -> None:
        """
        Nothing: the port's socket belongs to the port, not the handler.
        """

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """
        Refused: a port never broadcasts.
        """
        raise RuntimeError("a port's socket does not broadcast")

    def getBroadcastAllowed(self) -> bool:
        """
        Never.
        """
        return False


class DatagramGate(DatagramProtocol):
    """
    The protocol of a UDP port's socket: admits, counts and passes each
    datagram to the handler's protocol (C{inner}).
    """

    # The port's own "listening on" line says when it starts.
    noisy = False

    def __init__(
        self,
        inner: DatagramProtocol,
        context: HandlerContext,
        counters: DatagramCounters | None = None,
    ) -> None:
        self.counters = DatagramCounters() if counters is None else counters
        self.portName: str = context.port.name
        self.port: IUDPTransport | None = None
        self._ownPort = -1
        self._ownHosts: frozenset[str] = frozenset()
        self._sendto: Callable[[bytes, Peer], object] | None = None
        self.replies = GatedTransport(self)
        self._configure(inner, context)

    def _configure(self, inner: DatagramProtocol, context: HandlerContext) -> None:
        self.inner = inner
        self.handlerContext = context
        self.clock: IReactorTime = context.clock
        policy = context.port.policy
        self.maxSize = policy.maxDatagramSize
        self.admission: Admission | None = None
        if policy.allow or policy.deny or policy.rate or policy.ratePerIP:
            self.admission = Admission(policy, context.clock)
        inner.transport = self.replies

    def reconfigure(self, inner: DatagramProtocol, context: HandlerContext) -> None:
        """
        Serve with C{inner} and C{context}'s policies from now on (a live
        change); the old protocol is stopped, the counters stay.
        """
        old = self.inner
        self._configure(inner, context)
        if self.port is not None:
            old.doStop()  # type: ignore[no-untyped-call]  # Twisted leaves it unannotated
            inner.doStart()  # type: ignore[no-untyped-call]  # Twisted leaves it unannotated

    def startProtocol(self) -> None:
        """
        The port's socket is listening: start the handler's protocol.
        """
        port = self.transport
        self.port = port
        host = port.getHost() if port is not None else None
        #: The port's own (host, number): nothing is sent there or taken
        #: from there.  Read once, not per datagram.
        self._ownPort = getattr(host, "port", -1)
        self._ownHosts = frozenset({getattr(host, "host", ""), "127.0.0.1", "::1"})
        #: Replies go straight to the socket: udp.Port.write checks the
        #: address's form on every call (a parse of the address), which
        #: costs more than the send on the reply path; addresses here come
        #: from the socket itself.
        self._sendto = getattr(getattr(port, "socket", None), "sendto", None)
        self.inner.transport = self.replies
        self.inner.doStart()  # type: ignore[no-untyped-call]  # Twisted leaves it unannotated

    def stopProtocol(self) -> None:
        """
        The socket closed: stop the handler's protocol.
        """
        self.port = None
        self._sendto = None
        self.inner.doStop()  # type: ignore[no-untyped-call]  # Twisted leaves it unannotated

    def _reflects(self, peer: Peer) -> bool:
        """
        Whether nothing may be taken from or sent to C{peer}: source port
        0, or the port's own address (a reply there would loop).
        """
        number = peer[1]
        return number == 0 or (number == self._ownPort and peer[0] in self._ownHosts)

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        """
        Admit, count and pass on one datagram.
        """
        counters = self.counters
        size = len(datagram)
        # _reflects, inline: this runs for every datagram.
        number = addr[1]
        if number == 0 or (number == self._ownPort and addr[0] in self._ownHosts):
            counters.drop("reflection")
            return
        if self.maxSize is not None and size > self.maxSize:
            counters.drop("too_large")
            return
        admission = self.admission
        if admission is not None:
            reason = admission.admit(_address(addr), 0, 0)
            if reason is not None:
                counters.drop(reason)
                return
        counters.received(size)
        try:
            self.inner.datagramReceived(datagram, addr)
        except Exception:
            counters.protocolErrors += 1
            log.failure(
                "handler {handler} raised on a datagram from {peer} on {port}",
                handler=self.handlerContext.port.handler,
                peer=addr,
                port=self.portName,
            )

    def send(self, datagram: bytes, addr: Peer | None = None) -> None:
        """
        Send a reply from the port's socket, or drop and count it.
        """
        counters = self.counters
        port = self.port
        if port is None or addr is None:
            counters.drop("send_error")
            return
        # _reflects, inline: this runs for every reply.
        number = addr[1]
        if number == 0 or (number == self._ownPort and addr[0] in self._ownHosts):
            counters.drop("reflection")
            return
        sendto = self._sendto
        try:
            if sendto is not None:
                sendto(datagram, addr)
            else:
                port.write(datagram, addr)
        except MessageLengthError:
            counters.drop("too_large")
            return
        except OSError as e:
            self._sendFailed(e)
            return
        counters.sent(len(datagram))

    def _sendFailed(self, error: OSError) -> None:
        """
        Count a send the kernel refused, by its reason; raise what is not
        a refusal of this datagram.
        """
        if error.errno == errno.EMSGSIZE:
            self.counters.drop("too_large")
        elif error.errno in _SEND_DROPS:
            self.counters.drop("send_error")
        else:
            raise error

    def replyTo(self, addr: Peer) -> Callable[[bytes], None]:
        """
        A function sending a datagram to C{addr} from the port's socket,
        counted and dropped as L{send} does, with C{addr} checked once,
        here (see L{GatedTransport.replyTo}).
        """
        counters = self.counters
        if self._reflects(addr):
            return lambda datagram: counters.drop("reflection")

        def reply(datagram: bytes) -> None:
            sendto = self._sendto
            if sendto is None:
                self.send(datagram, addr)
                return
            try:
                sendto(datagram, addr)
            except OSError as e:
                self._sendFailed(e)
                return
            counters.sent(len(datagram))

        return reply

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Nothing to drain: a UDP port holds no connections.
        """
        return succeed(None)

    def closeNow(self) -> int:
        """
        Nothing to close; no connections were open.
        """
        return 0
