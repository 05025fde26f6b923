"""
Serving a WebSocket endpoint on one path of a twisted.web site, in front
of whatever the site serves on every other path (L{serveWebSocket}).
"""

from __future__ import annotations

from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Request, Site

from multiport.handlers.interface import HandlerContext
from multiport.websocket.interface import WebSocketAppFactory
from multiport.websocket.resource import WebSocketResource
from multiport.websocket.settings import WebSocketSettings

#: An endpoint's settings when its handler gives none.
DEFAULT_SETTINGS = WebSocketSettings()


class PathRouter(Resource):
    """
    The root of a site that serves some exact paths itself (C{mounts}) and
    every other path as C{inner}, the site's own root, would.
    """

    def __init__(self, inner: IResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner = inner
        self.mounts: dict[bytes, IResource] = {}

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        mounted = self.mounts.get(request.path)
        if mounted is not None:
            return mounted
        # Traversal took one segment off for us: give it back to the inner
        # tree, which traverses as if it were the root.
        assert request.postpath is not None and request.prepath is not None
        request.postpath.insert(0, request.prepath.pop())
        found: IResource = getChildForRequest(self.inner, request)  # type: ignore[no-untyped-call]
        return found

    def render(self, request: Request) -> bytes | int:
        rendered: bytes | int = self.inner.render(request)  # type: ignore[no-untyped-call]
        return rendered


def checkPath(path: str) -> bytes:
    """
    C{path} as a request path compares: it must start with C{/} and hold
    no query, fragment, space or control character.

    @raise ValueError: naming C{path}.
    """
    if (
        not path.startswith("/")
        or not path.isascii()
        or any(c in path for c in "?# ")
        or not path.isprintable()
    ):
        raise ValueError(
            f"{path!r} is not a path like '/ws' (ASCII, starting with '/', "
            "no query or space)"
        )
    return path.encode("ascii")


def serveWebSocket(
    site: Site,
    path: str,
    makeApp: WebSocketAppFactory,
    context: HandlerContext,
    settings: WebSocketSettings = DEFAULT_SETTINGS,
) -> WebSocketResource:
    """
    Serve a WebSocket endpoint at exactly C{path} (C{"/game"}) of C{site}:
    each connection gets an application from C{makeApp}, and the port's
    WebSocket counters (status page, metrics) count it.  Every other path
    is served as before.

    @param site: A handler's twisted.web site, such as
        L{multiport.handlers.web.buildSite} makes for C{context}.
    @raise ValueError: for a path that is not one, or is taken already.
    """
    exact = checkPath(path)
    root = site.resource
    if not isinstance(root, PathRouter):
        root = PathRouter(root)
        site.resource = root
    if exact in root.mounts:
        raise ValueError(f"{path!r} already serves a WebSocket endpoint")
    endpoint = WebSocketResource(makeApp, settings, context.counters, context.clock)
    root.mounts[exact] = endpoint
    return endpoint
