"""
The daemon's side of the admin token: refuse a status port other machines
can reach when nobody gave the token, and the line a start (or C{--check})
ends with when the token can't be kept.
"""

from __future__ import annotations

from pathlib import Path

from multiport.config.model import Config
from multiport.errors import ConfigError
from multiport.status.admintoken import ENVIRONMENT, FILE_OPTION, isLoopback

#: The status handler's name.
STATUS_HANDLER = "status"


def tokenFailure(
    stateDir: Path, unwritable: str | None, error: Exception | None = None
) -> str:
    """
    The line a start (or C{--check}) ends with when the admin token the
    daemon keeps can't be written (C{unwritable}: why) or read (C{error}).
    """
    advice = (
        "use --state-dir to pick a writable folder, or give the token with "
        f"{FILE_OPTION} or ${ENVIRONMENT}"
    )
    if error is not None:
        return f"multiport: {error} ({advice})"
    return (
        f"multiport: cannot write the admin token in {stateDir}: {unwritable} "
        f"({advice})"
    )


def refuseExposedStatus(config: Config) -> None:
    """
    Refuse a status port that other machines can reach when the admin token
    was made by the daemon: a token in a file nobody has read would be the
    only guard of an HTTP API open to the network.

    @raise ConfigError: naming the status port.
    """
    for port in config.ports:
        if port.handler == STATUS_HANDLER and not isLoopback(port.interface):
            raise ConfigError(
                port.where,
                f"the status port {port.address} can be reached from other "
                f"machines: give its admin token with {FILE_OPTION} or "
                f"${ENVIRONMENT}, or bind it to 127.0.0.1",
            )
