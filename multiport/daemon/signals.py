"""
Services that run a callback when the process gets a signal.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from types import FrameType

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads

from multiport.io.reactortype import ReactorLike

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

#: What signal.signal returns: a previous handler.
_Handler = Callable[[int, FrameType | None], object] | int | None


class OnSignal(Service):
    """
    Installs a handler for C{signalNumber} while running and restores the
    previous one when stopped.  The handler does no work itself: it asks
    the reactor to call C{callback} on its thread, on its next turn.
    """

    def __init__(
        self,
        signalNumber: int,
        callback: Callable[[], object],
        reactor: IReactorFromThreads,
    ) -> None:
        self._signal = signalNumber
        self._callback = callback
        self._reactor = reactor
        self._previous: _Handler = None

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._callback)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._previous = signal.signal(self._signal, self._received)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._previous is not None:
            signal.signal(self._signal, self._previous)
            self._previous = None


#: The signals that stop the daemon: the first drains, the next one hurries.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class HurryOnSecondSignal(Service):
    """
    Once the daemon is stopping, a second SIGTERM or SIGINT calls C{hurry}
    (with the signal's number) on the reactor's thread: open connections
    are closed at once instead of draining for their timeout, as nginx's
    fast shutdown.

    The reactor's own handlers (C{reactor.stop()}) are installed when the
    reactor starts, after services start, and a second C{reactor.stop()}
    only raises C{ReactorNotRunning}: so this service takes the signals
    over when it is stopped, which is when the shutdown begins, and gives
    them back after the reactor has shut down.
    """

    def __init__(
        self,
        hurry: Callable[[int], object],
        reactor: ReactorLike,
        signals: Sequence[int] = STOP_SIGNALS,
    ) -> None:
        self._hurry = hurry
        self._reactor = reactor
        self._signals = tuple(signals)
        self._previous: dict[int, _Handler] = {}

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._hurry, number)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._previous:
            return
        for number in self._signals:
            self._previous[number] = signal.signal(number, self._received)
        self._reactor.addSystemEventTrigger("after", "shutdown", self.restore)

    def restore(self) -> None:
        """
        Give the signals back to the handlers they had before.
        """
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            signal.signal(number, handler)
