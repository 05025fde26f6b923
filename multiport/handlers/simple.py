"""
The small RFC services: echo, discard, daytime, quote of the day, chargen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from attrs import frozen
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from multiport.handlers import simpleudp
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    OptionError,
    optionOf,
    rejectUnknown,
)


class IConnectionTransport(ITransport, IConsumer, IPushProducer):
    """
    A connection's transport as these protocols use it once connected:
    also the consumer of what they write (to register as its producer)
    and a producer they can pause.  Twisted's TCP and TLS transports and
    L{StringTransport} provide all three, and multiport's per-port wrapper
    passes them on to the transport under it.
    """


@implementer(IPushProducer)
class Echo(Protocol):
    """
    RFC 862: send back every byte received.

    It is the producer of its own replies: when the client stops reading
    and the transport's buffer fills, it stops reading from the client, so
    a client that only sends can't grow the daemon's memory.
    """

    # Set before connectionMade; declared so, not checked on each write.
    transport: IConnectionTransport

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Discard(Protocol):
    """
    RFC 863: read and throw away everything.
    """

    def dataReceived(self, data: bytes) -> None:
        pass


class Daytime(Protocol):
    """
    RFC 867: send the date and time as a line of text, then close.
    """

    transport: IConnectionTransport

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def connectionMade(self) -> None:
        now = time.gmtime(self._clock.seconds())
        line = time.strftime("%A, %B %d, %Y %H:%M:%S-UTC\r\n", now)
        self.transport.write(line.encode("ascii"))
        self.transport.loseConnection()


class QuoteOfTheDay(Protocol):
    """
    RFC 865: send a short message, then close.
    """

    transport: IConnectionTransport

    def __init__(self, quote: bytes) -> None:
        self._quote = quote

    def connectionMade(self) -> None:
        self.transport.write(self._quote)
        self.transport.loseConnection()


def _chargenLines() -> bytes:
    # RFC 864's rotating pattern: 72 printable characters a line, each line
    # starting one character further along the 95-character ring.
    ring = bytes(range(32, 127))
    doubled = ring + ring
    return b"".join(doubled[i : i + 72] + b"\r\n" for i in range(len(ring)))


@implementer(IPushProducer)
class Chargen(Protocol):
    """
    RFC 864: send characters until the client goes away.

    It registers as a streaming producer: the transport pauses it when the
    client stops reading, so it never buffers more than one chunk.
    """

    transport: IConnectionTransport
    chunk = _chargenLines()
    _paused = True

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        # write() pauses us synchronously once the transport's buffer is
        # full, which ends the loop after at most one buffer's worth.
        while not self._paused:
            self.transport.write(self.chunk)

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._paused = True

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._paused = True


class _Factory(Factory):
    """
    A factory building protocols with a function of no arguments.
    """

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self._make = make

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = self._make()
        protocol.factory = self
        return protocol


def _buildDaytime(context: HandlerContext) -> Factory:
    return _Factory(lambda: Daytime(context.clock))


DEFAULT_QUOTE = "The best way to predict the future is to invent it. -- Alan Kay\r\n"
MAX_QUOTE = 512  # RFC 865: "the quote should be limited to 512 characters"


@frozen
class QuoteOptions:
    """
    The qotd handler's options.
    """

    quote: str = DEFAULT_QUOTE


def _parseQuote(options: Mapping[str, object], relativeTo: Path) -> QuoteOptions:
    rejectUnknown(options, {"quote"})
    quote = optionOf(options, "quote", str, "a string", DEFAULT_QUOTE)
    if not quote:
        raise OptionError("quote", "must not be empty")
    if not quote.isascii():
        raise OptionError("quote", "must be ASCII text (RFC 865)")
    if not quote.endswith("\n"):
        quote += "\r\n"
    if len(quote) > MAX_QUOTE:
        raise OptionError(
            "quote",
            f"is {len(quote)} characters with its line end; at most {MAX_QUOTE} "
            "(RFC 865)",
        )
    return QuoteOptions(quote)


def _buildQuote(context: HandlerContext) -> Factory:
    options = context.options
    assert isinstance(options, QuoteOptions)
    quote = options.quote.encode("ascii")
    return _Factory(lambda: QuoteOfTheDay(quote))


def _buildQuoteDatagram(context: HandlerContext) -> DatagramProtocol:
    options = context.options
    assert isinstance(options, QuoteOptions)
    return simpleudp.QuoteDatagram(options.quote.encode("ascii"))


echo = Handler(
    "echo",
    "RFC 862 echo: sends back every byte it receives",
    lambda c: _Factory(Echo),
    buildDatagram=simpleudp.buildEcho,
)
discard = Handler(
    "discard",
    "RFC 863 discard: reads and drops everything",
    lambda c: _Factory(Discard),
    buildDatagram=simpleudp.buildDiscard,
)
daytime = Handler(
    "daytime",
    "RFC 867 daytime: sends the date and time (UTC), then closes",
    _buildDaytime,
    buildDatagram=simpleudp.buildDaytime,
)
qotd = Handler(
    "qotd",
    "RFC 865 quote of the day: sends a quote (option quote), then closes",
    _buildQuote,
    parse=_parseQuote,
    buildDatagram=_buildQuoteDatagram,
)
chargen = Handler(
    "chargen",
    "RFC 864 character generator: streams characters while the client reads",
    lambda c: _Factory(Chargen),
    buildDatagram=simpleudp.buildChargen,
)
