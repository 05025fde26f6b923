"""
Tests for the bounded waits in L{tests.support}: they return what they
awaited, and fail in bounded time saying what it was.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import (
    WaitTimeout,
    describe,
    waitUntil,
    waitUntilOnReactor,
)


class Countdown:
    """
    A predicate false for its first C{falseTimes} calls, then C{value}.
    """

    def __init__(self, falseTimes: int, value: object = "done") -> None:
        self.left = falseTimes
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.left:
            self.left -= 1
            return None
        return self.value


def readyNever() -> bool:
    """
    A named predicate that never holds.
    """
    return False


class DescribeTests(SynchronousTestCase):
    """
    L{describe} names what a predicate awaits.
    """

    def test_lambdaBody(self):
        """
        A lambda is described by its body's source and where it is.
        """
        closed = 0
        predicate = lambda: closed == 1  # noqa: E731
        line = predicate.__code__.co_firstlineno
        self.assertEqual(
            describe(predicate), f"closed == 1 (at tests/test_support.py:{line})"
        )

    def test_lambdaOverLines(self):
        """
        A lambda whose body spans lines is described on one line, without
        the default arguments or what follows the lambda.
        """
        text = describe(
            lambda limit=3: all(
                n < limit for n in range(2)
            )  # a comment is not the body
        )
        self.assertTrue(
            text.startswith("all( n < limit for n in range(2) ) (at "), text
        )

    def test_function(self):
        """
        A function is described by its qualified name and where it is.
        """
        self.assertRegex(
            describe(readyNever), r"^readyNever\(\) \(at tests/test_support.py:\d+\)$"
        )

    def test_callableObject(self):
        """
        A callable without code is described by its repr.
        """
        countdown = Countdown(0)
        self.assertEqual(describe(countdown), repr(countdown))


class WaitUntilTests(SynchronousTestCase):
    """
    L{waitUntil} blocks until a predicate holds, for a bounded time.
    """

    def test_returnsFirstTrueValue(self):
        """
        The predicate is asked until it gives something true, which is
        returned.
        """
        countdown = Countdown(3, ["ready"])
        self.assertEqual(waitUntil(countdown, interval=0.001), ["ready"])
        self.assertEqual(countdown.calls, 4)

    def test_holdsAtOnce(self):
        """
        A predicate that holds at once is asked once, with no wait.
        """
        countdown = Countdown(0)
        started = time.monotonic()
        self.assertEqual(waitUntil(countdown, interval=5), "done")
        self.assertLess(time.monotonic() - started, 1)
        self.assertEqual(countdown.calls, 1)

    def test_timesOut(self):
        """
        A predicate that never holds fails the wait after the timeout (not
        much later), naming it, the timeout and the last result.
        """
        started = time.monotonic()
        with self.assertRaises(WaitTimeout) as caught:
            waitUntil(lambda: [].count(1) > 0, 0.2, interval=0.05)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.2)
        self.assertLess(elapsed, 2)
        message = str(caught.exception)
        self.assertIn(
            "waited 0.2 s for [].count(1) > 0 (at tests/test_support.py", message
        )
        self.assertIn("the last gave False", message)

    def test_intervalShortenedAtDeadline(self):
        """
        The last check is at the deadline, not an interval after it.
        """
        started = time.monotonic()
        with self.assertRaises(WaitTimeout):
            waitUntil(readyNever, 0.1, interval=10)
        self.assertLess(time.monotonic() - started, 2)

    def test_what(self):
        """
        C{what} names the awaited thing in the failure.
        """
        with self.assertRaises(WaitTimeout) as caught:
            waitUntil(readyNever, 0.01, what="the daemon to start")
        self.assertIn("for the daemon to start,", str(caught.exception))

    def test_accept(self):
        """
        With C{accept}, the first result it accepts ends the wait and is
        returned, even a false one.
        """
        results = iter([[3, 4], [4], [], [5]])
        self.assertEqual(
            waitUntil(lambda: next(results), accept=lambda left: not left), []
        )
        self.assertEqual(next(results), [5])

    def test_acceptTimesOut(self):
        """
        With C{accept}, the failure names the predicate and C{accept}, and
        shows the predicate's last result.
        """
        with self.assertRaises(WaitTimeout) as caught:
            waitUntil(lambda: [7], 0.05, accept=lambda left: not left)
        self.assertRegex(
            str(caught.exception),
            r"^waited 0.05 s for \[7\] \(at tests/test_support.py:\d+\) to "
            r"satisfy not left \(at tests/test_support.py:\d+\), in vain: "
            r"\d+ checks, the last gave \[7\]$",
        )

    def test_predicateRaises(self):
        """
        An exception from the predicate ends the wait with it.
        """
        with self.assertRaises(ZeroDivisionError):
            waitUntil(lambda: 1 / 0)

    def test_badTimeout(self):
        """
        A timeout that is not positive is refused, naming it.
        """
        with self.assertRaises(ValueError) as caught:
            waitUntil(readyNever, 0)
        self.assertIn("not 0", str(caught.exception))


class WaitUntilInReactorTests(TestCase):
    """
    L{waitUntil} refuses to block the running reactor.
    """

    @inlineCallbacks
    def test_refusedInReactorThread(self):
        """
        Called from the running reactor's thread, it raises at once,
        pointing to L{waitUntilOnReactor}.
        """
        yield deferLater(reactor, 0, lambda: None)
        countdown = Countdown(0)
        with self.assertRaises(RuntimeError) as caught:
            waitUntil(countdown)
        self.assertIn("use waitUntilOnReactor", str(caught.exception))
        self.assertEqual(countdown.calls, 0)


class WaitUntilOnReactorTests(SynchronousTestCase):
    """
    L{waitUntilOnReactor} checks a predicate on a clock until it holds, for
    a bounded time.
    """

    def test_holdsAtOnce(self):
        """
        A predicate that holds at once fires the Deferred at once, with
        nothing left scheduled.
        """
        clock = Clock()
        waiting = waitUntilOnReactor(Countdown(0), clock=clock)
        self.assertEqual(self.successResultOf(waiting), "done")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_checksEveryInterval(self):
        """
        The predicate is checked every C{interval} seconds of the clock;
        the Deferred fires with its first true result.
        """
        clock = Clock()
        countdown = Countdown(2, 42)
        waiting = waitUntilOnReactor(countdown, interval=0.5, clock=clock)
        clock.advance(0.4)
        self.assertNoResult(waiting)
        self.assertEqual(countdown.calls, 1)
        clock.advance(0.1)
        self.assertNoResult(waiting)
        self.assertEqual(countdown.calls, 2)
        clock.advance(0.5)
        self.assertEqual(self.successResultOf(waiting), 42)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timesOut(self):
        """
        After the timeout, with one last check at the deadline, it fails
        with L{WaitTimeout}, naming what was awaited; nothing stays
        scheduled.
        """
        clock = Clock()
        countdown = Countdown(1000)
        waiting = waitUntilOnReactor(
            countdown, 1.0, interval=0.375, what="the port to close", clock=clock
        )
        clock.pump([0.375, 0.375])
        self.assertNoResult(waiting)
        clock.advance(0.25)
        failure = self.failureResultOf(waiting, WaitTimeout)
        self.assertEqual(countdown.calls, 4)
        self.assertEqual(
            str(failure.value),
            "waited 1 s for the port to close, in vain: 4 checks, the last gave None",
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_accept(self):
        """
        With C{accept}, the Deferred fires with the first result it
        accepts, even a false one.
        """
        clock = Clock()
        results = iter([1, 0, 2])
        waiting = waitUntilOnReactor(
            lambda: next(results), accept=lambda n: n == 0, interval=1, clock=clock
        )
        self.assertNoResult(waiting)
        clock.advance(1)
        self.assertEqual(self.successResultOf(waiting), 0)

    def test_predicateRaises(self):
        """
        An exception from the predicate fails the Deferred with it.
        """
        waiting = waitUntilOnReactor(lambda: 1 / 0, clock=Clock())
        self.failureResultOf(waiting, ZeroDivisionError)

    def test_cancel(self):
        """
        Cancelling the Deferred stops the checks.
        """
        clock = Clock()
        countdown = Countdown(1000)
        waiting = waitUntilOnReactor(countdown, clock=clock)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(100)
        self.assertEqual(countdown.calls, 1)
