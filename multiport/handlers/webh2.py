"""
HTTP/2 for the http handler on TLS ports: twisted.web's own
L{H2Connection}, chosen by ALPN, with the limits a public server needs
(L{multiport.handlers.webh2state}: concurrent streams, header list size,
floods of SETTINGS and PING frames; and the rapid-reset attack), a header
timeout, draining, counters, and fixes for what twisted.web's HTTP/2 gets
wrong (a stream waiting for its window spins; a stream that ends before its
answer leaves the answer's producer running...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from zope.interface import implementer

from multiport.handlers.interface import IBetweenMessages, IDrainable
from multiport.handlers.webchannel import endSlowHeaders
from multiport.handlers.webh2frames import FrameEdges
from multiport.handlers.webh2state import (
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_HEADER_LIST_SIZE,
    BoundedH2State,
)
from multiport.ports.counters import (
    HTTP2_CONNECTIONS,
    HTTP2_CONNECTIONS_OPEN,
    HTTP2_FLOODS,
    HTTP2_RESETS,
    HTTP2_STREAMS,
    HTTP2_STREAMS_OPEN,
    HandlerCounters,
)

# twisted.web's HTTP/2 classes are unannotated and partly typed by their
# proxies: subclassed as Any, as mypy can't check them anyway; its other
# calls carry type: ignore[no-untyped-call].
_H2Base: Any = H2Connection
_GenericBase: Any = _GenericHTTPChannelProtocol


#: Stream resets a client may send at once, and how many more a second,
#: before its connection is cut off (twisted.web 26.10's figures).
RESET_BURST = 1000
RESET_RATE = 33.0


@implementer(IDrainable, IBetweenMessages)
class PortH2Connection(_H2Base):  # type: ignore[misc]  # see _H2Base
    """
    twisted.web's HTTP/2 connection with the port's limits (L{BoundedH2State}),
    a header timeout, draining, and counters.

    Header timeout: a frame, or a header block (a HEADERS frame and its
    CONTINUATION frames), that does not arrive whole within
    C{headerTimeout} of its first byte (a slowloris client trickling one)
    closes the connection, as a request head that takes too long does on
    HTTP/1.1.

    @ivar counters: The port's handler counters (L{multiport.ports.counters}
        names them: L{HTTP2_CONNECTIONS} and the rest).
    """

    headerTimeout: float = 20.0
    _headerDeadline: IDelayedCall | None = None
    _draining = False
    _open = False
    _closing = False
    _endedBetweenMessages: bool | None = None
    #: Ended for a flood: later events of the same read are not served.
    _cut = False
    # twisted.web's: what its sending loop waits on when no stream can send.
    _sendingDeferred: Deferred[object] | None

    def __init__(
        self,
        reactor: Any,
        counters: HandlerCounters,
        maxStreams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
        maxHeaderList: int = DEFAULT_MAX_HEADER_LIST_SIZE,
    ) -> None:
        super().__init__(reactor)
        self.conn = BoundedH2State(reactor, maxStreams, maxHeaderList)
        self.counters = counters
        self._edges = FrameEdges()
        # Streams whose response is complete (twisted.web's endRequest).
        self._answered: set[int] = set()
        # The rapid-reset bucket starts full.
        self._resets = float(RESET_BURST)
        self._resetsAt = reactor.seconds()

    def connectionMade(self) -> None:
        self._open = True
        self.counters.add(HTTP2_CONNECTIONS)
        self.counters.add(HTTP2_CONNECTIONS_OPEN)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        state: BoundedH2State = self.conn
        edges = self._edges
        if edges.feed(data) or not edges.pending:
            self._cancelHeaderDeadline()
        if edges.pending and self._headerDeadline is None:
            self._headerDeadline = self._reactor.callLater(
                self.headerTimeout, self._headersTooSlow
            )
        try:
            super().dataReceived(data)
        finally:
            if state.floods:
                self.counters.add(HTTP2_FLOODS, state.floods, kind="ping_settings")
                state.floods = 0
            if state.failed is not None:
                self._clientFailed(state.failed)
        if state.windowsChanged:
            state.windowsChanged = False
            self._reconsider(list(self.streams))
        self._forgetStreamsResetByH2()

    # h2 resets a stream by itself when the client breaks the stream's
    # state (a second HEADERS on a stream whose request ended, say), and
    # tells twisted.web nothing: the stream's answer then meets a closed
    # stream in the sending loop, which dies with an unhandled error,
    # stalling every other stream of the connection.

    def _closedInH2(self, streamID: int) -> bool:
        stream = self.conn.streams.get(streamID)
        return stream is None or bool(stream.closed)

    def _requestEnded(self, event: Any) -> None:
        streamID = event.stream_id
        if self._cut or self._closedInH2(streamID):
            # Not served: the stream goes at its StreamReset event (the
            # client reset it) or after this read.
            return
        if self.streams[streamID].path is None:
            # No :path (a CONNECT): twisted.web would raise serving it.
            # Answered 400 here; the stream, now closed, goes after this
            # read (not now: events of this read may still name it).
            self.conn.send_headers(streamID, [(b":status", b"400")], end_stream=True)
            self._tryToWriteControlData()
            return
        super()._requestEnded(event)

    def _forgetStreamsResetByH2(self) -> None:
        for streamID in [s for s in self.streams if self._closedInH2(s)]:
            self._stopAnswer(streamID)
            self.streams[streamID].connectionLost(
                Failure(ConnectionLost("stream reset: the client broke its state"))  # type: ignore[no-untyped-call]
            )
            self._requestDone(streamID)

    def betweenMessages(self) -> bool:
        """
        Every stream answered in full, no frame or header block begun, and
        the client kept to the protocol: now, or when the connection was
        lost (whose first news, the transport's C{stopProducing}, ends every
        stream before the port's wrapper asks).
        """
        if self._endedBetweenMessages is not None:
            return self._endedBetweenMessages
        state: BoundedH2State = self.conn
        return (
            state.failed is None
            and not self._edges.pending
            and all(map(self._sentInFull, self.streams))
        )

    def _sentInFull(self, streamID: int) -> bool:
        # Answered, and no byte of the answer left to send: twisted.web
        # sends each DATA frame, then END_STREAM, a reactor turn apart, and
        # curl leaves once it has the Content-Length's bytes, before the
        # END_STREAM.
        if streamID not in self._answered:
            return False
        try:
            window = self.conn.local_flow_control_window(streamID)
        except h2.exceptions.ProtocolError:
            return False
        return bool(self.remainingOutboundWindow(streamID) == window)

    def endRequest(self, streamID: int) -> None:
        self._answered.add(streamID)
        super().endRequest(streamID)
        self._reconsider([streamID])

    # twisted.web's sending loop (_sendPrioritisedData) takes any stream
    # with data queued, even one whose flow-control window is spent: it
    # sends nothing and tries again on the next reactor turn.  A client that
    # stops reading a response larger than its window (64 KiB) would spin
    # the daemon at 100% CPU.  Such a stream is taken out of the loop until
    # the client opens its window.

    def _sendPrioritisedData(self, *args: Any) -> None:
        try:
            super()._sendPrioritisedData(*args)
        except h2.exceptions.StreamClosedError as e:
            # A stream h2 reset by itself since its answer was queued: it
            # leaves the loop, which goes on.
            self.priority.block(e.stream_id)
            self._reactor.callLater(0, self._forgetStreamsResetByH2)
            self._reactor.callLater(0, self._sendPrioritisedData)
            return
        state: BoundedH2State = self.conn
        sent, state.lastSent = state.lastSent, None
        if sent is not None:
            self._reconsider([sent])

    def _handleWindowUpdate(self, event: Any) -> None:
        super()._handleWindowUpdate(event)
        self._reconsider([event.stream_id] if event.stream_id else list(self.streams))

    def _reconsider(self, streamIDs: list[int]) -> None:
        """
        Take the streams among C{streamIDs} that have data queued and no
        window out of the sending loop; put those with both back in, and
        wake the loop if it waits.
        """
        sendable = False
        for streamID in streamIDs:
            if streamID not in self.streams:
                continue
            try:
                window = self.conn.local_flow_control_window(streamID)
            except h2.exceptions.ProtocolError:
                continue
            if self.remainingOutboundWindow(streamID) < window:
                # Data queued (twisted.web counts it against the window).
                if window <= 0:
                    self.priority.block(streamID)
                else:
                    self.priority.unblock(streamID)
                    sendable = True
        waiting = self._sendingDeferred
        if sendable and waiting is not None:
            self._sendingDeferred = None
            waiting.callback(None)

    def _clientFailed(self, why: str) -> None:
        # The connection log says error, and why (the port's wrapper).
        protocolError = getattr(self.transport, "protocolError", None)
        if protocolError is not None:
            protocolError(f"HTTP/2 protocol error: {why}")

    def _requestAborted(self, event: Any) -> None:
        if self._cut:
            return
        self.counters.add(HTTP2_RESETS)
        self._stopAnswer(event.stream_id)
        # Our own token bucket, with twisted.web 26.10's figures: Twisted
        # 26.4, which setup.cfg admits, has none (CVE-2023-44487).
        now = self._reactor.seconds()
        elapsed = max(0.0, now - self._resetsAt)
        self._resets = min(RESET_BURST, self._resets + elapsed * RESET_RATE)
        self._resetsAt = now
        if self._resets < 1:
            self._cutOff("too many stream resets (rapid reset)")
            return
        self._resets -= 1
        super()._requestAborted(event)

    def _requestReceived(self, event: Any) -> None:
        if self._cut:
            return
        self.counters.add(HTTP2_STREAMS)
        self.counters.add(HTTP2_STREAMS_OPEN)
        super()._requestReceived(event)

    def _requestDataReceived(self, event: Any) -> None:
        if not self._cut:
            super()._requestDataReceived(event)

    def _cutOff(self, why: str) -> None:
        """
        End the connection for a flood: GOAWAY C{ENHANCE_YOUR_CALM}, the
        reason in the connection log, and no more events of this read
        served (the connection is gone).
        """
        self._cut = True
        state: BoundedH2State = self.conn
        state.failed = why
        self.counters.add(HTTP2_FLOODS, kind="rapid_reset")
        self._clientFailed(why)
        self.conn.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        if self._tryToWriteControlData():
            self.transport.loseConnection()
            self.connectionLost(
                Failure(ConnectionLost(why)),  # type: ignore[no-untyped-call]
                _cancelTimeouts=False,
            )

    def _stopAnswer(self, streamID: int) -> None:
        # A stream that ends (reset, or its connection lost) only tells its
        # request, which forgets its channel: the producer writing the
        # answer (a file) would go on being pulled, and raise once done.
        # HTTP/1.1's channel stops it; H2Stream doesn't.
        producer = getattr(self.streams.get(streamID), "producer", None)
        if producer is not None:
            producer.stopProducing()

    def _requestDone(self, streamID: int) -> None:
        self._answered.discard(streamID)
        if streamID in self.streams:
            self.counters.add(HTTP2_STREAMS_OPEN, -1)
        super()._requestDone(streamID)
        if self._draining and self._stillProducing and not self.streams:
            self._close()

    def drain(self) -> None:
        """
        Send GOAWAY (no new streams), answer the streams in flight, then
        close.
        """
        self._draining = True
        # Not h2's close_connection: its state machine would then refuse
        # every frame that follows, those of the streams in flight too.
        # (Streams a client opens anyway are answered as well; the port's
        # drain timeout bounds a client that never stops.)
        goaway = GoAwayFrame(
            0, last_stream_id=self.conn.highest_inbound_stream_id, error_code=0
        )
        if self._tryToWriteControlData() and self.transport is not None:
            self.transport.write(goaway.serialize())
            if not self.streams:
                self._close()

    def _close(self) -> None:
        # The transport closes only once no producer is registered (as
        # twisted.web's HTTPChannel.loseConnection knows): this one is.
        # H2Connection's own ends (a GOAWAY either way, a protocol error,
        # its idle timeout) forget that, and would leave TLS open (no
        # close_notify) until the client leaves.
        if not self._closing:
            self._closing = True
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        super().timeoutConnection()
        self._close()

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
        endSlowHeaders(self.transport)

    def _cancelHeaderDeadline(self) -> None:
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason: Failure = connectionDone, **kwargs: Any) -> None:
        if self._endedBetweenMessages is None:
            self._endedBetweenMessages = self.betweenMessages()
        self._cancelHeaderDeadline()
        for streamID in list(self.streams):
            self._stopAnswer(streamID)
        super().connectionLost(reason, **kwargs)
        if kwargs.get("_cancelTimeouts", True) is False:
            # H2Connection ending the connection itself, the transport
            # still up (see _close).
            self._close()
        elif self._open:
            self._open = False
            self.counters.add(HTTP2_CONNECTIONS_OPEN, -1)


@implementer(IDrainable, IBetweenMessages)
class PortChannel(_GenericBase):  # type: ignore[misc]  # see _H2Base
    """
    twisted.web's protocol that speaks HTTP/1.1 or HTTP/2 as ALPN chose, with
    L{PortH2Connection} for HTTP/2.

    twisted.web's own switch (L{_GenericHTTPChannelProtocol.dataReceived})
    builds a bare L{H2Connection}, with no way to pass limits or the
    reactor: this does the same steps with ours.
    """

    def __init__(
        self,
        channel: HTTPChannel,
        counters: HandlerCounters,
        headerTimeout: float,
        maxStreams: int,
        maxHeaderList: int,
        http1: Callable[[], IProtocol] | None = None,
    ) -> None:
        super().__init__(channel)
        self._http1 = http1
        self._counters = counters
        self._headerTimeout = headerTimeout
        self._maxStreams = maxStreams
        self._maxHeaderList = maxHeaderList

    _negotiatedProtocol: bytes | None = None
    _channel: Any

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            old: Any = self._channel
            negotiated = getattr(old.transport, "negotiatedProtocol", None)
            if negotiated == b"h2":
                producer: Any = old._networkProducer
                producer.unregisterProducer()
                old.setTimeout(None)
                new = PortH2Connection(
                    self._site.reactor,
                    self._counters,
                    self._maxStreams,
                    self._maxHeaderList,
                )
                new.headerTimeout = self._headerTimeout
                new.requestFactory = self._requestFactory
                new.site = self._site
                new.factory = self._factory
                new.timeOut = self._timeOut
                new.callLater = self._callLater
                self._channel = new
                new.makeConnection(old.transport)
                producer.registerProducer(new, True)
            elif self._http1 is not None:
                # HTTP/1.x on the port's own protocol rather than twisted.web's
                # channel, which stands aside as it does for HTTP/2.
                old._networkProducer.unregisterProducer()
                old.setTimeout(None)
                lean = self._http1()
                self._channel = lean
                lean.makeConnection(old.transport)
            self._negotiatedProtocol = negotiated or b"http/1.1"
        self._channel.dataReceived(data)

    def drain(self) -> None:
        """
        Drain whichever protocol the connection speaks.
        """
        channel = self._channel
        if IDrainable.providedBy(channel):
            channel.drain()

    def betweenMessages(self) -> bool:
        """
        Whether whichever protocol the connection speaks is between
        messages.
        """
        channel = self._channel
        return IBetweenMessages.providedBy(channel) and bool(channel.betweenMessages())
