"""
An upgrade's old daemon goes on counting after the handover: until its
last connection has drained it accepts what was queued, and its open
connections move bytes.  It sends its figures to the new daemon over the
handover socket every L{INTERVAL} seconds and a last time as it exits;
the new daemon's totals start from the latest (L{TotalsReceiver}), so
that no counter in C{/metrics} ever goes backwards or misses a count.
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from multiport.handlers.interface import PortStatus

log = Logger()

#: Seconds between two of the old daemon's reports.
INTERVAL = 1.0
#: How long the new daemon's status pages wait at most for the old one to
#: stop accepting.
SETTLE_BOUND = 10.0
#: How long the old daemon waits for the new one to take a report.
SEND_TIMEOUT = 2.0
_PREFIX = struct.Struct("!I")


def sendWithin(channel: socket.socket, data: bytes, timeout: float) -> None:
    """
    Send all of C{data} on the non-blocking C{channel} (the reactor reads
    the same socket, so it can't be made blocking), waiting at most
    C{timeout} seconds for room.

    @raise OSError: if the peer is gone or takes nothing in time.
    """
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLOUT)
    view = memoryview(data)
    while view:
        if not poller.poll(int(timeout * 1000)):
            raise TimeoutError("the new daemon takes no report")
        try:
            sent = channel.send(view)
        except BlockingIOError:
            continue
        view = view[sent:]


class TotalsSender:
    """
    The old daemon's reports: C{statuses()} pickled, length-prefixed.
    """

    def __init__(
        self,
        channel: socket.socket,
        statuses: Callable[[], Sequence[PortStatus]],
        reactor: IReactorCore,
        clock: IReactorTime,
    ) -> None:
        self.channel = channel
        self.statuses = statuses
        self._stopped = False
        self._loop = LoopingCall(self.send)
        self._loop.clock = clock
        self._loop.start(INTERVAL, now=True)
        # Once the services were told to stop (every port stopped accepting
        # then, the status port's too): the new daemon's status pages wait
        # for that report.
        reactor.addSystemEventTrigger("before", "shutdown", self.stopped)
        # After the drain: the figures are final then.
        reactor.addSystemEventTrigger("after", "shutdown", self.last)

    def stopped(self) -> None:
        """
        Report that this daemon accepts nothing any more.
        """
        self._stopped = True
        self.send()

    def send(self) -> None:
        """
        Report the figures now; a new daemon that is gone gets no more.
        """
        if self.channel.fileno() < 0:
            return
        payload = pickle.dumps((self._stopped, tuple(self.statuses())))
        try:
            sendWithin(self.channel, _PREFIX.pack(len(payload)) + payload, SEND_TIMEOUT)
        except OSError as e:
            log.warn(
                "upgrade: the new daemon takes no more counts: {reason}",
                reason=str(e),
            )
            self.stop()

    def last(self) -> None:
        """
        The last report, as this process exits.
        """
        self.send()
        self.stop()

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.channel.close()


class TotalsReceiver(Int32StringReceiver):
    """
    The new daemon's end: each report replaces the old daemon's figures
    (each is at least the one before: the old daemon's counters only grow).

    @ivar settled: Fires once the old daemon has stopped accepting (or is
        gone, or said nothing for L{SETTLE_BOUND} seconds): the figures
        here are the daemon's from then on.
    """

    # A report is one pickled status per port: far below this.
    MAX_LENGTH = 64 << 20

    def __init__(
        self,
        received: Callable[[Sequence[PortStatus]], None],
        settled: Deferred[None],
    ) -> None:
        self.received = received
        self.settled = settled

    def stringReceived(self, string: bytes) -> None:
        # The peer is the process that started this one, over a socketpair
        # nobody else holds: pickle is safe here, as in the handover.
        report = pickle.loads(string)
        if not (
            isinstance(report, tuple)
            and len(report) == 2
            and isinstance(report[1], tuple)
            and all(isinstance(s, PortStatus) for s in report[1])
        ):
            log.warn("upgrade: the old daemon sent counts not understood")
            return
        stopped, statuses = report
        try:
            self.received(statuses)
        except Exception:
            log.failure("upgrade: the old daemon's counts could not be added")
        if stopped:
            self._settle()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._settle()

    def _settle(self) -> None:
        if not self.settled.called:
            self.settled.callback(None)
