"""
A service that runs a callback when the process gets a signal.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import Service


class OnSignal(Service):
    """
    Installs a handler for C{signalNumber} while running and restores the
    previous one when stopped.  The handler does no work itself: it asks
    the reactor to call C{callback} on its thread, on its next turn.
    """

    def __init__(
        self, signalNumber: int, callback: Callable[[], object], reactor: Any
    ) -> None:
        self._signal = signalNumber
        self._callback = callback
        self._reactor = reactor
        self._previous: Any = None

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._callback)

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(self._signal, self._received)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(self._signal, self._previous)
            self._previous = None
