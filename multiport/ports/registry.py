"""
A port's open connections, L{Connections}: kept so that the port can be
drained or closed at once, at 16 bytes a connection.

A dict (Twisted's C{WrappingFactory.protocols}) costs about 29 bytes a
connection (its entry and index, and the table's spare room), and a set
about 50: a list threaded through the connections themselves costs two
pointers each, with nothing to grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

#: What L{Connections} keeps: objects with room for their neighbours, as
#: C{_prev} and C{_next} attributes.
_L = TypeVar("_L")


class Connections(Generic[_L]):
    """
    The open connections of a port, in the order they opened: a doubly
    linked list through each connection's C{_prev} and C{_next}, so adding
    and removing take constant time and no memory of their own.
    """

    __slots__ = ("_first", "_last", "_count")

    def __init__(self) -> None:
        self._first: _L | None = None
        self._last: _L | None = None
        self._count = 0

    def add(self, item: _L) -> None:
        """
        Keep C{item}, which must not be kept here already.
        """
        connection: Any = item
        last: Any = self._last
        connection._prev = last
        connection._next = None
        if last is None:
            self._first = connection
        else:
            last._next = connection
        self._last = connection
        self._count += 1

    def remove(self, item: _L) -> None:
        """
        Forget C{item}, which must be kept here.
        """
        connection: Any = item
        before, after = connection._prev, connection._next
        if before is None:
            self._first = after
        else:
            before._next = after
        if after is None:
            self._last = before
        else:
            after._prev = before
        connection._prev = connection._next = None
        self._count -= 1

    def __iter__(self) -> Iterator[_L]:
        # The next one is read before handing one out, so that the caller
        # may remove the connection it was given.
        connection: Any = self._first
        while connection is not None:
            following = connection._next
            yield connection
            connection = following

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0
