"""
Which policies a UDP port takes: those that make sense per datagram
(C{allow}, C{deny}, C{rate}, C{rate_per_ip} counted in datagrams,
C{max_datagram_size}); every other key is a configuration error on a UDP
port, and C{max_datagram_size} one on a TCP port.
"""

from __future__ import annotations

from attrs import evolve

from multiport.errors import ConfigError
from multiport.ports.policies import KEYS, Policy

#: The policy keys a UDP port takes.
DATAGRAM_KEYS = ("allow", "deny", "rate", "rate_per_ip", "max_datagram_size")
#: The policy keys only a UDP port takes.
DATAGRAM_ONLY_KEYS = ("max_datagram_size",)


def _setKeys(policy: Policy) -> list[str]:
    return [
        key for key, attribute in KEYS.items() if getattr(policy, attribute) is not None
    ]


def checkOwnPolicy(own: Policy, protocol: str, where: str) -> None:
    """
    Refuse a key a port set in its own table that its protocol can't use.

    @raise ConfigError: naming the key.
    """
    for key in _setKeys(own):
        if protocol == "udp" and key not in DATAGRAM_KEYS:
            raise ConfigError(
                f"{where}.{key}",
                f"{key!r} does not apply to a UDP port; a UDP port takes "
                f"{', '.join(DATAGRAM_KEYS)}",
            )
        if protocol == "tcp" and key in DATAGRAM_ONLY_KEYS:
            raise ConfigError(
                f"{where}.{key}",
                f'{key!r} applies to UDP ports only (protocol = "udp")',
            )


def forProtocol(policy: Policy, protocol: str) -> Policy:
    """
    C{policy} (merged with the defaults) with only the settings that apply
    to C{protocol}: C{[defaults]} may hold keys of both kinds.
    """
    keep = (
        DATAGRAM_KEYS
        if protocol == "udp"
        else tuple(key for key in KEYS if key not in DATAGRAM_ONLY_KEYS)
    )
    return evolve(policy, **{KEYS[key]: None for key in KEYS if key not in keep})
