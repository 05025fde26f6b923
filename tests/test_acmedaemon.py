"""
A real C{twistd multiport} daemon getting its certificate from pebble:
with C{--workers}, the main process orders once and every worker serves.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.pebble import freeTCPPort, startPebble
from tests.support import Daemon, configuredDaemon, waitUntil
from tests.test_acmepebble import NAME, served


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
            folder,
            f"""\
            [acme]
            directory = "{pebble.directory}"
            directory_ca = "{pebble.ca}"

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
            """,
            "--workers",
            "2",
        )
        self.addCleanup(daemon.stop)
        daemon.waitFor(r"obtained a certificate for a\.test", timeout=60)
        root = pebble.root()
        # Each worker looks for the new certificate every few seconds.
        waitUntil(lambda: all(served(https, root) is not None for _ in range(8)), 30)
        self.assertEqual(
            sum("ordering a certificate" in line for line in daemon.lines), 1
        )


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
