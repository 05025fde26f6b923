"""
The http handler's HTTP connection: twisted.web's C{HTTPChannel} that
drains when its port goes away (L{DrainingChannel}), refuses malformed
requests (L{StrictChannel}) and times out idle connections and slow
headers (L{TimedChannel}).
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from multiport.handlers.interface import IBetweenMessages, IDrainable
from multiport.io.transport import coalesceWrites

#: How long an http connection may sit idle between requests when the port
#: sets no idle_timeout: nginx's keepalive_timeout.  It is also the http
#: handlers' default idle_timeout (L{HTTP_POLICY}).
DEFAULT_IDLE_TIMEOUT = 75.0
#: How long a request's headers may take to arrive (slowloris) when the
#: port sets no header_timeout.
DEFAULT_HEADER_TIMEOUT = 20.0


@implementer(IDrainable)
class DrainingChannel(HTTPChannel):
    """
    An HTTP channel that, when its port goes away, closes at once between
    requests and otherwise after answering the request in flight (with
    C{Connection: close}), as nginx does at a graceful stop.

    A connection that has not had its first request answered yet is not
    between requests: its client connected before the drain and is sending
    (or about to send, after its TLS handshake) a request that closing
    would lose, with a reset.  It gets that one request answered, within
    the header timeout; only a kept-alive connection that went quiet after
    an answer is closed at once, which HTTP lets a server do at any time.
    """

    # The port's connection wrapper, a TCP transport.
    transport: ITCPTransport
    _draining = False
    #: An answer was finished on this connection.
    _answered = False

    def drain(self) -> None:
        self._draining = True
        if self.requests:
            # Close once the answer in flight is sent.
            self.persistent = False
        elif self._answered and self.betweenMessages():
            self.loseConnection()  # type: ignore[no-untyped-call]
        # Else the first request is still to come (or a next one is
        # arriving): not persistent now would make HTTPChannel drop it
        # unanswered; checkPersistence answers it with Connection: close.

    def betweenMessages(self) -> bool:
        """
        No request in progress or being answered (L{TimedChannel} also
        knows whether bytes of the next one came).
        """
        return not self.requests

    def requestDone(self, request: Any) -> None:
        self._answered = True
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        if self._draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))  # type: ignore[no-untyped-call]


#: Reason phrases of the answers a channel gives on its own (RFC 9110 and
#: RFC 6585 names).
_PHRASES = {
    400: b"Bad Request",
    411: b"Length Required",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}


def refusal(status: int, why: str, version: bytes = b"HTTP/1.1") -> bytes:
    """
    The whole answer to a request refused before it is served: C{status},
    C{why} as a plain text body, and C{Connection: close}.
    """
    body = f"{why}\n".encode()
    return (
        b"%s %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (version, status, _PHRASES[status], len(body), body)
    )


class StrictChannel(DrainingChannel):
    """
    An HTTP/1.1 channel that parses request heads as nginx does where
    twisted.web's L{HTTPChannel} is looser, and that answers every request
    it can't take with a status line and a close, never with silence:

      - a bare LF ends a line, as CRLF does (RFC 9112 section 2.2 allows
        it; nginx does it), instead of waiting for a CR until
        C{header_timeout};
      - a line folded onto the one before (obs-fold, or whitespace before
        the first header) is refused with 400 rather than joined (RFC 9112
        section 5.2 lets a server do either; nginx refuses);
      - a request line over L{MAX_LENGTH} answers 414, header lines over it
        or a head over L{totalHeadersSize} 431, where twisted.web closes
        without a word (nginx: 414, and 400 for headers).
    """

    delimiter = b"\n"
    _refused = False
    _headSize = 0

    def refuse(self, status: int, why: str) -> None:
        """
        Answer C{status} with C{why} as a plain text body, and close.
        """
        transport: Any = self.transport
        transport.write(refusal(status, why))
        self._refused = True
        self.loseConnection()  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not self.requests:
            # No request line yet: a new head starts.
            self._headSize = 0
        elif line[:1] in (b" ", b"\t"):
            self.refuse(400, "Folded header lines (obs-fold) are not accepted.")
            return
        self._headSize += len(line)
        if self._headSize > self.totalHeadersSize:
            self.refuse(431, "The request's header fields are too large.")
            return
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        if self.requests:
            self.refuse(431, "A request header field is too large.")
        else:
            self.refuse(414, "The request line is too long.")


def endSlowHeaders(transport: object) -> None:
    """
    End a connection whose request headers did not arrive within the
    header timeout: through the port's wrapper, which logs and counts it
    as C{header_timeout}, or with a reset.
    """
    timedOut = getattr(transport, "timedOut", None)
    if timedOut is not None:
        timedOut("header_timeout")
    elif transport is not None:
        cast(ITCPTransport, transport).abortConnection()


def cancelCall(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} if it is still to run.
    """
    if call is not None and call.active():
        call.cancel()


@implementer(IBetweenMessages)
class TimedChannel(StrictChannel):
    """
    An HTTP/1.1 channel that closes a connection whose request headers take
    longer than C{headerTimeout} to arrive, counted from the request's first
    byte (a slowloris client trickles headers forever), and whose writes
    are sent once per event (L{coalesceWrites}).
    """

    headerTimeout: float = DEFAULT_HEADER_TIMEOUT
    _headerDeadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        # twisted.web writes a response's headers, then its body: held and
        # sent together, they leave in one TCP segment.
        coalesceWrites(self.transport)
        super().connectionMade()  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        if self._headerDeadline is None and self.line_mode:
            self._headerDeadline = self.callLater(  # type: ignore[no-untyped-call]
                self.headerTimeout, self._headersTooSlow
            )
        super().dataReceived(data)

    def betweenMessages(self) -> bool:
        """
        No request in progress or being answered, and no byte of the next
        one received.
        """
        return not self.requests and self._headerDeadline is None

    def allHeadersReceived(self) -> None:
        self._cancelHeaderDeadline()
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def _cancelHeaderDeadline(self) -> None:
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
        endSlowHeaders(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelHeaderDeadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
