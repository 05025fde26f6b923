"""
C{multiport-ctl}'s command line: its parser and L{main}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from multiport import __version__
from multiport.ctl.arguments import (
    _positiveCount,
    _positiveSeconds,
    parseSetting,
    parseSpec,
    parseStatus,
    parseURL,
    portBody,
)
from multiport.ctl.client import PROG, CtlError
from multiport.ctl.commands import (
    _add,
    _change,
    _reload,
    _remove,
    _status,
    _upgrade,
    _watch,
)
from multiport.ctl.rolling import addCommands as addRollingCommands
from multiport.ctl.systemdunits import addCommand as addUnitsCommand
from multiport.status.admintoken import ENVIRONMENT, TOKEN_FILE

#: The daemon's own default status port (L{multiport.daemon.tap.DEFAULT_STATUS};
#: not imported, so that this command stays quick to start).
DEFAULT_STATUS = "127.0.0.1:9099"


def _common(parser: argparse.ArgumentParser, default: bool) -> None:
    """
    The options every command takes, before or after its name; only the
    top-level parser sets defaults, so a subcommand's copy overrides them
    only when given.
    """

    def value(real: object) -> object:
        return real if default else argparse.SUPPRESS

    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--status",
        metavar="HOST:PORT",
        type=parseStatus,
        default=value(DEFAULT_STATUS),
        help=f"the daemon's status port (default {DEFAULT_STATUS}; IPv6 as [::1]:9099)",
    )
    where.add_argument(
        "--url",
        metavar="URL",
        type=parseURL,
        default=value(None),
        help="the daemon's status port as a URL, http://HOST:PORT (instead "
        "of --status)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=value(None),
        help="the daemon's state directory, which holds the admin token it "
        f"makes ({TOKEN_FILE}); default: the daemon's own default",
    )
    parser.add_argument(
        "--admin-token-file",
        "--token-file",
        dest="admin_token_file",
        metavar="PATH",
        default=value(None),
        help=f"a file holding the admin token (else ${ENVIRONMENT}, else "
        "STATE_DIR/admin-token); --token-file is the same",
    )


def _portArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        metavar="SPEC",
        type=parseSpec,
        help="[HOST:]PORT[=HANDLER[+tls]], as in the daemon's --ports",
    )
    parser.add_argument(
        "--option",
        metavar="KEY=VALUE",
        type=parseSetting,
        action="append",
        default=[],
        help="a handler option; VALUE is JSON if it parses, else a string "
        "(may be repeated)",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        type=parseSetting,
        action="append",
        default=[],
        help="another key of the port, as in a [[port]] table "
        "(max_connections=100, drain_timeout=5); VALUE as for --option "
        "(may be repeated)",
    )


def makeParser() -> argparse.ArgumentParser:
    """
    The command line of C{multiport-ctl}.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Control a running multiport daemon through the admin API "
        "of its status port.",
        epilog="Exit status: 0 done, 1 refused by the daemon or the daemon "
        "can't be reached, 2 bad usage.",
    )
    _common(parser, default=True)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser(
        "status", aliases=["list"], help="show every port and its counters"
    )
    _common(status, default=False)
    status.add_argument(
        "--json", action="store_true", help="print the daemon's JSON answer"
    )
    status.set_defaults(run=_status)

    watch = commands.add_parser(
        "watch",
        help="show the ports and their counters, with rates per second, "
        "refreshed until Ctrl-C",
    )
    _common(watch, default=False)
    watch.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_positiveSeconds,
        default=1.0,
        help="seconds between refreshes (default 1)",
    )
    watch.add_argument(
        "--count",
        metavar="N",
        type=_positiveCount,
        default=None,
        help="stop after N refreshes (default: until Ctrl-C)",
    )
    watch.set_defaults(run=_watch)

    add = commands.add_parser("add", help="add a port")
    _common(add, default=False)
    _portArguments(add)
    add.set_defaults(run=_add, parser=add)

    change = commands.add_parser("change", help="change a port's configuration")
    _common(change, default=False)
    change.add_argument("name", metavar="NAME", help="the port, as status shows it")
    _portArguments(change)
    change.set_defaults(run=_change, parser=change)

    remove = commands.add_parser(
        "remove", help="remove a port; its connections get drain_timeout to finish"
    )
    _common(remove, default=False)
    remove.add_argument("name", metavar="NAME", help="the port, as status shows it")
    remove.set_defaults(run=_remove)

    reload = commands.add_parser(
        "reload", help="read the configuration file again and apply it"
    )
    _common(reload, default=False)
    reload.set_defaults(run=_reload)

    upgrade = commands.add_parser(
        "upgrade",
        help="replace the daemon with a new one running the code now on disk, "
        "refusing no connection",
    )
    _common(upgrade, default=False)
    upgrade.set_defaults(run=_upgrade)
    addRollingCommands(commands, lambda command: _common(command, default=False))
    addUnitsCommand(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run C{multiport-ctl}.

    @param argv: The arguments, without the program name; C{sys.argv[1:]}
        by default.
    @return: The exit status: 0 done, 1 an error answer or a daemon that
        can't be reached, 2 bad usage.
    """
    parser = makeParser()
    try:
        args = parser.parse_args(argv)
        if hasattr(args, "spec"):
            try:
                args.body = portBody(args.spec, args.option, args.set)
            except ValueError as e:
                args.parser.error(str(e))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        args.run(args)
    except CtlError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0
