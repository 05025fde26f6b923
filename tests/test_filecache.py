"""
Tests for L{multiport.handlers.filecache}: C{stat} results trusted for a
second of the injected clock.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from multiport.handlers.filecache import CachedPath, StatCache


class StatCacheTests(SynchronousTestCase):
    """
    L{StatCache} with a fake C{stat} and a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[str] = []
        self.missing: set[str] = set()
        self.cache = StatCache(self.clock, stat=self.stat, maxEntries=3)

    def stat(self, path: str) -> os.stat_result:
        self.calls.append(path)
        if path in self.missing:
            raise FileNotFoundError(path)
        return os.stat_result((0o100644, 1, 1, 1, 0, 0, len(self.calls), 0, 0, 0))

    def test_withinASecond(self) -> None:
        """
        A path looked up again within a second is not stat'ed again.
        """
        first = self.cache.stat("/a")
        self.clock.advance(0.999)
        self.assertIs(self.cache.stat("/a"), first)
        self.assertEqual(self.calls, ["/a"])

    def test_afterASecond(self) -> None:
        """
        A second later, the path is stat'ed again.
        """
        first = self.cache.stat("/a")
        self.clock.advance(1)
        self.assertEqual(self.cache.stat("/a").st_size, 2)
        self.assertEqual(first.st_size, 1)

    def test_failuresNotRemembered(self) -> None:
        """
        A failed lookup raises, and the next one asks again.
        """
        self.missing.add("/gone")
        for _ in range(2):
            self.assertRaises(FileNotFoundError, self.cache.stat, "/gone")
        self.assertEqual(self.calls, ["/gone", "/gone"])

    def test_bounded(self) -> None:
        """
        Past C{maxEntries} paths the cache starts over.
        """
        for path in ("/a", "/b", "/c", "/d", "/a"):
            self.cache.stat(path)
        self.assertEqual(self.calls, ["/a", "/b", "/c", "/d", "/a"])


class CachedPathTests(SynchronousTestCase):
    """
    L{CachedPath}: a FilePath whose children share its cache.
    """

    def test_childrenShareTheCache(self) -> None:
        """
        A child's existence is looked up through the parent's cache, and
        a missing child reads as missing.
        """
        calls: list[str] = []
        folder = self.mktemp()
        os.mkdir(folder)
        open(os.path.join(folder, "here"), "wb").close()

        def stat(path: str) -> os.stat_result:
            calls.append(os.path.basename(path))
            return os.stat(path)

        path = CachedPath(os.path.abspath(folder), StatCache(Clock(), stat=stat))
        child = path.child("here")
        self.assertIsInstance(child, CachedPath)
        self.assertTrue(child.exists())
        self.assertTrue(path.child("here").isfile())
        self.assertFalse(path.child("nowhere").exists())
        self.assertEqual(calls, ["here", "nowhere"])
