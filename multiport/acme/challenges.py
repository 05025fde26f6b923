"""
The answers to pending ACME challenges, and where they are served.

HTTP-01: every plain C{http} port answers C{/.well-known/acme-challenge/}
tokens before anything else its site does (a C{redirect_https} site
included); with no such port, L{ChallengeResponder} listens on C{[acme]
http_port} while an order is pending.  TLS-ALPN-01 answers are kept here
too, served by the TLS ports (L{multiport.acme.alpn}).
"""

from __future__ import annotations

from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.web import resource, server
from twisted.web.iweb import IRequest

#: The path RFC 8555 section 8.3 puts HTTP-01 tokens under.
WELL_KNOWN = b".well-known"
ACME_CHALLENGE = b"acme-challenge"


class ChallengeTokens:
    """
    The pending challenges' answers, changed on the reactor's thread only.

    @ivar http: HTTP-01 key authorizations, by token.
    @ivar alpn: TLS-ALPN-01 validation certificates, by DNS name: an
        object of L{multiport.acme.alpn}'s choosing (its context).
    """

    def __init__(self) -> None:
        self.http: dict[str, bytes] = {}
        self.alpn: dict[str, object] = {}


class _Answer(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.body = body

    def render_GET(self, request: server.Request) -> bytes:
        # Request.setHeader is unannotated in Twisted.
        request.setHeader(b"content-type", b"application/octet-stream")  # type: ignore[no-untyped-call]
        return self.body


class ChallengeResource(resource.Resource):
    """
    A site's root that answers pending HTTP-01 tokens, and hands every
    other request to the root it wraps unchanged (a leaf root, such as a
    redirect, still sees the whole path).
    """

    def __init__(self, wrapped: resource.IResource, tokens: ChallengeTokens) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wrapped = wrapped
        self.tokens = tokens

    def getChildWithDefault(self, path: bytes, request: IRequest) -> resource.IResource:
        postpath: list[bytes] = request.postpath
        if path == WELL_KNOWN and len(postpath) == 2 and postpath[0] == ACME_CHALLENGE:
            answer = self.tokens.http.get(postpath[1].decode("ascii", "replace"))
            if answer is not None:
                request.prepath.extend(postpath)
                del postpath[:]
                return _Answer(answer)
        if self.wrapped.isLeaf:
            # Twisted's traversal already moved this segment to prepath; a
            # leaf expects to see it in postpath, as if it were the root.
            request.prepath.pop()
            postpath.insert(0, path)
            return self.wrapped
        # IResource's methods are unannotated in Twisted.
        child: resource.IResource = self.wrapped.getChildWithDefault(  # type: ignore[no-untyped-call]
            path, request
        )
        return child

    def render(self, request: server.Request) -> bytes | int:
        rendered: bytes | int = self.wrapped.render(request)  # type: ignore[no-untyped-call]
        return rendered


def answerChallenges(site: server.Site, tokens: ChallengeTokens) -> None:
    """
    Make C{site} answer C{tokens}' HTTP-01 challenges (once).
    """
    if not isinstance(site.resource, ChallengeResource):
        site.resource = ChallengeResource(site.resource, tokens)


class ChallengeResponder:
    """
    A site that answers HTTP-01 tokens and nothing else, listening only
    while orders are pending: for a configuration with no C{http} port.
    """

    def __init__(
        self, reactor: IReactorTCP, port: int, tokens: ChallengeTokens
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.site = server.Site(ChallengeResource(resource.NoResource(), tokens))  # type: ignore[no-untyped-call]
        self.site.noisy = False
        self.listening: IListeningPort | None = None
        self.users = 0

    def start(self) -> None:
        """
        Listen (an order begins).

        @raise twisted.internet.error.CannotListenError: if the port is
            taken, or below 1024 after privileges were dropped.
        """
        if self.users == 0:
            # The stub asks for a ServerFactory of typed protocols; a Site
            # is a ServerFactory of HTTPChannels.
            self.listening = self.reactor.listenTCP(self.port, self.site)  # type: ignore[arg-type]
        self.users += 1

    def stop(self) -> None:
        """
        Stop listening once the last pending order is done.
        """
        self.users -= 1
        if self.users == 0 and self.listening is not None:
            listening, self.listening = self.listening, None
            listening.stopListening()
