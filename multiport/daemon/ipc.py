"""
The channel between the main process and its workers: a UNIX socket pair
carrying length-prefixed messages, and listening sockets passed alongside
them (SCM_RIGHTS).

Each message is a pickled C{(kind, id, payload)}.  A call is answered by a
C{("reply", id, (ok, value))}.  Descriptors sent with L{Channel.call} travel
with the message's first bytes, so the receiving side has them, in order,
before it reads the message that names them.  Both ends are the same
program (one process spawned the other over a private socket pair), which
is what makes pickle acceptable here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

log = Logger()


class RemoteError(Exception):
    """
    The other side's handler failed; the message says why.
    """


#: What answers one kind of message: called with the payload and the
#: descriptors that came with it; its answer (or a Deferred of it) goes back.
Handler = Callable[[object, list[int]], object]


@implementer(IFileDescriptorReceiver)
class Channel(Int32StringReceiver):
    """
    One end of the channel.

    @ivar handlers: Message kinds to the functions answering them; each is
        called with the payload and the descriptors that came with it, and
        may return a L{Deferred}.
    @ivar lost: Fires when the channel closes.
    """

    MAX_LENGTH = 512 * 1024 * 1024

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers
        self._next = 0
        self._waiting: dict[int, Deferred[object]] = {}
        self._descriptors: list[int] = []
        self.lost: Deferred[None] = Deferred()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._descriptors.append(descriptor)

    def call(
        self, kind: str, payload: object, descriptors: Sequence[int] = ()
    ) -> Deferred[object]:
        """
        Send C{payload} (and C{descriptors}) to the other side's C{kind}
        handler; a L{Deferred} firing with its answer, or failing with
        L{RemoteError}.
        """
        self._next += 1
        answer: Deferred[object] = Deferred()
        self._waiting[self._next] = answer
        for descriptor in descriptors:
            self.transport.sendFileDescriptor(descriptor)  # type: ignore[union-attr]
        self.sendString(pickle.dumps((kind, self._next, (payload, len(descriptors)))))  # type: ignore[no-untyped-call]
        return answer

    def stringReceived(self, data: bytes) -> None:
        kind, identifier, body = pickle.loads(data)
        if kind == "reply":
            waiting = self._waiting.pop(identifier, None)
            ok, value = body
            if waiting is not None:
                if ok:
                    waiting.callback(value)
                else:
                    waiting.errback(RemoteError(value))
            return
        payload, count = body
        descriptors = self._descriptors[:count]
        del self._descriptors[:count]
        handler = self.handlers.get(kind)
        if handler is None:
            self._reply(identifier, False, f"unknown message {kind!r}")
            for descriptor in descriptors:
                os.close(descriptor)
            return
        result = maybeDeferred(handler, payload, descriptors)
        result.addCallbacks(
            lambda value: self._reply(identifier, True, value),
            lambda failure: self._failed(identifier, kind, failure),
        )

    def _failed(self, identifier: int, kind: str, failure: Failure) -> None:
        if not failure.check(RemoteError):  # type: ignore[no-untyped-call]
            log.failure("handling {kind} failed", failure, kind=kind)
        self._reply(identifier, False, failure.getErrorMessage())

    def _reply(self, identifier: int, ok: bool, value: object) -> None:
        if self.transport is not None and self.connected:
            self.sendString(pickle.dumps(("reply", identifier, (ok, value))))  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            answer.errback(RemoteError("the channel closed"))
        for descriptor in self._descriptors:
            os.close(descriptor)
        self._descriptors = []
        self.lost.callback(None)


def channelFactory(channel: Protocol) -> ServerFactory:
    """
    A factory whose one connection is C{channel} (a protocol): for
    adopting one end of a socket pair.
    """
    # forProtocol's stub says Factory of Channel; it builds an instance of
    # the class it is called on, and adoptStreamConnection's stub asks for
    # the default ServerFactory (its protocol type is invariant).
    return cast(ServerFactory, ServerFactory.forProtocol(lambda: channel))
