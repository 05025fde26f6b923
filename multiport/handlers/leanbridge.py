"""
What a twisted.web request asks of its channel (what L{HTTPChannel} is to
it), for the requests L{multiport.handlers.lean.LeanChannel} leaves to the
port's twisted.web resources.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet._producer_helpers import _PullToPush
from twisted.internet.interfaces import IProducer, ISSLTransport
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers

from multiport.handlers.leanfast import Head


class RequestChannel:
    """
    The channel of twisted.web requests: it writes a request's headers
    and body, takes its producer, and is told when it is done.
    """

    # The port's connection wrapper (a TCP or TLS transport).
    transport: Any
    #: twisted.web's request class for the port (L{PortRequest}).
    requestFactory: Any
    #: The request twisted.web is answering, and its head.
    _current: Any = None
    _currentHead: Head | None = None
    _persistent = True
    _draining = False
    _producer: Any = None

    def refuse(self, status: int, why: str, version: bytes = b"HTTP/1.1") -> None:
        """
        Answer C{status} with C{why}, and close.
        """
        raise NotImplementedError

    def _done(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _render(self, head: Head) -> None:
        request: Any = self.requestFactory(self)
        request.receivedAt = head.receivedAt
        headers = request.requestHeaders
        for name, value in head.headers:
            headers.addRawHeader(name, value)
        request.content = BytesIO()
        self._current = request
        self._currentHead = head
        request.requestReceived(head.method, head.uri, head.version)

    # -- what a twisted.web request asks of its channel

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        """
        Write a twisted.web request's status line and headers, with the
        C{Connection} field this connection's persistence asks for.
        """
        head = self._currentHead
        if (
            version != b"HTTP/1.1"
            and head is not None
            and head.method != b"HEAD"
            and int(code) not in NO_BODY_CODES
            and not headers.hasHeader(b"content-length")
        ):
            # Only the close ends a body of unknown length over HTTP/1.0.
            self._persistent = False
        if self._draining:
            self._persistent = False
        if not self._persistent:
            if version == b"HTTP/1.1" or (head is not None and head.keepAlive):
                headers.setRawHeaders(b"connection", [b"close"])
        elif version != b"HTTP/1.1":
            headers.setRawHeaders(b"connection", [b"keep-alive"])
        sequence = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                sequence.extend((name, b": ", value, b"\r\n"))
        sequence.append(b"\r\n")
        self.transport.writeSequence(sequence)

    def write(self, data: bytes) -> None:
        """
        Write part of a twisted.web request's body.
        """
        self.transport.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        """
        Write parts of a twisted.web request's body.
        """
        self.transport.writeSequence(data)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Take a twisted.web request's producer: a pull producer is driven as
        L{HTTPChannel} drives it, by a cooperator.
        """
        if not streaming:
            producer = _PullToPush(producer, self)  # type: ignore[no-untyped-call]
        self._producer = producer
        # The channel stands aside while the request's producer writes.
        self.transport.unregisterProducer()
        self.transport.registerProducer(producer, True)
        if not streaming:
            producer.startStreaming()  # type: ignore[attr-defined]

    def unregisterProducer(self) -> None:
        """
        The request's producer is done.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        self.transport.unregisterProducer()
        if isinstance(producer, _PullToPush):
            producer.stopStreaming()  # type: ignore[no-untyped-call]
        transport = self.transport
        if getattr(transport, "connected", False) and not getattr(
            transport, "disconnecting", False
        ):
            transport.registerProducer(self, True)

    def requestDone(self, request: Any) -> None:
        """
        A twisted.web request finished: answer the next one, or close.
        """
        if request is not self._current:
            return
        self._current = None
        self._currentHead = None
        self._done()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's request, for a body it can't parse.
        self._current = None
        self.refuse(400, "The request's body is malformed.")

    def getPeer(self) -> Any:
        """
        The client's address.
        """
        return self.transport.getPeer()

    def getHost(self) -> Any:
        """
        The port's address.
        """
        return self.transport.getHost()

    def isSecure(self) -> bool:
        """
        Whether the connection is TLS.
        """
        return ISSLTransport(self.transport, None) is not None

    def loseConnection(self) -> None:
        """
        Close, after what was written is sent.
        """
        self._close()
