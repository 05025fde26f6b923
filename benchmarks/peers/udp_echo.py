"""
A bare UDP echo server for the UDP benchmarks: Twisted's DatagramProtocol
on a plain reactor, or asyncio's (C{--asyncio}), on 127.0.0.1:PORT.

Both do the same work per datagram as multiport's echo port: one read of
up to L{MAX_READ} bytes, one send back, and a reply the socket can't take
now is dropped, never queued without bound.
"""

from __future__ import annotations

import asyncio
import sys

#: What each read asks for: the largest UDP payload, as multiport and the
#: Twisted peer read.  asyncio's transport asks for 256 KiB by default, a
#: buffer above glibc's mmap threshold: every datagram then cost an mmap,
#: an mremap and a munmap, which made the asyncio figure a fifth of what
#: asyncio does with the same read.
MAX_READ = 65535


def twisted(port: int) -> None:
    """
    Echo with a bare Twisted L{DatagramProtocol}.
    """
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Echo(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.write(data, addr)

    reactor.listenUDP(port, Echo(), interface="127.0.0.1", maxPacketSize=MAX_READ)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


class AsyncioEcho(asyncio.DatagramProtocol):
    """
    Echo with an asyncio L{asyncio.DatagramProtocol}: reads of L{MAX_READ}
    bytes, and while the transport's buffer is above its high-water mark
    (the socket would block) datagrams are dropped, as Twisted and
    multiport drop a reply the kernel refuses, rather than queued.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.paused = False
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport (not an
        # asyncio.DatagramTransport subclass on Python 3.11).
        self.transport = transport  # type: ignore[assignment]
        # A class attribute of the selector event loop's datagram transport,
        # read on every datagram.
        transport.max_size = MAX_READ  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.paused:
            self.dropped += 1
            return
        assert self.transport is not None
        self.transport.sendto(data, addr)


def asyncioEcho(port: int) -> None:
    """
    Echo with L{AsyncioEcho} on asyncio's default event loop.
    """

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(AsyncioEcho, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    number = int(sys.argv[1])
    if "--asyncio" in sys.argv[2:]:
        asyncioEcho(number)
    else:
        twisted(number)
