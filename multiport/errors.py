"""
Configuration errors and the words they use, shared by every edge that
reads a configuration (command line, file, policies).
"""

from __future__ import annotations


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
