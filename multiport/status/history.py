"""
C{/history}: the last minutes of each port's figures, sampled once a
second into a bounded ring per port, for the dashboard's sparklines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from multiport.handlers.interface import IDaemonView
from multiport.status.report import figure

log = Logger()

#: Seconds between samples.
INTERVAL = 1.0
#: Samples kept per port: five minutes at one a second.
LENGTH = 300


@frozen
class Sample:
    """
    One port's figures at one time.

    @ivar t: When (POSIX time, from the status port's clock).
    """

    t: float
    current: int
    accepted: int
    bytesReceived: int
    bytesSent: int

    @classmethod
    def of(cls, t: float, counters: Mapping[str, object]) -> Sample:
        """
        The sample of a L{PortStatus.counters} snapshot taken at C{t}.
        """
        return cls(
            t=t,
            current=figure(counters, "connections", "current"),
            accepted=figure(counters, "connections", "accepted"),
            bytesReceived=figure(counters, "bytes", "received"),
            bytesSent=figure(counters, "bytes", "sent"),
        )

    def asJSON(self) -> dict[str, float | int]:
        """
        The sample as C{/history} shows it.
        """
        return {
            "t": self.t,
            "current": self.current,
            "accepted": self.accepted,
            "bytes_received": self.bytesReceived,
            "bytes_sent": self.bytesSent,
        }


class History:
    """
    Samples every port of a daemon view on a clock while started.

    A port is sampled from the first time it is seen listening (an unbound
    port 0 has no real name yet) and for as long as the view reports it,
    listening or not, so a port that stops shows its fall.
    """

    def __init__(
        self,
        clock: IReactorTime,
        view: Callable[[], IDaemonView],
        interval: float = INTERVAL,
        length: int = LENGTH,
    ) -> None:
        self.interval = interval
        self.length = length
        self._clock = clock
        self._view = view
        self._rings: dict[str, deque[Sample]] = {}
        self._call = LoopingCall(self.sample)
        self._call.clock = clock
        self._first: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        """
        Whether samples are being taken.
        """
        return self._call.running

    def start(self) -> None:
        """
        Take a sample on the clock's next turn, then every C{interval}
        seconds.

        The first sample waits for that turn because a port starts while
        the daemon binds its ports one by one: on the next turn they are all
        bound and named.
        """
        if not self._call.running:
            self._first = self._clock.callLater(0, self.sample)
            self._call.start(self.interval, now=False)

    def stop(self) -> None:
        """
        Stop sampling; what was sampled is kept.
        """
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        if self._call.running:
            self._call.stop()

    def sample(self) -> None:
        """
        Take one sample of every port; never raises (a failure is logged and
        sampling goes on).
        """
        try:
            self._sample()
        except Exception:
            log.failure("could not sample the ports' figures")

    def _sample(self) -> None:
        now = self._clock.seconds()
        seen = set()
        for status in self._view().portStatus():
            seen.add(status.name)
            ring = self._rings.get(status.name)
            if ring is None:
                if not status.listening:
                    continue
                ring = self._rings[status.name] = deque(maxlen=self.length)
            ring.append(Sample.of(now, status.counters))
        for name in self._rings.keys() - seen:
            del self._rings[name]

    def samples(self, name: str) -> list[Sample]:
        """
        The samples of port C{name}, oldest first.
        """
        return list(self._rings.get(name, ()))

    def report(self) -> dict[str, object]:
        """
        The C{/history} document.
        """
        return {
            "interval_s": self.interval,
            "length": self.length,
            "ports": {
                name: [s.asJSON() for s in ring] for name, ring in self._rings.items()
            },
        }
