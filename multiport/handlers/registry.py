"""
Finding handlers: every L{IHandler} plugin on C{sys.path}, built-in or not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from twisted.logger import Logger
from twisted.plugin import getPlugins

from multiport.handlers.interface import IDatagramHandler, IHandler, descriptorsOf

log = Logger()

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def checkProtocols(handler: object) -> tuple[str, ...]:
    """
    The protocols C{handler} serves, checked: a tuple of C{"tcp"} and
    C{"udp"}, and a handler serving UDP provides L{IDatagramHandler}.

    @raise ValueError: saying what is wrong.
    """
    protocols = getattr(handler, "protocols", ("tcp",))
    if (
        not isinstance(protocols, tuple)
        or not protocols
        or any(p not in ("tcp", "udp") for p in protocols)
    ):
        raise ValueError(
            f"protocols must be a non-empty tuple of 'tcp' and 'udp', got {protocols!r}"
        )
    if "udp" in protocols and not IDatagramHandler.providedBy(handler):
        raise ValueError("it serves 'udp' but does not provide IDatagramHandler")
    return protocols


def findHandlers() -> Mapping[str, IHandler]:
    """
    Every handler plugin found, by name.

    A built-in handler wins over a third-party one of the same name, and of
    two third-party ones the first found wins; the loser is logged, never
    silently dropped.  So is a plugin with a bad name, a bad
    C{descriptorsPerConnection} or bad C{protocols}.
    """
    from multiport.handlers.builtins import BUILTINS as builtins

    found: dict[str, IHandler] = {}
    plugins = sorted(
        getPlugins(IHandler), key=lambda h: not any(h is b for b in builtins)
    )
    for handler in plugins:
        name = handler.name
        if not isinstance(name, str) or not NAME.match(name):
            log.warn(
                "ignoring handler plugin {plugin!r}: bad name {name!r}",
                plugin=handler,
                name=name,
            )
            continue
        try:
            descriptorsOf(handler)
            checkProtocols(handler)
        except ValueError as e:
            log.warn(
                "ignoring handler plugin {plugin!r}: {error}", plugin=handler, error=e
            )
            continue
        if name in found:
            log.warn(
                "ignoring handler plugin {plugin!r}: {name!r} is taken by {other!r}",
                plugin=handler,
                name=name,
                other=found[name],
            )
            continue
        found[name] = handler
    return found
