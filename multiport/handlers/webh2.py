"""
HTTP/2 for the http handler on TLS ports: twisted.web's own
L{H2Connection}, chosen by ALPN, with the limits a public server needs
(concurrent streams, header list size, floods of SETTINGS and PING frames,
the rapid-reset attack), a header timeout, draining and counters.
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

# Twisted's and h2's methods called here are not annotated (mypy --strict):
# those calls carry type: ignore[no-untyped-call].
from typing_extensions import Buffer
from zope.interface import implementer

from multiport.handlers.interface import IBetweenMessages, IDrainable
from multiport.handlers.webh2frames import FrameEdges
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
# proxies: subclassed as Any, as mypy can't check them anyway.
_H2Base: Any = H2Connection
_GenericBase: Any = _GenericHTTPChannelProtocol

#: nginx's http2_max_concurrent_streams.
DEFAULT_MAX_CONCURRENT_STREAMS = 128
#: The largest header list (RFC 9113's uncompressed size: names, values and
#: 32 bytes each) a client may send: h2's default, twice nginx's 32 KiB of
#: large_client_header_buffers.
DEFAULT_MAX_HEADER_LIST_SIZE = 65536
#: SETTINGS and PING frames a connection may send at once, then per second:
#: a browser sends a handful per connection, a flood (CVE-2019-9512,
#: CVE-2019-9515) thousands.
CONTROL_FRAME_BURST = 100
CONTROL_FRAME_RATE = 10.0


class _BoundedH2State(h2.connection.H2Connection):
    """
    h2's connection state machine, which ends a connection whose client
    sends more SETTINGS and PING frames than a token bucket allows (h2 and
    twisted.web answer every one) with GOAWAY C{ENHANCE_YOUR_CALM}, and
    which notes how the client broke the protocol.
    """

    def __init__(self, clock: IReactorTime, streams: int, headerList: int) -> None:
        super().__init__(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: headerList,
            },
        )
        # h2 applies the advertised size to its HPACK decoder only once the
        # client acknowledges it: a client that never does is held to it too.
        self.decoder.max_header_list_size = headerList
        self._clock = clock
        self._tokens = float(CONTROL_FRAME_BURST)
        self._refilled = clock.seconds()
        self.floods = 0
        #: How the client broke the protocol (a flood too), when it did:
        #: the connection is being ended for it.
        self.failed: str | None = None
        #: The stream the last DATA frame went to.
        self.lastSent: int | None = None
        #: Whether the client changed the initial window of every stream.
        self.windowsChanged = False

    def send_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        end_stream: bool = False,
        pad_length: Any = None,
    ) -> None:
        self.lastSent = stream_id
        super().send_data(stream_id, data, end_stream, pad_length)

    def receive_data(self, data: Buffer) -> list[h2.events.Event]:
        try:
            events = super().receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.failed = str(e) or type(e).__name__
            raise
        control = sum(
            isinstance(e, (h2.events.PingReceived, h2.events.RemoteSettingsChanged))
            for e in events
        )
        if control:
            self.windowsChanged |= any(
                isinstance(e, h2.events.RemoteSettingsChanged)
                and SettingCodes.INITIAL_WINDOW_SIZE in e.changed_settings
                for e in events
            )
            now = self._clock.seconds()
            self._tokens = min(
                float(CONTROL_FRAME_BURST),
                self._tokens + max(0.0, now - self._refilled) * CONTROL_FRAME_RATE,
            )
            self._refilled = now
            self._tokens -= control
            if self._tokens < 0:
                self.floods += 1
                self.failed = "too many SETTINGS and PING frames"
                self.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                # twisted.web's H2Connection ends the connection on a
                # ProtocolError, after sending what h2 queued (the GOAWAY).
                raise h2.exceptions.DenialOfServiceError(self.failed)
        return events


@implementer(IDrainable, IBetweenMessages)
class PortH2Connection(_H2Base):  # type: ignore[misc]  # see _H2Base
    """
    twisted.web's HTTP/2 connection with the port's limits (L{_BoundedH2State}),
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
        self.conn = _BoundedH2State(reactor, maxStreams, maxHeaderList)
        self.counters = counters
        self._edges = FrameEdges()
        # Streams whose response is complete (twisted.web's endRequest).
        self._answered: set[int] = set()

    def connectionMade(self) -> None:
        self._open = True
        self.counters.add(HTTP2_CONNECTIONS)
        self.counters.add(HTTP2_CONNECTIONS_OPEN)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        state: _BoundedH2State = self.conn
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

    def betweenMessages(self) -> bool:
        """
        Every stream answered in full, no frame or header block begun, and
        the client kept to the protocol: now, or when the connection was
        lost (whose first news, the transport's C{stopProducing}, ends every
        stream before the port's wrapper asks).
        """
        if self._endedBetweenMessages is not None:
            return self._endedBetweenMessages
        state: _BoundedH2State = self.conn
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
        super()._sendPrioritisedData(*args)
        state: _BoundedH2State = self.conn
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

    def _requestReceived(self, event: Any) -> None:
        self.counters.add(HTTP2_STREAMS)
        self.counters.add(HTTP2_STREAMS_OPEN)
        super()._requestReceived(event)

    def _requestAborted(self, event: Any) -> None:
        self.counters.add(HTTP2_RESETS)
        wasProducing = self._stillProducing
        super()._requestAborted(event)
        if wasProducing and not self._stillProducing:
            # twisted.web's reset bucket ran dry: GOAWAY ENHANCE_YOUR_CALM.
            state: _BoundedH2State = self.conn
            state.failed = "too many stream resets (rapid reset)"
            self.counters.add(HTTP2_FLOODS, kind="rapid_reset")
            self._clientFailed(state.failed)

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
        timedOut = getattr(self.transport, "timedOut", None)
        if timedOut is not None:
            timedOut("header_timeout")
        elif self.transport is not None:
            self.transport.abortConnection()

    def _cancelHeaderDeadline(self) -> None:
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason: Failure = connectionDone, **kwargs: Any) -> None:
        if self._endedBetweenMessages is None:
            self._endedBetweenMessages = self.betweenMessages()
        self._cancelHeaderDeadline()
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
    ) -> None:
        super().__init__(channel)
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
