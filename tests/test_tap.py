"""
Tests for L{multiport.daemon.tap}: the command line and makeService.
"""

from __future__ import annotations

import gc
import io
import os
import sys
from pathlib import Path

from twisted.application.internet import SSLServer, TCPServer
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import TLSConfig
from multiport.daemon import logformat
from multiport.daemon.dump import StatsDumpService
from multiport.daemon.service import PortsService
from multiport.daemon.tap import Options, ReadyLine, _owner, makeService
from multiport.ports.policies import DEFAULT_DRAIN_TIMEOUT, Policy, drainTimeoutOf
from multiport.ports.tls import makeSelfSigned


def writeCertificate(folder: Path, name: str = "site") -> tuple[Path, Path]:
    """
    Write a self-signed certificate and key into C{folder}.
    """
    import datetime

    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = makeSelfSigned(datetime.datetime.now(datetime.UTC), "example.test")
    (folder / f"{name}.pem").write_bytes(cert)
    (folder / f"{name}.key").write_bytes(key)
    return folder / f"{name}.pem", folder / f"{name}.key"


class OptionsTestsMixin:
    """
    Parse options with stdout captured and a private state directory.
    """

    #: Whether parse leaves the default status port in (most tests are
    #: about other ports and pass --no-status).
    status = False

    def parse(self, *args: str) -> Options:
        options = Options()
        status = [] if self.status or "--status" in args else ["--no-status"]
        options.parseOptions(["--state-dir", self.stateDir, *status, *args])
        return options

    def setUp(self) -> None:
        self.stateDir = self.mktemp()
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)


class OptionsTests(OptionsTestsMixin, SynchronousTestCase):
    """
    The command line builds one validated configuration.
    """

    def test_default(self):
        """
        With neither --ports nor --config the ports are 8080 (http) and 8443
        (https, self-signed) on 0.0.0.0.
        """
        config = self.parse().config
        self.assertEqual(
            [(p.name, p.handler, p.tls, p.backlog) for p in config.ports],
            [
                ("tcp:0.0.0.0:8080", "http", None, 511),
                ("tcp:0.0.0.0:8443", "https", TLSConfig(), 511),
            ],
        )

    def test_mixedItems(self):
        """
        Handlers, addresses and TLS mix freely in one --ports value.
        """
        config = self.parse(
            "--ports", "8080=http,127.0.0.1:7000=echo,7443=echo+tls,[::1]:1313=daytime"
        ).config
        self.assertEqual(
            [(p.name, p.handler, p.tls is not None) for p in config.ports],
            [
                ("tcp:0.0.0.0:8080", "http", False),
                ("tcp:127.0.0.1:7000", "echo", False),
                ("tcp:0.0.0.0:7443", "echo", True),
                ("tcp:[::1]:1313", "daytime", False),
            ],
        )

    def test_portsRepeated(self):
        """
        --ports may be given more than once; items are numbered across them.
        """
        config = self.parse("--ports", "7000=echo", "-p", "7001=echo").config
        self.assertEqual([p.port for p in config.ports], [7000, 7001])
        self.assertEqual(config.ports[1].where, "--ports item 2 '7001=echo'")

    def test_interfaceAndBacklog(self):
        """
        --interface and --backlog apply to ports that set neither.
        """
        config = self.parse(
            "--interface", "127.0.0.1", "--backlog", "64", "--ports", "7000=echo"
        ).config
        self.assertEqual(
            (config.ports[0].interface, config.ports[0].backlog), ("127.0.0.1", 64)
        )

    def test_badBacklog(self):
        """
        A backlog that is not a positive number is a usage error.
        """
        self.assertRaises(usage.UsageError, self.parse, "--backlog", "0")
        self.assertRaises(usage.UsageError, self.parse, "--backlog", "many")

    def test_badInterface(self):
        """
        An --interface that is no address is named in the error.
        """
        error = self.assertRaises(
            usage.UsageError, self.parse, "--interface", "fe80::1::2", "-p", "7=echo"
        )
        self.assertIn("--interface", str(error))
        self.assertIn("fe80::1::2", str(error))

    def test_commandLineErrorIsUsageError(self):
        """
        A bad --ports item is a usage error naming the item and the value.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--ports", "7777")
        self.assertEqual(
            str(error),
            "--ports item 1 '7777': port 7777 has no well-known handler; name one "
            "(PORT=HANDLER); known handlers: agent-check, chargen, daytime, "
            "discard, echo, http, https, qotd, relay, status, websocket",
        )

    def test_unknownHandler(self):
        """
        An unknown handler is named, with the known ones listed.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "-p", "7000=gopher")
        self.assertIn("unknown handler 'gopher'", str(error))
        self.assertIn("echo, http", str(error))

    def test_samePortTwice(self):
        """
        The same address and port twice is an error naming both places.
        """
        error = self.assertRaises(
            usage.UsageError, self.parse, "-p", "7000=echo,7000=discard"
        )
        self.assertIn("0.0.0.0:7000 is configured twice", str(error))

    def test_portOutOfRange(self):
        """
        A port out of range is named.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "-p", "70000=echo")
        self.assertIn("port 70000 out of range", str(error))

    def test_tlsKeyNeedsCert(self):
        """
        --tls-key without --tls-cert is an error.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--tls-key", "k.pem")
        self.assertIn("--tls-key: needs --tls-cert", str(error))

    def test_tlsCertIsTheDefault(self):
        """
        --tls-cert and --tls-key are the certificate of TLS ports naming none.
        """
        cert, key = writeCertificate(Path(self.mktemp()))
        options = self.parse(
            "--tls-cert", str(cert), "--tls-key", str(key), "-p", "7000=echo+tls"
        )
        self.assertEqual(options.config.ports[0].tls, TLSConfig(cert, key))
        self.assertIn(TLSConfig(cert, key), options.certificates)

    def test_missingCertificate(self):
        """
        A certificate file that does not exist stops the start, naming it.
        """
        error = self.assertRaises(
            SystemExit,
            self.parse,
            "--tls-cert",
            "/nonexistent/c.pem",
            "-p",
            "7000=echo+tls",
        )
        self.assertIn("cannot read certificate /nonexistent/c.pem", str(error))


class ConfigFileOptionsTests(OptionsTestsMixin, SynchronousTestCase):
    """
    --config reads a TOML file; it combines with --ports.
    """

    def writeConfig(self, text: str) -> str:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def test_combinesWithPorts(self):
        """
        Ports from --ports come first, then the file's.
        """
        path = self.writeConfig('[[port]]\nport = 7001\nhandler = "echo"\n')
        config = self.parse("--ports", "7000=echo", "--config", path).config
        self.assertEqual([p.port for p in config.ports], [7000, 7001])

    def test_duplicateAcrossSources(self):
        """
        The same port on the command line and in the file is an error.
        """
        path = self.writeConfig('[[port]]\nport = 7000\nhandler = "echo"\n')
        error = self.assertRaises(
            SystemExit, self.parse, "--ports", "7000=echo", "--config", path
        )
        self.assertIn("is configured twice", str(error))
        self.assertIn("--ports item 1", str(error))

    def test_precedence(self):
        """
        A port's own keys beat [defaults], which beat the command line's.
        """
        path = self.writeConfig(
            '[defaults]\ninterface = "127.0.0.1"\nbacklog = 100\n'
            '[[port]]\nport = 7001\nhandler = "echo"\n'
            '[[port]]\nport = 7002\nhandler = "echo"\nbacklog = 7\n'
            'interface = "::1"\n'
        )
        config = self.parse(
            "--interface",
            "0.0.0.0",
            "--backlog",
            "50",
            "--config",
            path,
            "--ports",
            "7000=echo",
        ).config
        self.assertEqual(
            [(p.interface, p.backlog) for p in config.ports],
            [("127.0.0.1", 100), ("127.0.0.1", 100), ("::1", 7)],
        )

    def test_fileErrorExits(self):
        """
        An error in the file exits with a one-line message naming its path.
        """
        path = self.writeConfig("[[port]]\nport = 7001\noptons = {}\n")
        error = self.assertRaises(SystemExit, self.parse, "--config", path)
        self.assertEqual(
            str(error),
            f"multiport: {path}: port[1].optons: unknown key (did you mean 'options'?)",
        )

    def test_handlerOptionError(self):
        """
        Invalid handler options are named with their path.
        """
        path = self.writeConfig(
            '[[port]]\nport = 7017\nhandler = "qotd"\noptions = { quote = 5 }\n'
        )
        error = self.assertRaises(SystemExit, self.parse, "--config", path)
        self.assertIn(f"{path}: port[1].options.quote: expected a string", str(error))


class SpecialModeTests(OptionsTestsMixin, SynchronousTestCase):
    """
    --list-handlers and --check print and exit without serving.
    """

    def test_listHandlers(self):
        """
        --list-handlers prints every handler with its description, exits 0.
        """
        error = self.assertRaises(SystemExit, self.parse, "--list-handlers")
        self.assertEqual(error.code, 0)
        lines = self.stdout.getvalue().splitlines()
        self.assertEqual(
            [line.split()[0] for line in lines],
            [
                "agent-check",
                "chargen",
                "daytime",
                "discard",
                "echo",
                "http",
                "https",
                "qotd",
                "relay",
                "status",
                "websocket",
            ],
        )
        self.assertIn("RFC 862", lines[4])

    def test_listHandlersProtocols(self):
        """
        --list-handlers shows the protocols each handler serves.
        """
        self.assertRaises(SystemExit, self.parse, "--list-handlers")
        lines = {
            line.split()[0]: line.split()[1]
            for line in self.stdout.getvalue().splitlines()
        }
        self.assertEqual(lines["echo"], "tcp/udp")
        self.assertEqual(lines["http"], "tcp")

    def test_check(self):
        """
        --check prints one line per port and exits 0, writing nothing.
        """
        error = self.assertRaises(
            SystemExit, self.parse, "--check", "-p", "127.0.0.1:7000=echo,8443"
        )
        self.assertEqual(error.code, 0)
        lines = self.stdout.getvalue().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            lines[0],
            "tcp:127.0.0.1:7000 echo plain backlog 511 "
            "[--ports item 1 '127.0.0.1:7000=echo']",
        )
        self.assertIn("tcp:0.0.0.0:8443 https TLS self-signed", lines[1])
        self.assertEqual(lines[2], "multiport: configuration ok, 2 ports")
        self.assertFalse(os.path.exists(self.stateDir))

    def test_checkUDP(self):
        """
        --check prints a UDP port without a backlog or TLS, which a UDP
        socket does not have.
        """
        error = self.assertRaises(
            SystemExit, self.parse, "--check", "-p", "127.0.0.1:7000/udp=echo"
        )
        self.assertEqual(error.code, 0)
        self.assertEqual(
            self.stdout.getvalue().splitlines()[0],
            "udp:127.0.0.1:7000 echo [--ports item 1 '127.0.0.1:7000/udp=echo']",
        )

    def test_checkLoadsCertificates(self):
        """
        --check loads certificates and shows their fingerprints.
        """
        cert, key = writeCertificate(Path(self.mktemp()))
        self.assertRaises(
            SystemExit,
            self.parse,
            "--check",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "-p",
            "7443=echo+tls",
        )
        self.assertIn("SHA-256 ", self.stdout.getvalue())

    def test_checkFails(self):
        """
        --check of a bad configuration exits 1 with the reason.
        """
        cert, _ = writeCertificate(Path(self.mktemp()), "a")
        _, otherKey = writeCertificate(Path(self.mktemp()), "b")
        error = self.assertRaises(
            SystemExit,
            self.parse,
            "--check",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(otherKey),
            "-p",
            "7443=echo+tls",
        )
        self.assertIsInstance(error.code, str)
        self.assertIn("does not match the certificate", error.code)

    def test_helpDocumentsEveryOption(self):
        """
        --help lists every option.
        """
        self.assertRaises(SystemExit, Options().parseOptions, ["--help"])
        text = self.stdout.getvalue()
        for option in (
            "--ports",
            "--config",
            "--tls-cert",
            "--tls-key",
            "--backlog",
            "--drain-timeout",
            "--interface",
            "--state-dir",
            "--list-handlers",
            "--check",
            "--version",
        ):
            self.assertIn(option, text)


class DrainTimeoutOptionTests(OptionsTestsMixin, SynchronousTestCase):
    """
    --drain-timeout is the drain_timeout of every port that sets none.
    """

    def writeConfig(self, text: str) -> str:
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def test_unset(self):
        """
        Without --drain-timeout ports set none and get the built-in 30 s.
        """
        (port,) = self.parse("-p", "7000=echo").config.ports
        self.assertEqual(port.policy, Policy())
        self.assertEqual(drainTimeoutOf(port.policy), DEFAULT_DRAIN_TIMEOUT)

    def test_everyPort(self):
        """
        --drain-timeout applies to command-line and file ports alike.
        """
        path = self.writeConfig('[[port]]\nport = 7001\nhandler = "echo"\n')
        config = self.parse(
            "--drain-timeout", "2.5", "-p", "7000=echo", "--config", path
        ).config
        self.assertEqual([p.policy.drainTimeout for p in config.ports], [2.5, 2.5])

    def test_zero(self):
        """
        0 is accepted: connections are closed at once.
        """
        (port,) = self.parse("--drain-timeout", "0", "-p", "7000=echo").config.ports
        self.assertEqual(drainTimeoutOf(port.policy), 0.0)

    def test_precedence(self):
        """
        A port's own drain_timeout beats [defaults], which beats
        --drain-timeout.
        """
        path = self.writeConfig(
            "[defaults]\ndrain_timeout = 10\n"
            '[[port]]\nport = 7001\nhandler = "echo"\n'
            '[[port]]\nport = 7002\nhandler = "echo"\ndrain_timeout = 0\n'
        )
        config = self.parse(
            "--drain-timeout", "5", "--config", path, "-p", "7000=echo"
        ).config
        self.assertEqual(
            [(p.port, drainTimeoutOf(p.policy)) for p in config.ports],
            [(7000, 10.0), (7001, 10.0), (7002, 0.0)],
        )

    def test_bad(self):
        """
        A value that is not a finite number of seconds, 0 or more, is a
        usage error naming the option and the value.
        """
        for value in ("-1", "soon", "inf", "nan", ""):
            error = self.assertRaises(
                usage.UsageError,
                self.parse,
                "--drain-timeout",
                value,
                "-p",
                "7000=echo",
            )
            self.assertEqual(
                str(error),
                "--drain-timeout: expected a number of seconds, 0 or more, got "
                f"{value!r}",
            )

    def test_badWithCheck(self):
        """
        With --check a bad value is the one-line error of the other options.
        """
        error = self.assertRaises(
            SystemExit, self.parse, "--check", "--drain-timeout", "-1"
        )
        self.assertEqual(
            error.code,
            "multiport: --drain-timeout: expected a number of seconds, 0 or "
            "more, got '-1'",
        )


class StatusDrainTimeoutTests(OptionsTestsMixin, SynchronousTestCase):
    """
    The implicit status port takes --drain-timeout (it stops with the
    daemon too) but not the [defaults] policies.
    """

    status = True

    def statusPolicy(self, *args: str) -> Policy:
        (status,) = [p for p in self.parse(*args).config.ports if p.handler == "status"]
        return status.policy

    def test_commandLine(self):
        """
        --drain-timeout reaches the status port.
        """
        self.assertEqual(
            self.statusPolicy("--drain-timeout", "3", "-p", "7000=echo"),
            Policy(drainTimeout=3.0),
        )

    def test_builtIn(self):
        """
        Without --drain-timeout it gets the built-in 30 s, even when
        [defaults] sets drain_timeout.
        """
        path = Path(self.mktemp())
        path.write_text(
            '[defaults]\ndrain_timeout = 0\n[[port]]\nport = 7000\nhandler = "echo"\n'
        )
        policy = self.statusPolicy("--config", str(path))
        self.assertEqual(policy, Policy())
        self.assertEqual(drainTimeoutOf(policy), DEFAULT_DRAIN_TIMEOUT)


class MakeServiceTests(OptionsTestsMixin, SynchronousTestCase):
    """
    makeService assembles the service tree from the options.
    """

    def test_serviceTree(self):
        """
        The service is a PortsService with one server child per port, on the
        reactor given.
        """
        options = self.parse("-p", "127.0.0.1:8080=http,127.0.0.1:8443=https")
        memory = MemoryReactorClock()
        service = makeService(options, memory)
        self.assertIsInstance(service, PortsService)
        plain, tls = service.ports()
        self.assertIsInstance(plain, TCPServer)
        self.assertIsInstance(tls, SSLServer)
        service.startService()
        self.assertEqual([s[0] for s in memory.tcpServers], [8080])
        self.assertEqual([s[0] for s in memory.sslServers], [8443])

    def test_selfSignedMadeAtFirstStart(self):
        """
        A TLS port without a certificate makes the self-signed one, key 0600.
        """
        options = self.parse("-p", "127.0.0.1:8443=https")
        makeService(options, MemoryReactorClock())
        key = Path(self.stateDir) / "selfsigned-key.pem"
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertTrue((Path(self.stateDir) / "selfsigned-cert.pem").exists())

    def test_noSelfSignedWithoutTLS(self):
        """
        Without TLS ports no certificate is written to the state directory,
        only the admin token (mode 0600).
        """
        makeService(self.parse("-p", "127.0.0.1:7000=echo"), MemoryReactorClock())
        self.assertEqual(os.listdir(self.stateDir), ["admin-token"])
        token = Path(self.stateDir) / "admin-token"
        self.assertEqual(os.stat(token).st_mode & 0o777, 0o600)
        self.assertGreaterEqual(len(token.read_text().strip()), 40)

    def test_tokenKept(self):
        """
        The admin token is made once and the same on the next start; the
        service checks it.
        """
        first = makeService(
            self.parse("-p", "127.0.0.1:7000=echo"), MemoryReactorClock()
        )
        second = makeService(
            self.parse("-p", "127.0.0.1:7000=echo"), MemoryReactorClock()
        )
        token = (Path(self.stateDir) / "admin-token").read_text().strip()
        self.assertEqual(first.adminToken, token)
        self.assertEqual(second.adminToken, token)
        self.assertTrue(second.checkToken(token))
        self.assertFalse(second.checkToken(token[:-1]))
        self.assertFalse(second.checkToken(""))

    def test_unwritableStateDir(self):
        """
        A state directory that can't be made stops the start with its path.
        """
        blocker = Path(self.mktemp()).absolute()
        blocker.write_text("a file, not a folder")
        options = Options()
        options.parseOptions(["--state-dir", str(blocker / "state"), "-p", "8443"])
        error = self.assertRaises(
            SystemExit, makeService, options, MemoryReactorClock()
        )
        self.assertIn(f"state directory {blocker / 'state'}", str(error))

    def test_ownerFromTwistd(self):
        """
        The files' owner is twistd's --uid, with its group by default.
        """
        server = ServerOptions()
        server.parseOptions(
            [
                "--uid",
                "65534",
                "multiport",
                "-p",
                "7000=echo",
                "--state-dir",
                self.stateDir,
            ]
        )
        self.assertEqual(_owner(server.subOptions)[0], 65534)
        self.assertIsNone(_owner(Options()))


class PluginTests(SynchronousTestCase):
    """
    twistd finds the multiport subcommand.
    """

    def test_serviceMaker(self):
        """
        getPlugins(IServiceMaker) has multiport, pointing at multiport.daemon.tap.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("multiport", makers)
        self.assertIs(makers["multiport"].options, Options)

    def test_twistdCommandLine(self):
        """
        twistd's own option parser takes the multiport subcommand.
        """
        self.patch(sys, "stdout", io.StringIO())
        server = ServerOptions()
        server.parseOptions(
            [
                "multiport",
                "--ports",
                "127.0.0.1:7000=echo",
                "--state-dir",
                self.mktemp(),
            ]
        )
        self.assertEqual(server.subCommand, "multiport")
        self.assertEqual(server.subOptions.config.ports[0].name, "tcp:127.0.0.1:7000")


class StatusOptionsTests(OptionsTestsMixin, SynchronousTestCase):
    """
    The status port: on 127.0.0.1:9099 unless moved, removed or configured.
    """

    status = True

    def statusPorts(self, options: Options) -> list[str]:
        return [p.name for p in options.config.ports if p.handler == "status"]

    def test_default(self):
        """
        The default configuration has a status port on 127.0.0.1:9099.
        """
        self.assertEqual(self.statusPorts(self.parse()), ["tcp:127.0.0.1:9099"])

    def test_moved(self):
        """
        --status moves it; a bare port number stays on loopback.
        """
        self.assertEqual(
            self.statusPorts(self.parse("--status", "9100")), ["tcp:127.0.0.1:9100"]
        )
        self.assertEqual(
            self.statusPorts(self.parse("--status", "[::1]:9100")), ["tcp:[::1]:9100"]
        )

    def test_removed(self):
        """
        --no-status serves none.
        """
        self.assertEqual(self.statusPorts(self.parse("--no-status")), [])

    def test_configuredReplacesDefault(self):
        """
        A [[port]] with handler status replaces the default one.
        """
        path = Path(self.mktemp())
        path.write_text(
            '[[port]]\nport = 9200\ninterface = "127.0.0.1"\nhandler = "status"\n'
        )
        self.assertEqual(
            self.statusPorts(self.parse("--config", str(path))), ["tcp:127.0.0.1:9200"]
        )

    def test_configuredAndOption(self):
        """
        --status together with a configured status port is an error.
        """
        path = Path(self.mktemp())
        path.write_text('[[port]]\nport = 9200\nhandler = "status"\n')
        error = self.assertRaises(
            usage.UsageError, self.parse, "--config", str(path), "--status", "9100"
        )
        self.assertIn("has a status port already", str(error))

    def test_statusTakesNoHandler(self):
        """
        --status with a handler is refused.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--status", "9100=echo")
        self.assertIn("takes [HOST:]PORT, no handler", str(error))

    def test_statusAndNoStatus(self):
        """
        --status and --no-status contradict each other.
        """
        self.assertRaises(
            usage.UsageError, self.parse, "--status", "9100", "--no-status"
        )

    def test_statsDumpService(self):
        """
        makeService adds the SIGUSR2 dump service beside the ports.
        """
        service = makeService(
            self.parse("--no-status", "-p", "127.0.0.1:7000=echo"), MemoryReactorClock()
        )
        self.assertIsInstance(
            service.getServiceNamed("multiport:stats-dump"), StatsDumpService
        )


class ReadyLineTests(OptionsTestsMixin, SynchronousTestCase):
    """
    Once the ports listen, one line says how many and how long start-up
    took since the command line was read.
    """

    def test_line(self):
        """
        The line counts the ports and the seconds from postOptions to the
        services' start.
        """
        options = self.parse("-p", "127.0.0.1:7000=echo,127.0.0.1:7001=echo")
        self.assertIsNotNone(options.startedAt)
        service = makeService(options, MemoryReactorClock())
        [ready] = [s for s in service if isinstance(s, ReadyLine)]
        ready.clock = lambda: options.startedAt + 1.25
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        lines = [formatEvent(e) for e in events if "ready:" in formatEvent(e)]
        self.assertEqual(
            lines,
            ["ready: 2 ports listening, 1.250 s after the command line was read"],
        )

    def test_freeze(self):
        """
        In the daemon (makeService on the global reactor) what start-up made
        is frozen out of the collector's generations once the ports listen;
        with a reactor given (tests) nothing is.
        """
        self.addCleanup(gc.unfreeze)
        ReadyLine(1, None).startService()
        self.assertEqual(gc.get_freeze_count(), 0)
        ReadyLine(1, None, freeze=True).startService()
        self.assertGreater(gc.get_freeze_count(), 0)
        options = self.parse("-p", "127.0.0.1:7000=echo")
        [ready] = [
            s
            for s in makeService(options, MemoryReactorClock())
            if isinstance(s, ReadyLine)
        ]
        self.assertFalse(ready.freeze)

    def test_notParsed(self):
        """
        Options that were never parsed have no start time: no line.
        """
        with capturedLogs() as events:
            ReadyLine(1, None).startService()
        self.assertEqual(events, [])


class LogFormatTests(OptionsTestsMixin, SynchronousTestCase):
    """
    --log-format json points twistd's --logger at multiport's JSON observer.
    """

    def test_json(self):
        """
        With -n, JSON goes to standard output.
        """
        self.addCleanup(logformat.configure, "-")
        server = ServerOptions()
        server.parseOptions(
            [
                "-n",
                "multiport",
                "--log-format",
                "json",
                "--no-status",
                "--state-dir",
                self.stateDir,
            ]
        )
        # twistd resolves the dotted name it was given.
        self.assertIs(server["logger"], logformat.jsonLogger)
        self.assertEqual(logformat._destination, "-")

    def test_jsonToLogfile(self):
        """
        Daemonized, JSON goes to twistd's log file.
        """
        self.addCleanup(logformat.configure, "-")
        server = ServerOptions()
        server.parseOptions(
            [
                "--logfile",
                "x.log",
                "multiport",
                "--log-format",
                "json",
                "--no-status",
                "--state-dir",
                self.stateDir,
            ]
        )
        self.assertEqual(logformat._destination, "x.log")

    def test_text(self):
        """
        The default text goes through multiport's text observer, to the file
        twistd would write.
        """
        self.addCleanup(logformat.configure, "-")
        server = ServerOptions()
        server.parseOptions(["multiport", "--no-status", "--state-dir", self.stateDir])
        self.assertIs(server["logger"], logformat.textLogger)
        self.assertEqual(logformat._destination, "twistd.log")

    def test_textForeground(self):
        """
        With -n, text goes to standard output.
        """
        self.addCleanup(logformat.configure, "-")
        server = ServerOptions()
        server.parseOptions(
            ["-n", "multiport", "--no-status", "--state-dir", self.stateDir]
        )
        self.assertIs(server["logger"], logformat.textLogger)
        self.assertEqual(logformat._destination, "-")

    def test_textLeftToTwistd(self):
        """
        A logger or syslog chosen on the command line, or a daemon told to
        log to standard output (which twistd refuses with its own message),
        keep twistd's choice.
        """
        for twistdArgs in (
            ["--logger", "twisted.logger.jsonFileLogObserver"],
            ["--syslog"],
            ["--logfile", "-"],
        ):
            server = ServerOptions()
            server.parseOptions(
                [*twistdArgs, "multiport", "--no-status", "--state-dir", self.stateDir]
            )
            self.assertIsNot(server["logger"], logformat.textLogger, twistdArgs)

    def test_unknown(self):
        """
        Another format is an error naming it.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--log-format", "xml")
        self.assertIn("'xml' is not text or json", str(error))

    def test_rotation(self):
        """
        --log-rotate-size and --log-rotate-keep reach the log file's
        settings; by default twistd's 1 MB and at most 10 rotated files.
        """
        self.addCleanup(logformat.configure, "-")
        for extra, size, keep in (
            ([], 1_000_000, 10),
            (["--log-rotate-size", "0", "--log-rotate-keep", "3"], 0, 3),
        ):
            server = ServerOptions()
            server.parseOptions(
                [
                    "--logfile",
                    "x.log",
                    "multiport",
                    "--no-status",
                    "--state-dir",
                    self.stateDir,
                    *extra,
                ]
            )
            self.assertEqual(
                (logformat._destination, logformat._rotateSize, logformat._rotateKeep),
                ("x.log", size, keep),
            )

    def test_badRotation(self):
        """
        A rotation setting that is not a whole number in range is an error
        naming the option and the value.
        """
        for option, value in (
            ("--log-rotate-size", "-1"),
            ("--log-rotate-size", "1MB"),
            ("--log-rotate-keep", "0"),
            ("--log-rotate-keep", "1001"),
            ("--log-rotate-keep", "\N{SUPERSCRIPT TWO}"),
        ):
            error = self.assertRaises(usage.UsageError, self.parse, option, value)
            self.assertIn(option, str(error))
            self.assertIn(repr(value), str(error))


class DefaultStatusQuietTests(OptionsTestsMixin, SynchronousTestCase):
    """
    The default status port logs no connection lines.
    """

    status = True

    def test_quiet(self):
        """
        Polls and scrapes don't flood the log; other ports still log.
        """
        config = self.parse("-p", "7000=echo").config
        self.assertEqual(
            [(p.handler, p.logConnections) for p in config.ports],
            [("echo", True), ("status", False)],
        )


class StatusIgnoresDefaultPoliciesTests(OptionsTestsMixin, SynchronousTestCase):
    """
    [defaults] policies don't lock the operator out of the implicit status
    port.
    """

    status = True

    def test_allowNotInherited(self):
        """
        An allow list in [defaults] applies to served ports, not to the
        default status port.
        """
        from multiport.ports.policies import Policy

        path = Path(self.mktemp())
        path.write_text(
            '[defaults]\nallow = ["10.0.0.0/8"]\n'
            '[[port]]\nport = 7000\nhandler = "echo"\n'
        )
        echo, status = self.parse("--config", str(path)).config.ports
        self.assertIsNotNone(echo.policy.allow)
        self.assertEqual((status.handler, status.policy), ("status", Policy()))


class WorkerSocketsOptionTests(OptionsTestsMixin, SynchronousTestCase):
    """
    C{--worker-sockets} chooses how workers share a port's socket.
    """

    def test_sharedByDefault(self):
        """
        Without the option the workers share one socket per port.
        """
        self.assertFalse(self.parse("-p", "7000=echo").reusePort)

    def test_reusePort(self):
        """
        C{reuseport} gives the worker pool a socket per worker.
        """
        options = self.parse(
            "-p",
            "127.0.0.1:7000=echo",
            "--workers",
            "2",
            "--worker-sockets",
            "reuseport",
        )
        self.assertTrue(options.reusePort)
        pool = makeService(options, MemoryReactorClock())
        self.assertTrue(pool.reusePort)

    def test_bad(self):
        """
        Any other value is a usage error naming the option and the value.
        """
        error = self.assertRaises(
            usage.UsageError, self.parse, "--worker-sockets", "each"
        )
        self.assertIn("--worker-sockets", str(error))
        self.assertIn("'each'", str(error))


class ImportTests(SynchronousTestCase):
    """
    Importing the plugin's module changes nothing global; makeService
    installs multiport's reactor unless one was chosen.
    """

    def python(self, script: str) -> str:
        import subprocess

        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()

    def test_importInstallsNothing(self):
        """
        Importing L{multiport.daemon.tap}, or any module of the package,
        leaves the reactor uninstalled.
        """
        self.assertEqual(
            self.python(
                "import importlib, pkgutil, sys, multiport, multiport.daemon.tap\n"
                "for m in pkgutil.walk_packages(multiport.__path__, 'multiport.'):\n"
                "    if m.name != 'multiport.ctl.__main__':\n"
                "        importlib.import_module(m.name)\n"
                "print('twisted.internet.reactor' in sys.modules)"
            ),
            "False",
        )

    def test_prefersOurReactor(self):
        """
        With no reactor chosen, multiport's epoll reactor is installed.
        """
        self.assertEqual(
            self.python(
                "from multiport.daemon.tap import preferOurReactor\n"
                "preferOurReactor()\n"
                "from twisted.internet import reactor\n"
                "print(type(reactor).__name__)"
            ),
            "MultiportEPollReactor",
        )

    def test_keepsChosenReactor(self):
        """
        A reactor installed already (C{twistd --reactor}) stays.
        """
        self.assertEqual(
            self.python(
                "from twisted.internet import selectreactor\n"
                "selectreactor.install()\n"
                "from multiport.daemon.tap import preferOurReactor\n"
                "preferOurReactor()\n"
                "from twisted.internet import reactor\n"
                "print(type(reactor).__name__)"
            ),
            "SelectReactor",
        )
