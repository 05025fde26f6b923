"""
Policies on UDP ports over real sockets: allow/deny, rate and rate_per_ip
counted in datagrams, max_datagram_size.
"""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.tomlfile import parseConfig
from tests.support import HANDLERS, waitUntilOnReactor
from tests.test_udpports import addressOf, client, startService


def serviceWith(testCase, **table: object):
    """
    A started service with one UDP echo port on 127.0.0.1 with C{table}'s
    policy keys.
    """
    parsed = parseConfig(
        {
            "port": [
                {
                    "port": 0,
                    "interface": "127.0.0.1",
                    "protocol": "udp",
                    "handler": "echo",
                    **table,
                }
            ]
        },
        Path("."),
        "f.toml",
    )
    config = buildConfig(parsed.ports, Defaults(), HANDLERS, Path(testCase.mktemp()))
    return startService(testCase, "", config)


class AccessTests(TestCase):
    """
    allow and deny apply to each datagram's source address.
    """

    @inlineCallbacks
    def test_deny(self):
        """
        A denied address gets nothing and is counted as C{access}; an
        allowed one is answered.
        """
        service = serviceWith(self, deny=["127.0.0.2/32"])
        gate = service.ports()[0].factory
        denied = client(self, "127.0.0.2")
        denied.transport.write(b"no", addressOf(service, 0))
        answer = yield client(self).ask(b"yes", addressOf(service, 0))
        self.assertEqual(answer, b"yes")
        yield waitUntilOnReactor(lambda: gate.counters.dropped.get("access") == 1)
        self.assertEqual(denied.received, [])

    @inlineCallbacks
    def test_allow(self):
        """
        With C{allow}, only those networks are answered.
        """
        service = serviceWith(self, allow=["127.0.0.2/32"])
        gate = service.ports()[0].factory
        client(self).transport.write(b"no", addressOf(service, 0))
        answer = yield client(self, "127.0.0.2").ask(b"yes", addressOf(service, 0))
        self.assertEqual(answer, b"yes")
        yield waitUntilOnReactor(lambda: gate.counters.dropped.get("access") == 1)


class SizeTests(TestCase):
    """
    max_datagram_size drops larger datagrams; without it, any UDP
    datagram is read whole.
    """

    @inlineCallbacks
    def test_tooLarge(self):
        """
        A datagram over C{max_datagram_size} is dropped as C{too_large};
        one of exactly that size is answered.
        """
        service = serviceWith(self, max_datagram_size=100)
        gate = service.ports()[0].factory
        asker = client(self)
        asker.transport.write(b"x" * 101, addressOf(service, 0))
        answer = yield asker.ask(b"y" * 100, addressOf(service, 0))
        self.assertEqual(answer, b"y" * 100)
        yield waitUntilOnReactor(lambda: gate.counters.dropped.get("too_large") == 1)

    @inlineCallbacks
    def test_largeReadWhole(self):
        """
        A 20,000-byte datagram (more than Twisted reads by default) comes
        back whole.
        """
        service = startService(self, "127.0.0.1:0/udp=echo")
        answer = yield client(self).ask(b"z" * 20000, addressOf(service, 0))
        self.assertEqual(len(answer), 20000)


class RateTests(TestCase):
    """
    rate and rate_per_ip count datagrams.
    """

    timeout = 120

    @inlineCallbacks
    def test_floodPastRatePerIP(self):
        """
        100,000 datagrams from one address past C{rate_per_ip}: that
        address gets at most its burst plus its rate, another address is
        served all along.
        """
        service = serviceWith(self, rate_per_ip={"per_second": 100, "burst": 50})
        gate = service.ports()[0].factory
        target = addressOf(service, 0)
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(flooder.close)
        flooder.bind(("127.0.0.1", 0))
        flooder.setblocking(False)
        other = client(self, "127.0.0.2")
        answered = []
        started = time.monotonic()

        def flood():
            sent = 0
            while sent < 100_000:
                for _ in range(500):
                    try:
                        flooder.sendto(b"f", target)
                    except OSError as e:
                        if e.errno not in (errno.EAGAIN, errno.ENOBUFS):
                            raise
                    sent += 1
                yield None

        flooding = task.cooperate(flood()).whenDone()
        for _ in range(5):
            # UDP promises nothing: while the flood fills the socket's
            # buffer the kernel may drop this client's datagram too, so it
            # asks again, as a real client would.
            for _attempt in range(40):
                try:
                    answer = yield other.ask(b"served", target, timeout=0.25)
                except defer.TimeoutError:
                    continue
                answered.append(answer)
                break
        yield flooding
        elapsed = time.monotonic() - started
        self.assertEqual(answered, [b"served"] * 5)
        yield waitUntilOnReactor(lambda: gate.counters.dropped.get("rate", 0) > 0)
        fromFlooder = gate.counters.datagramsReceived - 5
        self.assertLessEqual(fromFlooder, 50 + 100 * elapsed + 1)

    @inlineCallbacks
    def test_portRate(self):
        """
        C{rate} limits the whole port's datagrams; the rest are C{rate}
        drops.
        """
        service = serviceWith(self, rate={"per_second": 0.001, "burst": 3})
        gate = service.ports()[0].factory
        for _ in range(5):
            gate.datagramReceived(b"x", ("127.0.0.1", 40000))
        self.assertEqual(gate.counters.datagramsReceived, 3)
        self.assertEqual(gate.counters.dropped, {"rate": 2})
        yield None
