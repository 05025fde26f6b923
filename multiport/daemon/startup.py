"""
Starting up: a port that can't bind is told in one line a person can act
on, and start-up's many objects stay out of the garbage collector's way.
"""

from __future__ import annotations

import errno
import gc
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from twisted.internet.error import CannotListenError

from multiport.config.model import PortConfig
from multiport.errors import ReconcileError, StartupError


def reportStartupErrorsBriefly() -> None:
    """
    Make an uncaught L{StartupError} print as one line, not a traceback.

    twistd lets an exception from C{privilegedStartService} end the process
    with a traceback (after removing its pid file); a port that can't bind
    deserves one clear line and exit status 1.
    """
    previous = sys.excepthook

    def hook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if isinstance(value, StartupError):
            stream = sys.__stderr__ or sys.stderr
            stream.write(f"multiport: {value}\n")
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


def describeListenError(config: PortConfig, error: CannotListenError) -> str:
    """
    One line a person can act on for a port that could not bind.
    """
    where = f" [{config.where}]" if config.where else ""
    reason = getattr(error.socketError, "errno", None)
    if reason == errno.EADDRINUSE:
        why = "address already in use (another process, or another port here)"
    elif reason in (errno.EACCES, errno.EPERM) and 0 < config.port < 1024:
        why = (
            f"permission denied: port {config.port} is below 1024; run twistd as "
            "root with --uid/--gid to drop privileges after binding, or pick a "
            "port of 1024 or more"
        )
    elif reason == errno.EADDRNOTAVAIL:
        why = f"address {config.interface} is not on this machine"
    else:
        why = str(getattr(error.socketError, "strerror", None) or error.socketError)
    # Reason first: twistd's daemon mode shows only the first 100 bytes.
    return f"cannot listen on {config.address}: {why}{where}"


def serving(config: PortConfig) -> tuple[str, dict[str, object]]:
    """
    How a log line says what a port serves, as a format and its fields:
    the handler, and for a TCP port its TLS and listen backlog.  A UDP
    socket has no backlog (it never listens) and no TLS, so neither is
    named for it.
    """
    if config.datagram:
        return "handler {handler}", {"handler": config.handler}
    return "handler {handler}, TLS {tls}, backlog {backlog}", {
        "handler": config.handler,
        "tls": config.tls.describe() if config.tls else "off",
        "backlog": config.backlog,
    }


def liveListenError(config: PortConfig, error: CannotListenError) -> ReconcileError:
    """
    The L{ReconcileError} for a port a live change could not bind: a
    conflict when the address is in use.
    """
    reason = getattr(error.socketError, "errno", None)
    return ReconcileError(
        describeListenError(config, error), conflict=reason == errno.EADDRINUSE
    )


@contextmanager
def noCollections() -> Iterator[None]:
    """
    Python's cyclic garbage collector off for the block (then as before).

    Start-up makes many objects per port and frees almost none; the
    collector's full passes, more and longer as they accumulate, made the
    cost per port grow by about an eighth from 1,000 to 10,000 ports.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def signalName(number: int) -> str:
    """
    C{SIGTERM} for C{signal.SIGTERM}; the number for one without a name.
    """
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
