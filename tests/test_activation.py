"""
Socket activation: the daemon adopts the listening sockets systemd passes
(C{LISTEN_PID}, C{LISTEN_FDS}, C{LISTEN_FDNAMES}) instead of binding,
matched to ports by name or by address.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sys
import tempfile
import textwrap
from pathlib import Path

from attrs import evolve
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from multiport.config.tomlfile import parseConfig
from multiport.daemon.activation import (
    ActivatedSocket,
    ActivationError,
    matchActivated,
    readActivation,
)
from multiport.errors import ConfigError
from tests.support import WAIT_TIMEOUT, Daemon, configFor, waitUntil
from tests.test_live import freePort
from tests.test_livedaemon import connect, echoes
from tests.test_udpworkers import getJSON

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


def lowFreePort() -> int:
    """
    A port number below 1024 that nothing on 127.0.0.1 uses now.
    """
    for number in range(990, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", number))
            except OSError:
                continue
            return number
    raise SkipTest("no free port from 901 to 990")


def childrenOf(pid: int) -> list[int]:
    """
    The processes whose parent is C{pid}.
    """
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The fields after the command name, which may hold spaces.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def uidsOf(pid: int) -> set[int]:
    """
    The real, effective, saved and file system user ids of C{pid}.
    """
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(value) for value in line.split()[1:]}
    raise AssertionError(f"no Uid line for {pid}")


def stream(name: str | None, port: int, descriptor: int = 3) -> ActivatedSocket:
    return ActivatedSocket(
        descriptor, name, socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port), True
    )


def datagram(name: str | None, port: int, descriptor: int = 3) -> ActivatedSocket:
    return ActivatedSocket(
        descriptor, name, socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", port), False
    )


def answers(port: int, data: bytes, timeout: float = WAIT_TIMEOUT) -> bytes:
    """
    What 127.0.0.1:C{port} answers to the datagram C{data} within
    C{timeout} seconds (an activated daemon answers its first datagram
    once started).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(timeout)
        client.sendto(data, ("127.0.0.1", port))
        return client.recv(65536)


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

    def test_datagramForTCPPort(self) -> None:
        """
        A UDP socket bound where only a TCP port is configured is an error
        naming both.
        """
        error = self.assertRaises(
            ActivationError, matchActivated, [datagram(None, 7001, 5)], self.ports
        )
        self.assertEqual(
            str(error),
            "inherited socket 5 (bound to 127.0.0.1:7001): a UDP socket, but "
            "--ports item 1 '127.0.0.1:7001=echo' is a TCP port (ListenStream= "
            "in the socket unit)",
        )

    def test_streamForUDPPort(self) -> None:
        """
        A TCP socket named as a UDP port's is an error naming both.
        """
        [udp] = configFor("127.0.0.1:7001/udp=echo", "/tmp").ports
        error = self.assertRaises(
            ActivationError,
            matchActivated,
            [stream("dns", 7001, 4)],
            [evolve(udp, socketName="dns")],
        )
        self.assertEqual(
            str(error),
            "inherited socket 4 named 'dns' (bound to 127.0.0.1:7001): a TCP "
            "socket, but --ports item 1 '127.0.0.1:7001/udp=echo' is a UDP port "
            "(ListenDatagram= in the socket unit)",
        )

    def test_datagramByAddress(self) -> None:
        """
        On a number both protocols use, a UDP socket is the UDP port's and a
        TCP socket the TCP port's, whichever is configured first.
        """
        ports = configFor("127.0.0.1:7001/udp=echo,127.0.0.1:7001=echo", "/tmp").ports
        self.assertEqual(
            matchActivated([stream(None, 7001, 3), datagram(None, 7001, 4)], ports),
            {"tcp:127.0.0.1:7001": 3, "udp:127.0.0.1:7001": 4},
        )

    def test_datagramByName(self) -> None:
        """
        A UDP socket named as a UDP port's is that port's; it does not
        listen, and need not.
        """
        [udp] = configFor("127.0.0.1:7001/udp=echo", "/tmp").ports
        self.assertEqual(
            matchActivated([datagram("dns", 9999)], [evolve(udp, socketName="dns")]),
            {"udp:127.0.0.1:7001": 3},
        )

    def test_notInternet(self) -> None:
        """
        A socket of another kind named as a port's is an error naming it.
        """
        local = ActivatedSocket(
            6, "web", socket.AF_UNIX, socket.SOCK_STREAM, None, True
        )
        ports = [evolve(self.ports[0], socketName="web")]
        error = self.assertRaises(ActivationError, matchActivated, [local], ports)
        self.assertEqual(
            str(error),
            "inherited socket 6 named 'web' (not an Internet socket): not a TCP "
            "or UDP socket, but --ports item 1 '127.0.0.1:7001=echo' is a TCP "
            "port (ListenStream= in the socket unit)",
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
        status = [] if "--status" in args else ["--no-status"]
        daemon = Daemon(
            [
                "--config",
                str(self.folder / "multiport.toml"),
                *status,
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

    def systemd(self, *arguments: str) -> list[str]:
        """
        Debian's C{systemd-socket-activate} with C{arguments}, passing on
        the variables the daemon needs.
        """
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            raise SkipTest("systemd-socket-activate (Debian's systemd) is missing")
        passed = [
            f"-E{key}"
            for key in os.environ
            if key in ("PYTHONPATH", "PATH", "HOME") or key.startswith("COVERAGE")
        ]
        return [tool, *arguments, *passed, "--"]

    def test_privilegedPortWithoutRoot(self) -> None:
        """
        A port below 1024 is served by a daemon that never runs as root:
        the launcher binds it as root, then the daemon is started as
        C{nobody} (C{setpriv}), as systemd's socket unit and a service with
        C{User=} do, and adopts it.
        """
        setpriv = shutil.which("setpriv")
        if os.geteuid() != 0 or setpriv is None:
            raise SkipTest("needs root to bind below 1024, and setpriv (util-linux)")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise SkipTest("no user nobody") from None
        port = lowFreePort()
        # trial's folders are root's own (0700): one nobody can read.
        self.folder = Path(tempfile.mkdtemp(prefix="multiport-activation-"))
        self.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)
        self.folder.chmod(0o755)
        state = self.folder / "state"
        state.mkdir()
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        daemon = self.start(
            f"""
            [[port]]
            port = {port}
            interface = "127.0.0.1"
            handler = "echo"
            """,
            [
                *self.launcher(f"127.0.0.1:{port}"),
                setpriv,
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
            ],
        )
        daemon.waitFor("ready: ")
        with connect(port) as client:
            self.assertTrue(echoes(client, b"below 1024"))
        [child] = childrenOf(daemon.process.pid)
        self.assertEqual(uidsOf(child), {nobody.pw_uid})

    def test_byNameThroughSystemd(self) -> None:
        """
        Through Debian's C{systemd-socket-activate --fdname}, the port whose
        C{name} is the socket's serves on it: nothing else binds it.
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
            self.systemd("-l", f"127.0.0.1:{port}", "--fdname=web"),
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

    def test_datagramByNameThroughSystemd(self) -> None:
        """
        Through C{systemd-socket-activate --datagram --fdname}, the UDP port
        whose C{name} is the socket's serves on it: the datagram that
        started the daemon is answered, and the port is named for the
        socket's number.
        """
        port = freePort(socket.SOCK_DGRAM)
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort(socket.SOCK_DGRAM)}
            interface = "127.0.0.1"
            protocol = "udp"
            handler = "echo"
            name = "game"
            """,
            self.systemd("--datagram", "-l", f"127.0.0.1:{port}", "--fdname=game"),
        )
        daemon.waitFor("Listening on 127.0.0.1")
        # The first datagram starts the daemon, which then reads it.
        self.assertEqual(answers(port, b"activated"), b"activated")
        daemon.waitFor(
            r"inherited socket 3 named 'game' \(bound to 127.0.0.1:\d+\) "
            r"is .*port\[1\]'s"
        )
        daemon.waitFor(rf"listening on udp:127\.0\.0\.1:{port}: handler echo$")
        self.assertEqual(answers(port, b"again"), b"again")

    def test_datagramByAddressCounted(self) -> None:
        """
        Through the tests' launcher, an unnamed UDP socket is the UDP port
        configured for its address (not the TCP port of the same number,
        which binds its own), and it is counted like a bound one.
        """
        number = freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {number}
            interface = "127.0.0.1"
            handler = "discard"

            [[port]]
            port = {number}
            interface = "127.0.0.1"
            protocol = "udp"
            handler = "echo"
            """,
            self.launcher(f"udp:127.0.0.1:{number}"),
            "--status",
            "127.0.0.1:0",
        )
        daemon.waitFor(
            r"inherited socket 3 \(bound to 127.0.0.1:\d+\) is .*port\[2\]'s"
        )
        status = int(
            daemon.waitFor(r"listening on tcp:127\.0\.0\.1:(\d+): handler status")[
                0
            ].group(1)
        )
        daemon.waitFor(rf"listening on tcp:127\.0\.0\.1:{number}: handler discard")
        for index in range(5):
            self.assertEqual(answers(number, b"%d" % index), b"%d" % index)
        [udp] = waitUntil(
            lambda: [
                p
                for p in getJSON(status, "/status")["ports"]
                if p["name"] == f"udp:127.0.0.1:{number}"
            ],
            accept=lambda found: found and found[0]["datagrams"]["sent"] == 5,
        )
        self.assertEqual(
            (udp["listening"], udp["datagrams"]["received"], udp["bytes"]["sent"]),
            (True, 5, 5),
        )

    def test_datagramWorkers(self) -> None:
        """
        With C{--workers 2} the main process adopts the UDP socket and the
        workers answer on it, both reading it.
        """
        port = freePort(socket.SOCK_DGRAM)
        daemon = self.start(
            f"""
            [[port]]
            port = {freePort(socket.SOCK_DGRAM)}
            interface = "127.0.0.1"
            protocol = "udp"
            handler = "echo"
            name = "game"
            """,
            self.launcher(f"game=udp:127.0.0.1:{port}"),
            "--workers",
            "2",
            "--status",
            "127.0.0.1:0",
        )
        daemon.waitFor(r"worker \d \(pid \d+\) serving", 2)
        daemon.waitFor(
            rf"listening on udp:127\.0\.0\.1:{port}: handler echo, served by 2 "
            "workers"
        )
        status = int(
            daemon.waitFor(r"listening on tcp:127\.0\.0\.1:(\d+): handler status")[
                0
            ].group(1)
        )
        total = 50
        for index in range(total):
            self.assertEqual(answers(port, b"%d" % index), b"%d" % index)
        [udp] = waitUntil(
            lambda: [
                p
                for p in getJSON(status, "/status?workers=1")["ports"]
                if p["name"] == f"udp:127.0.0.1:{port}"
            ],
            accept=lambda found: found and found[0]["datagrams"]["received"] == total,
        )
        workers = udp["workers"]
        self.assertEqual(len(workers), 2)
        self.assertTrue(all(w["listening"] for w in workers), workers)

    def test_datagramForTCPPort(self) -> None:
        """
        A UDP socket where only a TCP port is configured stops the start
        with a line naming the socket and the port.
        """
        port = freePort()
        daemon = self.start(
            f"""
            [[port]]
            port = {port}
            interface = "127.0.0.1"
            handler = "echo"
            """,
            self.launcher(f"udp:127.0.0.1:{port}"),
        )
        daemon.waitFor(
            rf"multiport: inherited socket 3 \(bound to 127.0.0.1:{port}\): a UDP "
            r"socket, but .*port\[1\] is a TCP port \(ListenStream= in the socket "
            r"unit\)"
        )
        self.assertNotEqual(daemon.process.wait(30), 0)

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


class ActivatedDatagramTests(SynchronousTestCase):
    """
    A UDP socket systemd passed is adopted by its UDP port, and closed
    (never shut down) when the port stops: systemd's copy still receives.
    """

    def test_adoptedThenClosed(self) -> None:
        """
        The port reads on the manager's socket, named for its number, and
        the descriptor it was given is closed at once; after the port
        closes the manager's socket still gets datagrams.
        """
        from twisted.internet import reactor

        from multiport.daemon.service import PortsService
        from tests.support import HANDLERS

        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.settimeout(10)
        given = os.dup(held.fileno())
        config = configFor("127.0.0.1:0/udp=echo", self.mktemp())
        service = PortsService(
            config, HANDLERS, {}, reactor, activated={"udp:127.0.0.1:0": given}
        )
        service.privilegedStartService()
        [port] = service.ports()
        number = held.getsockname()[1]
        self.assertEqual(port.name, f"udp:127.0.0.1:{number}")
        self.assertRaises(OSError, os.fstat, given)
        # Closed at once, as on removal (stopListening would wait for a
        # reactor turn); a shutdown(2) would stop the manager's copy too.
        listening = port._port
        port._port = None
        listening.connectionLost()  # type: ignore[union-attr]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"still", held.getsockname())
            self.assertEqual(held.recv(100), b"still")
