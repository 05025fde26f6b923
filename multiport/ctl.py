"""
C{multiport-ctl}: the command-line client of the daemon's admin API.

It shows (once, or refreshed every second) the ports of a running daemon,
adds, changes and removes them, and asks the daemon to reload its
configuration file, over HTTP to the status port (everything under
C{/api/}).  Calls carry the admin token: the one given with
C{--admin-token-file} or C{$MULTIPORT_ADMIN_TOKEN}, else the one the daemon
keeps in its state directory.  A blocking command: the standard library's
C{urllib}, no reactor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from multiport import __version__
from multiport.config.files import FileError, readRegularFile
from multiport.config.model import defaultStateDir, formatAddress
from multiport.config.portspec import parsePortItem
from multiport.errors import ConfigError
from multiport.status.admintoken import (
    ENVIRONMENT,
    MAX_TOKEN_FILE,
    TOKEN_FILE,
    givenToken,
)
from multiport.text import alignTable

#: The daemon's own default status port (L{multiport.daemon.tap.DEFAULT_STATUS};
#: not imported, so that this command stays quick to start).
DEFAULT_STATUS = "127.0.0.1:9099"

#: Seconds to wait for the daemon to answer.
TIMEOUT = 30.0

PROG = "multiport-ctl"

Address = tuple[str, int]


class CtlError(Exception):
    """
    A failure reported on one line, with exit status 1.
    """


def parseStatus(text: str) -> Address:
    """
    C{--status}: C{[HOST:]PORT} as the daemon's own C{--status} takes it (a
    bare port is on 127.0.0.1, IPv6 in brackets).

    @raise argparse.ArgumentTypeError: if it is not that.
    """
    try:
        item = parsePortItem(text, repr(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if item.handler is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: takes [HOST:]PORT, no handler")
    if item.port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: port 0 can't be reached")
    return ("127.0.0.1" if item.host is None else item.host, item.port)


def parseURL(text: str) -> str:
    """
    C{--url}: the status port as C{http://HOST:PORT} (or C{https://}), a
    trailing slash allowed; the base that C{/api/...} paths are added to.

    @raise argparse.ArgumentTypeError: if it is not such a URL.
    """
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected http://HOST:PORT or https://HOST:PORT"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the status port's address only, without a path"
        )
    if parts.username is not None or parts.password is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: no user in the URL; the admin token is given with "
            "--admin-token-file or $" + ENVIRONMENT
        )
    netloc = formatAddress(parts.hostname, port) if port else parts.hostname
    return f"{parts.scheme}://{netloc}"


def baseURL(args: argparse.Namespace) -> str:
    """
    The status port's base URL from C{--url} or C{--status}.
    """
    if args.url is not None:
        return str(args.url)
    return "http://" + formatAddress(*args.status)


def parseSpec(text: str) -> dict[str, object]:
    """
    A C{--ports} item, C{[HOST:]PORT[=HANDLER[+tls]]}, as the keys of a
    port's JSON body; keys the item leaves out are left out, so that the
    daemon's defaults apply.

    @raise argparse.ArgumentTypeError: naming the item, if it does not
        follow the grammar.
    """
    try:
        request = parsePortItem(text, repr(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    body: dict[str, object] = {"port": request.port}
    if request.host is not None:
        body["interface"] = request.host
    if request.handler is not None:
        body["handler"] = request.handler
    if request.tls is not None:
        body["tls"] = request.tls
    return body


def _refuseConstant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def jsonValue(text: str) -> object:
    """
    C{text} parsed as JSON if it parses, else the string itself: C{100},
    C{false} and C{[1, 2]} are JSON, C{127.0.0.1:5432} a string.
    (C{NaN} and C{Infinity}, which JSON does not have, stay strings.)
    """
    try:
        return json.loads(text, parse_constant=_refuseConstant)
    except ValueError:
        return text


def parseSetting(text: str) -> tuple[str, object]:
    """
    C{KEY=VALUE}, the value parsed by L{jsonValue}.

    @raise argparse.ArgumentTypeError: without C{=} or without a key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, jsonValue(value)


def portBody(
    spec: Mapping[str, object],
    options: Sequence[tuple[str, object]],
    settings: Sequence[tuple[str, object]],
) -> dict[str, object]:
    """
    The JSON body of an added or changed port.

    @param spec: The keys from SPEC (L{parseSpec}).
    @param options: C{--option} pairs: the handler's options.
    @param settings: C{--set} pairs: more keys of the port.
    @raise ValueError: if a C{--set} contradicts SPEC or C{--option}.
    """
    body = dict(spec)
    for key, value in settings:
        if key in spec:
            raise ValueError(
                f"--set {key}: SPEC says {key} already ({json.dumps(spec[key])})"
            )
        if key == "options" and options:
            raise ValueError("--set options can't be combined with --option")
        body[key] = value
    if options:
        body["options"] = dict(options)
    return body


def readToken(path: Path) -> str:
    """
    The admin token the daemon keeps in its state directory: the stripped
    text of C{path}.

    @raise CtlError: if it can't be read or is empty.
    """
    try:
        token = (
            readRegularFile(path, MAX_TOKEN_FILE, "the admin token")
            .decode("utf-8")
            .strip()
        )
    except (FileError, UnicodeDecodeError) as e:
        reason = getattr(e, "reason", None) or str(e)
        raise CtlError(
            f"cannot read the admin token {path}: {reason}; run as the "
            "daemon's user or root, point --state-dir at the daemon's, or give "
            f"the token with --admin-token-file or ${ENVIRONMENT}"
        ) from None
    if not token:
        raise CtlError(f"the admin token file {path} is empty")
    return token


@frozen
class Token:
    """
    An admin token, and where it was read (for the error when the daemon
    refuses it).
    """

    value: str
    source: str


#: What to do about a token the daemon refused or did not get.
_TOKEN_HINT = (
    "give the daemon's token with --admin-token-file or $" + ENVIRONMENT + ", "
    "or point --state-dir at the daemon's state directory"
)


def adminToken(args: argparse.Namespace) -> Token:
    """
    The admin token: C{--admin-token-file} (or its alias C{--token-file}),
    else C{$MULTIPORT_ADMIN_TOKEN}, else the daemon's own file in the state
    directory, exactly as the daemon chooses it.

    @raise CtlError: naming the file or variable that gives no token.
    """
    try:
        given = givenToken(args.admin_token_file, os.environ)
    except ConfigError as e:
        raise CtlError(str(e)) from None
    if given is not None:
        return Token(*given)
    stateDir = Path(args.state_dir) if args.state_dir else defaultStateDir()
    path = stateDir / TOKEN_FILE
    return Token(readToken(path), str(path))


def readingToken(args: argparse.Namespace) -> Token | str:
    """
    The admin token for a call that only reads, or why there is none: the
    call goes without one then, and the reason is shown if the daemon asks
    for it.
    """
    try:
        return adminToken(args)
    except CtlError as e:
        return str(e)


def _errorMessage(
    error: urllib.error.HTTPError, where: str, token: Token | str | None
) -> str:
    text = error.read().decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if error.code == 401 and isinstance(token, Token):
        return f"the daemon refused the admin token from {token.source}; {_TOKEN_HINT}"
    if error.code == 401 and isinstance(token, str):
        return f"the daemon asks for the admin token, and none was found ({token})"
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    if error.code == 421:
        return (
            f"the status port refuses requests for the name {where!r}: reach it "
            "by its address, or list the name in its allowed_hosts option"
        )
    if error.code in (404, 405):
        return f"no multiport status API at {where}"
    return str(error.reason or "error")


def call(
    base: str,
    method: str,
    path: str,
    body: object = None,
    token: Token | str | None = None,
) -> tuple[int, bytes]:
    """
    One call of the admin API.

    @param base: The status port's URL (L{baseURL}).
    @param path: The path under C{/api/}, already percent-encoded.
    @param body: What to send as JSON, if anything.
    @param token: The admin token to send, or why there is none.
    @return: The HTTP status code and the body of a successful answer.
    @raise CtlError: for an error answer, or a daemon that can't be reached.
    """
    where = urllib.parse.urlsplit(base).netloc
    url = f"{base}/api/{path}"
    headers = {"Accept": "application/json", "User-Agent": f"{PROG}/{__version__}"}
    data = None
    if body is not None:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    elif method in ("POST", "PUT"):
        data = b""
    if isinstance(token, Token):
        headers["Authorization"] = f"Bearer {token.value}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    # No proxy from the environment: the status port is reached directly.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        raise CtlError(f"{_errorMessage(e, where, token)} (HTTP {e.code})") from None
    except urllib.error.URLError as e:
        reason = e.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise CtlError(f"cannot reach the status port at {where}: {text}") from None
    except http.client.HTTPException:
        # Something answered, but not in HTTP (an echo port sends the
        # request back): no status port there.
        raise CtlError(f"no multiport status API at {where}") from None
    except OSError as e:
        text = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise CtlError(f"cannot reach the status port at {where}: {text}") from None


def callJSON(
    base: str,
    method: str,
    path: str,
    body: object = None,
    token: Token | str | None = None,
) -> Any:
    """
    L{call}, its answer parsed as JSON.

    @raise CtlError: also for an answer that is not JSON.
    """
    status, data = call(base, method, path, body, token)
    try:
        return json.loads(data)
    except ValueError:
        raise CtlError(
            f"no multiport status API at {urllib.parse.urlsplit(base).netloc}: "
            f"/api/{path} answered with something that is not JSON (HTTP {status})"
        ) from None


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return str(value)


_COLUMNS = ("port", "handler", "state", "current", "accepted", "received", "sent")


def _portCells(port: Mapping[str, object]) -> tuple[str, str, str]:
    """
    The name, handler and state cells of a port of C{GET /api/ports}.
    """
    handler = _cell(port.get("handler"))
    if port.get("tls"):
        handler += "+tls"
    if port.get("draining"):
        state = "draining"
    elif port.get("listening"):
        state = "listening"
    elif port.get("listening") is None:
        state = "-"
    else:
        state = "stopped"
    return _cell(port.get("name")), handler, state


def _counters(port: Mapping[str, object]) -> Mapping[str, object]:
    counters = port.get("counters")
    return counters if isinstance(counters, dict) else {}


def portsTable(ports: Sequence[object]) -> str:
    """
    The ports of C{GET /api/ports} as a plain-text table, like the SIGUSR2
    dump's; what an entry lacks shows as C{-}.
    """
    rows = [_COLUMNS]
    for port in ports:
        if not isinstance(port, dict):
            continue
        counters = _counters(port)
        rows.append(
            (
                *_portCells(port),
                _cell(counters.get("current")),
                _cell(counters.get("accepted")),
                _cell(counters.get("bytesReceived")),
                _cell(counters.get("bytesSent")),
            )
        )
    return alignTable(rows, left=3)


#: The counters L{watchTable} shows a rate per second of, and the column.
_RATES = (("accepted", "conn/s"), ("bytesReceived", "in/s"), ("bytesSent", "out/s"))

_WATCH_COLUMNS = (
    "port",
    "handler",
    "state",
    "current",
    "accepted",
    "conn/s",
    "received",
    "in/s",
    "sent",
    "out/s",
)

#: A refresh of C{watch}: when (C{time.monotonic()}) and each port's counters.
Sample = tuple[float, dict[str, Mapping[str, object]]]


def sample(ports: Sequence[object], now: float) -> Sample:
    """
    The counters of C{ports} by port name, taken at C{now}.
    """
    return now, {
        str(port.get("name")): _counters(port)
        for port in ports
        if isinstance(port, dict)
    }


def _rate(
    now: Mapping[str, object],
    before: Mapping[str, object] | None,
    key: str,
    seconds: float,
) -> str:
    if before is None or seconds <= 0:
        return "-"
    new, old = now.get(key), before.get(key)
    if not isinstance(new, int) or not isinstance(old, int) or new < old:
        return "-"
    return f"{(new - old) / seconds:.0f}"


def watchTable(ports: Sequence[object], now: Sample, before: Sample | None) -> str:
    """
    The table of C{watch}: L{portsTable}'s columns with the rate per second
    of new connections, bytes received and bytes sent since C{before}
    beside the totals (C{-} on the first refresh, for a port that is new,
    or for a counter that went back).
    """
    seconds = now[0] - before[0] if before is not None else 0.0
    rows = [_WATCH_COLUMNS]
    for port in ports:
        if not isinstance(port, dict):
            continue
        counters = _counters(port)
        old = before[1].get(str(port.get("name"))) if before is not None else None
        rates = [_rate(counters, old, key, seconds) for key, _ in _RATES]
        rows.append(
            (
                *_portCells(port),
                _cell(counters.get("current")),
                _cell(counters.get("accepted")),
                rates[0],
                _cell(counters.get("bytesReceived")),
                rates[1],
                _cell(counters.get("bytesSent")),
                rates[2],
            )
        )
    return alignTable(rows, left=3)


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


def _positiveSeconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.05 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(
            f"expected seconds from 0.05 to 3600, got {text!r}"
        )
    return seconds


def _positiveCount(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, 1 or more, got {text!r}"
        )
    return count


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


if __name__ == "__main__":
    raise SystemExit(main())
