"""
The values on C{multiport-ctl}'s command line: the status port's address
or URL, a port's SPEC and its C{KEY=VALUE} settings, and the JSON body they
make.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Mapping, Sequence

from multiport.config.model import formatAddress
from multiport.config.portspec import parsePortItem
from multiport.ctl.client import Address
from multiport.errors import ConfigError
from multiport.status.admintoken import ENVIRONMENT


def parseStatus(text: str) -> Address:
    """
    C{--status}: C{[HOST:]PORT} as the daemon's own C{--status} takes it (a
    bare port is on 127.0.0.1, IPv6 in brackets).

    @raise argparse.ArgumentTypeError: if it is not that.
    """
    try:
        item = parsePortItem(text, repr(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if item.handler is not None or item.protocol != "tcp":
        raise argparse.ArgumentTypeError(
            f"{text!r}: takes [HOST:]PORT, no handler or protocol"
        )
    if item.port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: port 0 can't be reached")
    return ("127.0.0.1" if item.host is None else item.host, item.port)


def parseURL(text: str) -> str:
    """
    C{--url}: the status port as C{http://HOST:PORT} (or C{https://}), a
    trailing slash allowed; the base that C{/api/...} paths are added to.

    @raise argparse.ArgumentTypeError: if it is not such a URL.
    """
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected http://HOST:PORT or https://HOST:PORT"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the status port's address only, without a path"
        )
    if parts.username is not None or parts.password is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: no user in the URL; the admin token is given with "
            "--admin-token-file or $" + ENVIRONMENT
        )
    netloc = formatAddress(parts.hostname, port) if port else parts.hostname
    return f"{parts.scheme}://{netloc}"


def parseSpec(text: str) -> dict[str, object]:
    """
    A C{--ports} item, C{[HOST:]PORT[/udp][=HANDLER[+tls]]}, as the keys of a
    port's JSON body; keys the item leaves out are left out, so that the
    daemon's defaults apply.

    @raise argparse.ArgumentTypeError: naming the item, if it does not
        follow the grammar.
    """
    try:
        request = parsePortItem(text, repr(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    body: dict[str, object] = {"port": request.port}
    if request.host is not None:
        body["interface"] = request.host
    if request.handler is not None:
        body["handler"] = request.handler
    if request.tls is not None:
        body["tls"] = request.tls
    if request.protocol != "tcp":
        body["protocol"] = request.protocol
    return body


def _refuseConstant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def jsonValue(text: str) -> object:
    """
    C{text} parsed as JSON if it parses, else the string itself: C{100},
    C{false} and C{[1, 2]} are JSON, C{127.0.0.1:5432} a string.
    (C{NaN} and C{Infinity}, which JSON does not have, stay strings.)
    """
    try:
        return json.loads(text, parse_constant=_refuseConstant)
    except ValueError:
        return text


def parseSetting(text: str) -> tuple[str, object]:
    """
    C{KEY=VALUE}, the value parsed by L{jsonValue}.

    @raise argparse.ArgumentTypeError: without C{=} or without a key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, jsonValue(value)


def portBody(
    spec: Mapping[str, object],
    options: Sequence[tuple[str, object]],
    settings: Sequence[tuple[str, object]],
) -> dict[str, object]:
    """
    The JSON body of an added or changed port.

    @param spec: The keys from SPEC (L{parseSpec}).
    @param options: C{--option} pairs: the handler's options.
    @param settings: C{--set} pairs: more keys of the port.
    @raise ValueError: if a C{--set} contradicts SPEC or C{--option}.
    """
    body = dict(spec)
    for key, value in settings:
        if key in spec:
            raise ValueError(
                f"--set {key}: SPEC says {key} already ({json.dumps(spec[key])})"
            )
        if key == "options" and options:
            raise ValueError("--set options can't be combined with --option")
        body[key] = value
    if options:
        body["options"] = dict(options)
    return body


def _positiveSeconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.05 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(
            f"expected seconds from 0.05 to 3600, got {text!r}"
        )
    return seconds


def _positiveCount(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, 1 or more, got {text!r}"
        )
    return count
