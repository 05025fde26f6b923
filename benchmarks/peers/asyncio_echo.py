"""
An asyncio echo server (optionally on uvloop), the way asyncio's own
documentation writes one.

    python -m benchmarks.peers.asyncio_echo PORT [--uvloop]
"""

import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    """
    Write back every chunk received.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=511)
    async with server:
        await stop


def main() -> None:
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(serve(int(sys.argv[1])))
    else:
        asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
