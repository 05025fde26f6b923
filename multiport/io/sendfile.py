"""
A file's bytes sent to a plain TCP connection by the kernel: C{sendfile(2)},
as nginx's C{sendfile on}, for the http handler's large answers.

Twisted has no producer that does this; the nearest, twisted.web's
C{FileSender}, reads each piece into Python and writes it, a copy in and a
copy out of user space for every byte.  L{SendfileProducer} takes the
connection's producer slot as any twisted.web body producer does (through
the request, so the channel steps aside and comes back when it is done),
sends the bytes queued before it first, then hands the kernel the file:
one system call per socket buffer's worth, no byte in Python.

As with nginx's C{sendfile}, the socket holds the file's pages, not a
copy: a file rewritten in place while it is being sent may send some of
its new bytes.  Replace files by renaming a new one into place (what
deployment tools do), and every answer is one version of the file.

Only where nothing changes the bytes between the file and the socket:
L{sendfileConnection} finds the connection under the layers that pass
bytes unchanged, and none under TLS (which must encrypt them in user
space) or HTTP/2 (which frames them).
"""

from __future__ import annotations

import errno
import os
from typing import IO, Any, Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from multiport.io.splice import tcpTransport

log = Logger()

#: The most bytes one turn of the reactor sends for one answer before
#: other connections get their turn (nginx's C{sendfile_max_chunk}).
MAX_CHUNK = 2 << 20

#: The smallest piece sent this way: below it, copying the piece into the
#: write that carries the head costs less than a second system call.
SENDFILE_AT_LEAST = 64 * 1024

#: The kernel's call; a module attribute so that tests can count calls.
sendfile = getattr(os, "sendfile", None)


class _Request(Protocol):
    """
    What L{SendfileProducer} asks of a twisted.web request.
    """

    channel: Any
    sentLength: int

    def write(self, data: bytes) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def finish(self) -> None: ...


def sendfileConnection(request: object) -> tcp.Connection | None:
    """
    The plain TCP connection C{request}'s body can be sent to with
    C{sendfile}, or L{None}: only a channel that says it allows it (the
    http handler's own, L{multiport.handlers.lean.LeanChannel}) over a
    connection without TLS, on a system that has C{sendfile}.
    """
    if sendfile is None:
        return None
    channel = getattr(request, "channel", None)
    if not getattr(channel, "sendfileAllowed", False):
        return None
    connection = tcpTransport(getattr(channel, "transport", None))
    if connection is None or getattr(connection, "TLS", False):
        return None
    return connection


@implementer(IPushProducer)
class SendfileProducer:
    """
    Sends C{size} bytes of an open file from C{offset} to C{request}'s
    connection with C{sendfile}, then finishes the request.

    It runs when the connection can take more: it is registered as a
    streaming producer, and whenever the socket is full (or it has sent
    L{MAX_CHUNK} in one turn) it marks itself paused and has the
    connection watch for writability, so that Twisted's C{doWrite}
    resumes it once the socket drains, as it resumes any producer it
    paused.

    The promise of C{Content-Length} is kept as L{SegmentsProducer} keeps
    it: a file that grows is cut at C{size}, one that shrinks aborts the
    connection.

    @ivar fileObject: The file, closed when the answer ends either way.
    """

    def __init__(
        self,
        request: _Request,
        connection: tcp.Connection,
        fileObject: IO[bytes],
        offset: int,
        size: int,
        shrank: Any,
    ) -> None:
        self.request: _Request | None = request
        self.connection = connection
        self.fileObject = fileObject
        self._offset = offset
        self._left = size
        self._shrank = shrank
        self._paused = False
        # What counts the bytes of the connection that the channel's
        # writes would have counted.
        self._countSent = getattr(request.channel.transport, "countSent", None)

    def start(self) -> None:
        """
        Send the status line and headers, take the connection's producer
        slot, and send what the socket takes now.
        """
        request = self.request
        assert request is not None
        # The head goes through the channel as for any answer; from here
        # on nothing else writes to the connection until this is done.
        request.write(b"")
        request.registerProducer(self, True)
        if self.request is not None:
            self._send()

    def pauseProducing(self) -> None:
        """
        The connection's buffer is full: wait until it asks for more.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        The connection can take more.
        """
        self._paused = False
        self._send()

    def stopProducing(self) -> None:
        """
        The connection went away: close the file.
        """
        self.request = None
        self.fileObject.close()

    def _waitWritable(self) -> None:
        # As if the connection had paused this producer for a full buffer:
        # its doWrite resumes a paused producer once the socket takes more.
        connection = self.connection
        connection.producerPaused = True
        connection.startWriting()  # type: ignore[no-untyped-call]

    def _send(self) -> None:
        request = self.request
        connection = self.connection
        if request is None or self._paused:
            return
        flush = getattr(connection, "flushWrites", None)
        if flush is not None:
            # The head, held by multiport's transport until the event ends.
            flush()
        if connection._tempDataLen or connection.dataBuffer:
            # The head (or the end of an earlier answer) is still queued:
            # it goes first.
            self._waitWritable()
            return
        assert sendfile is not None
        socketFD = connection.fileno()
        fileFD = self.fileObject.fileno()
        budget = MAX_CHUNK
        sent = 0
        while self._left and budget > 0:
            try:
                done = sendfile(socketFD, fileFD, self._offset, min(self._left, budget))
            except BlockingIOError:
                break
            except OSError as e:
                self._count(sent)
                self._lost(e)
                return
            if done == 0:
                self._count(sent)
                self.request = None
                self.fileObject.close()
                self._shrank(request)
                return
            sent += done
            budget -= done
            self._offset += done
            self._left -= done
        self._count(sent)
        if self._left:
            self._waitWritable()
            return
        self.request = None
        self.fileObject.close()
        request.unregisterProducer()
        request.finish()

    def _count(self, sent: int) -> None:
        request = self.request
        if request is not None:
            request.sentLength += sent
        if self._countSent is not None and sent:
            self._countSent(sent)

    def _lost(self, error: OSError) -> None:
        """
        The socket failed (the client reset, or went away): close the file
        and the connection; the connection's loss ends the request.
        """
        self.request = None
        self.fileObject.close()
        if error.errno not in (errno.EPIPE, errno.ECONNRESET):
            log.warn("sendfile failed: {error}", error=error)
        self.connection.abortConnection()  # type: ignore[no-untyped-call]
