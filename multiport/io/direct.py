"""
Direct delivery: a L{multiport.io.transport.FastServer} that hands what it
reads straight to the handler's protocol and counts the bytes itself, so
that multiport's per-port layer (L{multiport.ports.connection}) costs no
Python frame per read or write.

The layer stays the transport's protocol (it sees the connection made and
lost, half-close, the TLS handshake) and the owner of the connection's
counts; it only steps out of the data path, by calling L{DirectDelivery.deliverTo}.
The handler's protocol then has the transport itself as its transport, and
finds there what it could ask of the layer (L{DirectDelivery.timedOut},
L{DirectDelivery.protocolError}, L{DirectDelivery.countReceived},
L{DirectDelivery.countSent}).

It costs the transport one attribute (C{_direct}, 8 bytes of every
connection); the cached C{getHost} is the layer's.  Only the connection's
own counts are added to per read and write: the port's totals take them
when the connection closes, and sum the open ones when asked
(L{multiport.ports.counters.PortCounters}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import main
from twisted.internet.interfaces import IAddress, IProtocol


class Connection(Protocol):
    """
    What the transport counts for and reports to: the per-port layer.
    """

    received: int
    sent: int
    wrappedProtocol: IProtocol | None

    def handlerFailed(self, where: str) -> None:
        """
        The handler raised in C{where}: count it, log it, close.
        """

    def timedOut(self, which: str) -> None:
        """
        Close the connection because C{which} timeout passed.
        """

    def protocolError(self, why: str) -> None:
        """
        The handler is closing because the client broke its protocol.
        """

    def getHost(self) -> IAddress:
        """
        The address the client connected to, kept once asked.
        """


if TYPE_CHECKING:
    from twisted.internet import tcp

    _Base = tcp.Server
else:
    _Base = object


class DirectDelivery(_Base):
    """
    The part of L{multiport.io.transport.FastServer} that delivers to the
    handler's protocol directly once the per-port layer asks it to
    (L{deliverTo}); until then a read goes to the transport's protocol, as
    in any L{tcp.Server}.

    Its one attribute, C{_direct} (the layer, once it asked), is set in
    C{FastServer.__init__}: an instance attribute, read on every read and
    write.
    """

    _direct: Connection | None

    def deliverTo(self, connection: Connection) -> None:
        """
        From now on hand what is read to C{connection.wrappedProtocol},
        and count every byte read and written (and spliced) in
        C{connection}; report a handler's exception to C{connection}.
        """
        self._direct = connection

    def _dataReceived(self, data: bytes | None) -> Any:
        # tcp.Connection._dataReceived, with the layer's work inline: one
        # frame fewer a read than the layer's own dataReceived.
        if not data:
            return main.CONNECTION_DONE
        direct = self._direct
        if direct is None:
            return self.protocol.dataReceived(data)
        size = len(data)
        direct.received += size
        try:
            direct.wrappedProtocol.dataReceived(data)  # type: ignore[union-attr]
        except Exception:
            direct.handlerFailed("dataReceived")
        return None

    def countReceived(self, size: int) -> None:
        """
        Count C{size} bytes the handler moved from the client without a
        read of this transport (the relay's splice).
        """
        direct = self._direct
        if direct is not None:
            direct.received += size

    def countSent(self, size: int) -> None:
        """
        Count C{size} bytes the handler moved to the client without a
        write to this transport.
        """
        direct = self._direct
        if direct is not None:
            direct.sent += size

    def timedOut(self, which: str) -> None:
        """
        Close the connection because C{which} timeout passed (the per-port
        layer's C{timedOut}: the connection log says C{timeout}).
        """
        direct = self._direct
        if direct is None:
            self.abortConnection()  # type: ignore[no-untyped-call]
        else:
            direct.timedOut(which)

    def protocolError(self, why: str) -> None:
        """
        The handler is ending the connection because the client broke its
        protocol (the per-port layer's C{protocolError}).
        """
        direct = self._direct
        if direct is not None:
            direct.protocolError(why)

    def getHost(self) -> IAddress:
        """
        The address the client connected to; under the layer, asked of the
        layer, which keeps it once asked (twisted.web asks for it on every
        request: a C{getsockname} system call each time).
        """
        direct = self._direct
        if direct is None:
            return self.socketHost()
        return direct.getHost()

    def socketHost(self) -> IAddress:
        """
        The address the client connected to, asked of the socket.
        """
        return super().getHost()  # type: ignore[no-untyped-call,no-any-return]
