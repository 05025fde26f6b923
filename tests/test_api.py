"""
Tests for the admin API on the status port, against a real service whose
ports listen on 127.0.0.1.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from multiport.config.model import Config, Defaults
from multiport.daemon.service import PortsService
from multiport.status.api import MAX_BODY
from tests.support import HANDLERS, busyPort, configFor, waitUntilOnReactor
from tests.test_live import Holder, freePort
from tests.test_status import Response, parseResponse

TOKEN = "s3cret-token"


class APITests(TestCase):
    """
    The admin API changes the running ports; each answer is checked.
    """

    def setUp(self) -> None:
        self.echo = freePort()
        self.status = freePort()
        self.stateDir = self.mktemp()
        self.rebuilt: list[Config] = []
        config = configFor(
            f"127.0.0.1:{self.echo}=echo,127.0.0.1:{self.status}=status",
            self.stateDir,
        )
        self.service = PortsService(
            config,
            HANDLERS,
            {},
            reactor,
            defaults=Defaults(interface="127.0.0.1"),
            rebuild=self.rebuild,
            adminToken=TOKEN,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.next = config

    def rebuild(self) -> Config:
        return self.next

    def call(
        self,
        method: bytes,
        path: str,
        body: object = None,
        token: str | None = TOKEN,
        raw: bytes | None = None,
    ) -> Response:
        """
        One request to the status port's site, as it arrived on it.
        """
        site = self.service.namedServices[
            f"tcp:127.0.0.1:{self.status}"
        ].factory.wrappedFactory
        channel = site.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", self.status)
        )
        channel.makeConnection(transport)
        data = raw if raw is not None else b""
        if body is not None and raw is None:
            data = json.dumps(body).encode()
        head = (
            method + b" " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\n"
        )
        if token is not None:
            head += b"Authorization: Bearer " + token.encode() + b"\r\n"
        head += b"Content-Length: %d\r\n\r\n" % (len(data),)
        channel.dataReceived(head + data)
        self.assertTrue(transport.disconnecting, transport.value())
        response = parseResponse(transport.value())
        self.assertEqual(response.header(b"content-type"), b"application/json")
        return response

    def json(self, response: Response) -> dict:
        return json.loads(response.body)

    @inlineCallbacks
    def echoes(self, port: int, data: bytes = b"hi"):
        client = Holder()
        protocol = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        protocol.transport.write(data)
        yield waitUntilOnReactor(lambda: client.received == data)
        protocol.transport.loseConnection()
        yield client.lost

    def test_list(self):
        """
        GET /api/ports lists every port with its configuration and
        counters.
        """
        response = self.call(b"GET", "/api/ports")
        self.assertEqual(response.status, 200)
        ports = self.json(response)["ports"]
        self.assertEqual(
            [(p["name"], p["handler"], p["port"]) for p in ports],
            [
                (f"tcp:127.0.0.1:{self.echo}", "echo", self.echo),
                (f"tcp:127.0.0.1:{self.status}", "status", self.status),
            ],
        )
        self.assertEqual(ports[0]["counters"]["accepted"], 0)
        self.assertTrue(ports[0]["listening"])
        self.assertFalse(ports[0]["draining"])

    def test_one(self):
        """
        GET /api/ports/NAME (percent-encoded) shows one port; 404 for an
        unknown one.
        """
        name = quote(f"tcp:127.0.0.1:{self.echo}", safe="")
        response = self.call(b"GET", f"/api/ports/{name}")
        self.assertEqual(self.json(response)["handler"], "echo")
        missing = self.call(b"GET", "/api/ports/tcp%3A127.0.0.1%3A1")
        self.assertEqual(missing.status, 404)
        self.assertIn("tcp:127.0.0.1:1", self.json(missing)["error"])

    def test_readsNeedToken(self):
        """
        Reads need the token too (the configuration names files and
        addresses): 401 without it or with a wrong one.
        """
        name = quote(f"tcp:127.0.0.1:{self.echo}", safe="")
        for path in ["/api/ports", f"/api/ports/{name}"]:
            for token in [None, "wrong"]:
                response = self.call(b"GET", path, token=token)
                self.assertEqual(response.status, 401, (path, token))
                self.assertIn("admin token", self.json(response)["error"])

    def test_changeSelfRefused(self):
        """
        A status port can't be changed through itself (into an echo port,
        say): 409, and it still answers as a status port.
        """
        name = quote(f"tcp:127.0.0.1:{self.status}", safe="")
        response = self.call(b"PUT", f"/api/ports/{name}", {"handler": "echo"})
        self.assertEqual(response.status, 409)
        self.assertIn("the port this request came in on", self.json(response)["error"])
        ports = self.json(self.call(b"GET", "/api/ports"))["ports"]
        self.assertEqual(ports[1]["handler"], "status")

    def test_nestedBody(self):
        """
        A deeply nested body is 400, not a traceback.
        """
        response = self.call(b"POST", "/api/ports", raw=b"[" * 30000)
        self.assertEqual(response.status, 400)
        self.assertEqual(
            self.json(response)["error"],
            "POST /api/ports: the body is nested too deeply",
        )

    def test_duplicateKey(self):
        """
        A key given twice is 400 naming it, not last-one-wins.
        """
        response = self.call(
            b"POST", "/api/ports", raw=b'{"port": 0, "handler": "echo", "port": 7}'
        )
        self.assertEqual(response.status, 400)
        self.assertEqual(
            self.json(response),
            {
                "error": "POST /api/ports.port: the key 'port' is given twice",
                "field": "POST /api/ports.port",
            },
        )

    def test_putWithoutHandler(self):
        """
        A PUT without a handler, for a port with no well-known one, says
        the handler is missing.
        """
        name = quote(f"tcp:127.0.0.1:{self.echo}", safe="")
        response = self.call(b"PUT", f"/api/ports/{name}", {"max_connections": 5})
        self.assertEqual(response.status, 400)
        self.assertIn("missing key 'handler'", self.json(response)["error"])

    def test_relayToItselfRefused(self):
        """
        A relay whose upstream is its own address, or a port that relays
        back to it, is refused when added or changed; a relay to another
        port of the daemon is not a loop.
        """
        relay = {
            "port": 0,
            "interface": "127.0.0.1",
            "handler": "relay",
            "options": {"upstream": f"127.0.0.1:{self.echo}"},
        }
        response = self.call(b"POST", "/api/ports", relay)
        self.assertEqual(response.status, 201)
        name, port = self.json(response)["name"], self.json(response)["port"]
        change = {"handler": "relay", "options": {"upstream": f"localhost:{port}"}}
        response = self.call(b"PUT", f"/api/ports/{quote(name, safe='')}", change)
        self.assertEqual(response.status, 409)
        self.assertIn("it would relay to itself", self.json(response)["error"])
        # The echo port relaying to the relay: round the two.
        echo = quote(f"tcp:127.0.0.1:{self.echo}", safe="")
        response = self.call(b"PUT", f"/api/ports/{echo}", change)
        self.assertEqual(response.status, 409)
        self.assertIn(
            f"(tcp:127.0.0.1:{self.echo} -> {name} -> tcp:127.0.0.1:{self.echo})",
            self.json(response)["error"],
        )

    @inlineCallbacks
    def test_add(self):
        """
        POST /api/ports adds a port (port 0 gets its real number back) that
        serves at once.
        """
        response = self.call(b"POST", "/api/ports", {"port": 0, "handler": "echo"})
        self.assertEqual(response.status, 201, response.body)
        answer = self.json(response)
        self.assertEqual(answer["name"], f"tcp:127.0.0.1:{answer['port']}")
        self.assertEqual(
            response.header(b"location"),
            b"/api/ports/" + quote(answer["name"], safe="").encode(),
        )
        yield self.echoes(answer["port"])
        self.assertIn(answer["name"], self.service.addedLive)

    def test_addErrors(self):
        """
        Bad bodies are 400 naming the field; an address in use is 409.
        """
        for body, field in (
            ({"port": 1, "handler": "nope"}, "POST /api/ports"),
            ({"port": "x"}, "POST /api/ports.port"),
            ({"port": 1, "optons": {}}, "POST /api/ports"),
            (["not", "a", "table"], "POST /api/ports"),
        ):
            response = self.call(b"POST", "/api/ports", body)
            self.assertEqual(response.status, 400, (body, response.body))
            self.assertTrue(self.json(response)["field"].startswith(field))
        notJSON = self.call(b"POST", "/api/ports", raw=b"{port = 1}")
        self.assertEqual(notJSON.status, 400)
        self.assertIn("not JSON", self.json(notJSON)["error"])
        busy = busyPort(self)
        taken = self.call(b"POST", "/api/ports", {"port": busy, "handler": "echo"})
        self.assertEqual(taken.status, 409)
        self.assertIn("already in use", self.json(taken)["error"])
        twice = self.call(b"POST", "/api/ports", {"port": self.echo, "handler": "echo"})
        self.assertEqual(twice.status, 409)
        self.assertEqual(len(self.service.ports()), 2)

    def test_tooLarge(self):
        """
        A body over the limit is 413 and changes nothing.
        """
        response = self.call(b"POST", "/api/ports", raw=b" " * (MAX_BODY + 1))
        self.assertEqual(response.status, 413)
        self.assertEqual(len(self.service.ports()), 2)

    def test_token(self):
        """
        Without the token, or with a wrong one, changes are 401 and change
        nothing.
        """
        for token in (None, "wrong", TOKEN + "x", ""):
            for method, path, body in (
                (b"POST", "/api/ports", {"port": 0}),
                (b"DELETE", f"/api/ports/tcp:127.0.0.1:{self.echo}", None),
                (b"PUT", f"/api/ports/tcp:127.0.0.1:{self.echo}", {"handler": "qotd"}),
                (b"POST", "/api/reload", None),
            ):
                response = self.call(method, path, body, token=token)
                self.assertEqual(response.status, 401, (token, method, path))
                self.assertEqual(response.header(b"www-authenticate"), b"Bearer")
        self.assertEqual(
            [(p.name, p.config.handler) for p in self.service.ports()],
            [
                (f"tcp:127.0.0.1:{self.echo}", "echo"),
                (f"tcp:127.0.0.1:{self.status}", "status"),
            ],
        )

    @inlineCallbacks
    def test_remove(self):
        """
        DELETE answers 202; the port stops listening and drains.
        """
        name = f"tcp:127.0.0.1:{self.echo}"
        response = self.call(b"DELETE", f"/api/ports/{quote(name, safe='')}")
        self.assertEqual(response.status, 202)
        self.assertEqual(self.json(response), {"name": name, "draining": 0})
        yield self.assertFailure(self.echoes(self.echo), ConnectionRefusedError)
        self.assertEqual(
            self.call(b"DELETE", f"/api/ports/{quote(name, safe='')}").status, 404
        )

    def test_removeItself(self):
        """
        The status port can't be removed through itself: 409.
        """
        response = self.call(b"DELETE", f"/api/ports/tcp:127.0.0.1:{self.status}")
        self.assertEqual(response.status, 409)
        self.assertIn("this request came in on", self.json(response)["error"])
        self.assertEqual(len(self.service.ports()), 2)

    @inlineCallbacks
    def test_change(self):
        """
        PUT changes a port in place; moving it is refused.
        """
        name = f"tcp:127.0.0.1:{self.echo}"
        response = self.call(b"PUT", f"/api/ports/{name}", {"handler": "qotd"})
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(self.service.namedServices[name].config.handler, "qotd")
        moved = self.call(b"PUT", f"/api/ports/{name}", {"port": self.echo + 1})
        self.assertEqual(moved.status, 400)
        self.assertIn("to move a port", self.json(moved)["error"])
        missing = self.call(b"PUT", "/api/ports/tcp:127.0.0.1:1", {"handler": "echo"})
        self.assertEqual(missing.status, 404)
        back = self.call(
            b"PUT", f"/api/ports/{name}", {"port": self.echo, "handler": "echo"}
        )
        self.assertEqual(back.status, 200, back.body)
        yield self.echoes(self.echo)

    def test_methods(self):
        """
        Other methods are 405 with Allow; unknown API paths 404.
        """
        response = self.call(b"DELETE", "/api/ports")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header(b"allow"), b"GET, POST")
        self.assertEqual(self.call(b"GET", "/api/nothing").status, 404)

    @inlineCallbacks
    def test_reload(self):
        """
        POST /api/reload applies the configuration read again and keeps
        the ports added through the API.
        """
        added = self.json(
            self.call(b"POST", "/api/ports", {"port": 0, "handler": "echo"})
        )
        other = freePort()
        self.next = configFor(
            f"127.0.0.1:{other}=discard,127.0.0.1:{self.status}=status",
            self.stateDir,
        )
        response = self.call(b"POST", "/api/reload")
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(
            self.json(response),
            {
                "added": [f"tcp:127.0.0.1:{other}"],
                "removed": [f"tcp:127.0.0.1:{self.echo}"],
                "changed": [],
                "unchanged": 2,
            },
        )
        yield self.echoes(added["port"])

    def test_reloadWithoutFile(self):
        """
        Without a configuration file, reload is 409 and says why.
        """
        self.service.rebuild = None
        response = self.call(b"POST", "/api/reload")
        self.assertEqual(response.status, 409)
        self.assertIn("without --config", self.json(response)["error"])

    def test_reloadBadFile(self):
        """
        A configuration that fails (here: a port in use) is reported and
        nothing changes.
        """
        self.next = configFor(
            f"127.0.0.1:{busyPort(self)}=echo,127.0.0.1:{self.status}=status",
            self.stateDir,
        )
        response = self.call(b"POST", "/api/reload")
        self.assertEqual(response.status, 409)
        self.assertEqual(len(self.service.ports()), 2)
