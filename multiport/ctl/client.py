"""
How C{multiport-ctl} talks to the daemon: the admin API over HTTP (the
standard library's C{urllib}, no reactor), and where the admin token comes
from (C{--admin-token-file}, C{$MULTIPORT_ADMIN_TOKEN}, or the daemon's
state directory).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from attrs import frozen

from multiport import __version__
from multiport.config.files import FileError, readRegularFile
from multiport.config.model import defaultStateDir, formatAddress
from multiport.errors import ConfigError
from multiport.status.admintoken import (
    ENVIRONMENT,
    MAX_TOKEN_FILE,
    TOKEN_FILE,
    givenToken,
)

#: Seconds to wait for the daemon to answer.
TIMEOUT = 30.0

PROG = "multiport-ctl"

Address = tuple[str, int]


class CtlError(Exception):
    """
    A failure reported on one line, with exit status 1.
    """


def baseURL(args: argparse.Namespace) -> str:
    """
    The status port's base URL from C{--url} or C{--status}.
    """
    if args.url is not None:
        return str(args.url)
    return "http://" + formatAddress(*args.status)


def readToken(path: Path) -> str:
    """
    The admin token the daemon keeps in its state directory: the stripped
    text of C{path}.

    @raise CtlError: if it can't be read or is empty.
    """
    try:
        token = (
            readRegularFile(path, MAX_TOKEN_FILE, "the admin token")
            .decode("utf-8")
            .strip()
        )
    except (FileError, UnicodeDecodeError) as e:
        reason = getattr(e, "reason", None) or str(e)
        raise CtlError(
            f"cannot read the admin token {path}: {reason}; run as the "
            "daemon's user or root, point --state-dir at the daemon's, or give "
            f"the token with --admin-token-file or ${ENVIRONMENT}"
        ) from None
    if not token:
        raise CtlError(f"the admin token file {path} is empty")
    return token


@frozen
class Token:
    """
    An admin token, and where it was read (for the error when the daemon
    refuses it).
    """

    value: str
    source: str


#: What to do about a token the daemon refused or did not get.
_TOKEN_HINT = (
    "give the daemon's token with --admin-token-file or $" + ENVIRONMENT + ", "
    "or point --state-dir at the daemon's state directory"
)


def adminToken(args: argparse.Namespace) -> Token:
    """
    The admin token: C{--admin-token-file} (or its alias C{--token-file}),
    else C{$MULTIPORT_ADMIN_TOKEN}, else the daemon's own file in the state
    directory, exactly as the daemon chooses it.

    @raise CtlError: naming the file or variable that gives no token.
    """
    try:
        given = givenToken(args.admin_token_file, os.environ)
    except ConfigError as e:
        raise CtlError(str(e)) from None
    if given is not None:
        return Token(*given)
    stateDir = Path(args.state_dir) if args.state_dir else defaultStateDir()
    path = stateDir / TOKEN_FILE
    return Token(readToken(path), str(path))


def readingToken(args: argparse.Namespace) -> Token | str:
    """
    The admin token for a call that only reads, or why there is none: the
    call goes without one then, and the reason is shown if the daemon asks
    for it.
    """
    try:
        return adminToken(args)
    except CtlError as e:
        return str(e)


def _errorMessage(
    error: urllib.error.HTTPError, where: str, token: Token | str | None
) -> str:
    text = error.read().decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if error.code == 401 and isinstance(token, Token):
        return f"the daemon refused the admin token from {token.source}; {_TOKEN_HINT}"
    if error.code == 401 and isinstance(token, str):
        return f"the daemon asks for the admin token, and none was found ({token})"
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    if error.code == 421:
        return (
            f"the status port refuses requests for the name {where!r}: reach it "
            "by its address, or list the name in its allowed_hosts option"
        )
    if error.code in (404, 405):
        return f"no multiport status API at {where}"
    return str(error.reason or "error")


def call(
    base: str,
    method: str,
    path: str,
    body: object = None,
    token: Token | str | None = None,
) -> tuple[int, bytes]:
    """
    One call of the admin API.

    @param base: The status port's URL (L{baseURL}).
    @param path: The path under C{/api/}, already percent-encoded.
    @param body: What to send as JSON, if anything.
    @param token: The admin token to send, or why there is none.
    @return: The HTTP status code and the body of a successful answer.
    @raise CtlError: for an error answer, or a daemon that can't be reached.
    """
    where = urllib.parse.urlsplit(base).netloc
    url = f"{base}/api/{path}"
    headers = {"Accept": "application/json", "User-Agent": f"{PROG}/{__version__}"}
    data = None
    if body is not None:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    elif method in ("POST", "PUT"):
        data = b""
    if isinstance(token, Token):
        headers["Authorization"] = f"Bearer {token.value}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    # No proxy from the environment: the status port is reached directly.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        raise CtlError(f"{_errorMessage(e, where, token)} (HTTP {e.code})") from None
    except urllib.error.URLError as e:
        reason = e.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise CtlError(f"cannot reach the status port at {where}: {text}") from None
    except http.client.HTTPException:
        # Something answered, but not in HTTP (an echo port sends the
        # request back): no status port there.
        raise CtlError(f"no multiport status API at {where}") from None
    except OSError as e:
        text = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise CtlError(f"cannot reach the status port at {where}: {text}") from None


def callJSON(
    base: str,
    method: str,
    path: str,
    body: object = None,
    token: Token | str | None = None,
) -> Any:
    """
    L{call}, its answer parsed as JSON.

    @raise CtlError: also for an answer that is not JSON.
    """
    status, data = call(base, method, path, body, token)
    try:
        return json.loads(data)
    except ValueError:
        raise CtlError(
            f"no multiport status API at {urllib.parse.urlsplit(base).netloc}: "
            f"/api/{path} answered with something that is not JSON (HTTP {status})"
        ) from None
