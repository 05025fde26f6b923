"""
A real C{twistd multiport} daemon getting its certificate from pebble:
with C{--workers}, the main process orders once and every worker serves,
for the ports configured at start and for those added while running.
"""

from __future__ import annotations

import grp
import io
import json
import os
import pwd
import re
import signal
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from multiport import ctl
from tests.pebble import Pebble, freeTCPPort, startPebble
from tests.support import Daemon, configuredDaemon, waitUntil
from tests.test_acmepebble import NAME, served
from tests.test_live import freePort
from tests.test_workers import getJSON


def acmeToml(pebble: Pebble, http: int, https: int, acme: str = "") -> str:
    """
    The configuration file of an https port ordering C{NAME} from
    C{pebble}, with an http port that redirects to it; C{acme}: more lines
    of the C{[acme]} table.
    """
    return textwrap.dedent(
        f"""\
        [acme]
        directory = "{pebble.directory}"
        directory_ca = "{pebble.ca}"
        {acme}

        [[port]]
        port = {https}
        interface = "127.0.0.1"
        handler = "https"
        tls = {{ acme = ["{NAME}"] }}

        [[port]]
        port = {http}
        interface = "127.0.0.1"
        handler = "http"
        options = {{ redirect_https = {https} }}
        """
    )


def servedEverywhere(port: int, root: bytes, name: str) -> bool:
    """
    Whether 8 connections in a row (whichever worker takes each) get a
    certificate for C{name} that verifies against C{root}.
    """
    return all(served(port, root, name) is not None for _ in range(8))


class WorkersTests(SynchronousTestCase):
    """
    ACME with C{--workers 2}.
    """

    def test_workersServeWhatMainOrders(self):
        """
        The certificate is ordered once; every connection, whichever
        worker takes it, gets pebble's certificate afterwards.
        """
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        daemon = configuredDaemon(
            folder, acmeToml(pebble, http, https), "--workers", "2"
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"obtained a certificate for a\.test", timeout=60)
        root = pebble.root()
        # Each worker looks for the new certificate every few seconds.
        waitUntil(lambda: servedEverywhere(https, root, NAME), 30)
        self.assertEqual(
            sum("ordering a certificate" in line for line in daemon.lines), 1
        )


def mainProcessLine(text: str) -> str:
    """
    A pattern for the log lines holding C{text} (a pattern) that the main
    process wrote (a worker's lines carry its number).
    """
    return rf"^(?!.*worker \d).*{text}"


class WorkersLiveTests(SynchronousTestCase):
    """
    With C{--workers 2}, ACME ports added and removed while running, through
    the admin API and SIGHUP, as in one process.
    """

    def ctl(self, status: int, state: Path, *args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = ctl.main(
                ["--status", f"127.0.0.1:{status}", "--state-dir", str(state), *args]
            )
        self.assertEqual(code, 0, err.getvalue())
        return out.getvalue()

    def test_addAndRemoveLive(self):
        """
        A port with C{acme} added through the admin API, then another added
        by SIGHUP, each gets pebble's certificate (ordered once, by the
        main process) in every worker; removing them (API, SIGHUP) stops
        their renewals in the main process.
        """
        http, first, second = freePort(), freePort(), freePort()
        pebble = startPebble(self, http, first)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        table = f"""\
            [acme]
            directory = "{pebble.directory}"
            directory_ca = "{pebble.ca}"
            challenges = ["http-01"]

            [[port]]
            port = {http}
            interface = "127.0.0.1"
            handler = "http"
            options = {{ redirect_https = {first} }}
            """
        daemon = configuredDaemon(folder, table, "--workers", "2")
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"worker \d \(pid \d+\) serving", 2)
        status = daemon.listening(2)["status"][1]
        state = folder / "state"
        ordering = mainProcessLine("ordering a certificate")

        self.ctl(
            status,
            state,
            "add",
            f"127.0.0.1:{first}=https",
            "--set",
            f'tls={{"acme": ["{NAME}"]}}',
        )
        daemon.waitFor(rf"obtained a certificate for {NAME}", timeout=60)
        root = pebble.root()
        waitUntil(lambda: servedEverywhere(first, root, NAME), 30)
        name = f"tcp:127.0.0.1:{first}"
        port = next(p for p in getJSON(status, "/status")["ports"] if p["name"] == name)
        self.assertEqual(
            (port["acme"]["names"], port["acme"]["issued"]), ([NAME], True)
        )

        other = "b.test"
        (folder / "multiport.toml").write_text(
            textwrap.dedent(table)
            + f"[[port]]\nport = {second}\ninterface = '127.0.0.1'\n"
            f"handler = 'https'\ntls = {{ acme = ['{other}'] }}\n"
        )
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(rf"obtained a certificate for {other}", timeout=60)
        waitUntil(lambda: servedEverywhere(second, root, other), 30)

        self.ctl(status, state, "remove", name)
        daemon.waitFor(mainProcessLine(rf"no port orders {NAME} any more"))
        (folder / "multiport.toml").write_text(textwrap.dedent(table))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(mainProcessLine(rf"no port orders {other} any more"))
        daemon.stop()
        orders = [line for line in daemon.lines if re.search(ordering, line)]
        self.assertEqual(len(orders), 2, orders)


class ReloadTableTests(SynchronousTestCase):
    """
    A SIGHUP that changes the C{[acme]} table, with C{--workers 2}.
    """

    def test_newDirectory(self):
        """
        Another directory (and email): its certificate is ordered at once
        and every worker serves it; until then the ports keep the first
        CA's, never falling back to the self-signed one.  A bad table is
        refused, naming the key, and changes nothing.
        """
        http, https = freePort(), freePort()
        one = startPebble(self, http, https)
        two = startPebble(self, http, https)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()

        daemon = configuredDaemon(
            folder,
            acmeToml(one, http, https, 'email = "ops@example.org"'),
            "--workers",
            "2",
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(rf"obtained a certificate for {NAME}", timeout=60)
        first, second = one.root(), two.root()
        waitUntil(lambda: servedEverywhere(https, first, NAME), 30)

        config = folder / "multiport.toml"
        newTable = acmeToml(two, http, https, 'email = "new@example.org"')
        config.write_text(newTable)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(
            mainProcessLine(r"\[acme\] email, directory, directory_ca changed: applied")
        )
        for _ in range(4):
            self.assertTrue(
                served(https, first) or served(https, second),
                "neither CA's certificate served",
            )
        daemon.waitFor(rf"obtained a certificate for {NAME}", count=2, timeout=60)
        waitUntil(lambda: servedEverywhere(https, second, NAME), 30)
        acme = folder / "state" / "acme"
        for pebble in (one, two):
            host = f"127.0.0.1_{pebble.port}"
            self.assertTrue((acme / host / "certificates" / NAME / "cert.pem").exists())
        account = json.loads(
            (acme / f"127.0.0.1_{two.port}" / "account.json").read_text()
        )
        self.assertEqual(account["body"]["contact"], ["mailto:new@example.org"])

        config.write_text(newTable.replace(two.directory, "ftp://127.0.0.1/dir"))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(r"reload failed, nothing changed: .*acme\.directory")
        self.assertTrue(servedEverywhere(https, second, NAME))


class PrivilegesTests(SynchronousTestCase):
    """
    ACME in a daemon that drops privileges with C{--uid}.
    """

    def test_ordersAfterDroppingPrivileges(self):
        """
        The order placed after twistd drops to --uid succeeds, and the
        account key, certificate key and certificate belong to that user,
        the keys mode 0600.
        """
        if os.geteuid() != 0:
            raise SkipTest("dropping privileges needs root (CI runs as root)")
        try:
            user = pwd.getpwnam("nobody")
            group = grp.getgrgid(user.pw_gid)
        except KeyError:
            raise SkipTest("no user 'nobody' on this machine") from None
        http, https = freeTCPPort(), freeTCPPort()
        pebble = startPebble(self, http, https)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        # After the drop the daemon reads the state directory and pebble's
        # CA file: the test's folders (mkdtemp's are 0700) must let it in.
        top = Path.cwd()
        for path in (folder, pebble.folder):
            while path != top and path.is_relative_to(top):
                path.chmod(path.stat().st_mode | 0o711)
                path = path.parent
        (folder / "multiport.toml").write_text(
            f'[acme]\ndirectory = "{pebble.directory}"\n'
            f'directory_ca = "{pebble.ca}"\n'
            f"[[port]]\nport = {https}\ninterface = '127.0.0.1'\n"
            f"handler = 'https'\ntls = {{ acme = ['{NAME}'] }}\n"
        )
        daemon = Daemon(
            [
                "--no-status",
                "--config",
                str(folder / "multiport.toml"),
                "--state-dir",
                str(folder / "state"),
            ],
            str(folder),
            twistdArgs=["--uid", user.pw_name, "--gid", group.gr_name],
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"obtained a certificate for a\.test", timeout=60)
        root = pebble.root()
        waitUntil(lambda: served(https, root), 30)
        acme = next((folder / "state" / "acme").iterdir())
        for path, mode in (
            (acme / "account-key.pem", 0o600),
            (acme / "certificates" / NAME / "key.pem", 0o600),
            (acme / "certificates" / NAME / "cert.pem", 0o644),
        ):
            info = path.stat()
            self.assertEqual((info.st_uid, info.st_mode & 0o777), (user.pw_uid, mode))
        daemon.stop()
        self.assertNotIn("Traceback", "".join(daemon.lines))
