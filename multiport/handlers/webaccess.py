"""
What the http handler's two HTTP/1.x paths (twisted.web's request and
L{multiport.handlers.lean}) share about a request: its access log line and
the checks of its Host fields.
"""

from __future__ import annotations

import re

from attrs import frozen

#: Printable ASCII with neither a quote nor a backslash.
_PLAIN = re.compile(rb"[ !#-\[\]-~]*")


def escapeLogText(value: bytes | str) -> str:
    """
    C{value} for a quoted part of an access log line: what a client sent
    can't end the part (C{"} becomes C{\\"}) or the line (control bytes and
    bytes above 127 become C{\\xNN}), as twisted.web writes it.
    """
    if isinstance(value, str):
        value = value.encode("latin-1", "backslashreplace")
    if _PLAIN.fullmatch(value) is not None:
        # Most values: nothing to escape.
        return value.decode("ascii")
    text = repr(value)[1:]
    if text.startswith("'"):
        return text[1:-1].replace('"', '\\"').replace("\\'", "'")
    return text[1:-1]


@frozen
class AccessRecord:
    """
    What the access log says of one request, however it was served.
    """

    client: str
    method: bytes
    uri: bytes
    protocol: bytes
    code: int
    sent: int
    referer: bytes | None
    agent: bytes | None
    receivedAt: float | None = None
    stream: int | None = None


def combinedLine(timestamp: str, record: AccessRecord) -> str:
    """
    C{record} in nginx's "combined" log format, which goaccess, fail2ban
    and the like parse: unlike twisted.web's line, the client address is not
    quoted.  Quoted parts are escaped as twisted.web escapes them.
    """
    return (
        f"{escapeLogText(record.client)} - - {timestamp} "
        f'"{escapeLogText(record.method)} '
        f'{escapeLogText(record.uri)} {escapeLogText(record.protocol)}" '
        f"{record.code} {record.sent or '-'} "
        f'"{escapeLogText(record.referer or b"-")}" '
        f'"{escapeLogText(record.agent or b"-")}"'
    )


def hostProblem(hosts: list[bytes], protocol: bytes) -> str | None:
    """
    What is wrong with a request's Host header field values C{hosts}, if
    anything: RFC 9112 section 3.2 asks for a 400 when HTTP/1.1 comes
    without one, and for any request with more than one.
    """
    if len(hosts) > 1:
        return "More than one Host header field."
    if protocol == b"HTTP/1.1" and not (hosts and hosts[0]):
        return "HTTP/1.1 requires a Host header field."
    return None
