"""
Reading the configuration again while running: SIGHUP, and the log lines
a reload leaves.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiport.daemon.signals import OnSignal
from multiport.errors import ConfigError, ReconcileError, ReloadUnavailable
from multiport.handlers.interface import ChangeSummary

# Twisted leaves parts of the API this module calls unannotated (its
# services, usage.Options, Failure, tcp.Port, Request.getHost): those
# calls carry type: ignore[no-untyped-call].

# The lines were the service's before this module existed; their namespace
# is part of the JSON log.
log = Logger(namespace="multiport.daemon.service")


def logReloaded(summary: Mapping[str, object], note: str = "") -> None:
    """
    Log what a reload changed.
    """

    def names(key: str) -> str:
        value = summary[key]
        assert isinstance(value, list)
        return ", ".join(str(name) for name in value) or "none"

    log.info(
        "reloaded: added {added}, removed {removed}, changed {changed}, "
        "{unchanged} unchanged{note}",
        added=names("added"),
        removed=names("removed"),
        changed=names("changed"),
        unchanged=summary["unchanged"],
        note=note,
    )


def _reloadFailed(reason: Failure) -> None:
    error = reason.value
    if isinstance(error, ReloadUnavailable):
        log.info("SIGHUP: {reason}", reason=str(error))
    elif isinstance(error, ConfigError | ReconcileError):
        log.error("reload failed, nothing changed: {reason}", reason=str(error))
    else:
        log.failure("reload failed, nothing changed", reason)


def reloadLogged(reload: Callable[[], Deferred[ChangeSummary]]) -> None:
    """
    Call C{reload} for SIGHUP: a failure is logged with its reason (nothing
    has changed then).
    """
    try:
        result = reload()
    except Exception:
        _reloadFailed(Failure())  # type: ignore[no-untyped-call]
        return
    result.addCallbacks(lambda _: None, _reloadFailed)


class ReloadOnHangup(OnSignal):
    """
    Calls C{reload} on the reactor's thread when the process gets SIGHUP,
    while running.
    """

    def __init__(
        self, reload: Callable[[], object], reactor: IReactorFromThreads
    ) -> None:
        super().__init__(signal.SIGHUP, reload, reactor)
