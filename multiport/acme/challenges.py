"""
The answers to pending ACME challenges, and where they are served.

HTTP-01: every plain C{http} port answers C{/.well-known/acme-challenge/}
tokens before anything else its site does (a C{redirect_https} site
included); with no such port, L{ChallengeResponder} listens on C{[acme]
http_port} while an order is pending.  TLS-ALPN-01 answers are kept here
too, served by the TLS ports (L{multiport.acme.alpn}).
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path

from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.web import resource, server
from twisted.web.iweb import IRequest

#: The path RFC 8555 section 8.3 puts HTTP-01 tokens under.
WELL_KNOWN = b".well-known"
ACME_CHALLENGE = b"acme-challenge"


#: The characters of a token (base64url): nothing else is looked up on disk.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NAME = re.compile(r"^[a-z0-9.-]{1,253}$")


class ChallengeTokens:
    """
    The pending challenges' answers, changed on the reactor's thread only.

    With C{folder}, answers are also written there, and looked up there
    when not known here: the worker processes of C{--workers} answer the
    challenges of the orders the main process places.

    @ivar http: HTTP-01 key authorizations, by token.
    @ivar alpn: TLS-ALPN-01 key authorizations, by DNS name.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.http: dict[str, bytes] = {}
        self.alpn: dict[str, str] = {}
        self.folder = folder
        #: TLS-ALPN-01 validation contexts built, by name and answer.
        self.contexts: dict[tuple[str, str], object] = {}
        #: The ports' contexts that answer TLS-ALPN-01 from these tokens
        #: already: once a context made a connection, OpenSSL's settings
        #: of it can no longer change.
        self.answering: weakref.WeakSet[object] = weakref.WeakSet()

    def _file(self, kind: str, key: str) -> Path | None:
        pattern = _TOKEN if kind == "http" else _NAME
        if self.folder is None or not pattern.match(key) or key.startswith("."):
            return None
        return self.folder / kind / key

    def publish(self, kind: str, key: str, answer: str) -> None:
        """
        Answer C{key} (an HTTP-01 token, or a name for TLS-ALPN-01).
        """
        if kind == "http":
            self.http[key] = answer.encode("ascii")
        else:
            self.alpn[key] = answer
        path = self._file(kind, key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            path.write_text(answer)
            path.chmod(0o644)

    def withdraw(self, kind: str, key: str) -> None:
        """
        Stop answering C{key}.
        """
        (self.http if kind == "http" else self.alpn).pop(key, None)
        path = self._file(kind, key)
        if path is not None:
            path.unlink(missing_ok=True)

    def answer(self, kind: str, key: str) -> str | None:
        """
        The answer for C{key}, here or in the shared folder.
        """
        known = self.http.get(key) if kind == "http" else self.alpn.get(key)
        if known is not None:
            return known.decode("ascii") if isinstance(known, bytes) else known
        path = self._file(kind, key)
        if path is None:
            return None
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            return None


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
            answer = self.tokens.answer("http", postpath[1].decode("ascii", "replace"))
            if answer is not None:
                request.prepath.extend(postpath)
                del postpath[:]
                return _Answer(answer.encode("ascii"))
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
