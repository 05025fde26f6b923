"""
The parts of a connection's per-port wrapper (L{multiport.ports.connection})
that are not its behaviour: the state only some connections need, the
interfaces it declares, and its connection log line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from zope.interface import implementedBy, providedBy
from zope.interface.declarations import Provides

from multiport.config.model import formatAddress
from multiport.daemon.logformat import emitLine

# The namespace these lines had before the port module was split: log
# filters and the JSON log's "n" name it.
log = Logger(namespace="multiport.ports.port")
#: One line per closed connection, in a namespace of its own so that it can
#: be filtered or routed apart from the daemon's other lines.
connectionLog = Logger(namespace="multiport.connection")


def addressText(address: IAddress) -> str:
    """
    C{host:port} of a connection's address, for the log.
    """
    return formatAddress(getattr(address, "host", "?"), getattr(address, "port", 0))


class RareState:
    """
    What only some connections need (a TLS handshake, timers, a reason to
    close, a handler holding more than one descriptor), kept apart so that
    the others carry one empty slot for it.
    """

    __slots__ = (
        "closeReason",
        "timeoutKind",
        "failure",
        "handshaken",
        "handshakeTimer",
        "timers",
        "idleTimer",
        "idleSeen",
        "idleChecks",
        "host",
        "descriptors",
    )

    def __init__(self) -> None:
        self.closeReason: str | None = None
        self.timeoutKind: str | None = None
        self.failure: str | None = None
        self.handshaken = False
        self.handshakeTimer: IDelayedCall | None = None
        self.timers: tuple[IDelayedCall, ...] = ()
        self.idleTimer: IDelayedCall | None = None
        self.idleSeen = (0, 0)
        self.idleChecks = 0
        self.host: IAddress | None = None
        self.descriptors = 1


class TransportInterfaces:
    """
    The wrapper's C{__providedBy__}: its own interfaces and its transport's
    (as Twisted's C{ProtocolWrapper} declares with C{directlyProvides}, which
    needs a C{__provides__} attribute on each instance), one declaration
    shared by every wrapper over the same kind of transport.
    """

    def __init__(self) -> None:
        self._specs: dict[tuple[type, object], Any] = {}

    def __get__(self, instance: object, owner: type) -> Any:
        if instance is None:
            return owner.__provides__  # type: ignore[attr-defined]
        transport = getattr(instance, "transport", None)
        if transport is None:
            return implementedBy(owner)  # type: ignore[no-untyped-call]
        under = providedBy(transport)
        key = (owner, under)
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = Provides(owner, under)
        return spec


def logClose(connection: Any, ending: str, started: float) -> None:
    """
    Log the line of C{connection} (a L{PortProtocol}), which opened at
    C{started} and ended as C{ending}.
    """
    factory = connection.factory
    address = addressText(connection.peer)
    duration = factory.clock.seconds() - started
    # The line is formatted here, once: twisted.logger's own formatting
    # of seven fields cost as much as the rest of a connection (it
    # halved the accept rate).  The fields stay in the event for the
    # JSON log.
    received, sent = connection.received, connection.sent
    line = (
        f"{factory.portName} {factory.handlerName} {address} closed {ending} "
        f"after {duration:.3f}s, received {received} B, sent {sent} B"
    )
    client = connection.clientSubject() if connection.handshaken else None
    if client is not None:
        line += f", client {client}"
    failure = connection.failure
    if failure is not None:
        line += f", {failure}"
    emitLine(
        connectionLog,
        line,
        port=factory.portName,
        handler=factory.handlerName,
        peer=address,
        reason=ending,
        duration=duration,
        received=received,
        sent=sent,
        client=client,
        detail=failure,
    )
