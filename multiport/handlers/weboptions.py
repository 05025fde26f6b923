"""
The http and https handlers' options: the folder to serve, listings,
the redirect to HTTPS, HSTS, the access log and the Server header,
validated into a L{WebOptions}.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen
from twisted.web import server

from multiport.errors import typeName
from multiport.handlers.interface import OptionError, optionOf, rejectUnknown


@frozen
class WebOptions:
    """
    The http handler's options.

    @ivar root: The folder to serve, or C{None} for the built-in page.
    @ivar listing: Whether folders without an index are listed.
    @ivar redirectHTTPS: Redirect every request to HTTPS: a port number on
        the same host, or a base URL.
    @ivar hstsMaxAge: Over TLS, the Strict-Transport-Security max-age.
    @ivar accessLog: Whether each request leaves a line in the access log.
    @ivar sendfile: Whether large answers on a plain connection are sent
        with C{sendfile} (nginx's C{sendfile on}).
    @ivar serverHeader: The C{Server} header of every response: twisted.web's
        (C{TwistedWeb/VERSION}) when L{DEFAULT_SERVER}, none when C{None}.
    @ivar http2: Whether a TLS port offers HTTP/2 (ALPN C{h2}).
    @ivar http2MaxConcurrentStreams: The streams an HTTP/2 client may have
        open at once.
    @ivar http2MaxHeaderListSize: The largest header list (uncompressed) an
        HTTP/2 client may send.
    """

    root: Path | None = None
    listing: bool = False
    redirectHTTPS: int | str | None = None
    hstsMaxAge: int | None = None
    accessLog: bool = True
    sendfile: bool = True
    serverHeader: bytes | None = server.version
    http2: bool = True
    http2MaxConcurrentStreams: int = 128
    http2MaxHeaderListSize: int = 65536


#: The C{Server} header unless a port sets server_header: twisted.web's.
DEFAULT_SERVER = server.version
#: What a server_header may hold: visible ASCII and spaces (no CR or LF to
#: split a response with), at most this long.
SERVER_HEADER = re.compile(r"[!-~]+( [!-~]+)*")
MAX_SERVER_HEADER = 256


def parseServerHeader(value: object) -> bytes | None:
    """
    The http option server_header: C{true} (twisted.web's header), C{false}
    (none) or the header's text.

    @raise OptionError: naming the bad value.
    """
    if value is True:
        return DEFAULT_SERVER
    if value is False:
        return None
    if not isinstance(value, str):
        raise OptionError(
            "server_header",
            f"expected true, false or a string, got {typeName(value)} {value!r}",
        )
    if len(value) > MAX_SERVER_HEADER or not SERVER_HEADER.fullmatch(value):
        raise OptionError(
            "server_header",
            f"{value!r} is not 1 to {MAX_SERVER_HEADER} visible ASCII characters "
            "(single spaces between words)",
        )
    return value.encode("ascii")


#: C{redirect_https} as a URL: https, a host name or address, a port, a
#: path of URL characters; no space or control character (the value goes
#: into a Location header, where one would split the response).
_REDIRECT_URL = re.compile(
    r"https://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?"
)


def parseWebOptions(options: Mapping[str, object], relativeTo: Path) -> WebOptions:
    """
    Validate the http handler's options.
    """
    rejectUnknown(
        options,
        {
            "root",
            "listing",
            "redirect_https",
            "hsts_max_age",
            "access_log",
            "sendfile",
            "server_header",
            "http2",
            "http2_max_concurrent_streams",
            "http2_max_header_list_size",
        },
    )
    hsts = options.get("hsts_max_age")
    if hsts is not None and (type(hsts) is not int or hsts < 0):
        raise OptionError(
            "hsts_max_age", f"expected a whole number of seconds, got {hsts!r}"
        )
    rootOption = optionOf(options, "root", str, "a folder path (string)", "")
    root = None
    if "\x00" in rootOption:
        raise OptionError("root", f"{rootOption!r} contains a NUL character")
    if rootOption:
        root = (relativeTo / rootOption).resolve()
        if not root.is_dir():
            raise OptionError("root", f"{rootOption!r} is not a folder ({root})")
        if not os.access(root, os.R_OK | os.X_OK):
            raise OptionError("root", f"{root} is not readable")
    listing = optionOf(options, "listing", bool, "true or false", False)
    accessLog = optionOf(options, "access_log", bool, "true or false", True)
    sendfile = optionOf(options, "sendfile", bool, "true or false", True)
    serverHeader = parseServerHeader(options.get("server_header", True))
    http2 = optionOf(options, "http2", bool, "true or false", True)
    streams = _positive(options, "http2_max_concurrent_streams", 128, 2**31 - 1)
    headerList = _positive(options, "http2_max_header_list_size", 65536, 2**31 - 1)
    redirect = options.get("redirect_https")
    if redirect is None:
        pass
    elif isinstance(redirect, int) and not isinstance(redirect, bool):
        if not 1 <= redirect <= 65535:
            raise OptionError("redirect_https", f"port {redirect} out of range 1-65535")
    elif isinstance(redirect, str):
        match = _REDIRECT_URL.fullmatch(redirect)
        port = match.group("port") if match else None
        if match is None or (port is not None and not 1 <= int(port) <= 65535):
            raise OptionError(
                "redirect_https",
                f"{redirect!r} is not an https:// URL with a host",
            )
        redirect = redirect.rstrip("/")
    else:
        raise OptionError(
            "redirect_https",
            f"expected a port number or an https:// URL, got {redirect!r}",
        )
    if redirect is not None and root is not None:
        raise OptionError("redirect_https", "cannot be combined with root")
    return WebOptions(
        root=root,
        listing=listing,
        redirectHTTPS=redirect,
        hstsMaxAge=hsts,
        accessLog=accessLog,
        sendfile=sendfile,
        serverHeader=serverHeader,
        http2=http2,
        http2MaxConcurrentStreams=streams,
        http2MaxHeaderListSize=headerList,
    )


def _positive(
    options: Mapping[str, object], name: str, default: int, largest: int
) -> int:
    """
    The whole number option C{name}, from 1 to C{largest}.

    @raise OptionError: naming the bad value.
    """
    value = options.get(name, default)
    if type(value) is not int or not 1 <= value <= largest:
        raise OptionError(
            name, f"expected a whole number from 1 to {largest}, got {value!r}"
        )
    return value
