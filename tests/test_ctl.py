"""
Tests for L{multiport.ctl}: the C{multiport-ctl} command, against a small
HTTP server standing in for the daemon's admin API.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase

from multiport import __version__, ctl
from multiport.ctl import client as ctlClient
from multiport.ctl import commands as ctlCommands
from multiport.ctl import jsonValue, main, parseStatus, parseURL, watchTable
from multiport.daemon import tap
from multiport.status.admintoken import ENVIRONMENT

PORTS = {
    "ports": [
        {
            "name": "tcp:127.0.0.1:7001",
            "interface": "127.0.0.1",
            "port": 7001,
            "handler": "echo",
            "tls": False,
            "backlog": 511,
            "listening": True,
            "draining": False,
            "where": "--ports item 1 '127.0.0.1:7001=echo'",
            "counters": {
                "accepted": 3,
                "current": 1,
                "closed": 2,
                "bytesReceived": 10,
                "bytesSent": 12345,
            },
            "somethingNew": [1, 2],
        },
        {
            "name": "tcp:[::1]:8443",
            "handler": "https",
            "tls": True,
            "listening": False,
            "draining": True,
            "counters": {"current": 12, "accepted": 40},
        },
    ]
}


@define
class Recorded:
    """
    One request the fake daemon received.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@define
class FakeDaemon:
    """
    Records every request and answers each with C{reply}.
    """

    reply: tuple[int, bytes] = (200, b"{}")
    contentType: str = "application/json"
    requests: list[Recorded] = field(factory=list)

    def answer(self, code: int, body: object) -> None:
        self.reply = (code, json.dumps(body).encode("utf-8"))


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def _serve(self) -> None:
        daemon: FakeDaemon = self.server.daemon  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", 0))
        daemon.requests.append(
            Recorded(
                method=self.command,
                path=self.path,
                headers=dict(self.headers.items()),
                body=self.rfile.read(length) if length else b"",
            )
        )
        code, body = daemon.reply
        self.send_response(code)
        self.send_header("Content-Type", daemon.contentType)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


class CtlTestsMixin:
    """
    A fake daemon on 127.0.0.1, an admin token in a private state directory,
    and captured output.
    """

    def setUp(self) -> None:
        self.daemon = FakeDaemon()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon = self.daemon  # type: ignore[attr-defined]
        thread = threading.Thread(
            target=server.serve_forever, args=(0.01,), daemon=True
        )
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(thread.join)
        self.addCleanup(server.shutdown)
        self.status = f"127.0.0.1:{server.server_address[1]}"
        self.stateDir = Path(self.mktemp())
        self.stateDir.mkdir()
        (self.stateDir / "admin-token").write_text("s3cret-token\n")
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        environ = dict(os.environ)
        environ.pop(ENVIRONMENT, None)
        self.patch(os, "environ", environ)

    def ctl(self, *args: str) -> int:
        return main(["--status", self.status, "--state-dir", str(self.stateDir), *args])

    def assertOutput(self, code: int, expected: int, stdout: str, stderr: str = ""):
        self.assertEqual(
            (code, self.stdout.getvalue(), self.stderr.getvalue()),
            (expected, stdout, stderr),
        )

    def onlyRequest(self) -> Recorded:
        self.assertEqual(len(self.daemon.requests), 1)
        return self.daemon.requests[0]


class ListTests(CtlTestsMixin, SynchronousTestCase):
    """
    C{list} shows the ports as a table, or the daemon's JSON.
    """

    def test_table(self):
        """
        Every port is a row; what a port lacks shows as C{-}, keys the
        client doesn't know are ignored.
        """
        self.daemon.answer(200, PORTS)
        self.assertOutput(
            self.ctl("list"),
            0,
            "port                handler    state      current  accepted  "
            "received   sent\n"
            "tcp:127.0.0.1:7001  echo       listening        1         3  "
            "      10  12345\n"
            "tcp:[::1]:8443      https+tls  draining        12        40  "
            "       -      -\n",
        )

    def test_getWithoutToken(self):
        """
        C{list} is a GET of /api/ports and needs no token: none is read or
        sent.
        """
        (self.stateDir / "admin-token").unlink()
        self.daemon.answer(200, {"ports": []})
        self.assertEqual(self.ctl("list"), 0)
        request = self.onlyRequest()
        self.assertEqual((request.method, request.path), ("GET", "/api/ports"))
        self.assertNotIn("Authorization", request.headers)

    def test_noPorts(self):
        """
        Without ports the table is its header.
        """
        self.daemon.answer(200, {"ports": []})
        self.assertOutput(
            self.ctl("list"),
            0,
            "port  handler  state  current  accepted  received  sent\n",
        )

    def test_json(self):
        """
        C{--json} prints the daemon's answer as it came.
        """
        body = json.dumps(PORTS, indent=1)
        self.daemon.reply = (200, body.encode("utf-8"))
        self.assertOutput(self.ctl("list", "--json"), 0, body + "\n")

    def test_notAList(self):
        """
        An answer without a list of ports is an error.
        """
        self.daemon.answer(200, {"ports": "many"})
        self.assertOutput(
            self.ctl("list"),
            1,
            "",
            "multiport-ctl: the answer to GET /api/ports has no list of ports\n",
        )

    def test_notJSON(self):
        """
        A successful answer that is not JSON is an error.
        """
        self.daemon.reply = (200, b"<html>status</html>")
        self.assertOutput(
            self.ctl("list"),
            1,
            "",
            f"multiport-ctl: no multiport status API at {self.status}: /api/ports "
            "answered with something that is not JSON (HTTP 200)\n",
        )

    def test_optionsAfterCommand(self):
        """
        The common options work after the command's name too.
        """
        self.daemon.answer(200, {"ports": []})
        self.assertEqual(main(["list", "--status", self.status]), 0)
        self.assertEqual(self.onlyRequest().path, "/api/ports")

    def test_proxyIgnored(self):
        """
        A proxy set in the environment is not used for the status port.
        """
        environ = dict(os.environ)
        for name in ("no_proxy", "NO_PROXY"):
            environ.pop(name, None)
        environ["http_proxy"] = environ["HTTP_PROXY"] = "http://127.0.0.1:9"
        self.patch(os, "environ", environ)
        self.daemon.answer(200, {"ports": []})
        self.assertEqual(self.ctl("list"), 0)
        self.assertEqual(len(self.daemon.requests), 1)


class StatusTests(CtlTestsMixin, SynchronousTestCase):
    """
    C{status} is the table (C{list} its alias), reached by C{--status} or
    C{--url}.
    """

    def test_statusIsList(self):
        """
        C{status} prints what C{list} prints, and C{--json} works on both.
        """
        self.daemon.answer(200, PORTS)
        self.assertEqual(self.ctl("status"), 0)
        status = self.stdout.getvalue()
        self.assertEqual(self.ctl("list"), 0)
        self.assertIn("tcp:127.0.0.1:7001", status)
        self.assertEqual(self.stdout.getvalue(), status * 2)
        body = json.dumps(PORTS)
        self.daemon.reply = (200, body.encode("utf-8"))
        self.stdout.truncate(0)
        self.stdout.seek(0)
        self.assertOutput(self.ctl("status", "--json"), 0, body + "\n")

    def test_url(self):
        """
        C{--url http://HOST:PORT} reaches the status port like C{--status}.
        """
        self.daemon.answer(200, {"ports": []})
        code = main(["--url", f"http://{self.status}/", "status"])
        self.assertEqual(code, 0)
        self.assertEqual(self.onlyRequest().path, "/api/ports")

    def test_urlAfterCommand(self):
        """
        C{--url} works after the command's name too.
        """
        self.daemon.answer(200, {"ports": []})
        self.assertEqual(main(["status", "--url", f"http://{self.status}"]), 0)
        self.assertEqual(len(self.daemon.requests), 1)

    def test_urlAndStatus(self):
        """
        C{--url} and C{--status} name the same thing: both is a usage error.
        """
        code = main(["--url", f"http://{self.status}", "--status", "9100", "status"])
        self.assertEqual(code, 2)
        self.assertIn("not allowed with argument", self.stderr.getvalue())
        self.assertEqual(self.daemon.requests, [])

    def test_parseURL(self):
        """
        --url takes http or https, a host and port, IPv6 in brackets; a
        trailing slash is dropped.
        """
        self.assertEqual(parseURL("http://127.0.0.1:9099/"), "http://127.0.0.1:9099")
        self.assertEqual(parseURL("https://[::1]:9443"), "https://[::1]:9443")
        self.assertEqual(parseURL("http://localhost"), "http://localhost")

    def test_badURL(self):
        """
        A URL that is not the status port's address is a usage error naming
        it.
        """
        for value in (
            "127.0.0.1:9099",
            "ftp://127.0.0.1:9099",
            "http://127.0.0.1:9099/api/",
            "http://127.0.0.1:99999",
            "http://user:pw@127.0.0.1:9099",
        ):
            self.stderr.truncate(0)
            self.assertEqual(main(["--url", value, "status"]), 2)
            self.assertIn(f"argument --url: {value!r}", self.stderr.getvalue())


class TokenSourceTests(CtlTestsMixin, SynchronousTestCase):
    """
    The admin token comes from --admin-token-file (alias --token-file),
    else $MULTIPORT_ADMIN_TOKEN, else the daemon's file in the state
    directory: the daemon's own order.
    """

    def sentToken(self) -> str:
        return self.onlyRequest().headers["Authorization"]

    def test_stateDirectory(self):
        """
        Without a file or the variable, the state directory's token.
        """
        self.daemon.answer(200, {})
        self.assertEqual(self.ctl("reload"), 0)
        self.assertEqual(self.sentToken(), "Bearer s3cret-token")

    def test_file(self):
        """
        --admin-token-file beats the state directory.
        """
        path = Path(self.mktemp())
        path.write_text("from-a-file\n")
        self.daemon.answer(200, {})
        self.assertEqual(self.ctl("reload", "--admin-token-file", str(path)), 0)
        self.assertEqual(self.sentToken(), "Bearer from-a-file")

    def test_tokenFileAlias(self):
        """
        --token-file is --admin-token-file.
        """
        path = Path(self.mktemp())
        path.write_text("from-the-alias")
        self.daemon.answer(200, {})
        self.assertEqual(self.ctl("--token-file", str(path), "reload"), 0)
        self.assertEqual(self.sentToken(), "Bearer from-the-alias")

    def test_environment(self):
        """
        $MULTIPORT_ADMIN_TOKEN beats the state directory.
        """
        os.environ[ENVIRONMENT] = "from-the-environment"
        self.daemon.answer(200, {})
        self.assertEqual(self.ctl("reload"), 0)
        self.assertEqual(self.sentToken(), "Bearer from-the-environment")

    def test_fileBeatsEnvironment(self):
        """
        --admin-token-file beats $MULTIPORT_ADMIN_TOKEN, as in the daemon.
        """
        os.environ[ENVIRONMENT] = "from-the-environment"
        path = Path(self.mktemp())
        path.write_text("from-a-file")
        self.daemon.answer(200, {})
        self.assertEqual(self.ctl("--admin-token-file", str(path), "reload"), 0)
        self.assertEqual(self.sentToken(), "Bearer from-a-file")

    def test_emptyEnvironment(self):
        """
        An empty $MULTIPORT_ADMIN_TOKEN is an error naming it; nothing is
        sent.
        """
        os.environ[ENVIRONMENT] = " "
        self.assertOutput(
            self.ctl("reload"),
            1,
            "",
            "multiport-ctl: MULTIPORT_ADMIN_TOKEN: the admin token is empty\n",
        )
        self.assertEqual(self.daemon.requests, [])

    def test_missingFile(self):
        """
        An --admin-token-file that can't be read is an error naming it.
        """
        path = Path(self.mktemp()).absolute()
        self.assertOutput(
            self.ctl("--admin-token-file", str(path), "reload"),
            1,
            "",
            f"multiport-ctl: --admin-token-file: cannot read the admin token "
            f"{path}: No such file or directory\n",
        )
        self.assertEqual(self.daemon.requests, [])

    def test_readsCarryToken(self):
        """
        C{status} sends the token when there is one, so that it works where
        the daemon asks for it on reads too.
        """
        self.daemon.answer(200, {"ports": []})
        self.assertEqual(self.ctl("status"), 0)
        self.assertEqual(self.sentToken(), "Bearer s3cret-token")


class WatchTests(CtlTestsMixin, SynchronousTestCase):
    """
    C{watch} refreshes the table with rates per second until stopped.
    """

    def test_rates(self):
        """
        Beside each total, its rate per second since the previous refresh;
        C{-} on the first refresh, for a new port and for a counter that went
        back.
        """
        ports = [
            {
                "name": "a",
                "handler": "echo",
                "listening": True,
                "counters": {
                    "current": 2,
                    "accepted": 30,
                    "bytesReceived": 4000,
                    "bytesSent": 100,
                },
            },
            {
                "name": "b",
                "handler": "http",
                "listening": True,
                "counters": {
                    "current": 0,
                    "accepted": 5,
                    "bytesReceived": 10,
                    "bytesSent": 7,
                },
            },
        ]
        before = (
            10.0,
            {
                "a": {"accepted": 10, "bytesReceived": 0, "bytesSent": 200},
            },
        )
        table = watchTable(ports, (12.0, {}), before)
        self.assertEqual(
            table.splitlines(),
            [
                "port  handler  state      current  accepted  conn/s  received"
                "  in/s  sent  out/s",
                "a     echo     listening        2        30      10      4000"
                "  2000   100      -",
                "b     http     listening        0         5       -        10"
                "     -     7      -",
            ],
        )
        first = watchTable(ports, (12.0, {}), None)
        self.assertEqual(first.splitlines()[1].split()[5], "-")

    def test_count(self):
        """
        C{--count N} stops after N refreshes, C{--interval} apart; each
        refresh is a table.
        """
        self.daemon.answer(200, PORTS)
        slept = []
        args = ctl.makeParser().parse_args(
            ["--status", self.status, "watch", "--count", "3", "--interval", "0.5"]
        )
        ctlCommands._watch(
            args, clock=iter([1.0, 2.0, 3.0]).__next__, sleep=slept.append
        )
        self.assertEqual(slept, [0.5, 0.5])
        self.assertEqual(len(self.daemon.requests), 3)
        self.assertEqual(self.stdout.getvalue().count("port   "), 3)

    def test_goneAway(self):
        """
        When the daemon stops answering, C{watch} says so and exits 1.
        """
        self.daemon.answer(200, PORTS)
        status = self.status

        def stopDaemon(seconds: float) -> None:
            self.daemon.answer(404, {"error": "gone"})

        self.patch(ctlCommands.time, "sleep", stopDaemon)
        code = main(["--status", status, "watch", "--count", "5"])
        self.assertEqual(code, 1)
        self.assertIn(
            f"multiport-ctl: the daemon at {status} went away after 1 refresh: gone",
            self.stderr.getvalue(),
        )

    def test_interrupted(self):
        """
        Ctrl-C ends C{watch} with status 0.
        """
        self.daemon.answer(200, PORTS)

        def interrupt(seconds: float) -> None:
            raise KeyboardInterrupt()

        self.patch(ctlCommands.time, "sleep", interrupt)
        self.assertEqual(self.ctl("watch"), 0)
        self.assertEqual(len(self.daemon.requests), 1)

    def test_badInterval(self):
        """
        An interval or count that is not a positive number is a usage error.
        """
        self.assertEqual(self.ctl("watch", "--interval", "0"), 2)
        self.assertIn("argument --interval", self.stderr.getvalue())
        self.assertEqual(self.ctl("watch", "--count", "x"), 2)
        self.assertIn("argument --count", self.stderr.getvalue())
        self.assertEqual(self.daemon.requests, [])


class AddChangeTests(CtlTestsMixin, SynchronousTestCase):
    """
    C{add} and C{change} send the port as JSON built from SPEC, C{--option}
    and C{--set}, with the admin token.
    """

    def test_add(self):
        """
        C{add} POSTs /api/ports with the token; it prints the name the
        daemon answered.
        """
        self.daemon.answer(201, {"name": "tcp:127.0.0.1:7001", "port": 7001})
        code = self.ctl(
            "add",
            "127.0.0.1:7001=relay+tls",
            "--option",
            "upstream=127.0.0.1:5432",
            "--option",
            "splice=false",
            "--option",
            'alpn=["h2", "http/1.1"]',
            "--set",
            "max_connections=100",
            "--set",
            "drain_timeout=2.5",
        )
        self.assertOutput(code, 0, "added tcp:127.0.0.1:7001\n")
        request = self.onlyRequest()
        self.assertEqual((request.method, request.path), ("POST", "/api/ports"))
        self.assertEqual(request.headers["Authorization"], "Bearer s3cret-token")
        self.assertEqual(request.headers["Content-Type"], "application/json")
        self.assertEqual(
            request.json(),
            {
                "port": 7001,
                "interface": "127.0.0.1",
                "handler": "relay",
                "tls": True,
                "options": {
                    "upstream": "127.0.0.1:5432",
                    "splice": False,
                    "alpn": ["h2", "http/1.1"],
                },
                "max_connections": 100,
                "drain_timeout": 2.5,
            },
        )

    def test_addLeavesDefaults(self):
        """
        What SPEC leaves out is left out of the body, so that the daemon's
        defaults apply; port 0 gets its real number back.
        """
        self.daemon.answer(201, {"name": "tcp:0.0.0.0:40123", "port": 40123})
        self.assertOutput(self.ctl("add", "0=echo"), 0, "added tcp:0.0.0.0:40123\n")
        self.assertEqual(self.onlyRequest().json(), {"port": 0, "handler": "echo"})

    def test_addIPv6(self):
        """
        An IPv6 SPEC sends the bare address as the interface.
        """
        self.daemon.answer(201, {"name": "tcp:[::1]:7", "port": 7})
        self.assertEqual(self.ctl("add", "[::1]:7"), 0)
        self.assertEqual(self.onlyRequest().json(), {"port": 7, "interface": "::1"})

    def test_setTLSTable(self):
        """
        C{--set} takes JSON objects, such as a tls table.
        """
        self.daemon.answer(201, {"name": "tcp:0.0.0.0:7443"})
        self.assertEqual(
            self.ctl("add", "7443=echo", "--set", 'tls={"cert": "/etc/site.pem"}'),
            0,
        )
        self.assertEqual(
            self.onlyRequest().json(),
            {"port": 7443, "handler": "echo", "tls": {"cert": "/etc/site.pem"}},
        )

    def test_change(self):
        """
        C{change} PUTs the port under its percent-encoded name.
        """
        self.daemon.answer(200, {"name": "tcp:[::1]:7000"})
        code = self.ctl(
            "change", "tcp:[::1]:7000", "[::1]:7000=discard", "--set", "backlog=64"
        )
        self.assertOutput(code, 0, "changed tcp:[::1]:7000\n")
        request = self.onlyRequest()
        self.assertEqual(
            (request.method, request.path),
            ("PUT", "/api/ports/tcp%3A%5B%3A%3A1%5D%3A7000"),
        )
        self.assertEqual(request.headers["Authorization"], "Bearer s3cret-token")
        self.assertEqual(
            request.json(),
            {"port": 7000, "interface": "::1", "handler": "discard", "backlog": 64},
        )

    def test_tokenFile(self):
        """
        C{--token-file} beats the state directory's token.
        """
        path = Path(self.mktemp())
        path.write_text("  other-token \n")
        self.daemon.answer(201, {"name": "tcp:0.0.0.0:7000"})
        self.assertEqual(self.ctl("add", "7000=echo", "--token-file", str(path)), 0)
        self.assertEqual(
            self.onlyRequest().headers["Authorization"], "Bearer other-token"
        )

    def test_defaultStateDir(self):
        """
        Without C{--state-dir} the token is read from the daemon's default
        state directory.
        """
        self.patch(ctlClient, "defaultStateDir", lambda: self.stateDir)
        self.daemon.answer(201, {"name": "tcp:0.0.0.0:7000"})
        self.assertEqual(main(["--status", self.status, "add", "7000=echo"]), 0)
        self.assertEqual(
            self.onlyRequest().headers["Authorization"], "Bearer s3cret-token"
        )

    def test_missingToken(self):
        """
        A token file that can't be read is an error naming it; nothing is
        sent.
        """
        path = self.stateDir / "admin-token"
        path.unlink()
        self.assertOutput(
            self.ctl("add", "7000=echo"),
            1,
            "",
            f"multiport-ctl: cannot read the admin token {path}: No such file or "
            "directory; run as the daemon's user or root, point --state-dir at "
            "the daemon's, or give the token with --admin-token-file or "
            "$MULTIPORT_ADMIN_TOKEN\n",
        )
        self.assertEqual(self.daemon.requests, [])

    def test_emptyToken(self):
        """
        An empty token file is an error naming it.
        """
        path = self.stateDir / "admin-token"
        path.write_text("\n")
        self.assertOutput(
            self.ctl("remove", "tcp:0.0.0.0:7000"),
            1,
            "",
            f"multiport-ctl: the admin token file {path} is empty\n",
        )
        self.assertEqual(self.daemon.requests, [])

    def test_badSpec(self):
        """
        A SPEC that does not follow the --ports grammar is a usage error
        naming it; nothing is sent.
        """
        self.assertEqual(self.ctl("add", "7000=Echo"), 2)
        self.assertIn(
            "multiport-ctl add: error: argument SPEC: '7000=Echo': bad handler "
            "name 'Echo'\n",
            self.stderr.getvalue(),
        )
        self.assertEqual(self.ctl("change", "tcp:0.0.0.0:7000", "70000"), 2)
        self.assertIn(
            "'70000': port 70000 out of range 0-65535", self.stderr.getvalue()
        )
        self.assertEqual(self.daemon.requests, [])

    def test_badSetting(self):
        """
        C{--option} and C{--set} need KEY=VALUE; C{--set} may not contradict
        SPEC or C{--option}.
        """
        for args, message in [
            (("--option", "splice"), "argument --option: expected KEY=VALUE"),
            (("--set", "=5"), "argument --set: expected KEY=VALUE, got '=5'"),
            (("--set", "port=7001"), "--set port: SPEC says port already (7000)"),
            (
                ("--set", "options={}", "--option", "a=1"),
                "--set options can't be combined with --option",
            ),
        ]:
            self.assertEqual(self.ctl("add", "7000=echo", *args), 2)
            self.assertIn(message, self.stderr.getvalue())
        self.assertEqual(self.daemon.requests, [])


class RemoveReloadTests(CtlTestsMixin, SynchronousTestCase):
    """
    C{remove} DELETEs a port; C{reload} POSTs /api/reload.
    """

    def test_remove(self):
        """
        C{remove} says how many connections are draining.
        """
        self.daemon.answer(202, {"name": "tcp:0.0.0.0:7001", "draining": 3})
        self.assertOutput(
            self.ctl("remove", "tcp:0.0.0.0:7001"),
            0,
            "removed tcp:0.0.0.0:7001 (3 connections draining)\n",
        )
        request = self.onlyRequest()
        self.assertEqual(
            (request.method, request.path, request.body),
            ("DELETE", "/api/ports/tcp%3A0.0.0.0%3A7001", b""),
        )
        self.assertEqual(request.headers["Authorization"], "Bearer s3cret-token")

    def test_removeOne(self):
        """
        One draining connection is singular.
        """
        self.daemon.answer(202, {"name": "tcp:[::]:7001", "draining": 1})
        self.assertOutput(
            self.ctl("remove", "tcp:[::]:7001"),
            0,
            "removed tcp:[::]:7001 (1 connection draining)\n",
        )
        self.assertEqual(
            self.onlyRequest().path, "/api/ports/tcp%3A%5B%3A%3A%5D%3A7001"
        )

    def test_reload(self):
        """
        C{reload} prints each port added, removed and changed, then the
        counts.
        """
        self.daemon.answer(
            200,
            {
                "added": ["tcp:0.0.0.0:7002"],
                "removed": ["tcp:0.0.0.0:7000", "tcp:[::]:7000"],
                "changed": [],
                "unchanged": 4,
            },
        )
        self.assertOutput(
            self.ctl("reload"),
            0,
            "added tcp:0.0.0.0:7002\n"
            "removed tcp:0.0.0.0:7000\n"
            "removed tcp:[::]:7000\n"
            "reloaded: 1 added, 2 removed, 0 changed, 4 unchanged\n",
        )
        request = self.onlyRequest()
        self.assertEqual((request.method, request.path), ("POST", "/api/reload"))
        self.assertEqual(request.headers["Authorization"], "Bearer s3cret-token")


class ErrorTests(CtlTestsMixin, SynchronousTestCase):
    """
    Error answers and an unreachable daemon exit 1 with one line.
    """

    def test_errorAnswer(self):
        """
        The daemon's C{error} is printed with the HTTP status.
        """
        self.daemon.answer(404, {"error": "no port tcp:0.0.0.0:7001"})
        self.assertOutput(
            self.ctl("remove", "tcp:0.0.0.0:7001"),
            1,
            "",
            "multiport-ctl: no port tcp:0.0.0.0:7001 (HTTP 404)\n",
        )

    def test_refused(self):
        """
        A refused token, or a configuration the daemon refuses, is such an
        error too.
        """
        for code, message in [
            (
                401,
                f"the daemon refused the admin token from {self.stateDir}/"
                "admin-token; give the daemon's token with --admin-token-file or "
                "$MULTIPORT_ADMIN_TOKEN, or point --state-dir at the daemon's "
                "state directory",
            ),
            (400, "port[1].handler: unknown handler 'gopher'"),
            (409, "tcp:0.0.0.0:7000 is configured already"),
        ]:
            self.daemon.answer(
                code, {"error": "refused"} if code == 401 else {"error": message}
            )
            self.assertEqual(self.ctl("add", "7000=echo"), 1)
            self.assertTrue(
                self.stderr.getvalue().endswith(
                    f"multiport-ctl: {message} (HTTP {code})\n"
                )
            )

    def test_errorNotJSON(self):
        """
        An error answer that is not JSON is named by its status.
        """
        self.daemon.contentType = "text/plain"
        self.daemon.reply = (500, b"Internal Server Error")
        self.assertOutput(
            self.ctl("reload"),
            1,
            "",
            "multiport-ctl: Internal Server Error (HTTP 500)\n",
        )

    def test_noAdminAPI(self):
        """
        A 404 without a JSON error means there is no admin API there.
        """
        self.daemon.contentType = "text/html"
        self.daemon.reply = (404, b"<html>No Such Resource</html>")
        self.assertOutput(
            self.ctl("list"),
            1,
            "",
            f"multiport-ctl: no multiport status API at {self.status} (HTTP 404)\n",
        )

    def test_unreachable(self):
        """
        A status port nobody listens on is named, with the reason.
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        code = main(["--status", f"127.0.0.1:{port}", "list"])
        self.assertOutput(
            code,
            1,
            "",
            f"multiport-ctl: cannot reach the status port at 127.0.0.1:{port}: "
            "Connection refused\n",
        )


class CommandLineTests(SynchronousTestCase):
    """
    The command line itself.
    """

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", io.StringIO())
        self.patch(sys, "stderr", self.stderr)

    def test_defaultStatus(self):
        """
        The status port is the daemon's default unless --status moves it.
        """
        self.assertEqual(ctl.DEFAULT_STATUS, tap.DEFAULT_STATUS)
        self.assertEqual(
            ctl.makeParser().parse_args(["list"]).status, ("127.0.0.1", 9099)
        )

    def test_parseStatus(self):
        """
        --status takes [HOST:]PORT like the daemon's: IPv6 in brackets, a
        bare port on 127.0.0.1.
        """
        self.assertEqual(parseStatus("[::1]:9099"), ("::1", 9099))
        self.assertEqual(parseStatus("9100"), ("127.0.0.1", 9100))
        self.assertEqual(parseStatus("localhost:9100"), ("localhost", 9100))

    def test_badStatus(self):
        """
        A bad --status is a usage error.
        """
        for value in ("9100=echo", "0", "::1:9099", "host:port"):
            self.assertEqual(main(["--status", value, "list"]), 2)
            self.assertIn("argument --status:", self.stderr.getvalue())

    def test_noCommand(self):
        """
        Without a command, the usage and exit status 2.
        """
        self.assertEqual(main([]), 2)
        self.assertIn("required: COMMAND", self.stderr.getvalue())

    def test_jsonValue(self):
        """
        --option and --set values are JSON if they parse, else strings.
        """
        self.assertEqual(
            [
                jsonValue(text)
                for text in (
                    "100",
                    "0.5",
                    "false",
                    "null",
                    '"quoted"',
                    '{"a": [1]}',
                    "127.0.0.1:5432",
                    "",
                    "NaN",
                    "-Infinity",
                )
            ],
            [
                100,
                0.5,
                False,
                None,
                "quoted",
                {"a": [1]},
                "127.0.0.1:5432",
                "",
                "NaN",
                "-Infinity",
            ],
        )

    def test_module(self):
        """
        C{python -m multiport.ctl} runs the command.
        """
        result = subprocess.run(
            [sys.executable, "-m", "multiport.ctl", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(
            (result.returncode, result.stdout), (0, f"multiport-ctl {__version__}\n")
        )
