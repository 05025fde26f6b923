"""
Tests for what setup.cfg puts in the wheel.
"""

from __future__ import annotations

from configparser import ConfigParser
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import multiport

ROOT = Path(multiport.__file__).resolve().parent.parent


def listedPackages() -> list[str]:
    """
    The packages setup.cfg lists.
    """
    config = ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config["options"]["packages"].split()


class PackagesTests(SynchronousTestCase):
    """
    setup.cfg lists its packages one by one (C{find:} would leave out
    C{twisted.plugins}), so a new subpackage must be added there.
    """

    def test_everySubpackageListed(self) -> None:
        """
        Every package under C{multiport/} (a folder with an
        C{__init__.py}) is in setup.cfg's C{packages}, and so in the wheel
        C{pip install .} builds.
        """
        listed = set(listedPackages())
        found = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for init in (ROOT / "multiport").rglob("__init__.py")
        }
        self.assertIn("multiport.handlers", found)
        self.assertEqual(found - listed, set())

    def test_pluginsListed(self) -> None:
        """
        C{twisted.plugins}, which holds the twistd and handler plugins
        (and has no C{__init__.py} of its own), is listed too.
        """
        listed = listedPackages()
        self.assertIn("twisted.plugins", listed)


class ModuleSizeTests(SynchronousTestCase):
    """
    A module of C{multiport/} holds one idea: none is over 500 lines.
    """

    def test_atMost500Lines(self) -> None:
        """
        Every module of the package has at most 500 lines; a longer one is
        split along its ideas.
        """
        longer = {
            str(path.relative_to(ROOT)): count
            for path in sorted((ROOT / "multiport").rglob("*.py"))
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > 500
        }
        self.assertEqual(longer, {})


class ErrorNameTests(SynchronousTestCase):
    """
    An exception's qualified name leads back to it.
    """

    def test_startupErrorResolves(self) -> None:
        """
        L{StartupError} calls itself C{multiport.StartupError} (twistd's
        daemon-mode report prints that name); the name resolves to it, so
        tools that rebuild an exception by name (trial's workers) can.
        """
        from twisted.python.reflect import namedObject, qual

        from multiport.errors import StartupError

        self.assertEqual(qual(StartupError), "multiport.StartupError")
        self.assertIs(namedObject(qual(StartupError)), StartupError)
