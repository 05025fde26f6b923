"""
The C{agent-check} handler: a port answering HAProxy's C{agent-check}
with one line, then closing.  HAProxy reads it on every check
(C{agent-check agent-port N}): C{drain} while the daemon is drained
(L{IDaemonDrain}: the server's weight drops to 0, its open connections
go on), C{down} while a configured port does not listen (as C{/healthz}
answers 503), else C{up ready}.

It reports on the whole daemon, so under C{--workers} it runs in the main
process, where the drain is held.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol

from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    IDaemonDrain,
    IDaemonView,
)


def agentAnswer(daemon: IDaemonView | None) -> bytes:
    """
    The line an agent check gets about C{daemon}.
    """
    if daemon is None:
        return b"up ready\n"
    drainer = IDaemonDrain(daemon, None)
    if drainer is not None and drainer.drainState().draining:
        return b"drain\n"
    if any(not s.listening and not s.draining for s in daemon.portStatus()):
        return b"down\n"
    return b"up ready\n"


class AgentAnswer(Protocol):
    """
    Writes the daemon's state on one line, then closes.
    """

    def __init__(self, context: HandlerContext) -> None:
        self.context = context

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(agentAnswer(self.context.daemon))
        self.transport.loseConnection()


def buildAgent(context: HandlerContext) -> Factory:
    """
    The factory of one agent port.
    """
    return Factory.forProtocol(lambda: AgentAnswer(context))


haproxyAgent = Handler(
    "agent-check",
    "HAProxy agent-check: one line, drain, down or up ready, then close",
    buildAgent,
    servedByMainProcess=True,
)

__all__ = ["AgentAnswer", "agentAnswer", "buildAgent", "haproxyAgent"]
