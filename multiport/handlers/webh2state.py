"""
The HTTP/2 connection state of a port's connections: h2's state machine
with the port's limits (concurrent streams, header list size) and a bound
on floods of SETTINGS and PING frames.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes
from twisted.internet.interfaces import IReactorTime
from typing_extensions import Buffer

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


class BoundedH2State(h2.connection.H2Connection):
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
