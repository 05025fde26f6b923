"""
What a TLS port makes of clients that don't finish a handshake: the
reason logged for each, and the answer to plain HTTP sent to a TLS port.

A TLS client's first byte is 0x16 (a handshake record) or has its high
bit set (an SSLv2-style ClientHello); nginx tells plain HTTP on its TLS
ports by that byte alone, and answers it with a 400.  So do we, before
the bytes reach OpenSSL, which would only fail the handshake.
"""

from __future__ import annotations

import re
from enum import Enum

from OpenSSL import SSL
from twisted.internet import error
from twisted.python.failure import Failure

from multiport.ports.tls import opensslReason

#: The content type of a TLS record carrying a handshake message.
_HANDSHAKE_RECORD = 0x16

#: The most of a plain HTTP request read before answering it (nginx reads
#: its request line and headers into buffers of 8 KiB, too).
PLAIN_REQUEST_LIMIT = 8192

#: nginx's words for it, which people search for.
PLAIN_HTTP_MESSAGE = "The plain HTTP request was sent to HTTPS port"

#: A request line starts with a method (a token; every registered one is
#: upper case) and a space.
_METHOD = re.compile(rb"([A-Z]{1,20}) ")
_METHOD_SO_FAR = re.compile(rb"[A-Z]{0,20}")
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


def startsTLS(first: int) -> bool:
    """
    Whether C{first}, a connection's first byte, can begin a TLS
    ClientHello.
    """
    return first == _HANDSHAKE_RECORD or first >= 0x80


class Plain(Enum):
    """
    What the bytes a client sent to a TLS port (not TLS) are so far.
    """

    #: Perhaps the start of an HTTP request: read more.
    MORE = "more"
    #: An HTTP request, read as far as it needs to be: answer it.
    HTTP = "http"
    #: Neither TLS nor HTTP: close.
    OTHER = "other"


def classifyPlain(received: bytes) -> Plain:
    """
    What the non-TLS bytes C{received} (all of them so far) are: an HTTP
    request whose head is complete (or that has sent
    L{PLAIN_REQUEST_LIMIT} bytes), the start of one, or something else.
    """
    if _METHOD.match(received):
        if _END_OF_HEAD.search(received) or len(received) >= PLAIN_REQUEST_LIMIT:
            return Plain.HTTP
        return Plain.MORE
    if _METHOD_SO_FAR.fullmatch(received):
        return Plain.MORE
    return Plain.OTHER


def plainHTTPAnswer(received: bytes) -> bytes:
    """
    The 400 answer to the plain HTTP request C{received} (no body for
    C{HEAD}), ending the connection as nginx's does.
    """
    body = f"{PLAIN_HTTP_MESSAGE}\n".encode("ascii")
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if received.startswith(b"HEAD ") else head + body


def notTLSReason(received: bytes) -> str:
    """
    Why a client that sent C{received} (not TLS) failed its handshake, for
    the log.
    """
    if classifyPlain(received) is not Plain.OTHER:
        return "plain HTTP sent to a TLS port"
    return f"not TLS (it began {received[:8]!r})"


def handshakeFailure(reason: Failure) -> str:
    """
    Why a TLS handshake that ended with C{reason} failed, for the log:
    OpenSSL's own words when it refused it (C{"no shared cipher"},
    C{"unsupported protocol"}), else how the client left.
    """
    value = reason.value
    if isinstance(value, SSL.Error):
        return opensslReason(value)
    if isinstance(value, error.ConnectionDone | error.ConnectionLost):
        # Twisted reports an end of file in the middle of TLS as a lost
        # connection: a close and a reset look alike here.
        return "the client closed the connection"
    return str(value) or type(value).__name__
