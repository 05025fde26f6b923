"""
The relay handler's options: its upstreams, how it balances between
them, timeouts, TLS to the upstream and the PROXY header it sends,
validated into L{RelayOptions}.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from attrs import frozen
from OpenSSL import crypto
from twisted.internet.ssl import Certificate

from multiport.config.files import FileError, readRegularFile
from multiport.config.model import formatAddress, numericHost
from multiport.handlers.interface import OptionError, optionOf, rejectUnknown
from multiport.ports.tls import MAX_PEM_FILE, opensslReason

BALANCES = ("round_robin", "first", "least_connections")


@frozen
class Upstream:
    """
    One upstream, C{host:port}.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return formatAddress(self.host, self.port)


@frozen
class RelayOptions:
    """
    The relay handler's options.
    """

    upstreams: tuple[Upstream, ...]
    balance: str = "round_robin"
    connectTimeout: float = 5.0
    failTimeout: float = 10.0
    tls: bool = False
    serverName: str | None = None
    ca: Path | None = None
    #: What C{ca} held when the options were read (a reload reads it again).
    caPEM: bytes | None = None
    verify: bool = True
    sendProxy: str | None = None
    splice: bool = True


def parseUpstream(value: object, key: str) -> Upstream:
    """
    C{host:port} or C{[v6]:port}.
    """
    if type(value) is not str:
        raise OptionError(key, f"expected 'host:port', got {value!r}")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if not rest.startswith(":") or numericHost(host) is None:
            raise OptionError(key, f"{value!r} is not [IPv6]:port")
        portText = rest[1:]
    else:
        host, colon, portText = value.rpartition(":")
        if not colon or not host or ":" in host:
            raise OptionError(key, f"{value!r} is not host:port")
    if (
        not portText.isascii()
        or not portText.isdigit()
        or not 1 <= int(portText) <= 65535
    ):
        raise OptionError(key, f"{value!r} has no port from 1 to 65535")
    return Upstream(host, int(portText))


def _seconds(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if type(value) not in (int, float) or not 0 < value < 86400:  # type: ignore[operator]
        raise OptionError(key, f"expected seconds above 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _readCA(name: str, path: Path) -> bytes:
    """
    The PEM certificate C{upstream_ca} names, read once with the options
    (not on each connection, where a FIFO or device would block the
    reactor).

    @raise OptionError: if it is not a readable regular file of at most
        C{MAX_PEM_FILE} bytes holding a PEM certificate.
    """
    try:
        data = readRegularFile(path, MAX_PEM_FILE, "upstream_ca")
        Certificate.loadPEM(data)
    except FileError as e:
        raise OptionError("upstream_ca", f"{name!r}: {e.reason} ({path})") from None
    except crypto.Error as e:
        raise OptionError(
            "upstream_ca",
            f"{name!r} holds no PEM certificate ({path}): {opensslReason(e)}",
        ) from None
    return data


def parseRelayOptions(options: Mapping[str, object], relativeTo: Path) -> RelayOptions:
    """
    Validate the relay's options.
    """
    rejectUnknown(
        options,
        {
            "upstream",
            "upstreams",
            "balance",
            "connect_timeout",
            "fail_timeout",
            "upstream_tls",
            "upstream_server_name",
            "upstream_ca",
            "upstream_tls_verify",
            "send_proxy_protocol",
            "splice",
        },
    )
    if ("upstream" in options) == ("upstreams" in options):
        raise OptionError(
            "upstream",
            "give exactly one of upstream = 'host:port' or upstreams = [...]",
        )
    if "upstream" in options:
        upstreams: tuple[Upstream, ...] = (
            parseUpstream(options["upstream"], "upstream"),
        )
    else:
        listed = options["upstreams"]
        if type(listed) is not list or not listed:
            raise OptionError("upstreams", "expected a non-empty array of 'host:port'")
        upstreams = tuple(
            parseUpstream(item, f"upstreams[{index}]")
            for index, item in enumerate(listed)
        )
    balance = optionOf(options, "balance", str, "a string", "round_robin")
    if balance not in BALANCES:
        raise OptionError("balance", f"{balance!r} is not one of {', '.join(BALANCES)}")
    tls = optionOf(options, "upstream_tls", bool, "true or false", False)
    serverName = optionOf(options, "upstream_server_name", str, "a host name", "")
    caName = optionOf(options, "upstream_ca", str, "a PEM file path", "")
    verify = optionOf(options, "upstream_tls_verify", bool, "true or false", True)
    ca = None
    if "\x00" in caName:
        raise OptionError("upstream_ca", f"{caName!r} contains a NUL character")
    caPEM = None
    if caName:
        ca = (relativeTo / caName).resolve()
        caPEM = _readCA(caName, ca)
    if not tls:
        for key in ("upstream_server_name", "upstream_ca", "upstream_tls_verify"):
            if key in options:
                raise OptionError(key, "only with upstream_tls = true")
    sendProxy = optionOf(options, "send_proxy_protocol", str, '"v1" or "v2"', "")
    if sendProxy not in ("", "v1", "v2"):
        raise OptionError(
            "send_proxy_protocol", f'expected "v1" or "v2", got {sendProxy!r}'
        )
    return RelayOptions(
        upstreams=upstreams,
        balance=balance,
        connectTimeout=_seconds(options, "connect_timeout", 5.0),
        failTimeout=_seconds(options, "fail_timeout", 10.0),
        tls=tls,
        serverName=serverName or None,
        ca=ca,
        caPEM=caPEM,
        verify=verify,
        sendProxy=sendProxy or None,
        splice=optionOf(options, "splice", bool, "true or false", True),
    )
