"""
What each C{multiport-ctl} command does, given its parsed arguments: one
call or a few of the admin API, and a line or a table printed.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Callable

from multiport.ctl.client import (
    CtlError,
    adminToken,
    baseURL,
    call,
    callJSON,
    readingToken,
)
from multiport.ctl.table import Sample, _cell, portsTable, sample, watchTable


def _name(answer: object, fallback: str) -> str:
    if isinstance(answer, dict) and "name" in answer:
        return str(answer["name"])
    return fallback


def _ports(args: argparse.Namespace) -> list[object]:
    answer = callJSON(baseURL(args), "GET", "ports", token=readingToken(args))
    ports = answer.get("ports") if isinstance(answer, dict) else None
    if not isinstance(ports, list):
        raise CtlError("the answer to GET /api/ports has no list of ports")
    return ports


def _status(args: argparse.Namespace) -> None:
    if args.json:
        _, data = call(baseURL(args), "GET", "ports", token=readingToken(args))
        text = data.decode("utf-8", "replace")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    print(portsTable(_ports(args)))


#: Clears a terminal and puts the cursor at its top left (ANSI).
_CLEAR = "\x1b[H\x1b[2J"


def _watch(
    args: argparse.Namespace,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], object] | None = None,
) -> None:
    clock = time.monotonic if clock is None else clock
    sleep = time.sleep if sleep is None else sleep
    base = baseURL(args)
    where = urllib.parse.urlsplit(base).netloc
    inPlace = sys.stdout.isatty()
    before: Sample | None = None
    shown = 0
    try:
        while True:
            try:
                ports = _ports(args)
            except CtlError as e:
                if before is None:
                    raise
                raise CtlError(
                    f"the daemon at {where} went away after {shown} "
                    f"refresh{'' if shown == 1 else 'es'}: {e}"
                ) from None
            now = sample(ports, clock())
            title = (
                f"multiport at {where}, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                f"every {args.interval:g} s"
            )
            if inPlace:
                sys.stdout.write(_CLEAR + title + " (Ctrl-C to stop)\n\n")
            elif shown:
                sys.stdout.write("\n" + title + "\n")
            else:
                sys.stdout.write(title + "\n")
            sys.stdout.write(watchTable(ports, now, before) + "\n")
            sys.stdout.flush()
            shown += 1
            before = now
            if args.count is not None and shown >= args.count:
                return
            # The refresh interval of an interactive command, not a wait
            # for something to happen.
            sleep(args.interval)
    except KeyboardInterrupt:
        sys.stdout.write("\n")


def _add(args: argparse.Namespace) -> None:
    token = adminToken(args)
    answer = callJSON(baseURL(args), "POST", "ports", args.body, token)
    print(f"added {_name(answer, str(args.spec['port']))}")


def _change(args: argparse.Namespace) -> None:
    token = adminToken(args)
    path = "ports/" + urllib.parse.quote(args.name, safe="")
    answer = callJSON(baseURL(args), "PUT", path, args.body, token)
    print(f"changed {_name(answer, args.name)}")


def _remove(args: argparse.Namespace) -> None:
    token = adminToken(args)
    path = "ports/" + urllib.parse.quote(args.name, safe="")
    answer = callJSON(baseURL(args), "DELETE", path, token=token)
    draining = answer.get("draining") if isinstance(answer, dict) else None
    line = f"removed {_name(answer, args.name)}"
    if isinstance(draining, int):
        line += f" ({draining} connection{'' if draining == 1 else 's'} draining)"
    print(line)


def _reload(args: argparse.Namespace) -> None:
    token = adminToken(args)
    answer = callJSON(baseURL(args), "POST", "reload", token=token)
    if not isinstance(answer, dict):
        raise CtlError("the answer to POST /api/reload is not an object")
    counts = []
    for key in ("added", "removed", "changed"):
        names = answer.get(key)
        names = names if isinstance(names, list) else []
        for name in names:
            print(f"{key} {name}")
        counts.append(f"{len(names)} {key}")
    counts.append(f"{_cell(answer.get('unchanged'))} unchanged")
    print("reloaded: " + ", ".join(counts))


def _upgrade(args: argparse.Namespace) -> None:
    token = adminToken(args)
    answer = callJSON(baseURL(args), "POST", "upgrade", token=token)
    if not isinstance(answer, dict) or not isinstance(answer.get("pid"), int):
        raise CtlError("the answer to POST /api/upgrade has no pid")
    print(f"upgraded: the new daemon (pid {answer['pid']}) serves every port")
