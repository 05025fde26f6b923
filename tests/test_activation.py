"""
Socket activation: the daemon adopts the listening sockets systemd passes
(C{LISTEN_PID}, C{LISTEN_FDS}, C{LISTEN_FDNAMES}) instead of binding,
matched to ports by name or by address.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import textwrap
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from multiport.config.tomlfile import parseConfig
from multiport.daemon.activation import (
    ActivatedSocket,
    ActivationError,
    matchActivated,
    readActivation,
)
from multiport.errors import ConfigError
from tests.support import Daemon, configFor
from tests.test_live import freePort
from tests.test_livedaemon import connect, echoes

#: A launcher of the tests' own, as systemd does it: bind the sockets given
#: as C{[NAME=][udp:]HOST:PORT}, fork, and in the child put them at
#: descriptors 3 on, set the variables for the child's pid, and exec the
#: command after C{--}.  The parent passes SIGTERM on and exits as the
#: child does.
LAUNCHER = textwrap.dedent(
    """
    import fcntl, os, signal, socket, sys

    split = sys.argv.index("--")
    specs, command = sys.argv[1:split], sys.argv[split + 1:]
    sockets, names = [], []
    for spec in specs:
        name, _, address = spec.rpartition("=")
        kind = socket.SOCK_STREAM
        if address.startswith("udp:"):
            kind, address = socket.SOCK_DGRAM, address[4:]
        host, port = address.rsplit(":", 1)
        skt = socket.socket(socket.AF_INET, kind)
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        skt.bind((host, int(port)))
        if kind == socket.SOCK_STREAM:
            skt.listen(50)
        sockets.append(skt)
        names.append(name)
    print("launcher bound", len(sockets), flush=True)
    pid = os.fork()
    if pid == 0:
        high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in sockets]
        for index, descriptor in enumerate(high):
            os.dup2(descriptor, 3 + index)
            os.close(descriptor)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = str(len(sockets))
        if any(names):
            os.environ["LISTEN_FDNAMES"] = ":".join(names)
        os.execv(command[0], command)
    for skt in sockets:
        skt.close()
    signal.signal(signal.SIGTERM, lambda number, frame: os.kill(pid, number))
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def stream(name: str | None, port: int, descriptor: int = 3) -> ActivatedSocket:
    return ActivatedSocket(
        descriptor, name, socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port), True
    )


class ReadActivationTests(SynchronousTestCase):
    """
    The variables are read once, checked, and removed.
    """

    def test_none(self) -> None:
        """
        Without LISTEN_FDS there is no socket.
        """
        self.assertEqual(readActivation({}, 10), ())

    def test_otherProcess(self) -> None:
        """
        Variables for another pid are not this process's: no socket, and
        they are gone.
        """
        environ = {"LISTEN_PID": "11", "LISTEN_FDS": "1"}
        self.assertEqual(readActivation(environ, 10), ())
        self.assertEqual(environ, {})

    def test_namesMismatch(self) -> None:
        """
        More names than descriptors is said, with both values (Twisted's
        ListenFDs would silently give nothing).
        """
        environ = {"LISTEN_PID": "10", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}
        error = self.assertRaises(ActivationError, readActivation, environ, 10)
        self.assertIn("LISTEN_FDNAMES='a:b' has 2 names for LISTEN_FDS=1", str(error))
        self.assertEqual(environ, {})

    def test_noPid(self) -> None:
        """
        LISTEN_FDS without LISTEN_PID is an error.
        """
        error = self.assertRaises(
            ActivationError, readActivation, {"LISTEN_FDS": "2"}, 10
        )
        self.assertIn("LISTEN_PID is not", str(error))

    def test_notANumber(self) -> None:
        """
        A LISTEN_FDS that is not a count is named.
        """
        error = self.assertRaises(
            ActivationError, readActivation, {"LISTEN_FDS": "x", "LISTEN_PID": "1"}, 1
        )
        self.assertIn("LISTEN_FDS='x'", str(error))


class MatchTests(SynchronousTestCase):
    """
    Each socket is a port's by name, else by address.
    """

    def setUp(self) -> None:
        self.ports = configFor("127.0.0.1:7001=echo,127.0.0.1:7002=echo", "/tmp").ports

    def named(self, name: str, port: int) -> object:
        [request] = parseConfig(
            {"port": [{"port": port, "interface": "127.0.0.1", "name": name}]},
            Path("/tmp"),
        ).ports
        return request

    def test_byAddress(self) -> None:
        """
        A socket bound to a configured address is that port's.
        """
        self.assertEqual(
            matchActivated([stream(None, 7002)], self.ports), {"tcp:127.0.0.1:7002": 3}
        )

    def test_byName(self) -> None:
        """
        A socket named as a port's C{name} key is that port's, wherever it
        is bound.
        """
        from attrs import evolve

        ports = [evolve(self.ports[0], socketName="web"), self.ports[1]]
        self.assertEqual(
            matchActivated([stream("web", 9999)], ports), {"tcp:127.0.0.1:7001": 3}
        )

    def test_unclaimed(self) -> None:
        """
        A socket no port claims is an error naming it, its name and address.
        """
        error = self.assertRaises(
            ActivationError, matchActivated, [stream("db", 9999, 4)], self.ports
        )
        self.assertEqual(
            str(error),
            "inherited socket 4 named 'db' (bound to 127.0.0.1:9999): no port "
            "claims it (no [[port]] has name = 'db' and no port is configured "
            "for its address)",
        )

    def test_datagram(self) -> None:
        """
        A UDP socket for a TCP port is an error naming both.
        """
        udp = ActivatedSocket(
            5, None, socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 7001), False
        )
        error = self.assertRaises(ActivationError, matchActivated, [udp], self.ports)
        self.assertIn(
            "inherited socket 5 (bound to 127.0.0.1:7001): not a TCP", str(error)
        )

    def test_twoForOnePort(self) -> None:
        """
        Two sockets for one port is an error.
        """
        error = self.assertRaises(
            ActivationError,
            matchActivated,
            [stream(None, 7001), stream(None, 7001, 4)],
            self.ports,
        )
        self.assertIn("already has inherited socket 3", str(error))

    def test_nameKey(self) -> None:
        """
        C{name} in a C{[[port]]} table is checked as systemd checks
        C{FileDescriptorName=}.
        """
        self.assertEqual(self.named("web", 80).socketName, "web")  # type: ignore[attr-defined]
        error = self.assertRaises(ConfigError, self.named, "a:b", 80)
        self.assertIn("port[1].name: 'a:b' is not a socket name", str(error))


class ActivatedDaemonTests(SynchronousTestCase):
    """
    A real C{twistd multiport} started with sockets already bound.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)

    def start(self, toml: str, wrapper: list[str], *args: str) -> Daemon:
        (self.folder / "multiport.toml").write_text(textwrap.dedent(toml))
        daemon = Daemon(
            [
                "--config",
                str(self.folder / "multiport.toml"),
                "--no-status",
                "--state-dir",
                str(self.folder / "state"),
                *args,
            ],
            str(self.folder),
            wrapper=wrapper,
        )
        self.addCleanup(daemon.stop)
        return daemon

    def launcher(self, *specs: str) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, *specs, "--"]

    def test_byNameThroughSystemd(self) -> None:
        """
        Through Debian's C{systemd-socket-activate --fdname}, the port whose
        C{name} is the socket's serves on it: nothing else binds it.
        """
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            raise SkipTest("systemd-socket-activate (Debian's systemd) is missing")
        port = freePort()
        passed = [
            f"-E{key}"
            for key in os.environ
            if key in ("PYTHONPATH", "PATH", "HOME") or key.startswith("COVERAGE")
        ]
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "echo"
            name = "web"
            """,
            [tool, "-l", f"127.0.0.1:{port}", "--fdname=web", *passed, "--"],
        )
        daemon.waitFor("Listening on 127.0.0.1")
        # systemd-socket-activate starts the daemon on the first connection.
        with connect(port) as client:
            self.assertTrue(echoes(client, b"activated"))
        daemon.waitFor(
            r"inherited socket 3 named 'web' \(bound to 127.0.0.1:\d+\) "
            r"is .*port\[1\]'s"
        )
        self.assertEqual(daemon.listening(1)["echo"], ("127.0.0.1", port))

    def test_byAddress(self) -> None:
        """
        Through the tests' launcher, an unnamed socket is the port
        configured for its address; a port without a socket binds.
        """
        adopted, bound = freePort(), freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {adopted}
            interface = "127.0.0.1"
            handler = "echo"

            [[port]]
            port = {bound}
            interface = "127.0.0.1"
            handler = "discard"
            """,
            self.launcher(f"127.0.0.1:{adopted}"),
        )
        listening = daemon.listening(2)
        self.assertEqual(listening["echo"], ("127.0.0.1", adopted))
        self.assertEqual(listening["discard"], ("127.0.0.1", bound))
        daemon.waitFor(
            r"inherited socket 3 \(bound to 127.0.0.1:\d+\) is .*port\[1\]'s"
        )
        with connect(adopted) as client:
            self.assertTrue(echoes(client, b"by address"))

    def test_workers(self) -> None:
        """
        With C{--workers 2} the main process adopts the socket and the
        workers serve on it.
        """
        port = freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "echo"
            name = "web"
            """,
            self.launcher(f"web=127.0.0.1:{port}"),
            "--workers",
            "2",
        )
        daemon.waitFor("worker 1 .* serving")
        daemon.waitFor("worker 0 .* serving")
        for _ in range(4):
            with connect(port) as client:
                self.assertTrue(echoes(client, b"workers"))

    def test_unclaimed(self) -> None:
        """
        A socket that no port claims stops the start with a line naming it.
        """
        port = freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort()}
            interface = "127.0.0.1"
            handler = "echo"
            """,
            self.launcher(f"db=127.0.0.1:{port}"),
        )
        daemon.waitFor(
            r"multiport: inherited socket 3 named 'db' \(bound to "
            rf"127.0.0.1:{port}\): no port claims it"
        )
        self.assertNotEqual(daemon.process.wait(30), 0)


class ActivatedSourceTests(SynchronousTestCase):
    """
    A socket systemd passed is adopted, and closed (never shut down) when
    the port stops: systemd's copy keeps accepting.
    """

    def test_neverShutDown(self) -> None:
        """
        After the port closes, the descriptor it was given is closed and
        the socket the manager holds still takes connections.
        """
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory

        from multiport.ports.sockets import Activated, ListeningPort, isShared

        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen(5)
        held.settimeout(10)
        given = os.dup(held.fileno())
        config = configFor("127.0.0.1:0=echo", self.mktemp()).ports[0]
        port = Activated(given).listen(reactor, config, Factory())
        assert isinstance(port, ListeningPort)
        self.assertTrue(isShared(port))
        self.assertEqual(port.getHost().port, held.getsockname()[1])
        self.assertRaises(OSError, os.fstat, given)
        port.closeNow()
        with socket.create_connection(held.getsockname(), timeout=10):
            accepted, _ = held.accept()
            accepted.close()
