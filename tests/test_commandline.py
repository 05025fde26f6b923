"""
The daemon's command line as a user meets it: a real C{twistd -n multiport}
process for every kind of mistake, and the admin token's sources.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from multiport.daemon.tap import Options
from multiport.status.admintoken import ENVIRONMENT
from tests.support import TWISTD, Daemon


def twistd(
    *args: str, cwd: str = ".", env: dict[str, str] | None = None
) -> tuple[int, str]:
    """
    Run C{twistd -n multiport ARGS} to its end; its exit status and output
    (standard output and error together).
    """
    environment = dict(os.environ)
    environment.pop(ENVIRONMENT, None)
    environment.update(env or {})
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "multiport", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def echoDaemon(
    case: SynchronousTestCase,
    folder: Path,
    *args: str,
    status: str = "127.0.0.1:0",
    env: dict[str, str] | None = None,
) -> tuple[Daemon, dict[str, tuple[str, int]]]:
    """
    A daemon in C{folder} with an echo port on 127.0.0.1 and a status port
    at C{status}, stopped when C{case} ends; it and its listening ports
    (L{Daemon.listening}).
    """
    environment = dict(os.environ)
    environment.update(env or {})
    daemon = Daemon(
        [
            "--ports",
            "127.0.0.1:0=echo",
            "--status",
            status,
            "--state-dir",
            str(folder / "state"),
            *args,
        ],
        str(folder),
        env=environment,
    )
    case.addCleanup(daemon.stop)
    return daemon, daemon.listening(2)


class UsageErrorTests(SynchronousTestCase):
    """
    Every mistake in an option's value ends the same way: exit status 1,
    the usage text, then one line naming the option or item and what is
    wrong; never a traceback.
    """

    def assertUsageError(self, args: list[str], message: str) -> None:
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        code, output = twistd(
            "--state-dir", str(folder / "state"), *args, cwd=str(folder)
        )
        self.assertNotIn("Traceback", output)
        self.assertEqual(code, 1, output)
        self.assertIn("Usage:", output)
        self.assertIn("--ports", output)
        lastLine = output.rstrip("\n").rsplit("\n", 1)[-1]
        self.assertTrue(
            lastLine.endswith(": " + message), f"{lastLine!r} !~ {message!r}"
        )

    def test_bareUnknownPort(self):
        """
        A bare port without a well-known handler.
        """
        self.assertUsageError(
            ["--ports", "17001"],
            "--ports item 1 '17001': port 17001 has no well-known handler; "
            "name one (PORT=HANDLER); known handlers: agent-check, chargen, "
            "daytime, discard, echo, http, https, qotd, relay, status, websocket",
        )

    def test_unknownHandler(self):
        """
        A handler nobody provides.
        """
        self.assertUsageError(
            ["--ports", "7000=nosuch"],
            "--ports item 1 '7000=nosuch': unknown handler 'nosuch'; known "
            "handlers: agent-check, chargen, daytime, discard, echo, http, "
            "https, qotd, relay, status, websocket",
        )

    def test_samePortTwice(self):
        """
        The same address twice.
        """
        self.assertUsageError(
            ["--ports", "7=echo,7=echo"],
            "--ports item 2 '7=echo': 0.0.0.0:7 is configured twice (also at "
            "--ports item 1 '7=echo')",
        )

    def test_overlap(self):
        """
        Two addresses that overlap on one port number.
        """
        self.assertUsageError(
            ["--ports", "0.0.0.0:7000=echo,127.0.0.1:7000=echo"],
            "--ports item 2 '127.0.0.1:7000=echo': 127.0.0.1:7000 overlaps "
            "0.0.0.0:7000 (also at --ports item 1 '0.0.0.0:7000=echo')",
        )

    def test_portOutOfRange(self):
        """
        A port number out of range.
        """
        self.assertUsageError(
            ["--ports", "99999"],
            "--ports item 1 '99999': port 99999 out of range 0-65535",
        )

    def test_badGrammar(self):
        """
        An item that does not follow the grammar.
        """
        self.assertUsageError(
            ["--ports", "7000=echo+tls+tls"],
            "--ports item 1 '7000=echo+tls+tls': unknown suffix '+tls+tls'; only "
            "'+tls' is known",
        )

    def test_badHost(self):
        """
        A host that is not an address.
        """
        self.assertUsageError(
            ["--ports", "[fe80::1::2]:7000=echo"],
            "--ports item 1 '[fe80::1::2]:7000=echo': 'fe80::1::2' in brackets "
            "is not an IPv6 address",
        )

    def test_backlog(self):
        """
        --backlog out of range names the option.
        """
        self.assertUsageError(
            ["--backlog", "0"],
            "--backlog: expected a whole number from 1 to 65535, got '0'",
        )
        self.assertUsageError(
            ["--backlog", "many"],
            "--backlog: expected a whole number from 1 to 65535, got 'many'",
        )

    def test_interface(self):
        """
        An --interface that is not an address.
        """
        self.assertUsageError(
            ["--interface", "x::y::z"], "--interface: 'x::y::z' is not an IPv6 address"
        )

    def test_drainTimeout(self):
        """
        A negative --drain-timeout.
        """
        self.assertUsageError(
            ["--drain-timeout", "-1"],
            "--drain-timeout: expected a number of seconds, 0 or more, got '-1'",
        )

    def test_tlsKeyAlone(self):
        """
        --tls-key without --tls-cert.
        """
        self.assertUsageError(["--tls-key", "k.pem"], "--tls-key: needs --tls-cert")

    def test_logFormat(self):
        """
        A log format that does not exist.
        """
        self.assertUsageError(
            ["--log-format", "xml"], "--log-format: 'xml' is not text or json"
        )

    def test_workers(self):
        """
        A worker count that is not one.
        """
        self.assertUsageError(
            ["--workers", "x"], "--workers: expected 1 to 256 or auto, got 'x'"
        )

    def test_transport(self):
        """
        A transport that does not exist.
        """
        self.assertUsageError(
            ["--transport", "fast"],
            "--transport: expected multiport or twisted, got 'fast'",
        )

    def test_statusWithHandler(self):
        """
        --status takes no handler.
        """
        self.assertUsageError(
            ["--status", "9100=echo"],
            "--status '9100=echo': takes [HOST:]PORT, no handler",
        )

    def test_statusAndNoStatus(self):
        """
        --status and --no-status contradict each other.
        """
        self.assertUsageError(
            ["--status", "9100", "--no-status"],
            "--status: can't be combined with --no-status",
        )

    def test_exposedStatus(self):
        """
        A status port other machines can reach, with a token the daemon
        would make.
        """
        self.assertUsageError(
            ["--ports", "127.0.0.1:0=echo", "--status", "0.0.0.0:0"],
            "--status '0.0.0.0:0': the status port 0.0.0.0:0 can be reached "
            "from other machines: give its admin token with --admin-token-file "
            "or $MULTIPORT_ADMIN_TOKEN, or bind it to 127.0.0.1",
        )

    def test_missingTokenFile(self):
        """
        An --admin-token-file that can't be read.
        """
        self.assertUsageError(
            ["--admin-token-file", "/nonexistent/token"],
            "--admin-token-file: cannot read the admin token /nonexistent/token: "
            "No such file or directory",
        )

    def test_tokenFileNotAFile(self):
        """
        An --admin-token-file that is a device is refused without reading it.
        """
        self.assertUsageError(
            ["--admin-token-file", "/dev/zero"],
            "--admin-token-file: cannot read the admin token /dev/zero: not a "
            "regular file (a character device)",
        )

    def test_unknownOption(self):
        """
        An option that does not exist.
        """
        self.assertUsageError(["--prots", "7000"], "option --prots not recognized")


class OptionsAttributeTests(SynchronousTestCase):
    """
    The daemon's own state never shadows what L{usage.Options} keeps on
    itself (its C{defaults} once did, and every usage text crashed).
    """

    def test_noShadowing(self):
        """
        After a full parse, every attribute L{usage.Options} sets has the
        type it gave it, and the daemon's own attributes use other names.
        """
        base = usage.Options()
        options = Options()
        empty = Path(self.mktemp())
        empty.write_text("")
        options.parseOptions(
            [
                "--ports",
                "127.0.0.1:0=echo",
                "--config",
                str(empty),
                "--state-dir",
                self.mktemp(),
            ]
        )
        for name, value in vars(base).items():
            if value is base:
                self.assertIs(getattr(options, name), options, f"Options.{name}")
                continue
            self.assertIs(type(getattr(options, name)), type(value), f"Options.{name}")
        own = set(vars(options)) - set(vars(base))
        self.assertEqual(own & set(dir(usage.Options)), set())
        self.assertIn("portDefaults", own)
        # The usage text, which reads those attributes, can still be made.
        self.assertIn("--ports", options.getUsage())


class AdminTokenDaemonTests(SynchronousTestCase):
    """
    The admin token a real daemon uses: given by file or environment (then
    none is made), or made in the state directory; multiport-ctl reads it
    the same ways, also from a daemon with workers.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir()
        self.tokenFile = self.folder / "token"
        self.tokenFile.write_text("given-token-0123456789\n")
        environ = dict(os.environ)
        environ.pop(ENVIRONMENT, None)
        self.patch(os, "environ", environ)

    def start(self, *args: str, env: dict[str, str] | None = None) -> str:
        """
        Start a daemon with an echo port and a status port on 127.0.0.1;
        the status port's HOST:PORT.
        """
        self.daemon, found = echoDaemon(self, self.folder, *args, env=env)
        return "{}:{}".format(*found["status"])

    def ctl(self, status: str, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = ctl.main(["--status", status, *args])
        return code, out.getvalue(), err.getvalue()

    def assertAdds(self, status: str, *tokenArgs: str) -> None:
        code, out, err = self.ctl(status, *tokenArgs, "add", "127.0.0.1:0=discard")
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith("added tcp:127.0.0.1:"), out)

    def assertRefused(self, status: str, *tokenArgs: str) -> None:
        code, out, err = self.ctl(status, *tokenArgs, "add", "127.0.0.1:0=discard")
        self.assertEqual(code, 1)
        self.assertIn("(HTTP 401)", err)

    def test_tokenFile(self):
        """
        With --admin-token-file, that token opens the API, no other does,
        and none is made in the state directory.
        """
        status = self.start("--admin-token-file", str(self.tokenFile))
        self.assertAdds(status, "--admin-token-file", str(self.tokenFile))
        other = self.folder / "other"
        other.write_text("not-the-token")
        self.assertRefused(status, "--admin-token-file", str(other))
        self.assertFalse((self.folder / "state" / "admin-token").exists())
        self.daemon.waitFor(r"the admin API's token is from --admin-token-file ")

    def test_environment(self):
        """
        With $MULTIPORT_ADMIN_TOKEN, that token opens the API, and
        multiport-ctl finds it in its own environment.
        """
        status = self.start(env={ENVIRONMENT: "from-the-environment"})
        os.environ[ENVIRONMENT] = "from-the-environment"
        self.assertAdds(status)
        os.environ[ENVIRONMENT] = "something-else"
        self.assertRefused(status)
        self.assertFalse((self.folder / "state" / "admin-token").exists())

    def test_made(self):
        """
        Without both, the daemon makes one in its state directory, which
        multiport-ctl reads with --state-dir.
        """
        status = self.start()
        self.assertTrue((self.folder / "state" / "admin-token").exists())
        self.assertAdds(status, "--state-dir", str(self.folder / "state"))

    def test_exposedWithGivenToken(self):
        """
        A status port on every address starts when the token was given.
        """
        _, found = echoDaemon(
            self,
            self.folder,
            "--admin-token-file",
            str(self.tokenFile),
            status="0.0.0.0:0",
        )
        host, port = found["status"]
        self.assertEqual(host, "0.0.0.0")
        self.assertAdds(f"127.0.0.1:{port}", "--token-file", str(self.tokenFile))

    def test_workers(self):
        """
        With workers, the main process's API takes the given token, from
        the file or from the environment, the same way.
        """
        status = self.start("--workers", "2", env={ENVIRONMENT: "from-the-environment"})
        os.environ[ENVIRONMENT] = "from-the-environment"
        self.assertAdds(status)
        os.environ[ENVIRONMENT] = "wrong"
        self.assertRefused(status)
        self.daemon.stop()
        status = self.start("--workers", "2", "--admin-token-file", str(self.tokenFile))
        self.assertAdds(status, "--admin-token-file", str(self.tokenFile))


class TransportDaemonTests(SynchronousTestCase):
    """
    C{--transport twisted} reaches every process that accepts connections:
    the daemon's own, and each worker's.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir()

    def assertEchoes(self, found: dict[str, tuple[str, int]]) -> None:
        with socket.create_connection(found["echo"], timeout=10) as connection:
            connection.sendall(b"twisted transport\n")
            received = b""
            while len(received) < 18:
                chunk = connection.recv(100)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(received, b"twisted transport\n")

    def test_oneProcess(self):
        """
        The daemon says which transport it uses, and serves with it.
        """
        daemon, found = echoDaemon(self, self.folder, "--transport", "twisted")
        daemon.waitFor(
            r"accepted connections use Twisted's tcp.Server \(--transport twisted\)"
        )
        self.assertEchoes(found)

    def test_workers(self):
        """
        Each worker is told the transport, and says so.
        """
        daemon, found = echoDaemon(
            self, self.folder, "--workers", "2", "--transport", "twisted"
        )
        lines = daemon.waitFor(
            r"worker (\d): accepted connections use Twisted's tcp.Server", count=2
        )
        self.assertEqual(sorted(m.group(1) for m in lines), ["0", "1"])
        self.assertEchoes(found)

    def test_default(self):
        """
        Without the option nothing is said: multiport's transport is the
        default, as multiport's reactor is.
        """
        daemon, found = echoDaemon(self, self.folder)
        self.assertEchoes(found)
        self.assertFalse(
            [line for line in daemon.lines if "accepted connections use" in line],
            daemon.lines,
        )


class WatchDaemonTests(SynchronousTestCase):
    """
    C{multiport-ctl watch} against a real daemon.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir()
        self.daemon, found = echoDaemon(self, self.folder)
        self.status = "http://{}:{}".format(*found["status"])
        self.echo = found["echo"]

    def watch(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "multiport.ctl",
                "--url",
                self.status,
                "--state-dir",
                str(self.folder / "state"),
                "watch",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return process

    def test_refreshes(self):
        """
        C{--count 3} shows three tables, the echo port in each with its
        totals, and rates from the second on.
        """
        with socket.create_connection(self.echo, timeout=10) as client:
            client.sendall(b"hello")
            self.assertEqual(client.recv(5), b"hello")
            process = self.watch("--count", "3", "--interval", "0.2")
            out, err = process.communicate(timeout=60)
        self.assertEqual((process.returncode, err), (0, ""))
        tables = [t for t in out.split("\n\n") if t]
        self.assertEqual(len(tables), 3, out)
        for table in tables:
            title, header, *rows = table.splitlines()
            self.assertTrue(title.startswith("multiport at 127.0.0.1:"), title)
            self.assertEqual(header.split()[4:6], ["accepted", "conn/s"])
            [echo] = [
                r.split()
                for r in rows
                if r.startswith("tcp:127.0.0.1:") and " echo " in r
            ]
            self.assertEqual(echo[3:5], ["1", "1"])
            self.assertEqual((echo[6], echo[8]), ("5", "5"))
        self.assertEqual(tables[0].splitlines()[2].split()[5], "-")
        self.assertEqual(tables[2].splitlines()[2].split()[5], "0")

    def test_daemonGoesAway(self):
        """
        When the daemon stops, C{watch} says so and exits 1.
        """
        process = self.watch("--count", "600", "--interval", "0.1")
        assert process.stdout is not None
        self.assertTrue(process.stdout.readline().startswith("multiport at "))
        self.daemon.stop()
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 1)
        self.assertIn(
            f"multiport-ctl: the daemon at {self.status[7:]} went away after ", err
        )
