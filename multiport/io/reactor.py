"""
An epoll reactor with a cheaper dispatch: C{twistd --reactor multiport-epoll}.

Twisted's L{EPollReactor} runs every event through C{log.callWithLogger},
which reaches the log context through eight Python calls (thread-local
lookups, a context stack search, two dict copies) before the descriptor's
C{doRead} runs; with an echo protocol that costs about as much CPU as the
C{recv} and C{send} themselves.  L{MultiportEPollReactor} does the same
bookkeeping inline: it pushes the same C{{"system": logPrefix}} log context
onto the reactor thread's context stack (made only if something logs
through it, see L{_EventContext}), logs exceptions the same way, and
handles a plain read event without the generic C{_doReadOrWrite}.

It also has a L{WriteBatch}: the writes made to
L{multiport.io.transport.FastServer} connections that asked for it
(L{multiport.io.transport.coalesceWrites}) while one event is handled, or
while one round of timed calls (and calls from other threads) runs, are
held and sent when it ends, one system call per connection, so that a
response written in pieces (twisted.web's headers, then its body) leaves as
one TCP segment.  Nothing else changes:
it is an L{EPollReactor}.
"""

from __future__ import annotations

import errno
import select
import sys
from collections.abc import Callable
from select import EPOLLIN
from typing import TYPE_CHECKING, Protocol

from twisted.internet import main
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import (
    ILoggingContext,
    IReactorCore,
    IReadWriteDescriptor,
)
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.python.log import ILogContext

from multiport.io.transport import WriteBatch

__all__ = ["MultiportEPollReactor", "install"]


# What is used here of Twisted's unannotated functions and private names,
# typed as they are used (the objects themselves are Twisted's).


class _LogErr(Protocol):
    """
    L{log.err}: log the current exception, or C{_stuff}.
    """

    def __call__(
        self, _stuff: object = None, _why: str | None = None, **kw: object
    ) -> None: ...


class _CallWithLogger(Protocol):
    """
    L{log.callWithLogger}: call C{func} in C{logger}'s log context, logging
    what it raises.
    """

    def __call__(
        self, logger: ILoggingContext, func: Callable[..., object], *args: object
    ) -> object: ...


class _ContextStack(Protocol):
    """
    A thread's stack of contexts (L{context.ContextTracker}), as
    L{MultiportEPollReactor.doPoll} uses it: it pushes an event's context
    and reads the log context, a dict.
    """

    contexts: list[object]

    def getContext(self, key: type[ILogContext]) -> dict[str, object]: ...


_logErr: _LogErr = log.err
_callWithLogger: _CallWithLogger = log.callWithLogger
_installReactor: Callable[[IReactorCore], None] = main.installReactor

if TYPE_CHECKING:

    class _EPollReactor(EPollReactor):
        """
        L{EPollReactor} as mypy sees it: the private names
        L{MultiportEPollReactor} uses, which Twisted leaves unannotated.
        Its selectables are L{FileDescriptor}s (readers and writers).
        """

        _poller: select.epoll
        _selectables: dict[int, IReadWriteDescriptor]

        def __init__(self) -> None: ...
        def _doReadOrWrite(
            self, selectable: IReadWriteDescriptor, fd: int, event: int
        ) -> None: ...
        def _disconnectSelectable(
            self,
            selectable: IReadWriteDescriptor,
            why: object,
            isRead: bool,
            faildict: dict[type[BaseException], Failure] = ...,
        ) -> None: ...

else:
    _EPollReactor = EPollReactor


def _prefixOf(selectable: ILoggingContext, report: bool = True) -> str:
    """
    C{selectable.logPrefix()}, or what L{log.callWithLogger} says when it
    raises (and logs, if C{report}: not from inside the log context, where
    logging would ask for the prefix again).
    """
    try:
        return selectable.logPrefix()
    except KeyboardInterrupt:
        raise
    except BaseException:
        if report:
            _logErr(system="(buggy logPrefix method)")
        return "(buggy logPrefix method)"


class _EventContext:
    """
    The context of one event, on the reactor thread's context stack while
    it runs: C{{ILogContext: {..., "system": prefix}}}, made only when
    something asks for it (a legacy C{log.msg}), since most events log
    nothing.  One per event: whoever keeps it (a thread pool runs its work
    in the context it was called in) keeps that event's prefix.
    """

    __slots__ = ("outer", "selectable")

    def __init__(self, outer: dict[str, object], selectable: ILoggingContext) -> None:
        self.outer = outer
        self.selectable = selectable

    def __getitem__(self, key: object) -> dict[str, object]:
        if key is not ILogContext:
            raise KeyError(key)
        logContext = self.outer.copy()
        logContext["system"] = _prefixOf(self.selectable, report=False)
        return logContext


class MultiportEPollReactor(_EPollReactor):
    """
    L{EPollReactor} whose C{doPoll} sets up each event's log context inline,
    and which holds the writes to L{multiport.io.transport.FastServer}
    connections (those that ask) made during each event and each round of
    timed calls until it ends.

    @ivar writeBatch: The writes held now.
    """

    def __init__(self) -> None:
        self.writeBatch = WriteBatch()
        super().__init__()

    def runUntilCurrent(self) -> None:
        batch = self.writeBatch
        if batch.open:
            # Called from within an event or a timed call (a nested
            # iterate): the outer one sends.
            super().runUntilCurrent()
            return
        batch.open = True
        try:
            super().runUntilCurrent()
        finally:
            batch.open = False
            if batch.pending:
                batch.flush()

    # Named as ReactorBase.doIteration names it (doIteration is this),
    # where EPollReactor.doPoll says "timeout".
    def doPoll(self, delay: float | None) -> None:
        timeout = -1 if delay is None else delay
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
        currentContext: Callable[[], _ContextStack] = tracker.currentContext
        stack = currentContext()
        contexts = stack.contexts
        outer = stack.getContext(ILogContext)
        selectables = self._selectables
        doReadOrWrite = self._doReadOrWrite
        batch = self.writeBatch
        pending = batch.pending
        batch.open = True
        try:
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                contexts.append(_EventContext(outer, selectable))
                try:
                    if event == EPOLLIN:
                        # _doReadOrWrite's read branch, for the common case.
                        why: object = None
                        inRead = False
                        try:
                            if selectable.fileno() == -1:
                                why = _NO_FILEDESC
                            else:
                                why = selectable.doRead()
                                inRead = True
                        except BaseException:
                            why = sys.exc_info()[1]
                            _logErr()
                        if why:
                            self._disconnectSelectable(selectable, why, inRead)
                    else:
                        doReadOrWrite(selectable, fd, event)
                except KeyboardInterrupt:
                    contexts.pop()
                    raise
                except BaseException:
                    contexts.pop()
                    _logErr(system=_prefixOf(selectable))
                else:
                    contexts.pop()
                if pending:
                    if len(pending) == 1:
                        # WriteBatch.flush's common case, inline: a
                        # call costs a tenth of an echo's reply.
                        try:
                            pending.pop().flushWrites()
                        except Exception:
                            _logErr(system=_prefixOf(selectable))
                    else:
                        batch.flush()
        finally:
            # (A doPoll nested in a round of timed calls, by an iterate()
            # call, ends that round's holding early: still in order.)
            batch.open = False
            if pending:
                batch.flush()

    def _dispatchStock(self, events: list[tuple[int, int]]) -> None:
        """
        EPollReactor's own dispatch loop, sending each event's writes after
        it.
        """
        batch = self.writeBatch
        batch.open = True
        try:
            for fd, event in events:
                selectable = self._selectables.get(fd)
                if selectable is not None:
                    _callWithLogger(
                        selectable, self._doReadOrWrite, selectable, fd, event
                    )
                if batch.pending:
                    batch.flush()
        finally:
            batch.open = False
            if batch.pending:
                batch.flush()

    doIteration = doPoll


def install() -> None:
    """
    Install L{MultiportEPollReactor} as the global reactor.
    """
    _installReactor(MultiportEPollReactor())
