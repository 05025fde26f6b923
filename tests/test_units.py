"""
The systemd units shipped with the package, and C{multiport-ctl
systemd-units DIR}, which writes them.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from multiport.ctl.main import main
from multiport.ctl.systemdunits import UNITS, defaultTwistd


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


class SystemdUnitsTests(SynchronousTestCase):
    """
    C{multiport-ctl systemd-units DIR} writes multiport.service and
    multiport.socket with this installation's paths.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir()

    def test_writes(self) -> None:
        """
        Both units are written, the twistd and configuration paths filled
        in, with what the issue asks of the service.
        """
        status, out, _ = run(
            "systemd-units", str(self.folder), "--config", "/srv/m.toml"
        )
        self.assertEqual(status, 0)
        self.assertEqual(sorted(p.name for p in self.folder.iterdir()), sorted(UNITS))
        self.assertIn(f"wrote {self.folder / 'multiport.service'}", out)
        service = (self.folder / "multiport.service").read_text()
        self.assertIn(
            f"ExecStart={defaultTwistd()} --nodaemon --pidfile= multiport "
            "--config /srv/m.toml",
            service,
        )
        self.assertNotIn("@", service.replace("$MAINPID", ""))
        for line in (
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=45",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "StateDirectory=multiport",
            "NoNewPrivileges=yes",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "NotifyAccess=all",
        ):
            self.assertIn(f"\n{line}\n", service)
        socketUnit = (self.folder / "multiport.socket").read_text()
        self.assertIn("\nListenStream=0.0.0.0:80\n", socketUnit)

    def test_refusesToOverwrite(self) -> None:
        """
        A unit already there is kept unless --force.
        """
        (self.folder / "multiport.service").write_text("mine")
        status, _, err = run("systemd-units", str(self.folder))
        self.assertEqual(status, 1)
        self.assertIn("multiport.service: exists already (--force replaces it)", err)
        self.assertEqual((self.folder / "multiport.service").read_text(), "mine")
        self.assertEqual(run("systemd-units", "--force", str(self.folder))[0], 0)

    def test_notAFolder(self) -> None:
        """
        A DIR that is not a folder is an error naming it.
        """
        status, _, err = run("systemd-units", str(self.folder / "nope"))
        self.assertEqual(status, 1)
        self.assertIn(f"{self.folder / 'nope'}: not a folder", err)

    def test_relativeTwistd(self) -> None:
        """
        systemd wants absolute paths: a relative --twistd is refused.
        """
        status, _, err = run("systemd-units", str(self.folder), "--twistd", "twistd")
        self.assertEqual(status, 1)
        self.assertIn("--twistd 'twistd': systemd needs an absolute path", err)


class VerifyTests(SynchronousTestCase):
    """
    C{systemd-analyze verify} finds nothing to say about the units.
    """

    def setUp(self) -> None:
        self.tool = shutil.which("systemd-analyze")
        if self.tool is None:
            raise SkipTest("systemd-analyze (Debian's systemd) is missing")
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir()
        # ExecStart must name an executable that exists.
        self.assertEqual(
            run("systemd-units", str(self.folder), "--twistd", "/bin/true")[0], 0
        )

    def verify(self) -> subprocess.CompletedProcess[str]:
        assert self.tool is not None
        return subprocess.run(
            [self.tool, "verify", *(str(self.folder / name) for name in UNITS)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_clean(self) -> None:
        """
        No error and no warning (it only warns, exit status 0, for an
        unknown value: the output must be empty too).
        """
        result = self.verify()
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))

    def test_noticesAMistake(self) -> None:
        """
        The check has teeth: a bad value planted in the service is reported.
        """
        service = self.folder / "multiport.service"
        service.write_text(service.read_text().replace("Type=notify", "Type=notfy"))
        self.assertIn("Failed to parse service type", self.verify().stderr)


class PackageDataTests(SynchronousTestCase):
    """
    The units are in the wheel.
    """

    def test_listed(self) -> None:
        """
        setup.cfg's package_data lists every file of multiport/ctl/systemd.
        """
        import configparser

        root = Path(__file__).parent.parent
        config = configparser.ConfigParser()
        config.read(root / "setup.cfg")
        listed = {
            name.strip()
            for name in config["options.package_data"]["multiport.ctl"].split(",")
        }
        shipped = {
            f"systemd/{path.name}"
            for path in (root / "multiport/ctl/systemd").iterdir()
        }
        self.assertEqual(listed, shipped)
