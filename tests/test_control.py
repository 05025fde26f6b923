"""
Tests for the one L{IDaemonControl}: the single process and the worker
pool answer every change with a L{Deferred}, and fail alike.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from multiport.daemon.pool import WorkerPool
from multiport.daemon.service import PortsService
from multiport.errors import ConfigError, ReconcileError, ReloadUnavailable
from multiport.handlers.interface import IDaemonControl, IDaemonView
from tests.support import HANDLERS, configFor


class ControlTestsMixin:
    """
    What every daemon's control does; C{daemon()} makes one.
    """

    def daemon(self) -> IDaemonControl:
        raise NotImplementedError

    def test_provides(self) -> None:
        """
        The daemon provides L{IDaemonControl} and L{IDaemonView}.
        """
        daemon = self.daemon()
        self.assertTrue(verifyObject(IDaemonControl, daemon))
        self.assertTrue(verifyObject(IDaemonView, daemon))

    def test_badInputFails(self) -> None:
        """
        A bad table is a failed L{Deferred} with L{ConfigError}, not an
        exception raised.
        """
        result = self.daemon().addPort({"port": "x", "handler": "echo"})
        self.assertIsInstance(result, Deferred)
        self.failureResultOf(result, ConfigError)

    def test_unknownPortFails(self) -> None:
        """
        Changing or removing a port that does not exist fails with
        L{KeyError}.
        """
        daemon = self.daemon()
        self.failureResultOf(daemon.removePort("tcp:127.0.0.1:1"), KeyError)
        self.failureResultOf(
            daemon.changePort("tcp:127.0.0.1:1", {"handler": "echo"}), KeyError
        )

    def test_reloadWithoutFileFails(self) -> None:
        """
        A reload without a configuration file fails with
        L{ReloadUnavailable}.
        """
        self.failureResultOf(self.daemon().reload(), ReloadUnavailable)

    def test_overlapFails(self) -> None:
        """
        A port on an address a running port claims fails with a conflict.
        """
        daemon = self.daemon()
        failure = self.failureResultOf(
            daemon.addPort({"port": 9, "interface": "127.0.0.1", "handler": "discard"}),
            ReconcileError,
        )
        self.assertTrue(failure.value.conflict)


class PortsServiceControlTests(ControlTestsMixin, SynchronousTestCase):
    """
    The single process's control.
    """

    def daemon(self) -> PortsService:
        config = configFor("127.0.0.1:9=echo", self.mktemp())
        return PortsService(config, HANDLERS, {}, MemoryReactorClock(), adminToken="t")


class WorkerPoolControlTests(ControlTestsMixin, SynchronousTestCase):
    """
    The worker pool's control (its status port served here).
    """

    def daemon(self) -> WorkerPool:
        config = configFor("127.0.0.1:9=echo,127.0.0.1:0=status", self.mktemp())
        reactor = MemoryReactorClock()
        return WorkerPool(
            config,
            2,
            reactor,
            HANDLERS,
            lambda pool, own: PortsService(own, HANDLERS, {}, reactor, view=pool),
            adminToken="t",
        )
