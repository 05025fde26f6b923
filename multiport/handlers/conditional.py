"""
Conditional requests (RFC 9110 section 13): whether an C{If-Modified-Since}
makes a GET or HEAD answer 304, decided the same way whichever path
answers it (twisted.web's request, L{multiport.handlers.leanfast}).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from twisted.web.http import stringToDatetime


def notModified(
    method: bytes,
    ifModifiedSince: Sequence[bytes],
    ifNoneMatch: bool,
    lastModified: int,
    now: float,
) -> bool:
    """
    Whether the answer is 304 Not Modified: a GET or HEAD with exactly one
    valid C{If-Modified-Since} at or after C{lastModified} (a whole second,
    as C{Last-Modified} says it).  A condition RFC 9110 section 13.1.3
    says to ignore never answers 304: a date later than C{now}, a request
    that also carries C{If-None-Match} (C{ifNoneMatch}), or another method.
    """
    if method not in (b"GET", b"HEAD") or ifNoneMatch or len(ifModifiedSince) != 1:
        return False
    try:
        since = stringToDatetime(ifModifiedSince[0].split(b";", 1)[0])  # type: ignore[no-untyped-call]
    except ValueError:
        return False
    # Rounded up as Last-Modified is: a file changed this very second is
    # sent with a date up to a second ahead, which a client may send back
    # at once.
    if since > math.ceil(now):
        return False
    return bool(since >= lastModified)
