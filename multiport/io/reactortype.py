"""
The reactor's type: the Twisted interfaces multiport calls, as one.

Twisted types its global reactor (C{twisted.internet.reactor}) as a
type-checking-only interface of the commonly implemented parts (core, time,
descriptors, TCP, processes); multiport also listens with TLS, adopts
sockets a parent process passed on, and is called from signal handlers'
threads.  L{ReactorLike} names all of these at once, so that a reactor
parameter says what it is used for instead of being C{Any}.

It is a C{zope.interface} interface rather than a C{typing.Protocol}:
Twisted's reactor interfaces are interfaces, and an interface may extend
several of them (a C{Protocol} can't inherit from an interface), which is
what mypy-zope then checks calls against.  It is a type only: nothing
declares that it provides it, nothing asks C{ReactorLike.providedBy} at
run time, and the test doubles (L{twisted.internet.testing.MemoryReactor}
and its C{Clock} variant) keep working wherever a real reactor does.

For a third-party handler author: L{multiport.handlers.HandlerContext} has
C{reactor: ReactorLike} (for connections: C{context.reactor.connectTCP},
an endpoint's reactor) and C{clock: IReactorTime} (for timers and time:
C{context.clock.callLater}, C{context.clock.seconds()}).  Annotate a
function that takes the reactor with the narrowest interface it uses
(C{IReactorTCP}, C{IReactorTime}), or with L{ReactorLike} when it needs
several; mypy with the mypy-zope plugin checks the calls::

    from twisted.internet.interfaces import IReactorTime
    from multiport.handlers import HandlerContext

    def build(context: HandlerContext) -> IProtocolFactory:
        clock: IReactorTime = context.clock
        ...

Code that takes the global reactor itself gets it typed by
L{globalReactor}.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorSocket,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)

__all__ = ["ReactorLike", "globalReactor"]


class ReactorLike(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorUDP,
    IReactorSocket,
    IReactorFDSet,
    IReactorProcess,
    IReactorFromThreads,
):
    """
    A reactor as multiport uses it:

      - L{IReactorCore}: C{run}, C{stop}, C{running}, system event
        triggers (a worker process, the daemon's shutdown);
      - L{IReactorTime}: C{seconds}, C{callLater};
      - L{IReactorTCP}, L{IReactorSSL}: listening ports, upstream
        connections;
      - L{IReactorUDP}: UDP ports, the UDP relay's upstream sockets;
      - L{IReactorSocket}: C{adoptStreamPort} and
        C{adoptStreamConnection} (sockets passed on to a worker);
      - L{IReactorFDSet}: the readers and writers of a splice(2) relay;
      - L{IReactorProcess}: C{spawnProcess} (the workers);
      - L{IReactorFromThreads}: C{callFromThread} (signal handlers).

    Every Twisted reactor multiport runs on (its own epoll reactor,
    Twisted's epoll, poll and select reactors) provides all of them.
    """


def globalReactor() -> ReactorLike:
    """
    The reactor installed in this process (by twistd, or Twisted's default
    when none was): imported when called, never when this module is.
    """
    from twisted.internet import reactor

    # Twisted types the global reactor by the interfaces every reactor
    # has; the ones it leaves out (TLS, adopting sockets, calls from
    # threads) are those of every posix reactor, which multiport needs.
    return cast(ReactorLike, reactor)
