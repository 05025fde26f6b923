"""
A bare UDP echo server for the UDP benchmarks: Twisted's DatagramProtocol
on a plain reactor, or asyncio's (C{--asyncio}), on 127.0.0.1:PORT.
"""

from __future__ import annotations

import sys


def twisted(port: int) -> None:
    """
    Echo with a bare Twisted L{DatagramProtocol}.
    """
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Echo(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.write(data, addr)

    reactor.listenUDP(port, Echo(), interface="127.0.0.1", maxPacketSize=65535)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def asyncioEcho(port: int) -> None:
    """
    Echo with an asyncio L{asyncio.DatagramProtocol}.
    """
    import asyncio

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    number = int(sys.argv[1])
    if "--asyncio" in sys.argv[2:]:
        asyncioEcho(number)
    else:
        twisted(number)
