"""
The http handler's cache of files' metadata: a path's C{stat} is looked up
again no more than once a second (nginx's C{open_file_cache_valid}), so
that a request does not cost one C{stat} per look at its file.

Only what exists is remembered: a file that appears is served at once,
and one that goes away is found gone when it is opened.  Whether a path
is a symlink (the root's confinement) is never taken from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.python.filepath import FilePath

#: How long a C{stat} result is trusted, in seconds.
VALIDITY = 1.0
#: Paths remembered at most; past that the cache starts over, so that
#: requests for ever new names can't make it grow without bound.
MAX_ENTRIES = 4096


class StatCache:
    """
    C{stat} results by path, each trusted for L{VALIDITY} seconds of
    C{clock}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        stat: Callable[[str], os.stat_result] = os.stat,
        validity: float = VALIDITY,
        maxEntries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._stat = stat
        self._validity = validity
        self._maxEntries = maxEntries
        self._entries: dict[str, tuple[float, os.stat_result]] = {}

    def stat(self, path: str) -> os.stat_result:
        """
        C{os.stat(path)}, or what it said less than L{VALIDITY} seconds ago.

        @raise OSError: as C{os.stat} does (failures are not remembered).
        """
        now = self._clock.seconds()
        entry = self._entries.get(path)
        if entry is not None and now - entry[0] < self._validity:
            return entry[1]
        result = self._stat(path)
        if len(self._entries) >= self._maxEntries:
            self._entries.clear()
        self._entries[path] = (now, result)
        return result


class CachedPath(FilePath[str]):
    """
    A L{FilePath} whose C{stat} goes through a L{StatCache}, as do those of
    the paths made from it (its children, siblings...).
    """

    def __init__(self, path: str, statCache: StatCache) -> None:
        super().__init__(path)
        self.statCache = statCache

    def restat(self, reraise: bool = True) -> None:
        restatThrough(self, self.statCache, reraise)

    def clonePath(  # type: ignore[override]
        self, path: str, alwaysCreate: bool = False
    ) -> CachedPath:
        return CachedPath(path, self.statCache)


def restatThrough(
    path: FilePath[str], statCache: StatCache | None, reraise: bool
) -> None:
    """
    L{FilePath.restat} of C{path}, through C{statCache} when there is one.
    """
    if statCache is None:
        FilePath.restat(path, reraise)
        return
    try:
        path._statinfo = statCache.stat(path.path)
    except OSError:
        path._statinfo = None
        if reraise:
            raise
