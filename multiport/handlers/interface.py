"""
The handler plugin interface: what a port's job must provide.

A handler is an object providing both L{twisted.plugin.IPlugin} and
L{IHandler}, found by L{twisted.plugin.getPlugins} in any C{twisted/plugins/}
folder on C{sys.path}.  Third-party packages code against this module
(re-exported by L{multiport.handlers}); keep it stable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IProtocolFactory, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer

from multiport.config.handleroptions import OptionError as OptionError
from multiport.errors import typeName
from multiport.io.reactortype import ReactorLike
from multiport.ports.counters import HandlerCounters
from multiport.ports.policies import Policy

if TYPE_CHECKING:
    from multiport.config.model import PortConfig
    from multiport.io.splice import PipePool

_T = TypeVar("_T")


@frozen
class HandlerContext:
    """
    Everything a handler gets to build one port's protocol factory.

    @ivar reactor: The reactor the port runs on (use it for connections);
        L{ReactorLike} names the reactor interfaces it provides.
    @ivar clock: The clock to schedule and read time with (the reactor in
        a daemon; a L{twisted.internet.task.Clock} in tests).
    @ivar port: The port's validated configuration.
    @ivar counters: Where the handler publishes counters of its own; they
        are shown with the port's (status page, metrics).
    @ivar daemon: The whole daemon, read-only (L{IDaemonView}): every port's
        configuration and figures, for handlers that report on the daemon
        (C{status}); L{None} outside a daemon.  The status port's admin API
        also changes it where it provides L{IDaemonControl}.
    @ivar pipes: The daemon's splice(2) pipe pool, shared by every port
        (the relay takes its pipes there); L{None} outside a daemon.
    """

    reactor: ReactorLike
    clock: IReactorTime
    port: PortConfig
    counters: HandlerCounters = field(factory=HandlerCounters)
    daemon: IDaemonView | None = None
    pipes: PipePool | None = None

    @property
    def options(self) -> object:
        """
        The handler's own validated options for this port.
        """
        return self.port.options


@frozen
class PortStatus:
    """
    One port as the daemon sees it now: a snapshot, safe to keep.

    @ivar name: C{tcp:HOST:PORT}, with the real number once bound.
    @ivar listening: Whether the port accepts connections now.
    @ivar counters: L{PortCounters.snapshot} of the port.
    @ivar handlerCounters: What the handler published: (name, labels) to
        value.
    @ivar certificateExpiry: For TLS ports, when the certificate expires
        (POSIX time).
    @ivar draining: Whether the port was removed and only its open
        connections are left.
    @ivar acme: For ACME ports, the state of their certificate's renewal
        (L{multiport.acme.service.AcmeService.status}).
    """

    name: str
    config: PortConfig
    listening: bool
    counters: Mapping[str, object]
    handlerCounters: Mapping[tuple[str, tuple[tuple[str, str], ...]], int]
    certificateExpiry: float | None = None
    draining: bool = False
    acme: Mapping[str, object] | None = None


class IDaemonView(Interface):
    """
    What a handler may read of the running daemon.
    """

    version = Attribute("multiport's version.")
    started = Attribute("When the daemon started (POSIX time).")

    def portStatus() -> list[PortStatus]:
        """
        Every configured port, listening or not, in configuration order.
        """


@frozen
class PortRef:
    """
    A port as a live change reports it: its name and real number.
    """

    name: str
    port: int


class ChangeSummary(TypedDict):
    """
    What a live change (a reload) did, by port name: the admin API's
    answer to a reload and the reload's log line.
    """

    added: list[str | None]
    removed: list[str | None]
    changed: list[str | None]
    unchanged: int


class IDaemonControl(Interface):
    """
    What the admin API may change in the running daemon.  Every change
    answers with a L{Deferred}: in one process it has fired already, with
    workers it fires once every worker has answered.  It fails with
    L{multiport.errors.ConfigError} for bad input,
    L{multiport.errors.ReconcileError} when the change can't be applied,
    L{KeyError} for an unknown port and
    L{multiport.errors.ReloadUnavailable} for a reload without a file.
    """

    def checkToken(token: str) -> bool:
        """
        Whether C{token} is the admin token.
        """

    def addPort(table: Mapping[str, object]) -> Deferred[PortRef]:
        """
        Add a port from a C{[[port]]}-shaped table; the port added.
        """

    def changePort(
        name: str, table: Mapping[str, object], servingFrom: IAddress | None = None
    ) -> Deferred[PortRef]:
        """
        Change port C{name} in place; the port now serving it.
        C{servingFrom} is the address the asking request came in on: a
        status port refuses to change itself.
        """

    def removePort(name: str, servingFrom: IAddress | None = None) -> Deferred[int]:
        """
        Remove port C{name}; how many connections drain.
        """

    def reload() -> Deferred[ChangeSummary]:
        """
        Read the configuration again and apply it; what changed.
        """

    def upgrade() -> Deferred[dict[str, int]]:
        """
        Replace the daemon with a new one (the code now on disk) that takes
        every listening socket over; C{{"pid": PID}} once it serves.
        """


@frozen
class DrainState:
    """
    Whether the daemon is drained for its load balancer (L{IDaemonDrain}).

    @ivar draining: C{/healthz} answers 503 C{draining}, every port still
        serving.
    @ivar since: When the drain began (POSIX time); L{None} when not
        draining.
    """

    draining: bool = False
    since: float | None = None


class IDaemonDrain(Interface):
    """
    Draining that a load balancer sees: C{/healthz} answers 503
    C{draining} so that the balancer sends no new connections, while every
    port keeps listening and serving.  Each change answers with a
    L{Deferred}, as L{IDaemonControl}'s do.
    """

    def drainState() -> DrainState:
        """
        Whether the daemon is drained now, and since when.
        """

    def drain() -> Deferred[DrainState]:
        """
        Begin the drain (again: nothing changes); the state now.
        """

    def undrain() -> Deferred[DrainState]:
        """
        End the drain (when not drained: nothing changes); the state now.
        """


class IDrainable(Interface):
    """
    A handler's protocol that can finish early when its port goes away
    (removed, or the daemon stopping): an HTTP connection between requests
    closes at once, one with a request in flight after answering it.
    Protocols that don't provide this are left to finish on their own
    until the port's drain timeout.
    """

    def drain() -> None:
        """
        Finish what is in progress, take nothing new, then close.
        """


class IBetweenMessages(Interface):
    """
    A handler's protocol whose messages are framed (an HTTP connection),
    which can say whether it is between them.  A connection that ends
    between messages loses nothing, however TCP and TLS end: the connection
    log calls it clean.  HTTP clients often end that way without a TLS
    close_notify (RFC 9112 section 9.8: servers should expect it), curl
    over HTTP/2 for one, or close with the daemon's last bytes unread (a
    reset).
    """

    def betweenMessages() -> bool:
        """
        Whether no message is in progress either way: nothing received
        that is not yet a whole message (or frame), and no answer in
        flight.
        """


class IHandler(Interface):
    """
    A port's job: a named way to build a protocol factory.
    """

    name = Attribute(
        "The handler's name as used in --ports and the config file: "
        "lowercase letters, digits, '-' and '_'."
    )
    description = Attribute("One line saying what the handler does.")
    impliesTLS = Attribute("True if every port with this handler uses TLS.")
    # Optional: a handler without it gets no defaults of its own.
    defaultPolicy = Attribute(
        "A L{multiport.ports.policies.Policy} of defaults for this handler's ports "
        "(optional): each setting applies where neither the port nor "
        "[defaults] sets it."
    )
    servedByMainProcess = Attribute(
        "Optional: True if the handler reports on the daemon as a whole (the "
        "status handler), so that with --workers its ports run in the main "
        "process, where the workers' counters are summed, not in each "
        "worker; False if absent."
    )
    protocols = Attribute(
        "Optional: the protocols the handler serves, a tuple of 'tcp' and "
        "'udp'; ('tcp',) if absent.  A handler serving 'udp' also provides "
        "IDatagramHandler."
    )
    descriptorsPerConnection = Attribute(
        "Optional: the file descriptors one connection holds, its own socket "
        "included (an int, at least 1; 1 if absent).  A handler that opens "
        "a connection of its own per client (the relay: 2) says so, and the "
        "daemon's limit and each port's fair share count it."
    )

    def parseOptions(options: Mapping[str, object], relativeTo: Path) -> object:
        """
        Validate the port's C{options} table into a value of the handler's
        own; it must be immutable and compare equal to an equal parse, so
        that two configurations can be compared.

        @param options: The table as read (TOML types), empty if none.
        @param relativeTo: The folder relative paths resolve against.

        @raise OptionError: naming the key of the first bad option.
        """

    def buildFactory(context: HandlerContext) -> IProtocolFactory:
        """
        Build the protocol factory for one port; every port gets its own.
        """


class IDatagramHandler(Interface):
    """
    The UDP side of a handler whose C{protocols} holds C{"udp"}: it builds
    one datagram protocol per UDP port.

    The protocol gets each datagram the port admitted with
    C{datagramReceived(data, (host, port))} and answers with
    C{self.transport.write(data, (host, port))}; the transport is the
    port's wrapper, which counts, enforces the policies and never sends to
    a source port 0 or to the port's own address.
    """

    parseDatagramOptions = Attribute(
        "Optional: a function like IHandler.parseOptions for the options of "
        "this handler's UDP ports, when they differ from its TCP ports' "
        "(the relay's); parseOptions is used when absent."
    )

    def buildDatagramProtocol(context: HandlerContext) -> DatagramProtocol:
        """
        Build the datagram protocol of one UDP port; every port gets its
        own.
        """


def parseOptionsFor(
    handler: IHandler, protocol: str, options: Mapping[str, object], relativeTo: Path
) -> object:
    """
    C{handler}'s parse of a port's C{options} for C{protocol}: a UDP
    port's with its C{parseDatagramOptions} if it has one.
    """
    parse = handler.parseOptions
    if protocol == "udp":
        parse = getattr(handler, "parseDatagramOptions", parse)
    return parse(options, relativeTo)


def _protocolsOf(handler: Handler) -> tuple[str, ...]:
    return (("tcp",) if handler.build is not None else ()) + (
        ("udp",) if handler.buildDatagram is not None else ()
    )


@implementer(IPlugin, IHandler, IDatagramHandler)
@frozen
class Handler:
    """
    A handler made of functions; the simplest way to write a plugin::

        from multiport.handlers import Handler
        hello = Handler("hello", "Says hello.", build=lambda context: ...)

    C{build} makes the TCP factory, C{buildDatagram} the UDP protocol; the
    handler serves the protocols it has a function for.
    """

    name: str
    description: str
    build: Callable[[HandlerContext], IProtocolFactory] | None = None
    parse: Callable[[Mapping[str, object], Path], object] | None = None
    buildDatagram: Callable[[HandlerContext], DatagramProtocol] | None = None
    parseDatagram: Callable[[Mapping[str, object], Path], object] | None = None
    impliesTLS: bool = False
    defaultPolicy: Policy = Policy()
    descriptorsPerConnection: int = field(default=1)
    servedByMainProcess: bool = False
    protocols: tuple[str, ...] = field()

    @protocols.default
    def _protocols(self) -> tuple[str, ...]:
        return _protocolsOf(self)

    @descriptorsPerConnection.validator
    def _check(self, attribute: object, value: object) -> None:
        descriptorsOf(self)

    def parseOptions(self, options: Mapping[str, object], relativeTo: Path) -> object:
        """
        Validate options with C{parse}; without it, accept no options.
        """
        if self.parse is not None:
            return self.parse(options, relativeTo)
        for key in options:
            raise OptionError(key, f"unknown option; {self.name!r} takes none")
        return None

    def parseDatagramOptions(
        self, options: Mapping[str, object], relativeTo: Path
    ) -> object:
        """
        Validate a UDP port's options with C{parseDatagram}, else as a TCP
        port's.
        """
        if self.parseDatagram is not None:
            return self.parseDatagram(options, relativeTo)
        return self.parseOptions(options, relativeTo)

    def buildFactory(self, context: HandlerContext) -> IProtocolFactory:
        """
        Build with C{build}.
        """
        if self.build is None:
            raise TypeError(f"handler {self.name!r} does not serve TCP")
        return self.build(context)

    def buildDatagramProtocol(self, context: HandlerContext) -> DatagramProtocol:
        """
        Build with C{buildDatagram}.
        """
        if self.buildDatagram is None:
            raise TypeError(f"handler {self.name!r} does not serve UDP")
        return self.buildDatagram(context)


def servedByMainProcess(handler: object) -> bool:
    """
    Whether C{handler}'s ports run in the main process under C{--workers}:
    its C{servedByMainProcess}, C{False} when it declares none.
    """
    return getattr(handler, "servedByMainProcess", False) is True


def descriptorsOf(handler: object) -> int:
    """
    The descriptors one connection of C{handler} holds: its
    C{descriptorsPerConnection}, 1 when it declares none.

    @raise ValueError: naming the handler, for a value that is not a whole
        number of at least 1.
    """
    value = getattr(handler, "descriptorsPerConnection", 1)
    if type(value) is not int or value < 1:
        raise ValueError(
            f"handler {getattr(handler, 'name', handler)!r}: "
            f"descriptorsPerConnection must be a whole number of at least 1, "
            f"got {typeName(value)} {value!r}"
        )
    return value


def rejectUnknown(options: Mapping[str, object], known: set[str]) -> None:
    """
    Raise L{OptionError} for the first key of C{options} not in C{known}.
    """
    for key in options:
        if key not in known:
            raise OptionError(key, f"unknown option; known: {', '.join(sorted(known))}")


def optionOf(
    options: Mapping[str, object],
    key: str,
    kind: type[_T],
    kindName: str,
    default: _T,
) -> _T:
    """
    C{options[key]} checked to be of C{kind}, or C{default} when absent.
    """
    if key not in options:
        return default
    value = options[key]
    # bool is an int in Python, never in TOML.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise OptionError(key, f"expected {kindName}, got {typeName(value)} {value!r}")
    return value
