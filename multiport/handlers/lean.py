"""
The http handler's HTTP/1.x connection: requests parsed by llhttp (through
C{httptools}), the common ones answered at once (L{multiport.handlers.leanfast}),
every other one rendered by the port's twisted.web resources through a
twisted.web request that takes this connection for its channel.

twisted.web's own channel costs a line parser in Python, a request object
with two header tables, and several writes per answer: this keeps that
cost for the answers that need twisted.web (folders, ranges, conditional
requests, errors, redirects) and sends a small file or the built-in page in
one write.

What is refused is refused as nginx refuses it, with a status and a close:
a request line over L{MAX_URI} (414); header fields over L{MAX_HEAD_SIZE}
bytes or L{MAX_HEADERS} fields (431); a body over L{MAX_BODY} (413);
anything llhttp can't parse (400: among them C{Content-Length} with
C{Transfer-Encoding}, two C{Content-Length}s, an invalid one, a
C{Transfer-Encoding} that does not end in C{chunked}, folded lines); a
method llhttp does not know (501); an HTTP/1.1 request without exactly one
C{Host} (400).  Request bodies are read and thrown away: nothing this
handler serves reads one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httptools
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.acme.challenges import ChallengeResource
from multiport.handlers.interface import IBetweenMessages, IDrainable
from multiport.handlers.leanbridge import RequestChannel
from multiport.handlers.leanfast import FastAnswer, Head, fastAnswer
from multiport.handlers.leantimers import ConnectionTimers
from multiport.handlers.webaccess import AccessRecord, hostProblem
from multiport.handlers.webchannel import refusal
from multiport.handlers.webresources import ConfinedFile, RedirectToHTTPS, WelcomePage
from multiport.io.transport import coalesceWrites

if TYPE_CHECKING:
    from multiport.handlers.web import PortSite

#: The longest request target (twisted.web's line limit, which answered 414).
MAX_URI = 16384
#: The most bytes of header fields a request may have (twisted.web's).
MAX_HEAD_SIZE = 16384
#: The most header fields a request may have.
MAX_HEADERS = 100
#: The largest request body read (and thrown away): nginx's
#: client_max_body_size.
MAX_BODY = 1 << 20
#: Requests received ahead of the one being answered (pipelining) before
#: the connection stops being read.
MAX_QUEUED = 16


def leanServes(root: object) -> bool:
    """
    Whether a site with this root resource can be served by L{LeanChannel}:
    one of the http handler's own, which need nothing of twisted.web's
    channel (a WebSocket endpoint takes over its connection).
    """
    if isinstance(root, ChallengeResource):
        root = root.wrapped
    return isinstance(root, (ConfinedFile, WelcomePage, RedirectToHTTPS))


#: A LF without a CR before it; the end of a head (an empty line).
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEAD_END = re.compile(rb"\n\r?\n")


class _Refused(Exception):
    """
    A parser callback found the request refused (see L{LeanChannel.refuse}).
    """


@implementer(IDrainable, IBetweenMessages)
class LeanChannel(RequestChannel, ConnectionTimers, Protocol):
    """
    One HTTP/1.x connection of an http port (see the module's docstring).

    To a twisted.web request it is the channel (what L{HTTPChannel} is):
    it writes the request's headers and body, takes its producer, and is
    told when it is done.

    @ivar site: The port's L{PortSite}: its resources, clock, headers, log.
    """

    _refused = False
    _closing = False
    _answered = False
    _inMessage = False
    _inHead = False
    #: Reading is paused; the transport's buffer is full.
    _paused = False
    _writeBlocked = False
    #: What the last bytes parsed ended with (a line's end split between
    #: two reads).
    _lastCR = False
    _lineEnded = False
    _dispatching = False

    def __init__(self, site: PortSite) -> None:
        self.site = site
        self.factory = site
        self.requestFactory = site.requestFactory
        # A list, not a deque: at most MAX_QUEUED, and an empty deque costs
        # 600 bytes an idle connection.
        self._queue: list[Head] = []
        self._parser = self._newParser()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._raw = 0
        self._fieldBytes = 0
        self._body = 0
        self._receivedAt = 0.0
        self._refusal: tuple[int, str] | None = None

    @property
    def sendfileAllowed(self) -> bool:
        """
        Whether a body producer may send a file with C{sendfile} straight to
        the socket under this channel (L{multiport.io.sendfile}): nothing
        here frames or changes a body's bytes, so yes unless the port's
        C{sendfile} option says no.
        """
        return bool(getattr(self.site, "sendfile", True))

    def _newParser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # A bare LF ends a line as CRLF does (RFC 9112 section 2.2; nginx).
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        return parser

    def connectionMade(self) -> None:
        # A response's head and body, held and sent together, leave in one
        # TCP segment.
        coalesceWrites(self.transport)
        # The transport tells its producer when its buffer is full: no
        # more answers are written, and no more requests read, until it
        # drains (a client pipelining requests it never reads).
        self.transport.registerProducer(self, True)
        self._idleAgain()

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: answer nothing more until it drains.
        """
        self._writeBlocked = True
        self._updateReading()

    def resumeProducing(self) -> None:
        """
        The transport's buffer drained: answer what waits.
        """
        self._writeBlocked = False
        self._updateReading()
        self._dispatch()

    def stopProducing(self) -> None:
        """
        The connection is going away (L{connectionLost} follows).
        """
        self._closing = True

    def _updateReading(self) -> None:
        # Read while answers can be written and few requests wait.
        reading = not (
            self._closing or self._writeBlocked or len(self._queue) >= MAX_QUEUED
        )
        if reading and self._paused:
            self._paused = False
            self.transport.resumeProducing()
        elif not reading and not self._paused and not self._closing:
            self._paused = True
            self.transport.pauseProducing()

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._inMessage and self._headSince is None:
            self._cancelIdle()
            self._headSince = self.site.reactor.seconds()
        if self._inHead:
            self._raw += len(data)
        self._feed(data)
        self._checkHeadSize()
        if not self._refused:
            self._headerTimer()

    def _feed(self, data: bytes) -> None:
        # llhttp takes a bare LF for a CRLF in header lines but not after
        # the request line: a head with one is given its CRs, a body never.
        while (
            not self._refused
            and (self._inHead or not self._inMessage)
            and _BARE_LF.search(data) is not None
        ):
            if self._lastCR and data.startswith(b"\n"):
                self._parse(b"\n")
                data = data[1:]
                continue
            end = _HEAD_END.search(b"\n" + data if self._lineEnded else data)
            if end is None:
                self._parse(_BARE_LF.sub(b"\r\n", data))
                return
            cut = end.end() - (1 if self._lineEnded else 0)
            self._parse(_BARE_LF.sub(b"\r\n", data[:cut]))
            data = data[cut:]
        if data and not self._refused:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        self._lastCR = data.endswith(b"\r")
        self._lineEnded = data.endswith(b"\n")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # An upgrade (WebSocket, h2c) or CONNECT this handler does not
            # do: answered as any request; what follows is parsed afresh.
            self._parser = self._newParser()
            rest = data[e.args[0] :] if e.args else b""
            if rest:
                self._feed(rest)
            return
        except httptools.HttpParserInvalidMethodError:
            if not (self._refused or self._closing):
                self.refuse(501, "The request's method is not implemented.")
            return
        except httptools.HttpParserError as e:
            # After an answer that closes, llhttp refuses what follows
            # (nothing more is read then anyway).
            if not (self._refused or self._closing):
                refusal = self._refusal or (400, f"The request is malformed: {e}.")
                self.refuse(*refusal)
            return

    def _checkHeadSize(self) -> None:
        if self._inHead and self._raw > MAX_URI + MAX_HEAD_SIZE:
            # A field or the request line still arriving, too long already.
            if self._headers:
                self.refuse(431, "The request's header fields are too large.")
            else:
                self.refuse(414, "The request line is too long.")

    def _refuseInCallback(self, status: int, why: str) -> None:
        self._refusal = (status, why)
        raise _Refused(why)

    def on_message_begin(self) -> None:
        self._inMessage = True
        self._inHead = True
        self._url = b""
        self._headers = []
        self._raw = 0
        self._fieldBytes = 0
        self._body = 0
        self._receivedAt = self.site.reactor.seconds()
        if self._headSince is None:
            self._cancelIdle()
            self._headSince = self._receivedAt

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URI:
            self._refuseInCallback(414, "The request line is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        self._fieldBytes += len(name) + len(value)
        if len(headers) > MAX_HEADERS:
            self._refuseInCallback(431, "The request has too many header fields.")
        if self._fieldBytes > MAX_HEAD_SIZE:
            self._refuseInCallback(431, "The request's header fields are too large.")

    def on_headers_complete(self) -> None:
        self._inHead = False
        self._cancelHeaderDeadline()
        expects = False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" and int(value) > MAX_BODY:
                self._refuseInCallback(413, "The request's body is too large.")
            elif lower == b"expect" and value.lower() == b"100-continue":
                expects = True
        if (
            expects
            and self._parser.get_http_version() == "1.1"
            and self._current is None
            and not self._queue
        ):
            # The client waits for this before it sends the body (as
            # twisted.web's channel and nginx answer).
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > MAX_BODY:
            self._refuseInCallback(413, "The request's body is too large.")

    def on_message_complete(self) -> None:
        self._inMessage = False
        self._lineEnded = False
        if self._closing:
            return
        parser = self._parser
        head = Head(
            parser.get_method(),
            self._url,
            b"HTTP/" + parser.get_http_version().encode("ascii"),
            self._headers,
            parser.should_keep_alive(),
            self._receivedAt,
        )
        self._queue.append(head)
        if len(self._queue) >= MAX_QUEUED:
            self._updateReading()
        self._dispatch()

    # -- answering

    def _dispatch(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while (
                self._queue
                and self._current is None
                and not self._closing
                and not self._writeBlocked
            ):
                self._serve(self._queue.pop(0))
        finally:
            self._dispatching = False
        if self._paused:
            self._updateReading()
        if self._current is None and not self._queue and not self._closing:
            self._idleAgain()

    def _serve(self, head: Head) -> None:
        self._cancelIdle()
        if head.version not in (b"HTTP/1.1", b"HTTP/1.0"):
            # As nginx: a later major version is not supported, anything
            # else (HTTP/0.9 with a version, HTTP/1.2) is malformed.
            if head.version[5:6] not in (b"0", b"1"):
                self.refuse(505, "The request's HTTP version is not supported.")
            else:
                self.refuse(400, "The request's HTTP version is not HTTP/1.x.")
            return
        problem = hostProblem(head.values(b"host"), head.version)
        if problem is not None:
            self.refuse(400, problem, head.version)
            return
        self._persistent = head.keepAlive and not self._draining
        answer = fastAnswer(self.site, head)
        if answer is not None:
            self._sendFast(head, answer)
        else:
            self._render(head)

    def _sendFast(self, head: Head, answer: FastAnswer) -> None:
        site = self.site
        lines = [b"%s %d %s\r\n" % (head.version, answer.code, answer.reason)]
        if site.serverHeader is not None:
            lines.append(b"Server: %s\r\n" % (site.serverHeader,))
        lines.append(b"Date: %s\r\n" % (site.dateHeader(),))
        if site.hstsMaxAge is not None and self.isSecure():
            lines.append(b"Strict-Transport-Security: max-age=%d\r\n" % site.hstsMaxAge)
        lines.append(answer.headers)
        if not self._persistent:
            if head.version == b"HTTP/1.1" or head.keepAlive:
                # HTTP/1.0 closes unless asked not to: no need to say so.
                lines.append(b"Connection: close\r\n")
        elif head.version != b"HTTP/1.1":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        body = b"" if head.method == b"HEAD" else answer.body
        lines.append(body)
        self.transport.write(b"".join(lines))
        if site.accessLog:
            self._log(head, answer.code, len(body))
        self._done()

    def _log(self, head: Head, code: int, sent: int) -> None:
        host = getattr(self.transport.getPeer(), "host", None)
        referer = head.values(b"referer")
        agent = head.values(b"user-agent")
        self.site.logAccess(
            AccessRecord(
                host if isinstance(host, str) and host else "-",
                head.method,
                head.uri,
                head.version,
                code,
                sent,
                referer[0] if referer else None,
                agent[0] if agent else None,
                head.receivedAt,
            )
        )

    def _done(self) -> None:
        self._answered = True
        if not self._persistent:
            self._close()
            return
        if not self._dispatching:
            self._dispatch()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        self._stopTimers()
        if self._producer is None:
            # As twisted.web's channel: the transport closes once written,
            # not waiting on this producer.
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def refuse(self, status: int, why: str, version: bytes = b"HTTP/1.1") -> None:
        """
        Answer C{status} with C{why} as a plain text body, and close.
        """
        self._refused = True
        self._cancelHeaderDeadline()
        if self._current is None:
            self.transport.write(refusal(status, why, version))
        # Else the answer in flight ends the connection: writing now would
        # cut into it.
        self._persistent = False
        if self._current is None:
            self._close()

    # -- timeouts, draining

    def betweenMessages(self) -> bool:
        """
        No request being received or answered, and no byte of the next one
        received.
        """
        return (
            self._current is None
            and not self._queue
            and not self._inMessage
            and self._headSince is None
        )

    def drain(self) -> None:
        """
        Close between requests once a request was answered; else answer
        the request in flight or to come with C{Connection: close}, then
        close (see L{DrainingChannel}).
        """
        self._draining = True
        if self._current is not None:
            self._persistent = False
        elif self._answered and self.betweenMessages():
            self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._stopTimers()
        self._queue.clear()
        request, self._current = self._current, None
        if request is not None:
            request.connectionLost(reason)
