"""
The relay over UDP: one session per client address, each with its own
connected upstream socket, so that replies find their client; replies go
back from the port's own socket.  A session ends after C{session_timeout}
seconds without a datagram either way (30 by default, as caddy-l4 and
nginx's C{proxy_timeout} have it), or when its upstream refuses (an ICMP
port unreachable, counted as C{icmp_refused}).

Where it can, the sessions' datagrams move in C (L{multiport.io.udppump}):
only a new client's datagrams (all of them when allow/deny, rate or
rate_per_ip must judge each) reach L{UDPRelay} in Python.  Without the
extension, or on a transport that is no port's gate, it all runs in Python.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorFDSet
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from multiport.config.model import numericHost
from multiport.handlers.interface import (
    HandlerContext,
    OptionError,
    optionOf,
    rejectUnknown,
)
from multiport.handlers.relayoptions import (
    BALANCES,
    RelayOptions,
    Upstream,
    parseUpstream,
)
from multiport.handlers.relayupstream import UpstreamPool
from multiport.io import udppump
from multiport.io.datagramport import listenConnected
from multiport.ports.datagram import MAX_READ, GatedTransport

log = Logger()

Peer = tuple[str, int]

DEFAULT_SESSION_TIMEOUT = 30.0
DEFAULT_MAX_SESSIONS = 10000


@frozen
class UDPRelayOptions:
    """
    The relay's options on a UDP port.
    """

    upstreams: tuple[Upstream, ...]
    balance: str = "round_robin"
    sessionTimeout: float = DEFAULT_SESSION_TIMEOUT
    maxSessions: int = DEFAULT_MAX_SESSIONS
    failTimeout: float = 10.0


def _seconds(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if type(value) not in (int, float) or not 0 < value < 86400:  # type: ignore[operator]
        raise OptionError(key, f"expected seconds above 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def parseUDPRelayOptions(
    options: Mapping[str, object], relativeTo: Path
) -> UDPRelayOptions:
    """
    Validate the relay's options for a UDP port.
    """
    rejectUnknown(
        options,
        {
            "upstream",
            "upstreams",
            "balance",
            "session_timeout",
            "max_sessions",
            "fail_timeout",
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
        keys = ["upstream"]
    else:
        listed = options["upstreams"]
        if type(listed) is not list or not listed:
            raise OptionError("upstreams", "expected a non-empty array of 'host:port'")
        upstreams = tuple(
            parseUpstream(item, f"upstreams[{index}]")
            for index, item in enumerate(listed)
        )
        keys = [f"upstreams[{index}]" for index in range(len(listed))]
    for key, upstream in zip(keys, upstreams, strict=True):
        # A connected UDP socket needs an address; resolving a name on
        # each new session would block the reactor.
        if numericHost(upstream.host) is None:
            raise OptionError(
                key, f"{upstream.host!r}: a UDP upstream must be an IP address"
            )
    balance = optionOf(options, "balance", str, "a string", "round_robin")
    if balance not in BALANCES:
        raise OptionError("balance", f"{balance!r} is not one of {', '.join(BALANCES)}")
    maxSessions = optionOf(
        options, "max_sessions", int, "a whole number", DEFAULT_MAX_SESSIONS
    )
    if maxSessions < 1:
        raise OptionError("max_sessions", f"must be at least 1, got {maxSessions}")
    return UDPRelayOptions(
        upstreams=upstreams,
        balance=balance,
        sessionTimeout=_seconds(options, "session_timeout", DEFAULT_SESSION_TIMEOUT),
        maxSessions=maxSessions,
        failTimeout=_seconds(options, "fail_timeout", 10.0),
    )


class Session(DatagramProtocol):
    """
    One client's session: its own upstream socket, connected to the
    upstream chosen for it.

    Both directions run for every datagram, so each keeps what it needs at
    hand: the upstream socket's C{send}, the function that answers the
    client from the port's socket (its address checked once, when the
    session opens) and the clock's time.
    """

    # A relay opens a socket per new client: no log line each.
    noisy = False

    def __init__(self, relay: UDPRelay, client: Peer, upstream: Upstream) -> None:
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self._now = relay.context.clock.seconds
        self.lastSeen = self._now()
        self.port: IListeningPort | None = None
        #: The upstream socket when the relay's pump reads it (C{port} is
        #: then C{None}).
        self.socket: socket.socket | None = None
        self.timer: IDelayedCall | None = None
        self._reply = relay.replier(client)
        self._sendUp: Callable[[bytes], object] | None = None

    def attach(self, port: IListeningPort) -> None:
        """
        Forward through C{port}, the session's connected upstream socket.
        """
        self.port = port
        skt = getattr(port, "socket", None)
        # A connected udp.Port's write checks the address it is not given
        # before it sends; the socket's own send is what it comes to.
        self._sendUp = skt.send if skt is not None else port.write  # type: ignore[attr-defined]

    def attachSocket(self, skt: socket.socket) -> None:
        """
        Forward through C{skt}, the session's connected upstream socket,
        which the relay's pump reads.
        """
        self.socket = skt
        self._sendUp = skt.send

    def detachSocket(self) -> socket.socket | None:
        """
        Stop forwarding through L{attachSocket}'s socket; hand it back.
        """
        skt, self.socket = self.socket, None
        if skt is not None:
            self._sendUp = None
        return skt

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        """
        A reply from the upstream: back to the client from the port's socket.
        """
        self.lastSeen = self._now()
        self._reply(datagram)

    def connectionRefused(self) -> None:
        """
        The upstream answered with ICMP port unreachable: count it, mark the
        upstream failed and end the session.
        """
        self.relay.context.counters.add("icmp_refused", upstream=str(self.upstream))
        self.relay.pool.failed(self.upstream)
        self.relay.close(self)

    def stopProtocol(self) -> None:
        """
        The upstream socket closed.  Unless the relay closed it, the
        reactor did, on a socket error (epoll reports a pending ICMP error
        on a connected UDP socket as an error event, not a read): read the
        error while the socket is still open, and end the session.
        """
        port = self.port
        if port is None:
            return
        self.port = None
        self._sendUp = None
        skt = getattr(port, "socket", None)
        code = 0
        if skt is not None:
            code = skt.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.failed(code or errno.ECONNREFUSED)

    def failed(self, code: int) -> None:
        """
        The upstream socket failed with C{code} (an C{errno}): a refusal is
        counted as C{icmp_refused}, anything else as C{upstream_errors};
        the session ends either way.
        """
        if code == errno.ECONNREFUSED:
            self.connectionRefused()
        else:
            self.relay.context.counters.add(
                "upstream_errors", upstream=str(self.upstream)
            )
            self.relay.close(self)

    def send(self, datagram: bytes) -> None:
        """
        Forward a client's datagram to the upstream.
        """
        self.lastSeen = self._now()
        sendUp = self._sendUp
        if sendUp is None:
            return
        try:
            sendUp(datagram)
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:
                # An ICMP error from an earlier datagram, reported here.
                self.connectionRefused()
            elif e.errno == errno.EMSGSIZE:
                self.relay.drop("too_large")
            elif e.errno in (errno.EAGAIN, errno.ENOBUFS, errno.EWOULDBLOCK):
                self.relay.drop("send_error")
            else:
                raise


class UDPRelay(DatagramProtocol):
    """
    The relay's protocol for one UDP port: sessions by client address.
    """

    def __init__(self, context: HandlerContext) -> None:
        self.context = context
        options = context.options
        assert isinstance(options, UDPRelayOptions)
        self.options = options
        self.pool = UpstreamPool(
            RelayOptions(
                upstreams=options.upstreams,
                balance=options.balance,
                failTimeout=options.failTimeout,
            ),
            context.clock,
        )
        self.sessions: dict[Peer, Session] = {}
        #: The C data path, while the port runs with it, and the gate's
        #: transport it was started on (Twisted's C{doStop} forgets
        #: C{transport} before it calls L{stopProtocol}).
        self.pump: udppump.UDPPump | None = None
        self._gated: GatedTransport | None = None

    def startProtocol(self) -> None:
        """
        The port is listening: start the C data path if it can run here
        (the extension is built, the reactor watches descriptors, the
        transport is a port's gate with a real socket).
        """
        transport = self.transport
        if udppump.native is None or not isinstance(transport, GatedTransport):
            return
        skt = transport.socket()
        reactor = self.context.reactor
        if skt is None or not IReactorFDSet.providedBy(reactor):
            return
        try:
            pump = udppump.UDPPump(
                reactor,
                self.context.clock,
                skt.fileno(),
                skt.family,
                transport.maxDatagramSize(),
                self._pumpFailed,
            )
        except OSError as e:
            # No epoll descriptor (EMFILE): the port runs all in Python.
            log.warn("the UDP relay runs without its C data path: {error}", error=e)
            return
        pump.deliver = transport.divert(pump, pump.readPort)
        pump.start()
        self.pump = pump
        self._gated = transport

    def _pumpFailed(self, client: Peer, code: int) -> None:
        session = self.sessions.get(client)
        if session is not None:
            session.failed(code)

    def drop(self, reason: str) -> None:
        """
        Count a datagram dropped for C{reason} on the port.
        """
        drop = getattr(self.transport, "drop", None)
        if drop is not None:
            drop(reason)

    def replier(self, client: Peer) -> Callable[[bytes], object]:
        """
        What sends a session's replies to C{client}: the port's
        L{multiport.ports.datagram.GatedTransport.replyTo}, or its
        C{write} on another transport.
        """
        transport = self.transport
        replyTo = getattr(transport, "replyTo", None)
        if replyTo is not None:
            return replyTo(client)  # type: ignore[no-any-return]
        assert transport is not None, "the relay's port is listening"
        return partial(transport.write, addr=client)

    def _published(self) -> None:
        setSessions = getattr(self.transport, "setSessions", None)
        if setSessions is not None:
            setSessions(len(self.sessions))

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        """
        A client's datagram: to its session's upstream, opening a session
        for a new client.
        """
        session = self.sessions.get(addr)
        if session is None:
            session = self._open(addr)
            if session is None:
                return
        session.send(datagram)

    def _open(self, client: Peer) -> Session | None:
        if len(self.sessions) >= self.options.maxSessions:
            self.drop("sessions_full")
            return None
        pump = self.pump
        if (
            pump is not None
            and self._gated is not None
            and self._gated.reflects(client)
        ):
            # Never reached through the port's gate, which drops these.
            self.drop("reflection")
            return None
        for upstream in self.pool.candidates():
            session = Session(self, client, upstream)
            if pump is not None:
                pumped = self._openPumped(pump, session)
                if pumped is False:
                    continue
                if pumped:
                    self._opened(session)
                    return session
                # Else the pump can't take it: the session runs in Python.
            family = "::" if ":" in upstream.host else "0.0.0.0"
            try:
                port = listenConnected(
                    self.context.reactor,
                    session,
                    family,
                    upstream.host,
                    upstream.port,
                    MAX_READ,
                )
            except OSError:
                self.pool.failed(upstream)
                continue
            session.attach(port)
            self._opened(session)
            return session
        self.drop("no_upstream")
        return None

    def _openPumped(self, pump: udppump.UDPPump, session: Session) -> bool | None:
        """
        Connect C{session}'s upstream socket and hand it to the pump;
        C{False} (the upstream marked failed) if it can't be connected,
        C{None} if the pump can't take it (the session then runs in Python).
        """
        upstream = session.upstream
        family = socket.AF_INET6 if ":" in upstream.host else socket.AF_INET
        try:
            skt = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            log.warn("no socket for a UDP session: {error}", error=e)
            return None
        try:
            skt.setblocking(False)
            skt.connect((upstream.host, upstream.port))
        except OSError:
            skt.close()
            self.pool.failed(upstream)
            return False
        try:
            pump.add(session.client, skt.fileno())
        except (OSError, ValueError) as e:
            # A client address C can't parse (an IPv6 one with a %scope),
            # or epoll refusing one more descriptor.
            skt.close()
            log.info(
                "the C data path can't take {client}'s session: {error}",
                client=session.client,
                error=e,
            )
            return None
        session.attachSocket(skt)
        return True

    def _opened(self, session: Session) -> None:
        upstream = session.upstream
        self.sessions[session.client] = session
        self.pool.active[upstream] = self.pool.active.get(upstream, 0) + 1
        self.context.counters.add("sessions", upstream=str(upstream))
        session.timer = self.context.clock.callLater(
            self.options.sessionTimeout, self._expire, session
        )
        self._published()

    def _expire(self, session: Session) -> None:
        lastSeen = session.lastSeen
        if self.pump is not None and session.socket is not None:
            # The pump's last datagram of the session, either way.
            lastSeen = max(lastSeen, self.pump.lastSeen(session.client) or 0.0)
        idle = self.context.clock.seconds() - lastSeen
        left = self.options.sessionTimeout - idle
        if left > 0:
            session.timer = self.context.clock.callLater(left, self._expire, session)
            return
        session.timer = None
        self.close(session)

    def close(self, session: Session) -> None:
        """
        End C{session}: its upstream socket closes.
        """
        if self.sessions.get(session.client) is not session:
            return
        del self.sessions[session.client]
        self.pool.active[session.upstream] -= 1
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None
        port, session.port = session.port, None
        if port is not None:
            port.stopListening()
        skt = session.detachSocket()
        if skt is not None:
            if self.pump is not None:
                self.pump.remove(session.client)
            skt.close()
        self._published()

    def stopProtocol(self) -> None:
        """
        The port closed, or the relay is replaced by a live change: end
        every session and stop the C data path (nothing of it is left).
        """
        for session in list(self.sessions.values()):
            self.close(session)
        pump, self.pump = self.pump, None
        gated, self._gated = self._gated, None
        if pump is not None:
            if gated is not None:
                gated.undivert(pump)
            pump.stop()


def buildUDPRelay(context: HandlerContext) -> UDPRelay:
    """
    The UDP relay for one port.
    """
    return UDPRelay(context)
