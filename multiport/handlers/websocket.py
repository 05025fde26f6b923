"""
The websocket handler: an http port (every http option applies) whose
C{path} is a WebSocket endpoint that echoes each message (C{echo = true})
or bridges each connection to a TCP upstream (C{upstream = "host:port"}).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from attrs import evolve, frozen
from twisted.internet.endpoints import HostnameEndpoint
from twisted.web import server

from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    OptionError,
    optionOf,
)
from multiport.handlers.relayoptions import Upstream, parseUpstream
from multiport.handlers.web import HTTP_POLICY, buildSite
from multiport.handlers.weboptions import WebOptions, parseWebOptions
from multiport.websocket.apps import Bridge, Echo
from multiport.websocket.interface import WebSocketApp, WebSocketSession
from multiport.websocket.mount import checkPath, serveWebSocket
from multiport.websocket.settings import (
    SETTINGS_KEYS,
    WebSocketSettings,
    parseWebSocketSettings,
)

#: The websocket handler's own keys; the others are the http handler's.
OWN_KEYS = frozenset({"path", "echo", "upstream", "connect_timeout"}) | SETTINGS_KEYS


@frozen
class WebSocketOptions:
    """
    The websocket handler's options.

    @ivar path: Where the endpoint is (every other path is served as the
        http handler would).
    @ivar upstream: The TCP upstream each connection is bridged to, or
        C{None} to echo.
    @ivar connectTimeout: Seconds the upstream may take to accept.
    @ivar settings: The endpoint's limits and timers.
    @ivar web: The http handler's options, for the other paths.
    """

    path: str
    upstream: Upstream | None
    connectTimeout: float
    settings: WebSocketSettings
    web: WebOptions


def parseWebSocketOptions(
    options: Mapping[str, object], relativeTo: Path
) -> WebSocketOptions:
    """
    Validate the websocket handler's options: exactly one of C{echo =
    true} and C{upstream}, the endpoint's settings, the http options.

    @raise OptionError: naming the key and its bad value.
    """
    path = optionOf(options, "path", str, "a path like '/ws'", "/ws")
    try:
        checkPath(path)
    except ValueError as e:
        raise OptionError("path", str(e)) from None
    echo = optionOf(options, "echo", bool, "true or false", False)
    if echo == ("upstream" in options):
        raise OptionError(
            "upstream" if echo else "echo",
            "give exactly one of upstream = 'host:port' or echo = true",
        )
    upstream = parseUpstream(options["upstream"], "upstream") if not echo else None
    timeout = options.get("connect_timeout", 5.0)
    if type(timeout) not in (int, float) or not 0 < timeout < 86400:  # type: ignore[operator]
        raise OptionError(
            "connect_timeout", f"expected seconds above 0, got {timeout!r}"
        )
    if echo and "connect_timeout" in options:
        raise OptionError("connect_timeout", "only with upstream")
    web = parseWebOptions(
        {k: v for k, v in options.items() if k not in OWN_KEYS}, relativeTo
    )
    return WebSocketOptions(
        path=path,
        upstream=upstream,
        connectTimeout=float(timeout),  # type: ignore[arg-type]
        settings=parseWebSocketSettings(options),
        web=web,
    )


def buildWebSocketSite(context: HandlerContext) -> server.Site:
    """
    The http handler's site for the port, with the endpoint at its path.
    """
    options = context.options
    assert isinstance(options, WebSocketOptions)
    site = buildSite(_webContext(context, options.web))
    upstream = options.upstream
    if upstream is None:
        serveWebSocket(site, options.path, Echo, context, options.settings)
        return site
    endpoint = HostnameEndpoint(
        context.reactor, upstream.host, upstream.port, timeout=options.connectTimeout
    )
    name = str(upstream)

    def bridge(session: WebSocketSession) -> WebSocketApp:
        return Bridge(session, endpoint, name)

    serveWebSocket(site, options.path, bridge, context, options.settings)
    return site


def _webContext(context: HandlerContext, web: WebOptions) -> HandlerContext:
    """
    The port's context as the http handler's site reads it: with the http
    options alone.
    """
    return evolve(context, port=evolve(context.port, options=web))


websocket = Handler(
    "websocket",
    "WebSocket on an http port: echo, or a bridge to a TCP upstream (option upstream)",
    buildWebSocketSite,
    parse=parseWebSocketOptions,
    defaultPolicy=HTTP_POLICY,
    descriptorsPerConnection=2,
)
