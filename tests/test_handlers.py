"""
Tests for the handler plugin interface (L{multiport.handlers.interface}),
the handler counters (L{multiport.ports.counters.HandlerCounters}) and the small
RFC services (L{multiport.handlers.simple}).
"""

from __future__ import annotations

import calendar
from pathlib import Path

from twisted.internet.interfaces import IProtocolFactory, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from multiport.config.model import PortConfig
from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    IHandler,
    OptionError,
    optionOf,
    rejectUnknown,
)
from multiport.handlers.simple import (
    DEFAULT_QUOTE,
    MAX_QUOTE,
    Chargen,
    QuoteOptions,
    chargen,
    daytime,
    discard,
    echo,
    qotd,
)
from multiport.ports.counters import HandlerCounters

BASE = Path("/nonexistent/base")

#: Thursday, November 26, 2026 14:25:39 UTC.
THURSDAY = calendar.timegm((2026, 11, 26, 14, 25, 39))


def _context(
    handler: str, options: object = None, reactor: MemoryReactorClock | None = None
) -> HandlerContext:
    """
    A context for one port of C{handler} on a memory reactor.
    """
    if reactor is None:
        reactor = MemoryReactorClock()
    port = PortConfig(
        interface="127.0.0.1",
        port=7000,
        handler=handler,
        tls=None,
        backlog=50,
        options=options,
    )
    return HandlerContext(reactor=reactor, clock=reactor, port=port)


def _connect(
    factory: IProtocolFactory, transport: StringTransport | None = None
) -> tuple[Protocol, StringTransport]:
    """
    A protocol from C{factory} connected to C{transport}.
    """
    if transport is None:
        transport = StringTransport()
    protocol = factory.buildProtocol(transport.getPeer())
    assert protocol is not None
    if isinstance(transport, StringTransportWithDisconnection):
        transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


class OptionErrorTests(SynchronousTestCase):
    """
    Tests for L{OptionError}.
    """

    def test_attributesAndMessage(self) -> None:
        """
        It keeps the key and message and reads "key: message".
        """
        error = OptionError("a.b", "is wrong")
        self.assertEqual((error.key, error.message), ("a.b", "is wrong"))
        self.assertEqual(str(error), "a.b: is wrong")


class RejectUnknownTests(SynchronousTestCase):
    """
    Tests for L{rejectUnknown}.
    """

    def test_knownAccepted(self) -> None:
        """
        Options whose keys are all known pass.
        """
        self.assertIsNone(rejectUnknown({"a": 1, "b": 2}, {"a", "b", "c"}))

    def test_unknownRejected(self) -> None:
        """
        The first unknown key is reported, with the known keys sorted.
        """
        error = self.assertRaises(
            OptionError, rejectUnknown, {"a": 1, "x": 2, "y": 3}, {"b", "a"}
        )
        self.assertEqual(error.key, "x")
        self.assertEqual(error.message, "unknown option; known: a, b")


class OptionOfTests(SynchronousTestCase):
    """
    Tests for L{optionOf}.
    """

    def test_absentDefault(self) -> None:
        """
        An absent key gives the default.
        """
        self.assertEqual(optionOf({}, "n", int, "an integer", 7), 7)

    def test_present(self) -> None:
        """
        A present value of the right type is returned.
        """
        self.assertEqual(optionOf({"n": 3}, "n", int, "an integer", 7), 3)

    def test_wrongType(self) -> None:
        """
        A value of another type raises L{OptionError} for its key.
        """
        error = self.assertRaises(
            OptionError, optionOf, {"n": "3"}, "n", int, "an integer", 7
        )
        self.assertEqual(error.key, "n")
        self.assertEqual(error.message, "expected an integer, got string '3'")

    def test_boolIsNotInt(self) -> None:
        """
        A boolean is refused where an integer is expected.
        """
        error = self.assertRaises(
            OptionError, optionOf, {"n": True}, "n", int, "an integer", 7
        )
        self.assertEqual(error.message, "expected an integer, got boolean True")

    def test_boolAsBool(self) -> None:
        """
        A boolean is accepted where a boolean is expected.
        """
        self.assertIs(optionOf({"b": False}, "b", bool, "true or false", True), False)


class HandlerTests(SynchronousTestCase):
    """
    Tests for L{Handler}.
    """

    def test_providesInterfaces(self) -> None:
        """
        A L{Handler} provides L{IHandler} and L{IPlugin}.
        """
        handler = Handler("hello", "Says hello.", build=lambda c: Factory())
        self.assertTrue(verifyObject(IHandler, handler))
        self.assertTrue(IPlugin.providedBy(handler))

    def test_noParseNoOptions(self) -> None:
        """
        Without C{parse}, an empty options table parses to C{None}.
        """
        handler = Handler("hello", "Says hello.", build=lambda c: Factory())
        self.assertIsNone(handler.parseOptions({}, BASE))

    def test_noParseRejectsAnyOption(self) -> None:
        """
        Without C{parse}, any option is refused, naming its key.
        """
        handler = Handler("hello", "Says hello.", build=lambda c: Factory())
        error = self.assertRaises(
            OptionError, handler.parseOptions, {"greeting": "hi"}, BASE
        )
        self.assertEqual(error.key, "greeting")
        self.assertEqual(error.message, "unknown option; 'hello' takes none")

    def test_parseDelegated(self) -> None:
        """
        With C{parse}, options and the base folder are handed to it and its
        result returned.
        """
        calls = []

        def parse(options: object, relativeTo: Path) -> object:
            calls.append((options, relativeTo))
            return "parsed"

        handler = Handler("hello", "Says hello.", lambda c: Factory(), parse=parse)
        self.assertEqual(handler.parseOptions({"a": 1}, BASE), "parsed")
        self.assertEqual(calls, [({"a": 1}, BASE)])

    def test_buildDelegated(self) -> None:
        """
        C{buildFactory} returns what C{build} makes from the context.
        """
        contexts = []
        factory = Factory()

        def build(context: HandlerContext) -> Factory:
            contexts.append(context)
            return factory

        handler = Handler("hello", "Says hello.", build)
        context = _context("hello")
        self.assertIs(handler.buildFactory(context), factory)
        self.assertEqual(contexts, [context])

    def test_impliesTLSDefault(self) -> None:
        """
        A handler does not imply TLS unless it says so.
        """
        handler = Handler("hello", "Says hello.", lambda c: Factory())
        self.assertFalse(handler.impliesTLS)


class HandlerContextTests(SynchronousTestCase):
    """
    Tests for L{HandlerContext}.
    """

    def test_options(self) -> None:
        """
        C{options} is the port's validated options.
        """
        options = QuoteOptions("hi\r\n")
        self.assertIs(_context("qotd", options).options, options)

    def test_ownCounters(self) -> None:
        """
        Each context gets its own empty counters.
        """
        first, second = _context("echo"), _context("echo")
        self.assertIsInstance(first.counters, HandlerCounters)
        self.assertIsNot(first.counters, second.counters)
        self.assertEqual(first.counters.snapshot(), {})


class HandlerCountersTests(SynchronousTestCase):
    """
    Tests for L{HandlerCounters}.
    """

    def test_neverAdded(self) -> None:
        """
        A counter never added to reads 0.
        """
        self.assertEqual(HandlerCounters().value("requests"), 0)

    def test_addOne(self) -> None:
        """
        C{add} without an amount adds 1.
        """
        counters = HandlerCounters()
        counters.add("requests")
        counters.add("requests")
        self.assertEqual(counters.value("requests"), 2)

    def test_addAmount(self) -> None:
        """
        C{add} adds the amount given.
        """
        counters = HandlerCounters()
        counters.add("bytes", 10)
        counters.add("bytes", 5)
        self.assertEqual(counters.value("bytes"), 15)

    def test_labelsSeparate(self) -> None:
        """
        The same name with different labels counts separately, and apart
        from the unlabelled counter.
        """
        counters = HandlerCounters()
        counters.add("hits", upstream="a:1")
        counters.add("hits", 2, upstream="b:2")
        self.assertEqual(counters.value("hits", upstream="a:1"), 1)
        self.assertEqual(counters.value("hits", upstream="b:2"), 2)
        self.assertEqual(counters.value("hits"), 0)

    def test_labelOrderIrrelevant(self) -> None:
        """
        Labels given in any order name the same counter.
        """
        counters = HandlerCounters()
        counters.add("hits", a="1", b="2")
        counters.add("hits", b="2", a="1")
        self.assertEqual(counters.value("hits", b="2", a="1"), 2)

    def test_snapshot(self) -> None:
        """
        The snapshot is keyed by name and sorted labels.
        """
        counters = HandlerCounters()
        counters.add("hits", 3, z="9", a="1")
        counters.add("errors")
        self.assertEqual(
            counters.snapshot(),
            {("hits", (("a", "1"), ("z", "9"))): 3, ("errors", ()): 1},
        )

    def test_snapshotIsACopy(self) -> None:
        """
        Later additions do not change a snapshot already taken.
        """
        counters = HandlerCounters()
        counters.add("hits")
        snapshot = counters.snapshot()
        counters.add("hits")
        self.assertEqual(snapshot, {("hits", ()): 1})


class BuiltinHandlersTests(SynchronousTestCase):
    """
    Tests common to the simple handlers.
    """

    handlers = (echo, discard, daytime, qotd, chargen)

    def context(self, handler: Handler) -> HandlerContext:
        """
        A context with C{handler}'s default options.
        """
        return _context(handler.name, handler.parseOptions({}, BASE))

    def test_names(self) -> None:
        """
        The handlers have their RFC service names.
        """
        self.assertEqual(
            [h.name for h in self.handlers],
            ["echo", "discard", "daytime", "qotd", "chargen"],
        )

    def test_provideIHandler(self) -> None:
        """
        Every simple handler provides L{IHandler} and L{IPlugin}, and none
        implies TLS.
        """
        for handler in self.handlers:
            self.assertTrue(verifyObject(IHandler, handler), handler.name)
            self.assertTrue(IPlugin.providedBy(handler), handler.name)
            self.assertFalse(handler.impliesTLS, handler.name)

    def test_newFactoryEachCall(self) -> None:
        """
        Every C{buildFactory} call returns a new factory.
        """
        for handler in self.handlers:
            context = self.context(handler)
            first = handler.buildFactory(context)
            second = handler.buildFactory(context)
            self.assertTrue(IProtocolFactory.providedBy(first), handler.name)
            self.assertIsNot(first, second, handler.name)

    def test_protocolKnowsFactory(self) -> None:
        """
        A protocol built by a handler's factory has that factory, and each
        connection gets a new protocol.
        """
        for handler in self.handlers:
            factory = handler.buildFactory(self.context(handler))
            first = factory.buildProtocol(None)
            second = factory.buildProtocol(None)
            self.assertIs(first.factory, factory, handler.name)
            self.assertIsNot(first, second, handler.name)

    def test_noOptionsTaken(self) -> None:
        """
        echo, discard, daytime and chargen take no options.
        """
        for handler in (echo, discard, daytime, chargen):
            error = self.assertRaises(
                OptionError, handler.parseOptions, {"quote": "x"}, BASE
            )
            self.assertEqual(error.key, "quote", handler.name)


class EchoTests(SynchronousTestCase):
    """
    Tests for the echo handler.
    """

    def test_echoes(self) -> None:
        """
        Every byte received is sent back, in order.
        """
        protocol, transport = _connect(echo.buildFactory(_context("echo")))
        protocol.dataReceived(b"hello ")
        protocol.dataReceived(b"\x00\xffworld\r\n")
        self.assertEqual(transport.value(), b"hello \x00\xffworld\r\n")
        self.assertFalse(transport.disconnecting)

    def test_nothingOnConnect(self) -> None:
        """
        Nothing is sent before the client sends something.
        """
        _, transport = _connect(echo.buildFactory(_context("echo")))
        self.assertEqual(transport.value(), b"")


class DiscardTests(SynchronousTestCase):
    """
    Tests for the discard handler.
    """

    def test_discards(self) -> None:
        """
        Data received is dropped: nothing is sent and the connection stays.
        """
        protocol, transport = _connect(discard.buildFactory(_context("discard")))
        protocol.dataReceived(b"x" * 100000)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)


class DaytimeTests(SynchronousTestCase):
    """
    Tests for the daytime handler.
    """

    def connect(self, when: float) -> StringTransport:
        """
        Connect to a daytime port whose clock reads C{when}.
        """
        reactor = MemoryReactorClock()
        reactor.advance(when)
        _, transport = _connect(
            daytime.buildFactory(_context("daytime", reactor=reactor))
        )
        return transport

    def test_line(self) -> None:
        """
        The line is weekday, month day, year, time and -UTC, ending in CRLF.
        """
        transport = self.connect(THURSDAY)
        self.assertEqual(
            transport.value(), b"Thursday, November 26, 2026 14:25:39-UTC\r\n"
        )

    def test_fromClock(self) -> None:
        """
        The time is the context clock's, fractions of a second dropped.
        """
        transport = self.connect(THURSDAY + 86400 * 3 + 3600 * 10 + 0.999)
        self.assertEqual(
            transport.value(), b"Monday, November 30, 2026 00:25:39-UTC\r\n"
        )

    def test_closes(self) -> None:
        """
        The connection is closed after the line.
        """
        transport = self.connect(THURSDAY)
        self.assertTrue(transport.disconnecting)

    def test_closesOnce(self) -> None:
        """
        With a transport that reports the close, the protocol sees it once
        and sends nothing more.
        """
        reactor = MemoryReactorClock()
        reactor.advance(THURSDAY)
        transport = StringTransportWithDisconnection()
        _connect(daytime.buildFactory(_context("daytime", reactor=reactor)), transport)
        self.assertFalse(transport.connected)
        self.assertEqual(
            transport.value(), b"Thursday, November 26, 2026 14:25:39-UTC\r\n"
        )


class QuoteParseTests(SynchronousTestCase):
    """
    Tests for the qotd handler's options.
    """

    def assertOptionError(self, options: dict[str, object], key: str) -> OptionError:
        """
        Parsing C{options} raises L{OptionError} for C{key}.
        """
        error = self.assertRaises(OptionError, qotd.parseOptions, options, BASE)
        self.assertEqual(error.key, key)
        return error

    def test_default(self) -> None:
        """
        Without options the default quote is used.
        """
        self.assertEqual(qotd.parseOptions({}, BASE), QuoteOptions(DEFAULT_QUOTE))
        self.assertTrue(DEFAULT_QUOTE.endswith("\r\n"))

    def test_custom(self) -> None:
        """
        A quote without a line end gets CRLF.
        """
        self.assertEqual(
            qotd.parseOptions({"quote": "Hello"}, BASE), QuoteOptions("Hello\r\n")
        )

    def test_customWithLineEnd(self) -> None:
        """
        A quote already ending in a newline is kept as it is.
        """
        self.assertEqual(
            qotd.parseOptions({"quote": "one\ntwo\n"}, BASE),
            QuoteOptions("one\ntwo\n"),
        )

    def test_equalParsesEqual(self) -> None:
        """
        Two parses of the same options compare equal.
        """
        self.assertEqual(
            qotd.parseOptions({"quote": "a"}, BASE),
            qotd.parseOptions({"quote": "a"}, BASE),
        )

    def test_notString(self) -> None:
        """
        A quote that is not a string is refused.
        """
        error = self.assertOptionError({"quote": 42}, "quote")
        self.assertEqual(error.message, "expected a string, got integer 42")

    def test_empty(self) -> None:
        """
        An empty quote is refused.
        """
        error = self.assertOptionError({"quote": ""}, "quote")
        self.assertEqual(error.message, "must not be empty")

    def test_maximumLength(self) -> None:
        """
        A quote that is 512 characters with its CRLF is accepted.
        """
        quote = "q" * (MAX_QUOTE - 2)
        self.assertEqual(MAX_QUOTE, 512)
        self.assertEqual(
            qotd.parseOptions({"quote": quote}, BASE), QuoteOptions(quote + "\r\n")
        )

    def test_tooLong(self) -> None:
        """
        A quote over 512 characters with its line end is refused, saying how
        long it is.
        """
        error = self.assertOptionError({"quote": "q" * 511}, "quote")
        self.assertEqual(
            error.message,
            "is 513 characters with its line end; at most 512 (RFC 865)",
        )

    def test_tooLongWithOwnLineEnd(self) -> None:
        """
        A quote ending its own line counts as written.
        """
        error = self.assertOptionError({"quote": "q" * 512 + "\n"}, "quote")
        self.assertEqual(
            error.message,
            "is 513 characters with its line end; at most 512 (RFC 865)",
        )

    def test_notASCII(self) -> None:
        """
        A quote with non-ASCII characters is refused.
        """
        error = self.assertOptionError({"quote": "caf\u00e9"}, "quote")
        self.assertEqual(error.message, "must be ASCII text (RFC 865)")

    def test_unknownKey(self) -> None:
        """
        An unknown option is refused under its own key.
        """
        error = self.assertOptionError({"quote": "a", "author": "me"}, "author")
        self.assertEqual(error.message, "unknown option; known: quote")


class QuoteTests(SynchronousTestCase):
    """
    Tests for the qotd handler's protocol.
    """

    def test_defaultQuote(self) -> None:
        """
        The default quote is sent as ASCII, then the connection is closed.
        """
        options = qotd.parseOptions({}, BASE)
        _, transport = _connect(qotd.buildFactory(_context("qotd", options)))
        self.assertEqual(
            transport.value(),
            b"The best way to predict the future is to invent it. -- Alan Kay\r\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_customQuote(self) -> None:
        """
        The configured quote is sent, then the connection is closed.
        """
        options = qotd.parseOptions({"quote": "Be excellent."}, BASE)
        _, transport = _connect(qotd.buildFactory(_context("qotd", options)))
        self.assertEqual(transport.value(), b"Be excellent.\r\n")
        self.assertTrue(transport.disconnecting)


class _SmallBufferTransport(StringTransport):
    """
    A transport that, like Twisted's TCP transport, pauses its streaming
    producer from inside C{write} once its buffer holds C{bufferSize} bytes.

    @ivar writesWhilePaused: How many writes came while the producer was
        paused; past C{limit} of them, C{write} raises rather than let a
        producer that ignores pausing loop forever.
    """

    limit = 100

    def __init__(self, bufferSize: int) -> None:
        super().__init__()
        self.bufferSize = bufferSize
        self.pausedProducer = False
        self.writesWhilePaused = 0

    def write(self, data: bytes) -> None:
        if self.pausedProducer:
            self.writesWhilePaused += 1
            if self.writesWhilePaused > self.limit:
                raise RuntimeError("the producer ignores pauseProducing")
        super().write(data)
        if (
            self.producer is not None
            and not self.pausedProducer
            and len(self.value()) >= self.bufferSize
        ):
            self.pausedProducer = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        Empty the buffer and resume the producer, returning what was
        buffered.
        """
        data = self.value()
        self.clear()
        self.pausedProducer = False
        self.producer.resumeProducing()
        return data


def _ringLine(start: int) -> bytes:
    """
    Line C{start} of RFC 864's pattern: 72 characters of the printable ASCII
    ring starting C{start} characters along it, then CRLF.
    """
    return bytes(32 + (start + i) % 95 for i in range(72)) + b"\r\n"


class ChargenTests(SynchronousTestCase):
    """
    Tests for the chargen handler.
    """

    chunk = len(Chargen.chunk)

    def connect(
        self, transport: StringTransport | None = None
    ) -> tuple[Protocol, StringTransport]:
        """
        A chargen protocol connected to C{transport}.
        """
        if transport is None:
            transport = _SmallBufferTransport(bufferSize=self.chunk * 2)
        return _connect(chargen.buildFactory(_context("chargen")), transport)

    def test_firstLine(self) -> None:
        """
        The first line is the 72 characters from space on, then CRLF.
        """
        _, transport = self.connect()
        self.assertEqual(
            transport.value()[:74],
            b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
            b"abcdefg\r\n",
        )

    def test_rotatingPattern(self) -> None:
        """
        Each line starts one character further along the 95-character ring,
        and the stream continues the rotation across chunks.
        """
        _, transport = self.connect()
        data = transport.value()
        lines = data.split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        lines = lines[:-1]
        self.assertEqual(len(lines), 2 * 95)
        for number, line in enumerate(lines):
            self.assertEqual(line + b"\r\n", _ringLine(number % 95), number)

    def test_lineLength(self) -> None:
        """
        The pattern is 95 lines of 72 characters and CRLF.
        """
        self.assertEqual(Chargen.chunk, b"".join(_ringLine(i) for i in range(95)))
        self.assertEqual(self.chunk, 95 * 74)

    def test_registersStreamingProducer(self) -> None:
        """
        The protocol registers itself as a streaming producer.
        """
        protocol, transport = self.connect()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        self.assertTrue(IPushProducer.providedBy(protocol))

    def test_pausedByTransport(self) -> None:
        """
        Writing stops as soon as the transport pauses it: the buffer never
        holds more than one chunk over the transport's limit.
        """
        _, transport = self.connect(_SmallBufferTransport(bufferSize=10000))
        self.assertEqual(len(transport.value()), 2 * self.chunk)
        self.assertEqual(transport.writesWhilePaused, 0)

    def test_nothingWhilePaused(self) -> None:
        """
        A paused protocol sends nothing, even when data comes in.
        """
        protocol, transport = self.connect()
        sent = transport.value()
        protocol.dataReceived(b"anything")
        self.assertEqual(transport.value(), sent)
        self.assertEqual(transport.writesWhilePaused, 0)

    def test_resumes(self) -> None:
        """
        Resumed, it sends until paused again, continuing the pattern.
        """
        _, transport = self.connect()
        first = transport.drain()
        second = transport.value()
        self.assertEqual(len(second), 2 * self.chunk)
        self.assertEqual(first + second, Chargen.chunk * 4)
        self.assertEqual(transport.writesWhilePaused, 0)

    def test_pauseThenResumeByHand(self) -> None:
        """
        C{pauseProducing} then C{resumeProducing} called on the protocol
        start it again.
        """
        protocol, transport = self.connect()
        transport.clear()
        transport.pausedProducer = False
        protocol.pauseProducing()
        self.assertEqual(transport.value(), b"")
        protocol.resumeProducing()
        self.assertEqual(len(transport.value()), 2 * self.chunk)

    def test_stopProducing(self) -> None:
        """
        A transport stopping the producer from C{write} ends the writing.
        """

        class StoppingTransport(StringTransport):
            def write(self, data: bytes) -> None:
                if self.value():
                    raise RuntimeError("write after stopProducing")
                super().write(data)
                self.producer.stopProducing()

        _, transport = self.connect(StoppingTransport())
        self.assertEqual(transport.value(), Chargen.chunk)

    def test_connectionLost(self) -> None:
        """
        A connection lost while writing ends the writing.
        """

        class ClosingTransport(StringTransportWithDisconnection):
            def write(self, data: bytes) -> None:
                if not self.connected:
                    raise RuntimeError("write after connectionLost")
                super().write(data)
                if len(self.value()) >= 3 * len(Chargen.chunk):
                    self.loseConnection()

        _, transport = self.connect(ClosingTransport())
        self.assertEqual(transport.value(), Chargen.chunk * 3)
        self.assertFalse(transport.connected)


class EchoBackpressureTests(SynchronousTestCase):
    """
    Echo stops reading while its replies can't be sent.
    """

    def test_producer(self):
        """
        Echo registers as a streaming producer and pauses the transport's
        reading when paused.
        """
        from twisted.internet.testing import StringTransport

        from multiport.handlers.simple import Echo

        protocol = Echo()
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
