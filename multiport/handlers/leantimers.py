"""
The idle and header timeouts of L{multiport.handlers.lean.LeanChannel},
moved lazily: a request costs no C{callLater} and no cancel; a timer that
fires checks whether its time really came, and sets itself again for
what is left if not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall

from multiport.handlers.webchannel import cancelCall, endSlowHeaders

if TYPE_CHECKING:
    from multiport.handlers.web import PortSite


class ConnectionTimers:
    """
    A connection's idle timeout (C{site.timeOut}, from its last answer)
    and header timeout (C{site.headerTimeout}, from a head's first byte).
    """

    site: PortSite
    # The port's connection wrapper (a TCP or TLS transport).
    transport: Any
    _closing = False
    _headerDeadline: IDelayedCall | None = None
    _idle: IDelayedCall | None = None
    #: When the head being received began, and when the connection went
    #: idle: None when it is not.
    _headSince: float | None = None
    _idleSince: float | None = None

    def _close(self) -> None:
        raise NotImplementedError

    def _headerTimer(self) -> None:
        # Only a head still incomplete after a read costs a timer (most
        # arrive whole).
        if self._headSince is not None and self._headerDeadline is None:
            self._headerDeadline = self.site.reactor.callLater(
                self.site.headerTimeout, self._headersTooSlow
            )

    def _idleAgain(self) -> None:
        timeout = self.site.timeOut
        if timeout is None or self._closing:
            return
        self._idleSince = self.site.reactor.seconds()
        if self._idle is None:
            self._idle = self.site.reactor.callLater(timeout, self._idleTooLong)

    def _cancelIdle(self) -> None:
        self._idleSince = None

    def _idleTooLong(self) -> None:
        self._idle = None
        if self._idleSince is None:
            # Busy: _idleAgain starts the timer again.
            return
        timeout = self.site.timeOut
        assert timeout is not None
        left = self._idleSince + timeout - self.site.reactor.seconds()
        if left > 0:
            self._idle = self.site.reactor.callLater(left, self._idleTooLong)
        else:
            self._close()

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
        if self._headSince is None:
            return
        left = self._headSince + self.site.headerTimeout - self.site.reactor.seconds()
        if left > 0:
            # A later head than the one the timer was set for.
            self._headerDeadline = self.site.reactor.callLater(
                left, self._headersTooSlow
            )
        else:
            endSlowHeaders(self.transport)

    def _cancelHeaderDeadline(self) -> None:
        self._headSince = None

    def _stopTimers(self) -> None:
        self._headSince = self._idleSince = None
        deadline, self._headerDeadline = self._headerDeadline, None
        idle, self._idle = self._idle, None
        cancelCall(deadline)
        cancelCall(idle)
