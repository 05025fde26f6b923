"""
The small RFC services over UDP: one reply datagram per request at most,
never larger than the RFC allows (echo: the request itself; chargen: 0 to
512 characters; qotd: at most 512; daytime: one line), so a forged
source address can't turn a port into much of an amplifier.

The port's wrapper already drops datagrams from source port 0 and from
the port's own address; these services also never answer the ports of
the other small services (7, 9, 13, 17, 19): two of them answering each
other would loop forever (the reflection loop inetd services are known
for).
"""

from __future__ import annotations

import random
import time

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from multiport.handlers.interface import HandlerContext

#: Source ports these services never answer: their own kind's.
SMALL_SERVICE_PORTS = frozenset({7, 9, 13, 17, 19})
#: RFC 864 over UDP: "a random number (between 0 and 512) of characters".
MAX_CHARGEN = 512

Peer = tuple[str, int]


class _Answering(DatagramProtocol):
    """
    A service that answers each datagram with at most one datagram.
    """

    def reply(self, request: bytes) -> bytes | None:
        """
        The answer to C{request}, or C{None} for none.
        """
        raise NotImplementedError

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        if addr[1] in SMALL_SERVICE_PORTS:
            return
        answer = self.reply(datagram)
        transport = self.transport
        if answer is not None and transport is not None:
            transport.write(answer, addr)


class EchoDatagram(_Answering):
    """
    RFC 862 over UDP: send back each datagram as it came.
    """

    def reply(self, request: bytes) -> bytes | None:
        return request

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        # _Answering's, without the call to reply: an echo port answers
        # every datagram.
        if addr[1] in SMALL_SERVICE_PORTS:
            return
        transport = self.transport
        if transport is not None:
            transport.write(datagram, addr)


class DiscardDatagram(DatagramProtocol):
    """
    RFC 863 over UDP: drop every datagram.
    """

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        pass


class DaytimeDatagram(_Answering):
    """
    RFC 867 over UDP: answer any datagram with the date and time.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def reply(self, request: bytes) -> bytes | None:
        now = time.gmtime(self._clock.seconds())
        return time.strftime("%A, %B %d, %Y %H:%M:%S-UTC\r\n", now).encode("ascii")


class QuoteDatagram(_Answering):
    """
    RFC 865 over UDP: answer any datagram with the quote (at most 512
    characters, checked when the options are read).
    """

    def __init__(self, quote: bytes) -> None:
        self._quote = quote

    def reply(self, request: bytes) -> bytes | None:
        return self._quote


class ChargenDatagram(_Answering):
    """
    RFC 864 over UDP: answer each datagram with one datagram of a random
    number (0 to 512) of characters of the rotating pattern.
    """

    def __init__(self, pattern: bytes, choose: random.Random) -> None:
        self._pattern = pattern * (1 + MAX_CHARGEN // len(pattern))
        self._choose = choose
        self._start = 0

    def reply(self, request: bytes) -> bytes | None:
        length = self._choose.randint(0, MAX_CHARGEN)
        start = self._start
        self._start = (start + 74) % (len(self._pattern) - MAX_CHARGEN)
        return self._pattern[start : start + length]


def buildEcho(context: HandlerContext) -> DatagramProtocol:
    """
    The echo handler's protocol for one UDP port.
    """
    return EchoDatagram()


def buildDiscard(context: HandlerContext) -> DatagramProtocol:
    """
    The discard handler's protocol for one UDP port.
    """
    return DiscardDatagram()


def buildDaytime(context: HandlerContext) -> DatagramProtocol:
    """
    The daytime handler's protocol for one UDP port.
    """
    return DaytimeDatagram(context.clock)


def buildChargen(context: HandlerContext) -> DatagramProtocol:
    """
    The chargen handler's protocol for one UDP port.
    """
    from multiport.handlers.simple import Chargen

    return ChargenDatagram(Chargen.chunk, random.Random())
