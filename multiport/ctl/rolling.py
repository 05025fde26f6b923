"""
C{multiport-ctl drain}, C{undrain} and C{roll}: draining an instance for
its load balancer, and restarting several instances one at a time so that
the balancer always has the others to send connections to.

C{roll} does, for each instance in turn: drain (C{/healthz} answers 503
C{draining}; the balancer's health check sends new connections
elsewhere), wait at least C{--settle} seconds (the balancer's time to
notice) and until its open connections fall below C{--below} or
C{--drain-timeout} passes, upgrade it (C{--upgrade}: C{POST /api/upgrade},
a new daemon running the code on disk takes the sockets over, refusing
nothing) or run the restart command (C{--restart-command}, e.g.
C{systemctl restart multiport@{index}}), wait until C{/healthz} answers
200 (a drained daemon never does, so that is the new one), undrain, wait
C{--settle} seconds again (the balancer's time to take it back), then go
on to the next.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import frozen

from multiport.config.model import formatAddress
from multiport.ctl.arguments import parseStatus
from multiport.ctl.client import CtlError, Token, adminToken, baseURL, callJSON

#: How long one /healthz request may take.
HEALTH_TIMEOUT = 5.0

#: The fields a restart command may name, in C{str.format} braces.
COMMAND_FIELDS = ("status", "host", "port", "index", "url")


def _drainLine(answer: object) -> str:
    if not isinstance(answer, dict):
        raise CtlError("the answer to the drain is not a JSON object")
    connections = answer.get("connections")
    state = "draining" if answer.get("draining") else "not draining"
    if isinstance(connections, int):
        state += f" ({connections} connection{'' if connections == 1 else 's'} open)"
    return state


def _drain(args: argparse.Namespace) -> None:
    answer = callJSON(baseURL(args), "POST", "drain", token=adminToken(args))
    print(_drainLine(answer))


def _undrain(args: argparse.Namespace) -> None:
    answer = callJSON(baseURL(args), "POST", "undrain", token=adminToken(args))
    print(_drainLine(answer))


class Instances(Protocol):
    """
    How a roll reaches one instance (its status port's base URL): the
    admin API and C{/healthz}.  L{HTTPInstances} is the real one.
    """

    def drain(self, base: str) -> None: ...

    def undrain(self, base: str) -> None: ...

    def connections(self, base: str) -> int: ...

    def healthy(self, base: str) -> bool: ...

    def upgrade(self, base: str) -> int: ...


@frozen
class HTTPInstances:
    """
    The instances' status ports over HTTP, with one admin token for all.
    """

    token: Token

    def drain(self, base: str) -> None:
        callJSON(base, "POST", "drain", token=self.token)

    def undrain(self, base: str) -> None:
        callJSON(base, "POST", "undrain", token=self.token)

    def upgrade(self, base: str) -> int:
        """
        Upgrade the instance (C{POST /api/upgrade}); the new daemon's pid.
        """
        answer = callJSON(base, "POST", "upgrade", token=self.token)
        pid = answer.get("pid") if isinstance(answer, dict) else None
        if not isinstance(pid, int):
            raise CtlError(f"{base}: the answer to POST /api/upgrade has no pid")
        return pid

    def connections(self, base: str) -> int:
        """
        The instance's open connections on every port but status ports.
        """
        answer = callJSON(base, "GET", "ports", token=self.token)
        ports = answer.get("ports") if isinstance(answer, dict) else None
        if not isinstance(ports, list):
            raise CtlError(f"{base}: the answer to GET /api/ports has no ports")
        total = 0
        for port in ports:
            if isinstance(port, dict) and port.get("handler") != "status":
                counters = port.get("counters")
                current = counters.get("current") if isinstance(counters, dict) else 0
                total += current if isinstance(current, int) else 0
        return total

    def healthy(self, base: str) -> bool:
        """
        Whether C{/healthz} answers 200 now (refused, 503, anything else:
        not yet).
        """
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{base}/healthz", timeout=HEALTH_TIMEOUT) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False


@frozen
class RollSettings:
    """
    How long a roll waits, and for what.

    @ivar below: Restart once the instance's open connections are fewer.
    @ivar drainTimeout: ... or once this many seconds passed since the drain.
    @ivar settle: Seconds the balancer takes to see a health change: the
        least wait after a drain, and the wait after an undrain.
    @ivar readyTimeout: Seconds the restarted instance has to answer 200.
    @ivar poll: Seconds between two looks at the instance.
    """

    below: int = 1
    drainTimeout: float = 30.0
    settle: float = 2.0
    readyTimeout: float = 60.0
    poll: float = 0.2


def rollOne(
    base: str,
    instances: Instances,
    restart: Callable[[], None],
    settings: RollSettings,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    say: Callable[[str], object] = print,
) -> int:
    """
    Drain, wait, restart, wait for ready, undrain, settle: one instance.

    @return: The connections still open when the restart began.
    @raise CtlError: if the restart fails or the instance is not ready in
        time (the roll stops there; the other instances are untouched).
    """
    instances.drain(base)
    drained = clock()
    say(f"{base}: draining")
    # Polling a daemon in another process from a command-line tool: there
    # is nothing to be told by, so look at it every settings.poll seconds.
    while True:
        elapsed = clock() - drained
        count = instances.connections(base)
        if elapsed >= settings.settle and count < settings.below:
            say(f"{base}: {count} connections open after {elapsed:.1f} s")
            break
        if elapsed >= settings.drainTimeout:
            say(
                f"{base}: {count} connections still open after the drain "
                f"timeout ({settings.drainTimeout:g} s); restarting anyway"
            )
            break
        sleep(settings.poll)
    say(f"{base}: restarting")
    restart()
    started = clock()
    while not instances.healthy(base):
        if clock() - started >= settings.readyTimeout:
            raise CtlError(
                f"{base}: not ready (/healthz 200) {settings.readyTimeout:g} s "
                "after the restart; the roll stops here"
            )
        sleep(settings.poll)
    instances.undrain(base)
    say(f"{base}: ready and undrained after {clock() - started:.1f} s")
    sleep(settings.settle)
    return count


def commandRestart(
    template: str, index: int, address: tuple[str, int], base: str
) -> Callable[[], None]:
    """
    The restart of instance C{index} (from 1) at C{address}: the shell
    command C{template} with its fields filled in (L{COMMAND_FIELDS}).

    @raise CtlError: when the command fails (exit status not 0).
    """
    command = template.format(
        status=formatAddress(*address),
        host=address[0],
        port=address[1],
        index=index,
        url=base,
    )

    def restart() -> None:
        # The user's own command line, as systemd's ExecReload= runs one.
        done = subprocess.run(command, shell=True, check=False)  # noqa: S602
        if done.returncode != 0:
            raise CtlError(
                f"the restart command {command!r} failed with exit status "
                f"{done.returncode}; the roll stops here"
            )

    return restart


def upgradeRestart(instances: Instances, base: str) -> Callable[[], None]:
    """
    The upgrade of the instance at C{base}, as its restart.

    @raise CtlError: when the upgrade fails (the old daemon serves on).
    """

    def restart() -> None:
        try:
            pid = instances.upgrade(base)
        except CtlError as e:
            raise CtlError(f"{base}: {e}; the roll stops here") from None
        print(f"{base}: upgraded, new pid {pid}")

    return restart


def checkTemplate(template: str) -> str:
    """
    C{--restart-command}: a template whose braces name L{COMMAND_FIELDS}.

    @raise argparse.ArgumentTypeError: for another field or bad braces.
    """
    try:
        template.format(**{field: "" for field in COMMAND_FIELDS})
    except (KeyError, IndexError, ValueError) as e:
        raise argparse.ArgumentTypeError(
            f"{template!r}: {e}; the fields are "
            + ", ".join("{" + f + "}" for f in COMMAND_FIELDS)
            + " (write {{ and }} for braces)"
        ) from None
    return template


def _roll(args: argparse.Namespace) -> None:
    instances = HTTPInstances(adminToken(args))
    settings = RollSettings(
        below=args.below,
        drainTimeout=args.drain_timeout,
        settle=args.settle,
        readyTimeout=args.ready_timeout,
    )
    addresses: Sequence[tuple[str, int]] = args.instances
    for index, address in enumerate(addresses, start=1):
        base = "http://" + formatAddress(*address)
        restart = (
            upgradeRestart(instances, base)
            if args.upgrade
            else commandRestart(args.restart_command, index, address, base)
        )
        rollOne(base, instances, restart, settings)
    print(f"rolled {len(addresses)} instance{'' if len(addresses) == 1 else 's'}")


def _seconds(low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not low <= value <= 3600:
            raise argparse.ArgumentTypeError(
                f"expected seconds from {low:g} to 3600, got {text!r}"
            )
        return value

    return parse


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def addCommands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """
    Add C{drain}, C{undrain} and C{roll} to C{multiport-ctl}'s commands;
    C{common} adds the options every command takes.
    """
    drain = commands.add_parser(
        "drain",
        help="make /healthz answer 503 draining, so that a load balancer sends "
        "no new connections; every port keeps serving",
    )
    common(drain)
    drain.set_defaults(run=_drain)
    undrain = commands.add_parser(
        "undrain", help="end a drain: /healthz answers as before"
    )
    common(undrain)
    undrain.set_defaults(run=_undrain)

    roll = commands.add_parser(
        "roll",
        help="upgrade or restart instances one at a time: drain, wait, upgrade "
        "(or restart), wait for /healthz 200, undrain, next",
    )
    common(roll)
    roll.add_argument(
        "instances",
        metavar="HOST:PORT",
        nargs="+",
        type=parseStatus,
        help="each instance's status port, in the order to roll them (all "
        "take the same admin token)",
    )
    how = roll.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--upgrade",
        action="store_true",
        help="upgrade each instance (multiport-ctl upgrade: a new daemon running "
        "the code on disk takes over, refusing no connection)",
    )
    how.add_argument(
        "--restart-command",
        metavar="COMMAND",
        type=checkTemplate,
        help="the shell command that restarts one instance, with {index} "
        "(from 1), {status} (HOST:PORT), {host}, {port} and {url} filled in; "
        "e.g. 'systemctl restart multiport@{index}'",
    )
    roll.add_argument(
        "--below",
        metavar="N",
        type=_count,
        default=1,
        help="restart once fewer than N connections are open (default 1: none)",
    )
    roll.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=_seconds(0),
        default=30.0,
        help="restart anyway after this long (default 30)",
    )
    roll.add_argument(
        "--settle",
        metavar="SECONDS",
        type=_seconds(0),
        default=2.0,
        help="the balancer's time to see a health change (HAProxy: inter x "
        "fall, and inter x rise): the least wait after a drain, and the wait "
        "after an undrain (default 2)",
    )
    roll.add_argument(
        "--ready-timeout",
        metavar="SECONDS",
        type=_seconds(0.05),
        default=60.0,
        help="how long a restarted instance has to answer /healthz 200 (default 60)",
    )
    roll.set_defaults(run=_roll)
