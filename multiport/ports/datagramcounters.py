"""
A UDP port's figures (L{DatagramCounters}), kept by its gate
(L{multiport.ports.datagram.DatagramGate}) and, for the datagrams a
relay's C data path moves, by that path (L{PumpCounts}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from attrs import define, field

__all__ = ["DatagramCounters", "PumpCounts"]


class PumpCounts(Protocol):
    """
    A relay's C data path (L{multiport.io.udppump.UDPPump}), as the port's
    counters read it.
    """

    def counts(self) -> tuple[int, int, int, int, int, int]: ...


@define
class DatagramCounters:
    """
    One UDP port's figures.

    The datagrams and bytes both ways and the drops are the port's own
    counts plus, while a relay's C data path serves the port (L{pump}),
    the pump's, summed when read; the pump's counts join the port's own
    when it stops (L{detach}).

    @ivar dropped: Datagrams dropped by reason (L{DROP_REASONS}), in
        either direction.
    @ivar sessions: Sessions open now (the relay's), else 0.
    @ivar current: Always 0: a UDP port has no connections (there so the
        daemon's sums of open connections need no special case).
    """

    _received: int = field(default=0, alias="datagramsReceived")
    _sent: int = field(default=0, alias="datagramsSent")
    _bytesReceived: int = field(default=0, alias="bytesReceived")
    _bytesSent: int = field(default=0, alias="bytesSent")
    _dropped: dict[str, int] = field(factory=dict, alias="dropped")
    sessions: int = 0
    protocolErrors: int = 0
    listeningSince: float | None = None
    current: int = 0
    pump: PumpCounts | None = field(default=None, repr=False, eq=False)

    def _pumped(self, index: int) -> int:
        pump = self.pump
        return 0 if pump is None else pump.counts()[index]

    @property
    def datagramsReceived(self) -> int:
        return self._received + self._pumped(0)

    @datagramsReceived.setter
    def datagramsReceived(self, value: int) -> None:
        self._received = value - self._pumped(0)

    @property
    def bytesReceived(self) -> int:
        return self._bytesReceived + self._pumped(1)

    @bytesReceived.setter
    def bytesReceived(self, value: int) -> None:
        self._bytesReceived = value - self._pumped(1)

    @property
    def datagramsSent(self) -> int:
        return self._sent + self._pumped(2)

    @datagramsSent.setter
    def datagramsSent(self, value: int) -> None:
        self._sent = value - self._pumped(2)

    @property
    def bytesSent(self) -> int:
        return self._bytesSent + self._pumped(3)

    @bytesSent.setter
    def bytesSent(self, value: int) -> None:
        self._bytesSent = value - self._pumped(3)

    @property
    def dropped(self) -> dict[str, int]:
        """
        Datagrams dropped by reason, the pump's included (a copy: count
        with L{drop}).
        """
        dropped = dict(self._dropped)
        if self.pump is not None:
            counts = self.pump.counts()
            for reason, count in (("too_large", counts[4]), ("send_error", counts[5])):
                if count:
                    dropped[reason] = dropped.get(reason, 0) + count
        return dropped

    def received(self, size: int) -> None:
        """
        Count a datagram of C{size} bytes the gate took from a client: the
        port's own count, never the pump's (the properties above would ask
        the pump for its counts twice a field, for every datagram).
        """
        self._received += 1
        self._bytesReceived += size

    def sent(self, size: int) -> None:
        """
        Count a datagram of C{size} bytes the gate sent (as L{received}).
        """
        self._sent += 1
        self._bytesSent += size

    def drop(self, reason: str) -> None:
        """
        Count one datagram dropped for C{reason}.
        """
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def detach(self) -> None:
        """
        The pump stops: its counts join the port's own.
        """
        pump, self.pump = self.pump, None
        if pump is None:
            return
        received, bytesReceived, sent, bytesSent, tooLarge, sendError = pump.counts()
        self._received += received
        self._bytesReceived += bytesReceived
        self._sent += sent
        self._bytesSent += bytesSent
        for reason, count in (("too_large", tooLarge), ("send_error", sendError)):
            if count:
                self._dropped[reason] = self._dropped.get(reason, 0) + count

    def snapshot(self) -> Mapping[str, object]:
        """
        The figures now, as a plain mapping (the shape of C{/status}).
        """
        dropped = self.dropped
        return {
            "protocol": "udp",
            "datagrams": {
                "received": self.datagramsReceived,
                "sent": self.datagramsSent,
                "dropped": sum(dropped.values()),
            },
            "dropped_by_reason": dropped,
            "bytes": {"received": self.bytesReceived, "sent": self.bytesSent},
            "sessions": self.sessions,
            "errors": {"protocol": self.protocolErrors},
            "listening_since": self.listeningSince,
        }
