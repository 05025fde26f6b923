"""
Tests for L{multiport.daemon.plan}: the one place a live change is
decided, as a pure function of the running ports and the wanted ones.
"""

from __future__ import annotations

from attrs import frozen
from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import PortConfig
from multiport.daemon.plan import Blockers, Plan, claims, plan
from tests.support import configFor


@frozen(eq=False)
class Running:
    """
    A running port as the plan sees it: a name (compared by identity).
    """

    name: str


class PlanTests(SynchronousTestCase):
    """
    L{plan} sorts the wanted ports into added, removed, changed and
    unchanged, matching running ones by address (port 0: by configuration).
    """

    def setUp(self) -> None:
        self.stateDir = self.mktemp()

    def ports(self, items: str) -> tuple[PortConfig, ...]:
        return configFor(items, self.stateDir).ports

    def running(self, items: str) -> list[tuple[Running, PortConfig]]:
        return [(Running(c.name), c) for c in self.ports(items)]

    def names(self, handles: tuple[Running, ...]) -> list[str]:
        return [h.name for h in handles]

    def test_sorted(self) -> None:
        """
        Same address and settings: unchanged; same address, new settings:
        changed; new address: added; gone: removed.
        """
        decided = plan(
            self.running("7001=echo,7002=discard,7003=echo"),
            self.ports("7001=echo,7002=echo,7004=echo"),
        )
        self.assertEqual(self.names(decided.unchanged), ["tcp:0.0.0.0:7001"])
        self.assertEqual(
            [(h.name, c.handler) for h, c in decided.change],
            [("tcp:0.0.0.0:7002", "echo")],
        )
        self.assertEqual([c.name for c in decided.add], ["tcp:0.0.0.0:7004"])
        self.assertEqual(self.names(decided.remove), ["tcp:0.0.0.0:7003"])

    def test_keptInWantedOrder(self) -> None:
        """
        C{kept} pairs each wanted port that keeps a running one's socket
        with it, in the wanted order; added ports are not in it.
        """
        running = self.running("7001=echo,7002=echo")
        wanted = self.ports("7002=discard,7005=echo,7001=echo")
        decided = plan(running, wanted)
        self.assertEqual(
            [(c.name, h) for c, h in decided.kept],
            [(wanted[0].name, running[1][0]), (wanted[2].name, running[0][0])],
        )

    def test_portZeroByConfiguration(self) -> None:
        """
        Port 0 entries match running port 0 entries with the same whole
        configuration, each running one at most once.
        """
        running = self.running("0=echo,0=echo")
        decided = plan(running, self.ports("0=echo,0=echo,0=echo,0=discard"))
        self.assertEqual(list(decided.unchanged), [running[0][0], running[1][0]])
        self.assertEqual([c.handler for c in decided.add], ["echo", "discard"])
        self.assertEqual(decided.remove, ())

    def test_portZeroOtherSettings(self) -> None:
        """
        A port 0 entry with other settings is a new port, and the running
        one goes.
        """
        running = self.running("0=echo")
        decided = plan(running, self.ports("0=discard"))
        self.assertEqual([c.handler for c in decided.add], ["discard"])
        self.assertEqual(list(decided.remove), [running[0][0]])

    def test_renewed(self) -> None:
        """
        A port with an equal configuration that C{renewed} says is new (a
        new certificate) is changed, not unchanged.
        """
        running = self.running("7001=echo,7002=echo")
        decided = plan(
            running,
            self.ports("7001=echo,7002=echo"),
            lambda handle, config: handle is running[1][0],
        )
        self.assertEqual(list(decided.unchanged), [running[0][0]])
        self.assertEqual([h for h, _ in decided.change], [running[1][0]])

    def test_renewedPortZero(self) -> None:
        """
        A renewed port 0 entry can't be changed in place (its number is not
        an address): it is added again and the running one removed.
        """
        running = self.running("0=echo")
        decided = plan(running, self.ports("0=echo"), lambda h, c: True)
        self.assertEqual(len(decided.add), 1)
        self.assertEqual(list(decided.remove), [running[0][0]])

    def test_nothingRunning(self) -> None:
        """
        From nothing, every wanted port is added.
        """
        decided = plan([], self.ports("7001=echo,0=echo"))
        self.assertEqual(len(decided.add), 2)
        self.assertEqual(
            (decided.remove, decided.change, decided.unchanged), ((), (), ())
        )

    def test_summary(self) -> None:
        """
        The summary names what each part touches.
        """
        decided: Plan[Running] = plan(
            self.running("7001=echo,7002=echo,7003=echo"),
            self.ports("7001=echo,7002=discard,7004=echo"),
        )
        self.assertEqual(
            decided.summary(),
            {
                "added": ["tcp:0.0.0.0:7004"],
                "removed": ["tcp:0.0.0.0:7003"],
                "changed": ["tcp:0.0.0.0:7002"],
                "unchanged": 1,
            },
        )


class OverlapTests(SynchronousTestCase):
    """
    Which ports claim another's address, and which removed ports block a
    new one.
    """

    def setUp(self) -> None:
        self.stateDir = self.mktemp()

    def port(self, item: str) -> PortConfig:
        return configFor(item, self.stateDir).ports[0]

    def test_claims(self) -> None:
        """
        A port claims another's place at the same address and number, or
        at an overlapping one; not at another number.
        """
        self.assertTrue(
            claims(self.port("127.0.0.1:80=echo"), self.port("127.0.0.1:80=qotd"))
        )
        self.assertTrue(
            claims(self.port("0.0.0.0:80=echo"), self.port("127.0.0.1:80=echo"))
        )
        self.assertFalse(
            claims(self.port("127.0.0.1:81=echo"), self.port("127.0.0.1:80=echo"))
        )
        self.assertFalse(
            claims(self.port("[::]:80=echo"), self.port("0.0.0.0:80=echo"))
        )

    def test_blockers(self) -> None:
        """
        A new port is blocked by the removed ports it overlaps, and by
        nothing else (port 0 never blocks).
        """
        wild, other, zero = Running("wild"), Running("other"), Running("zero")
        blockers = Blockers(
            [
                (wild, self.port("0.0.0.0:80=echo")),
                (other, self.port("127.0.0.1:81=echo")),
                (zero, self.port("127.0.0.1:0=echo")),
            ]
        )
        self.assertEqual(blockers.of(self.port("127.0.0.1:80=echo")), [wild])
        self.assertEqual(blockers.of(self.port("[::1]:80=echo")), [])
        self.assertEqual(blockers.of(self.port("127.0.0.1:0=echo")), [])
        self.assertEqual(blockers.of(self.port("127.0.0.1:82=echo")), [])
