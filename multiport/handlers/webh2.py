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
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

# Twisted's and h2's methods called here are not annotated (mypy --strict):
# those calls carry type: ignore[no-untyped-call].
from typing_extensions import Buffer
from zope.interface import implementer

from multiport.handlers.interface import IDrainable
from multiport.ports.counters import HandlerCounters

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
    which notes whether the last bytes received completed anything (a frame
    or a header block).
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
        self.madeProgress = False
        self.floods = 0

    def receive_data(self, data: Buffer) -> list[h2.events.Event]:
        events = super().receive_data(data)
        self.madeProgress = bool(events)
        control = sum(
            isinstance(e, (h2.events.PingReceived, h2.events.RemoteSettingsChanged))
            for e in events
        )
        if control:
            now = self._clock.seconds()
            self._tokens = min(
                float(CONTROL_FRAME_BURST),
                self._tokens + max(0.0, now - self._refilled) * CONTROL_FRAME_RATE,
            )
            self._refilled = now
            self._tokens -= control
            if self._tokens < 0:
                self.floods += 1
                self.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                # twisted.web's H2Connection ends the connection on a
                # ProtocolError, after sending what h2 queued (the GOAWAY).
                raise h2.exceptions.DenialOfServiceError(
                    "too many SETTINGS and PING frames"
                )
        return events


@implementer(IDrainable)
class PortH2Connection(_H2Base):  # type: ignore[misc]  # see _H2Base
    """
    twisted.web's HTTP/2 connection with the port's limits (L{_BoundedH2State}),
    a header timeout, draining, and counters.

    Header timeout: bytes that complete no HTTP/2 frame and no header block
    within C{headerTimeout} (a slowloris client trickling a HEADERS frame or
    its CONTINUATION frames) close the connection, as a request head that
    takes too long does on HTTP/1.1.

    @ivar counters: The port's handler counters: C{http2_connections},
        C{http2_streams}, C{http2_streams_open} (now), C{http2_resets} (by
        the client) and C{http2_floods}.
    """

    headerTimeout: float = 20.0
    _headerDeadline: IDelayedCall | None = None
    _draining = False

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

    def connectionMade(self) -> None:
        self.counters.add("http2_connections")
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        state: _BoundedH2State = self.conn
        try:
            super().dataReceived(data)
        finally:
            if state.floods:
                self.counters.add("http2_floods", state.floods)
                state.floods = 0
        if state.madeProgress:
            self._cancelHeaderDeadline()
        elif self._headerDeadline is None and self.transport is not None:
            self._headerDeadline = self._reactor.callLater(
                self.headerTimeout, self._headersTooSlow
            )

    def _requestReceived(self, event: Any) -> None:
        self.counters.add("http2_streams")
        self.counters.add("http2_streams_open")
        super()._requestReceived(event)

    def _requestAborted(self, event: Any) -> None:
        self.counters.add("http2_resets")
        super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        if streamID in self.streams:
            self.counters.add("http2_streams_open", -1)
        super()._requestDone(streamID)
        if self._draining and self._stillProducing and not self.streams:
            self._close()

    def drain(self) -> None:
        """
        Send GOAWAY (no new streams), answer the streams in flight, then
        close.
        """
        self._draining = True
        self.conn.close_connection(last_stream_id=self.conn.highest_inbound_stream_id)
        self._tryToWriteControlData()
        if not self.streams and self.transport is not None:
            self._close()

    def _close(self) -> None:
        # The transport closes only once no producer is registered (as
        # twisted.web's HTTPChannel.loseConnection knows): this one is.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

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
        self._cancelHeaderDeadline()
        super().connectionLost(reason, **kwargs)


@implementer(IDrainable)
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
