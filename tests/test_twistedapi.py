"""
The private Twisted names multiport relies on, each checked for the shape the
code uses: that it exists, its signature, the type of what it holds, how
Twisted itself calls it.

Twisted promises nothing about these names, so any release may change them.
setup.cfg's Twisted range is what CI runs the suite on (its oldest and newest
release); when a new Twisted changes one of these names, the test here fails
with the multiport module that depends on it, rather than a daemon test
failing somewhere far from the cause.
"""

from __future__ import annotations

import ast
import datetime
import importlib
import inspect
import os
import select
import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.application import app, internet
from twisted.copyright import version
from twisted.internet import _producer_helpers, abstract, error, posixbase, tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import context
from twisted.python.failure import Failure
from twisted.scripts import twistd
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import implementer


class _TwistedAPITestCase(SynchronousTestCase):
    """
    Assertions whose failure names the multiport module that depends on
    the Twisted name and the Twisted release that changed it.

    @cvar dependent: The multiport module (or test helper) using the names
        its tests check.
    """

    dependent: str

    def changed(self, what: str, detail: object) -> str:
        """
        The failure message: who depends on C{what}, and what this Twisted
        has instead.
        """
        return (
            f"{self.dependent} depends on Twisted's {what}, which Twisted "
            f"{version} changed: {detail}"
        )

    def load(self, module: str) -> Any:
        """
        Import a multiport module, or fail naming it: a private name gone
        from Twisted can make the import itself fail.
        """
        try:
            return importlib.import_module(module)
        except ImportError as e:
            self.fail(f"{module} does not import on Twisted {version}: {e}")

    def require(self, owner: object, name: str) -> Any:
        """
        C{getattr(owner, name)}, or a failure naming the dependent module.
        """
        try:
            return getattr(owner, name)
        except AttributeError:
            if not isinstance(owner, type | ModuleType):
                owner = type(owner)
            where = getattr(owner, "__qualname__", owner.__name__)
            self.fail(self.changed(f"{where}.{name}", "no such name"))

    def assertParameters(
        self, function: Callable[..., object], expected: list[str], what: str
    ) -> None:
        """
        C{function}'s parameters start with C{expected}, and any further one
        has a default (the code passes exactly C{expected}).
        """
        parameters = list(inspect.signature(function).parameters.values())
        names = [p.name for p in parameters]
        self.assertEqual(
            names[: len(expected)],
            expected,
            self.changed(what, f"its parameters are now {names}"),
        )
        for extra in parameters[len(expected) :]:
            self.assertIsNot(
                extra.default,
                inspect.Parameter.empty,
                self.changed(what, f"a new required parameter {extra.name!r}"),
            )

    def assertCalls(self, caller: Callable[..., object], name: str, what: str) -> None:
        """
        C{caller}'s code looks C{name} up (as a global or an attribute) each
        time it runs, so that what multiport puts there is what it calls.
        """
        self.assertIn(
            name,
            caller.__code__.co_names,
            self.changed(what, f"{caller.__qualname__} no longer uses {name}"),
        )


def _socketPair(test: SynchronousTestCase) -> socket.socket:
    """
    One end of a connected, non-blocking socket pair closed after C{test}.
    """
    one, two = socket.socketpair()
    test.addCleanup(one.close)
    test.addCleanup(two.close)
    one.setblocking(False)
    return one


def _serverConnection(test: SynchronousTestCase, server: tcp.Port) -> tcp.Server:
    """
    A L{tcp.Server} for C{server} on a socket pair, driven by a
    C{MemoryReactor}.
    """
    return tcp.Server(
        _socketPair(test), Protocol(), ("127.0.0.1", 1), server, 7, MemoryReactorClock()
    )


class TransportTests(_TwistedAPITestCase):
    """
    What L{multiport.io.transport}'s C{FastServer} takes from Twisted's TCP
    transport and TLS layer.
    """

    dependent = "multiport.io.transport"

    def test_startTLS(self) -> None:
        """
        C{twisted.internet._newtls.startTLS} takes the transport, the context
        factory, the direction and the class whose methods bypass TLS.
        """
        newtls = importlib.import_module("twisted.internet._newtls")
        startTLS = self.require(newtls, "startTLS")
        self.assertParameters(
            startTLS,
            ["transport", "contextFactory", "normal", "bypass"],
            "twisted.internet._newtls.startTLS",
        )

    def test_bypassMethods(self) -> None:
        """
        The TLS layer's bypass calls each of its methods on the bypass class
        with the connection as first argument, and C{_FastBypass} has every
        one of them.
        """
        newtls = importlib.import_module("twisted.internet._newtls")
        bypassTLS = self.require(newtls, "_BypassTLS")
        methods = sorted(
            name
            for name, value in vars(bypassTLS).items()
            if callable(value) and not name.startswith("_")
        )
        fastBypass = self.load("multiport.io.transport")._FastBypass
        missing = [m for m in methods if not hasattr(fastBypass, m)]
        self.assertEqual(
            missing,
            [],
            self.changed(
                "twisted.internet._newtls._BypassTLS",
                f"it calls {missing} on the bypass class; _FastBypass has none",
            ),
        )
        calls: list[tuple[str, object]] = []

        class Recording:
            def __getattr__(self, name: str) -> Callable[..., None]:
                return lambda connection, *args: calls.append((name, connection))

        connection = object()
        bypass = bypassTLS(Recording(), connection)
        arguments = {
            "write": (b"x",),
            "writeSequence": ([b"x"],),
            "registerProducer": (object(), True),
        }
        for method in methods:
            getattr(bypass, method)(*arguments.get(method, ()))
        self.assertEqual(
            calls,
            [(m, connection) for m in methods],
            self.changed(
                "twisted.internet._newtls._BypassTLS",
                "it no longer passes the connection to the bypass class",
            ),
        )

    def test_tlsFlag(self) -> None:
        """
        A TCP connection's C{TLS} flag is false until C{startTLS} sets it
        (C{FastServer.write} sends at once only while it is false).
        """
        self.assertIs(
            self.require(tcp.Server, "TLS"),
            False,
            self.changed("tcp.Server.TLS", "it is not False before startTLS"),
        )
        newtls = importlib.import_module("twisted.internet._newtls")
        self.assertCalls(newtls.startTLS, "TLS", "twisted.internet._newtls.startTLS")

    def test_dataMustBeBytes(self) -> None:
        """
        C{twisted.internet.abstract._dataMustBeBytes} takes one chunk and
        raises L{TypeError} for one that is not bytes.
        """
        check = self.require(abstract, "_dataMustBeBytes")
        self.assertParameters(check, ["obj"], "abstract._dataMustBeBytes")
        self.assertIsNone(check(b"bytes"))
        self.assertRaises(TypeError, check, "text")

    def test_writeQueue(self) -> None:
        """
        C{FileDescriptor.write} queues in C{_tempDataBuffer}, counted by
        C{_tempDataLen}, before C{dataBuffer}: C{_writeNow} reads both to
        tell that nothing is queued.
        """
        descriptor = abstract.FileDescriptor(MemoryReactor())
        self.assertEqual(
            (self.require(descriptor, "_tempDataLen"), descriptor.dataBuffer),
            (0, b""),
            self.changed("FileDescriptor._tempDataLen", "a new descriptor queues"),
        )
        descriptor.connected = True
        descriptor.write(b"abc")
        self.assertEqual(
            (descriptor._tempDataLen, descriptor._tempDataBuffer),
            (3, [b"abc"]),
            self.changed(
                "FileDescriptor._tempDataLen and _tempDataBuffer",
                "a write is not counted there",
            ),
        )

    def test_halfClose(self) -> None:
        """
        C{loseWriteConnection} sets C{_writeDisconnecting}, and the next
        C{doWrite} with nothing queued sets C{_writeDisconnected}.
        """
        descriptor = abstract.FileDescriptor(MemoryReactor())
        descriptor.connected = True
        before = (
            self.require(descriptor, "_writeDisconnecting"),
            self.require(descriptor, "_writeDisconnected"),
        )
        self.assertEqual(
            before,
            (False, False),
            self.changed("FileDescriptor._writeDisconnecting", "not False at first"),
        )
        descriptor.writeSomeData = len  # type: ignore[method-assign,assignment]
        descriptor.loseWriteConnection()
        self.assertIs(
            descriptor._writeDisconnecting,
            True,
            self.changed(
                "FileDescriptor._writeDisconnecting",
                "loseWriteConnection does not set it",
            ),
        )
        descriptor.doWrite()
        self.assertIs(
            descriptor._writeDisconnected,
            True,
            self.changed(
                "FileDescriptor._writeDisconnected", "a half-close does not set it"
            ),
        )

    def test_aborting(self) -> None:
        """
        A TCP connection's C{_aborting} is false until C{abortConnection}.
        """
        connection = _serverConnection(
            self, tcp.Port(0, Factory(), reactor=MemoryReactor())
        )
        self.assertIs(
            self.require(connection, "_aborting"),
            False,
            self.changed("tcp.Connection._aborting", "not False at first"),
        )
        connection.abortConnection()
        self.assertIs(
            connection._aborting,
            True,
            self.changed("tcp.Connection._aborting", "abortConnection does not set it"),
        )

    def test_realPortNumber(self) -> None:
        """
        A listening L{tcp.Port}'s C{_realPortNumber} is the port it is bound
        to (C{FastServer.repstr} shows it).
        """
        port = tcp.Port(0, Factory(), interface="127.0.0.1", reactor=MemoryReactor())
        self.assertIsNone(self.require(port, "_realPortNumber"))
        port.startListening()
        self.addCleanup(port.socket.close)
        self.assertEqual(
            port._realPortNumber,
            port.getHost().port,
            self.changed("tcp.Port._realPortNumber", "not the bound port"),
        )

    def test_repstr(self) -> None:
        """
        L{tcp.Server} assigns C{repstr} when it is made and C{repr} returns
        it: C{FastServer} makes it a property, computed when asked.
        """
        server = _serverConnection(
            self, tcp.Port(0, Factory(), reactor=MemoryReactor())
        )
        self.assertIn(
            "repstr",
            vars(server),
            self.changed("tcp.Server.repstr", "__init__ no longer sets it"),
        )
        self.assertEqual(
            repr(server),
            server.repstr,
            self.changed("tcp.Server.repstr", "repr() no longer returns it"),
        )

    def test_portTransport(self) -> None:
        """
        L{tcp.Port} makes each accepted connection with its C{transport}
        class attribute, which C{FastPort} and C{ListeningPort} replace.
        """
        self.assertIs(
            self.require(tcp.Port, "transport"),
            tcp.Server,
            self.changed("tcp.Port.transport", "not tcp.Server"),
        )
        self.assertCalls(tcp.Port.doRead, "transport", "tcp.Port.transport")


class ReactorTests(_TwistedAPITestCase):
    """
    What L{multiport.io.reactor}'s C{MultiportEPollReactor.doPoll} takes from
    Twisted's epoll reactor.
    """

    dependent = "multiport.io.reactor"

    def reactor(self) -> EPollReactor:
        """
        A new epoll reactor (the class C{MultiportEPollReactor} extends),
        never run, whose descriptors are closed after the test.
        """
        made = EPollReactor()

        def close() -> None:
            made.removeAll()
            made.waker.connectionLost(None)
            made._poller.close()

        self.addCleanup(close)
        return made

    def test_poller(self) -> None:
        """
        C{EPollReactor._poller} is an epoll object polled with a timeout and
        a maximum number of events.
        """
        poller = self.require(self.reactor(), "_poller")
        self.assertIsInstance(
            poller,
            select.epoll,
            self.changed("EPollReactor._poller", f"it is a {type(poller)}"),
        )
        self.assertEqual(poller.poll(0, 1), [])

    def test_selectables(self) -> None:
        """
        C{EPollReactor._selectables} maps a descriptor number to the object
        registered for it.
        """
        readable = _socketPair(self)
        made = self.reactor()
        selectables = self.require(made, "_selectables")
        self.assertIsInstance(
            selectables,
            dict,
            self.changed("EPollReactor._selectables", f"a {type(selectables)}"),
        )
        descriptor = abstract.FileDescriptor(made)
        descriptor.fileno = readable.fileno  # type: ignore[method-assign]
        made.addReader(descriptor)
        self.assertIs(
            selectables.get(readable.fileno()),
            descriptor,
            self.changed("EPollReactor._selectables", "addReader does not fill it"),
        )

    def test_doReadOrWrite(self) -> None:
        """
        C{_doReadOrWrite} takes the selectable, its descriptor and the event.
        """
        self.assertParameters(
            self.require(EPollReactor, "_doReadOrWrite"),
            ["self", "selectable", "fd", "event"],
            "EPollReactor._doReadOrWrite",
        )

    def test_disconnectSelectable(self) -> None:
        """
        C{_disconnectSelectable} takes the selectable, the reason, and
        whether it was reading.
        """
        self.assertParameters(
            self.require(EPollReactor, "_disconnectSelectable"),
            ["self", "selectable", "why", "isRead"],
            "PosixReactorBase._disconnectSelectable",
        )

    def test_noFiledesc(self) -> None:
        """
        C{posixbase._NO_FILEDESC} is the (true) reason for a selectable whose
        descriptor is gone.
        """
        reason = self.require(posixbase, "_NO_FILEDESC")
        self.assertIsInstance(
            reason,
            error.ConnectionFdescWentAway,
            self.changed("posixbase._NO_FILEDESC", repr(reason)),
        )
        self.assertIs(self.load("multiport.io.reactor")._NO_FILEDESC, reason)

    def test_mainLoopCallsDoIteration(self) -> None:
        """
        The reactor's main loop calls C{doIteration}, which
        C{MultiportEPollReactor} points at its own C{doPoll}.
        """
        self.assertCalls(
            EPollReactor.mainLoop, "doIteration", "ReactorBase.mainLoop's doIteration"
        )
        ours = self.load("multiport.io.reactor").MultiportEPollReactor
        self.assertIs(ours.doIteration, ours.doPoll)

    def test_contextStack(self) -> None:
        """
        The log context is a per-thread stack of mappings, each asked with
        C{[key]} from the top, passing over one that raises L{KeyError}.
        """
        tracker = context.theContextTracker
        self.assertIsInstance(
            tracker,
            context.ThreadedContextTracker,
            self.changed("context.theContextTracker", f"a {type(tracker)}"),
        )
        stack = tracker.currentContext()
        contexts = self.require(stack, "contexts")
        self.assertIsInstance(
            contexts, list, self.changed("ContextTracker.contexts", type(contexts))
        )

        class Refuses:
            def __getitem__(self, key: object) -> object:
                raise KeyError(key)

        contexts.append({"key": "outer"})
        contexts.append(Refuses())
        try:
            found = stack.getContext("key")
        finally:
            del contexts[-2:]
        self.assertEqual(
            found,
            "outer",
            self.changed("ContextTracker.getContext", "it stops at a KeyError"),
        )


@implementer(IProtocolNegotiationFactory)
class _Negotiating(Factory):
    """
    A factory that declares ALPN protocols, as a web port's does.
    """

    protocol = Protocol

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


class _WatchedContext(SSL.Context):
    """
    An OpenSSL context that records each change of its protocol selection.
    """

    def __init__(self) -> None:
        super().__init__(SSL.TLS_METHOD)
        self.changes: list[str] = []

    def set_alpn_select_callback(self, callback: Any) -> None:
        self.changes.append("set_alpn_select_callback")

    def set_alpn_protos(self, protos: Any) -> None:
        self.changes.append("set_alpn_protos")


class _FixedContext:
    """
    A context factory with one context.
    """

    def __init__(self, made: SSL.Context) -> None:
        self.made = made

    def getContext(self) -> SSL.Context:
        return self.made


class TLSTests(_TwistedAPITestCase):
    """
    What L{multiport.ports.tls} (certificates, ALPN) and C{multiport.ports.server}'s
    C{SwitchableCreator} take from Twisted's TLS.
    """

    dependent = "multiport.ports.tls"

    def creator(self, contextFactory: _FixedContext) -> Any:
        """
        A C{multiport.ports.server.SwitchableCreator}: the connection creator of
        every TLS port.
        """
        return self.load("multiport.ports.server").SwitchableCreator(contextFactory)

    def serverTLS(self, creator: object) -> Any:
        """
        A server TLS protocol over C{creator}, wrapping L{_Negotiating},
        connected to a L{StringTransport}.
        """
        protocol = TLSMemoryBIOFactory(creator, False, _Negotiating()).buildProtocol(
            None
        )
        protocol.makeConnection(StringTransport())
        return protocol

    def test_protosFromProtocol(self) -> None:
        """
        C{_sslverify.protosFromProtocol} answers the protocols the TLS
        protocol's wrapped factory declares, then the configured ones.
        """
        sslverify = importlib.import_module("twisted.internet._sslverify")
        protosFromProtocol = self.require(sslverify, "protosFromProtocol")
        self.assertParameters(
            protosFromProtocol,
            ["tlsProto", "acceptableProtocols"],
            "twisted.internet._sslverify.protosFromProtocol",
        )
        protocol = self.serverTLS(self.creator(_FixedContext(_WatchedContext())))
        self.assertEqual(
            tuple(protosFromProtocol(protocol, [b"h2"])),
            (b"http/1.1", b"h2"),
            self.changed("twisted.internet._sslverify.protosFromProtocol", "answer"),
        )

    def test_appData(self) -> None:
        """
        Twisted sets each server connection's app data to its TLS protocol,
        also when the connection comes from a connection creator of ours:
        the ALPN callback finds the port's factory through it.
        """
        protocol = self.serverTLS(self.creator(_FixedContext(_WatchedContext())))
        self.assertIs(
            protocol.getHandle().get_app_data(),
            protocol,
            self.changed(
                "TLSMemoryBIOFactory",
                "the connection's app data is not the TLS protocol",
            ),
        )

    def test_contextLeftAlone(self) -> None:
        """
        Twisted's TLS layer does not change the shared context's ALPN
        selection for each connection, where multiport installed its own.
        """
        watched = _WatchedContext()
        creator = self.creator(_FixedContext(watched))
        self.serverTLS(creator)
        self.serverTLS(creator)
        self.assertEqual(
            watched.changes,
            [],
            self.changed(
                "TLSMemoryBIOFactory",
                "it changes the context for each connection (as Twisted 25.5 "
                "and older did)",
            ),
        )

    def test_getContextCached(self) -> None:
        """
        C{CertificateOptions.getContext} answers the same context every time:
        the callbacks multiport sets on it apply to every connection.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "multiport")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(certificate),
        )
        self.assertIs(
            options.getContext(),
            options.getContext(),
            self.changed("CertificateOptions.getContext", "a new context each call"),
        )


class PortTests(_TwistedAPITestCase):
    """
    What L{multiport.ports.sockets} and L{multiport.ports.server} take from
    Twisted's TCP port and its C{TCPServer}/C{SSLServer} services.
    """

    dependent = "multiport.ports.sockets"

    def test_fromListeningDescriptor(self) -> None:
        """
        C{tcp.Port._fromListeningDescriptor} makes an instance of the class
        it is called on from a copy of a listening socket's descriptor.
        """
        listeningPort = self.load("multiport.ports.sockets").ListeningPort
        make = self.require(listeningPort, "_fromListeningDescriptor")
        self.assertParameters(
            make,
            ["reactor", "fd", "addressFamily", "factory"],
            "tcp.Port._fromListeningDescriptor",
        )
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        listening.setblocking(False)
        port = make(MemoryReactor(), listening.fileno(), socket.AF_INET, Factory())
        self.assertIsInstance(
            port,
            listeningPort,
            self.changed("tcp.Port._fromListeningDescriptor", f"a {type(port)}"),
        )
        port.startListening()
        self.addCleanup(port.socket.close)
        self.assertEqual(port.getHost().port, listening.getsockname()[1])
        self.assertNotEqual(
            port.fileno(),
            listening.fileno(),
            self.changed(
                "tcp.Port._fromListeningDescriptor", "it takes the descriptor itself"
            ),
        )

    def test_shouldShutdown(self) -> None:
        """
        C{tcp.Port._shouldShutdown} (true by default, false on an adopted
        socket) decides whether stopping calls C{shutdown(2)} before
        closing: the socket sources set it, since a shutdown stops every
        process holding the socket.
        """
        self.assertIs(
            self.require(tcp.Port, "_shouldShutdown"),
            True,
            self.changed("tcp.Port._shouldShutdown", "not True by default"),
        )
        calls: list[str] = []

        class Recording:
            def shutdown(self, how: int) -> None:
                calls.append("shutdown")

            def setsockopt(self, *args: object) -> None:
                calls.append("setsockopt")

            def close(self) -> None:
                calls.append("close")

        port = tcp.Port(0, Factory(), reactor=MemoryReactor())
        port.socket = Recording()
        port._shouldShutdown = False
        self.require(port, "_closeSocket")(True)
        port._shouldShutdown = True
        port._closeSocket(True)
        self.assertEqual(
            calls,
            ["close", "shutdown", "close"],
            self.changed("tcp.Port._closeSocket", f"these calls: {calls}"),
        )

    def test_getPort(self) -> None:
        """
        C{TCPServer} listens through C{_getPort()} in
        C{privilegedStartService} (or C{startService}), keeps the port in
        C{_port}, and stops it from there.
        """
        self.assertParameters(
            self.require(internet.TCPServer, "_getPort"),
            ["self"],
            "_AbstractServer._getPort",
        )

        class Listening:
            stopped = False

            def stopListening(self) -> None:
                self.stopped = True

        listening = Listening()

        class Server(internet.TCPServer):
            def _getPort(self) -> Any:
                return listening

        server = Server(0, Factory(), reactor=MemoryReactor())
        server.privilegedStartService()
        self.assertIs(
            self.require(server, "_port"),
            listening,
            self.changed("_AbstractServer._port", "_getPort's port is not kept there"),
        )
        server.startService()
        server.stopService()
        self.assertTrue(
            listening.stopped,
            self.changed("_AbstractServer._port", "stopService does not stop it"),
        )
        self.assertCalls(
            internet.TCPServer.startService, "_getPort", "_AbstractServer._getPort"
        )


class WebTests(_TwistedAPITestCase):
    """
    What L{multiport.handlers.web}'s C{PortSite} takes from C{twisted.web}'s
    HTTP factory.
    """

    dependent = "multiport.handlers.web"

    def test_logDateTime(self) -> None:
        """
        An HTTP factory's C{_logDateTime} is a string once the factory has
        started (multiport's access log line carries it).
        """
        factory = http.HTTPFactory(reactor=Clock())
        factory.doStart()
        self.addCleanup(factory.doStop)
        timestamp = self.require(factory, "_logDateTime")
        self.assertIsInstance(
            timestamp,
            str,
            self.changed("HTTPFactory._logDateTime", f"a {type(timestamp)}"),
        )


class DaemonModeTests(_TwistedAPITestCase):
    """
    What L{multiport.daemon.daemonmode} replaces in twistd's Unix runner to get a
    start-up error through the status pipe whole.
    """

    dependent = "multiport.daemon.daemonmode"

    def test_runnerMethods(self) -> None:
        """
        C{UnixApplicationRunner} has C{_formatChildException(exception)} and
        C{_waitForStart(readPipe)}, and C{postApplication} looks the first
        up when it runs.
        """
        from twisted.scripts._twistd_unix import UnixApplicationRunner

        self.assertParameters(
            self.require(UnixApplicationRunner, "_formatChildException"),
            ["self", "exception"],
            "UnixApplicationRunner._formatChildException",
        )
        self.assertParameters(
            self.require(UnixApplicationRunner, "_waitForStart"),
            ["self", "readPipe"],
            "UnixApplicationRunner._waitForStart",
        )
        self.assertCalls(
            UnixApplicationRunner.postApplication,
            "_formatChildException",
            "UnixApplicationRunner.postApplication",
        )


class StatusSiteTests(_TwistedAPITestCase):
    """
    What L{multiport.status.site} takes from C{twisted.web}'s request.
    """

    dependent = "multiport.status.site"

    def test_requestDisconnected(self) -> None:
        """
        A request's C{_disconnected} is false until its connection is lost
        (multiport.status.site answers a late request only while it is).
        """
        request = http.Request(DummyChannel())
        self.assertIs(
            self.require(request, "_disconnected"),
            False,
            self.changed("Request._disconnected", "true at first"),
        )
        request.connectionLost(Failure(error.ConnectionDone()))
        self.assertIs(
            request._disconnected,
            True,
            self.changed("Request._disconnected", "connectionLost does not set it"),
        )


class PreloadTests(_TwistedAPITestCase):
    """
    The private Twisted modules L{multiport.daemon.tap} imports before twistd drops
    privileges.
    """

    dependent = "multiport.daemon.tap (PRELOAD)"

    def test_privateModules(self) -> None:
        """
        Every private Twisted module in C{PRELOAD} exists.
        """
        tap = self.load("multiport.daemon.tap")
        private = [
            name for name in tap.PRELOAD if name.startswith("twisted.") and "._" in name
        ]
        self.assertTrue(private)
        for name in private:
            try:
                importlib.import_module(name)
            except ImportError as e:
                self.fail(self.changed(name, e))


class TestHelperTests(_TwistedAPITestCase):
    """
    The private Twisted names the test suite's own helpers patch: a
    patch of a name Twisted no longer uses would pass silently.
    """

    dependent = "tests.support"

    def test_exitWithSignal(self) -> None:
        """
        twistd ends a run stopped by a signal with
        C{app._exitWithSignal(sig)}, looked up on C{app} when it is called,
        where tests.support's daemons save their coverage first.
        """
        self.assertParameters(
            self.require(app, "_exitWithSignal"), ["sig"], "app._exitWithSignal"
        )
        self.assertCalls(twistd.runApp, "_exitWithSignal", "app._exitWithSignal")

    def test_producerCooperate(self) -> None:
        """
        C{_producer_helpers} looks up its module's C{cooperate} when a pull
        producer starts streaming (tests.test_web and tests.test_properties
        patch it to run on a test clock).
        """
        self.require(_producer_helpers, "cooperate")
        self.assertCalls(
            _producer_helpers._PullToPush.startStreaming,
            "cooperate",
            "_producer_helpers.cooperate",
        )


class LeanBridgeTests(_TwistedAPITestCase):
    """
    What L{multiport.handlers.leanbridge} takes from
    C{twisted.internet._producer_helpers}: the wrapper that drives a pull
    producer as a push producer, as twisted.web's channel does.
    """

    dependent = "multiport.handlers.leanbridge"

    def test_pullToPush(self) -> None:
        """
        C{_PullToPush(pullProducer, consumer)} starts and stops streaming
        on request and pauses and resumes as a push producer, through its
        module's C{cooperate}.
        """
        pullToPush = self.require(_producer_helpers, "_PullToPush")
        self.assertParameters(
            pullToPush.__init__,
            ["self", "pullProducer", "consumer"],
            "_PullToPush.__init__",
        )
        for name in (
            "startStreaming",
            "stopStreaming",
            "pauseProducing",
            "resumeProducing",
        ):
            self.require(pullToPush, name)
        self.assertCalls(
            pullToPush.startStreaming, "cooperate", "_producer_helpers.cooperate"
        )


class ScopeTests(SynchronousTestCase):
    """
    The modules these tests cover are the ones that use private Twisted
    names.
    """

    def test_everyPrivateImportCovered(self) -> None:
        """
        The private Twisted names multiport and benchmarks import (a private
        module, or a name with a leading underscore) are the ones checked
        above.
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        found = set()
        for folder in ("multiport", "benchmarks"):
            for directory, _, files in os.walk(os.path.join(root, folder)):
                for name in files:
                    if not name.endswith(".py"):
                        continue
                    with open(os.path.join(directory, name), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                    for node in ast.walk(tree):
                        if isinstance(node, ast.ImportFrom) and (
                            node.module or ""
                        ).startswith("twisted"):
                            imported = [f"{node.module}.{a.name}" for a in node.names]
                        elif isinstance(node, ast.Import):
                            imported = [a.name for a in node.names]
                        else:
                            continue
                        found.update(
                            n for n in imported if n.startswith("twisted") and "._" in n
                        )
        self.assertEqual(
            found,
            {
                "twisted.internet._newtls.startTLS",
                "twisted.internet._sslverify.protosFromProtocol",
                "twisted.internet.abstract._dataMustBeBytes",
                "twisted.internet._producer_helpers._PullToPush",
                "twisted.internet.posixbase._NO_FILEDESC",
                "twisted.scripts._twistd_unix.UnixApplicationRunner",
                # Shapes checked in tests/test_http2.py (TwistedShapeTests).
                "twisted.web._http2.H2Connection",
                "twisted.web.http._GenericHTTPChannelProtocol",
            },
            "multiport or benchmarks imports a new private Twisted name: add a "
            "test of the shape it relies on to tests/test_twistedapi.py",
        )
