"""
The UDP relay's data path in C: L{UDPPump}, one per relay port, around a
C{_multiport_udp.Pump} (C{native/_multiport_udp.c} says why it is C).

Without it, every datagram of a relay session crosses the reactor's
dispatch of its own descriptor, the port's gate, the relay and the session
in Python, some 6 us of CPU a datagram.  With it:

 - the reactor watches one descriptor for all of a port's sessions, the
   pump's epoll descriptor holding each session's connected upstream
   socket; on readiness one call reads the ready sessions' replies and
   sends them from the port's socket (C{sendmmsg});
 - the port's socket (still a L{DatagramPort}: live changes, workers and
   socket activation keep relying on it) is read by the pump
   (C{recvmmsg}); a datagram from a client with a session goes to its
   upstream in C, and only the others (new clients) come back to Python,
   to the port's gate and the relay, as without the pump.

It is used when it can be: the extension imports (an install without a
compiler has none), the reactor watches descriptors, and the relay's
transport is a port's gate.  The gate decides whether the port's reads may
go to C: not when a policy judges every datagram (allow/deny, rate,
rate_per_ip), which only Python applies.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Protocol

from twisted.internet.interfaces import IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

try:
    import _multiport_udp
except ImportError:  # pragma: no cover - CI always builds it (.ci/run)
    _multiport_udp = None  # type: ignore[assignment]

__all__ = ["UDPPump", "native"]

log = Logger()

Peer = tuple[str, int]

#: The C extension, or C{None} when it is not built: the relay then runs
#: all in Python.  Tests set it to C{None} to test that path.
native: ModuleType | None = _multiport_udp


class _Pump(Protocol):
    """
    What L{UDPPump} uses of C{_multiport_udp.Pump} (a test may pass a double).
    """

    def fileno(self) -> int: ...

    def add(self, host: str, port: int, fd: int, now: float) -> None: ...

    def remove(self, host: str, port: int) -> bool: ...

    def lastSeen(self, host: str, port: int) -> float | None: ...

    def readPort(
        self, now: float
    ) -> tuple[list[tuple[bytes, Peer]], list[tuple[Peer, int]]] | None: ...

    def readReplies(self, now: float) -> list[tuple[Peer, int]] | None: ...

    def counts(self) -> tuple[int, int, int, int, int, int]: ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


@implementer(IReadDescriptor)
class UDPPump:
    """
    One relay port's C data path, watched by the reactor as one reader.

    @ivar failed: Called with a client's address and the C{errno} its
        session's upstream socket failed with (C{ECONNREFUSED} after an
        ICMP port unreachable): the relay closes the session.
    @ivar deliver: Called with each datagram the pump did not relay (a
        client without a session), and its sender: the port's gate.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        clock: IReactorTime,
        portFd: int,
        family: int,
        maxSize: int,
        failed: Callable[[Peer, int], object],
    ) -> None:
        assert native is not None, "the C extension is built"
        self._reactor = reactor
        self._now = clock.seconds
        self.pump: _Pump = native.Pump(portFd, family, maxSize)
        self._fd: int = self.pump.fileno()
        self.failed = failed
        self.deliver: Callable[[bytes, Peer], object] | None = None
        self.running = False

    def start(self) -> None:
        """
        Have the reactor watch the sessions' sockets (through the pump's
        epoll descriptor).
        """
        self.running = True
        self._reactor.addReader(self)

    def stop(self) -> None:
        """
        Stop watching, forget every session and close the epoll
        descriptor; the sessions' sockets are the relay's to close.
        """
        if self.running:
            self.running = False
            self._reactor.removeReader(self)
        self.pump.close()

    def add(self, client: Peer, fd: int) -> None:
        """
        Relay C{client}'s datagrams through C{fd}, a non-blocking UDP
        socket connected to the session's upstream.
        """
        self.pump.add(client[0], client[1], fd, self._now())

    def remove(self, client: Peer) -> None:
        """
        Forget C{client}'s session (before its socket is closed).
        """
        self.pump.remove(client[0], client[1])

    def lastSeen(self, client: Peer) -> float | None:
        """
        When the pump last moved a datagram of C{client}'s session, either
        way (on the clock given), or C{None} if it has no such session.
        """
        return self.pump.lastSeen(client[0], client[1])

    def counts(self) -> tuple[int, int, int, int, int, int]:
        """
        What the pump relayed: datagrams and bytes from clients, datagrams
        and bytes to them, and the datagrams it dropped as C{too_large}
        and as C{send_error}.
        """
        return self.pump.counts()

    def readPort(self) -> None:
        """
        Read the port's socket (the port's L{DatagramPort.divert}): the
        sessions' datagrams go to their upstreams in C, the rest to
        L{deliver}.
        """
        result = self.pump.readPort(self._now())
        if result is None:
            return
        unknown, failures = result
        deliver = self.deliver
        if deliver is not None:
            for datagram, addr in unknown:
                _guarded(deliver, datagram, addr)
        self._report(failures)

    def doRead(self) -> None:
        """
        A session's socket is readable: relay the replies to the clients.
        """
        failures = self.pump.readReplies(self._now())
        if failures is not None:
            self._report(failures)

    def _report(self, failures: list[tuple[Peer, int]]) -> None:
        for addr, code in failures:
            _guarded(self.failed, addr, code)

    def fileno(self) -> int:
        """
        The pump's epoll descriptor.
        """
        return self._fd

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor let go of the pump (it is shutting down): nothing to
        do, the relay's port closing stops it.
        """

    def logPrefix(self) -> str:
        """
        The log system of what the pump's reads raise.
        """
        return "UDPPump"


def _guarded(call: Callable[..., object], *args: object) -> None:
    """
    Call C{call}, logging what it raises: one datagram's handler failing
    must not stop the pump (the reactor would drop it as a reader, and the
    rest of the batch would be lost with it).
    """
    try:
        call(*args)
    except Exception:
        log.failure("handling a datagram from {args!r}", args=args)
