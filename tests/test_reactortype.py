"""
Tests for L{multiport.io.reactortype}: the reactor's type.
"""

from __future__ import annotations

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.pollreactor import PollReactor
from twisted.internet.selectreactor import SelectReactor
from twisted.trial.unittest import SynchronousTestCase

from multiport.io.reactor import MultiportEPollReactor
from multiport.io.reactortype import ReactorLike, globalReactor


class ReactorLikeTests(SynchronousTestCase):
    """
    L{ReactorLike} names interfaces that every reactor multiport runs on
    provides, so that typing a reactor by it claims nothing false.
    """

    def test_everyReactorProvidesEachInterface(self) -> None:
        """
        multiport's epoll reactor and Twisted's epoll, poll and select
        reactors implement every interface L{ReactorLike} extends.
        """
        interfaces = ReactorLike.__bases__
        self.assertGreater(len(interfaces), 1)
        for reactorClass in (
            MultiportEPollReactor,
            EPollReactor,
            PollReactor,
            SelectReactor,
        ):
            for interface in interfaces:
                self.assertTrue(
                    interface.implementedBy(reactorClass),
                    f"{reactorClass.__name__} does not implement {interface}",
                )

    def test_globalReactor(self) -> None:
        """
        L{globalReactor} is the reactor installed in the process.
        """
        from twisted.internet import reactor

        self.assertIs(globalReactor(), reactor)
