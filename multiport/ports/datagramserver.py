"""
The listening side of a UDP port: a L{UDPServer} child of the service
tree whose socket hands datagrams to the port's L{DatagramGate}.
"""

from __future__ import annotations

import os

from twisted.application.internet import UDPServer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort

from multiport.config.model import PortConfig
from multiport.io.datagramport import adoptDatagramPort
from multiport.io.reactortype import ReactorLike
from multiport.ports.datagram import MAX_READ, DatagramGate
from multiport.ports.sockets import bindShared, familyOf


class PortUDPServer(UDPServer):
    """
    A UDP port: a L{UDPServer} with its L{PortConfig} and L{DatagramGate}
    (in the place a TCP port's factory takes: C{factory}).
    """

    def __init__(
        self, config: PortConfig, gate: DatagramGate, reactor: ReactorLike
    ) -> None:
        UDPServer.__init__(  # type: ignore[no-untyped-call]
            self,
            config.port,
            gate,
            interface=config.interface,
            maxPacketSize=MAX_READ,
            reactor=reactor,
        )
        self.config = config
        self.factory = gate
        self.listenWith = reactor
        self.name: str | None = None
        self._port: IListeningPort | None = None
        #: A descriptor of a socket another process bound (a worker's copy
        #: of the main process's socket), read from rather than binding.
        #: Asked once: binding again later binds here.
        self.inherited: int | None = None
        #: A descriptor of a socket the service manager passed (socket
        #: activation): adopted, then this process's descriptor is closed.
        #: Asked once, as C{inherited} is.
        self.activated: int | None = None

    def _adopt(self, descriptor: int) -> IListeningPort:
        # Twisted duplicates the descriptor, and closing a UDP port never
        # shuts the socket down: the other processes holding it (workers,
        # the service manager) go on.  The socket's own family counts: one
        # matched by name may be bound elsewhere than the configuration
        # says.
        return adoptDatagramPort(
            self.listenWith, descriptor, familyOf(descriptor), self.factory, MAX_READ
        )

    def _getPort(self) -> IListeningPort:
        inherited, self.inherited = self.inherited, None
        activated, self.activated = self.activated, None
        if activated is not None:
            try:
                return self._adopt(activated)
            finally:
                os.close(activated)
        if inherited is not None:
            return self._adopt(inherited)
        # Bound here rather than by listenUDP, which leaves IPV6_V6ONLY
        # off: [::]:P would then take 0.0.0.0:P too, and the two families
        # are separate ports to multiport.
        skt = bindShared(self.config)
        try:
            return adoptDatagramPort(
                self.listenWith, skt.fileno(), skt.family, self.factory, MAX_READ
            )
        finally:
            skt.close()

    def boundAddress(self) -> IAddress | None:
        """
        The address the port is bound to (with its real number), or C{None}.
        """
        if self._port is None:
            return None
        return self._port.getHost()

    def stopService(self) -> Deferred[None] | None:
        """
        Close the socket; the port no longer counts as listening.
        """
        self.factory.counters.listeningSince = None
        stopped: Deferred[None] | None = super().stopService()  # type: ignore[no-untyped-call]
        return stopped

    def takeOver(self, other: object) -> None:
        """
        Keep C{other}'s socket (a live change of a port that keeps its
        address): the socket never closes, and its gate (the same object,
        reconfigured) goes on receiving.
        """
        assert isinstance(other, PortUDPServer)
        port, other._port = other._port, None
        assert port is not None, "the port being replaced is bound"
        self._port = port
        self.name = other.name
        self.factory.portName = other.factory.portName

    def unbindNow(self) -> None:
        """
        Close the socket at once (after a failed start, or on removal).
        """
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
