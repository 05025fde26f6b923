"""
What the configuration model asks of a handler: its name, whether it
implies TLS, and a parse of its options that raises L{OptionError} for a bad
one (the model turns that into a L{multiport.errors.ConfigError} with the
option's path).

The handler interface (L{multiport.handlers.interface}) builds on the
model; the model knows handlers only through this module, so that the two
never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class OptionError(Exception):
    """
    A handler option is wrong.

    @ivar key: The option's key (dotted for nested values).
    @ivar message: What is wrong with it, for a person to act on.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class PortHandler(Protocol):
    """
    A handler as the model sees it while it validates a port (any
    L{multiport.handlers.interface.IHandler} is one; a handler's optional
    C{defaultPolicy} is read with C{getattr}).
    """

    @property
    def name(self) -> str:
        """
        The handler's name.
        """

    @property
    def impliesTLS(self) -> bool:
        """
        Whether every port with this handler uses TLS.
        """

    def parseOptions(self, options: Mapping[str, object], relativeTo: Path) -> object:
        """
        The port's C{options} table validated into the handler's own value.

        @raise OptionError: naming the key of the first bad option.
        """
