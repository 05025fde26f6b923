"""
An epoll reactor with a cheaper dispatch: C{twistd --reactor multiport-epoll}.

Twisted's L{EPollReactor} runs every event through C{log.callWithLogger},
which reaches the log context through eight Python calls (thread-local
lookups, a context stack search, two dict copies) before the descriptor's
C{doRead} runs; with an echo protocol that costs about as much CPU as the
C{recv} and C{send} themselves.  L{MultiportEPollReactor} does the same
bookkeeping inline: it pushes the same C{{"system": logPrefix}} log context
onto the reactor thread's context stack, logs exceptions the same way, and
handles a plain read event without the generic C{_doReadOrWrite}.  Nothing
else changes: it is an L{EPollReactor}.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import context, log
from twisted.python.log import ILogContext

__all__ = ["MultiportEPollReactor", "install"]


class MultiportEPollReactor(EPollReactor):
    """
    L{EPollReactor} whose C{doPoll} sets up each event's log context inline.
    """

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        if not events:
            return
        tracker = context.theContextTracker
        if not isinstance(tracker, context.ThreadedContextTracker):
            # Someone installed a context tracker of their own: use the
            # stock dispatch, which goes through it.
            self._dispatchStock(events)
            return
        # The reactor thread's context stack, and the log context every
        # event's own is a copy of (as log.callWithContext makes it).
        stack = tracker.currentContext()
        contexts = stack.contexts
        outer = stack.getContext(ILogContext)
        selectables = self._selectables
        doReadOrWrite = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                prefix = selectable.logPrefix()
            except KeyboardInterrupt:
                raise
            except BaseException:
                prefix = "(buggy logPrefix method)"
                log.err(system=prefix)
            logContext = outer.copy()
            logContext["system"] = prefix
            contexts.append({ILogContext: logContext})
            try:
                if event == EPOLLIN:
                    # _doReadOrWrite's read branch, for the common case.
                    why: Any = None
                    inRead = False
                    try:
                        if selectable.fileno() == -1:
                            why = _NO_FILEDESC
                        else:
                            why = selectable.doRead()
                            inRead = True
                    except BaseException:
                        why = sys.exc_info()[1]
                        log.err()
                    if why:
                        self._disconnectSelectable(selectable, why, inRead)
                else:
                    doReadOrWrite(selectable, fd, event)
            except KeyboardInterrupt:
                contexts.pop()
                raise
            except BaseException:
                contexts.pop()
                log.err(system=prefix)
            else:
                contexts.pop()

    def _dispatchStock(self, events: list[tuple[int, int]]) -> None:
        """
        EPollReactor's own dispatch loop.
        """
        for fd, event in events:
            selectable = self._selectables.get(fd)
            if selectable is not None:
                log.callWithLogger(
                    selectable, self._doReadOrWrite, selectable, fd, event
                )

    doIteration = doPoll


def install() -> None:
    """
    Install L{MultiportEPollReactor} as the global reactor.
    """
    installReactor(MultiportEPollReactor())
