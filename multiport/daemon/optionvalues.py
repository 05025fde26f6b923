"""
The daemon's numeric command-line values, checked: each bad one is a
L{ConfigError} naming the option and the value.
"""

from __future__ import annotations

import math

from multiport.errors import ConfigError


def wholeNumber(value: str, option: str, least: int, most: int) -> int:
    """
    C{value} of C{option} as a whole number from C{least} to C{most}.

    @raise ConfigError: naming the option and the bad value.
    """
    if not (value.isascii() and value.isdigit()) or not least <= int(value) <= most:
        raise ConfigError(
            option, f"expected a whole number from {least} to {most}, got {value!r}"
        )
    return int(value)


def seconds(value: str, option: str, above: bool) -> float:
    """
    C{value} of C{option} as a number of seconds: more than 0 if C{above},
    else 0 or more.

    @raise ConfigError: naming the option and the bad value.
    """
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and (number > 0 if above else number >= 0)):
        least = "more than 0" if above else "0 or more"
        raise ConfigError(
            option, f"expected a number of seconds, {least}, got {value!r}"
        )
    return number
