"""
C{multiport-ctl systemd-units DIR}: writes the systemd units shipped with
the package (C{multiport.service}, C{multiport.socket}) with the paths of
this installation filled in.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from multiport.ctl.client import CtlError

#: The units, in the package's C{multiport/ctl/systemd/} folder.
UNITS = ("multiport.service", "multiport.socket")

#: Where the service reads its configuration by default.
DEFAULT_CONFIG = "/etc/multiport/multiport.toml"


def defaultTwistd() -> str:
    """
    The C{twistd} installed beside this Python (a virtualenv's own).
    """
    return str(Path(sys.executable).parent / "twistd")


def unitText(name: str, twistd: str, config: str) -> str:
    """
    The text of unit C{name}, for C{twistd} and the configuration file
    C{config}.
    """
    text = resources.files("multiport.ctl").joinpath("systemd", name).read_text()
    return text.replace("@TWISTD@", twistd).replace("@CONFIG@", config)


def writeUnits(
    folder: Path, twistd: str, config: str, force: bool = False
) -> list[Path]:
    """
    Write every unit into C{folder}; the paths written.

    @raise CtlError: if C{folder} is not a folder, or a unit is there
        already (without C{force}).
    """
    if not folder.is_dir():
        raise CtlError(f"{folder}: not a folder")
    for value, what in ((twistd, "--twistd"), (config, "--config")):
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise CtlError(
                f"{what} {value!r}: systemd needs an absolute path without spaces"
            )
    paths = [folder / name for name in UNITS]
    if not force:
        for path in paths:
            if path.exists():
                raise CtlError(f"{path}: exists already (--force replaces it)")
    for path in paths:
        path.write_text(unitText(path.name, twistd, config))
    return paths


def systemdUnits(args: argparse.Namespace) -> None:
    """
    The C{systemd-units} command.
    """
    for path in writeUnits(Path(args.folder), args.twistd, args.config, args.force):
        print(f"wrote {path}")


def addCommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Add C{systemd-units} to C{multiport-ctl}'s commands.
    """
    units = commands.add_parser(
        "systemd-units",
        help="write multiport.service and an example multiport.socket into DIR",
    )
    units.add_argument("folder", metavar="DIR", help="where to write them")
    units.add_argument(
        "--twistd",
        default=defaultTwistd(),
        help="the twistd to run (default: the one beside this Python)",
    )
    units.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the daemon's configuration file (default: {DEFAULT_CONFIG})",
    )
    units.add_argument(
        "--force", action="store_true", help="replace units already there"
    )
    units.set_defaults(run=systemdUnits)
