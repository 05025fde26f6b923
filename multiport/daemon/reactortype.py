"""
The reactor as the daemon's services use it: one interface naming every
reactor interface they call, so that a service's reactor is typed by what
it does rather than by C{Any}.

(The types helper's C{multiport.io.reactortype.ReactorLike} is meant to be
this same idea for the whole package; when both exist, keep that one.)
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorProcess,
    IReactorSocket,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
)


class IDaemonReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorProcess,
    IReactorSocket,
    IReactorThreads,
):
    """
    A reactor that runs, keeps time, listens (TCP, TLS), spawns processes,
    adopts sockets and takes calls from a signal handler.
    """


def globalReactor() -> IDaemonReactor:
    """
    The global reactor, installing Twisted's default if none is.
    """
    from twisted.internet import reactor

    # To a type checker the name is the module twisted.internet.reactor;
    # what it holds once imported is the installed reactor, which provides
    # all of these.
    return cast(IDaemonReactor, reactor)
