"""
Tests for L{multiport.ports.sockets}: where a port's listening socket
comes from, and that a socket another process holds is never shut down.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from multiport.daemon.plan import Plan
from multiport.daemon.service import PortsService
from multiport.ports.sockets import (
    BoundHere,
    Inherited,
    ISocketSource,
    Kept,
    bindShared,
    isShared,
)
from tests.support import HANDLERS, configFor

#: A second process holding the listening socket passed as descriptor FD:
#: it accepts one connection, answers "child", and exits.
CHILD = textwrap.dedent(
    """
    import socket, sys
    listening = socket.socket(fileno=int(sys.argv[1]))
    listening.setblocking(True)
    listening.settimeout(30)
    print("holding", flush=True)
    try:
        connection, _ = listening.accept()
    except OSError as e:
        print("accept failed:", e, flush=True)
        sys.exit(3)
    connection.sendall(b"child")
    connection.close()
    """
)


class SourceTests(SynchronousTestCase):
    """
    Each source says whether its socket is shared.
    """

    def test_interface(self) -> None:
        """
        Every source provides L{ISocketSource}.
        """
        for source in (BoundHere(), Inherited(3), Kept(object(), 50, True)):  # type: ignore[arg-type]
            self.assertTrue(verifyObject(ISocketSource, source))

    def test_sharing(self) -> None:
        """
        A socket bound here is ours alone; one inherited from another
        process is shared with it.
        """
        self.assertFalse(BoundHere().shared)
        self.assertTrue(Inherited(3).shared)


class SharedSocketTests(TestCase):
    """
    Two real processes hold one listening socket; this one listens on it
    through its L{ISocketSource}, then stops.
    """

    def setUp(self) -> None:
        config = configFor("127.0.0.1:0=echo", self.mktemp()).ports[0]
        self.listening = bindShared(config)
        self.addCleanup(self.listening.close)
        self.number = self.listening.getsockname()[1]
        self.config = config
        self.child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.listening.fileno())],
            pass_fds=(self.listening.fileno(),),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(self._endChild)
        assert self.child.stdout is not None
        self.assertEqual(self.child.stdout.readline().strip(), "holding")

    def _endChild(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
        self.child.communicate(timeout=30)

    def answer(self) -> bytes:
        """
        What a new connection to the shared port gets (b"" if refused).
        """
        try:
            with socket.create_connection(
                ("127.0.0.1", self.number), timeout=10
            ) as client:
                client.settimeout(10)
                return client.recv(16)
        except ConnectionRefusedError:
            return b""

    @inlineCallbacks
    def stopHere(self, source: Inherited):
        """
        Listen here on the shared socket through C{source}, then stop, and
        close this process's own copy: only the child holds it then.
        """
        port = source.listen(reactor, self.config, Factory.forProtocol(Protocol))
        self.assertEqual(isShared(port), source.shared)
        yield port.stopListening()
        self.listening.close()

    @inlineCallbacks
    def test_otherProcessStillAccepts(self):
        """
        After this process stops listening on an inherited socket, the
        other process holding it still accepts: the socket was closed here,
        not shut down.
        """
        yield self.stopHere(Inherited(self.listening.fileno()))
        self.assertEqual(self.answer(), b"child")
        self.assertEqual(self.child.wait(timeout=30), 0)

    @inlineCallbacks
    def test_shutdownStopsEveryHolder(self):
        """
        The control: a port told its socket is not shared shuts it down as
        it stops, and then the other process can no longer accept.
        """
        yield self.stopHere(Inherited(self.listening.fileno(), shared=False))
        self.assertEqual(self.answer(), b"")
        self.assertNotEqual(self.child.wait(timeout=30), 0)


class ServiceSourceTests(TestCase):
    """
    The port services ask their source: a single process binds its ports
    itself, a worker adopts the main process's sockets, and a live change
    keeps the socket with its sharing.
    """

    def service(self, ports: str, descriptors: bool) -> PortsService:
        config = configFor(ports, self.mktemp())
        given: dict[str, int] = {}
        if descriptors:
            for port in config.ports:
                skt = bindShared(port)
                self.addCleanup(skt.close)
                given[port.name] = skt.fileno()
        service = PortsService(config, HANDLERS, {}, reactor, descriptors=given)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_boundHereNotShared(self) -> None:
        """
        A single process's port binds its own socket, which it may shut
        down.
        """
        [server] = self.service("127.0.0.1:0=echo", descriptors=False).ports()
        self.assertIsNotNone(server._port)
        self.assertFalse(isShared(server._port))

    def test_adoptedShared(self) -> None:
        """
        A worker's port adopts the socket passed to it, held by the main
        process too: shared.
        """
        [server] = self.service("127.0.0.1:0=echo", descriptors=True).ports()
        self.assertTrue(isShared(server._port))

    def test_changeKeepsSharing(self) -> None:
        """
        A live change moves the very listening port to the new service,
        still shared.
        """
        service = self.service("127.0.0.1:0=echo", descriptors=True)
        [old] = service.ports()
        listening = old._port
        new = evolve(old.config, handler="discard")
        service.apply(Plan(change=((old, new),)), {})
        [server] = service.ports()
        self.assertIsNot(server, old)
        self.assertIs(server._port, listening)
        self.assertTrue(isShared(server._port))
