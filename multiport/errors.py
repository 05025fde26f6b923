"""
The errors multiport raises across its layers: configuration errors and
the words they use (shared by every edge that reads a configuration), a
start that can't bind, and a live change that can't be applied (which the
admin API maps to HTTP statuses).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping


class ConfigError(Exception):
    """
    The configuration is wrong; the message names the value and its source.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    dict: "table",
    list: "array",
}


def typeName(value: object) -> str:
    """
    The TOML name of C{value}'s type, for error messages.
    """
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def knownTable(
    value: object, where: str, known: Collection[str]
) -> Mapping[str, object]:
    """
    C{value}, checked to be a table of C{known} keys only (a top-level
    table such as C{[acme]}).

    @raise ConfigError: naming C{where}, or the unknown key in it.
    """
    if not isinstance(value, dict):
        raise ConfigError(where, f"expected a table, got {typeName(value)} {value!r}")
    for key in value:
        if key not in known:
            raise ConfigError(
                f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})"
            )
    return value


class StartupError(Exception):
    """
    The daemon can't start; the message says why in one line.
    """

    # twistd's own daemon-mode report says "<module>.<class>: <message>";
    # keep the prefix short (multiport.daemon.daemonmode prints the message alone).
    __module__ = "multiport"


class ReconcileError(Exception):
    """
    A live change could not be applied; nothing changed.

    @ivar conflict: Whether it failed on an address already in use (or a
        port that can't be removed from where it was asked), rather than on
        bad input.
    """

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict


class ReloadUnavailable(Exception):
    """
    The daemon has no configuration file to reload.
    """
