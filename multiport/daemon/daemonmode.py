"""
Start-up errors that reach the terminal whole when twistd daemonizes.

Without C{-n}, twistd forks before the services start; the process left on
the terminal waits on a pipe for the daemon to say it started.  A failure
(a port that can't be bound) comes through that pipe cut to 100 bytes and
is printed as a Python bytes repr (C{An error has occurred:
b'multiport.StartupError: cannot listen on 127.0.0.1:8080: address already
in use (another process,'}).

L{reportStartupErrorsWhole} has the daemon send a L{StartupError}'s whole
message and the waiting process print it as the line C{-n} prints, with
exit status 1 as before.  Any other error is reported as twistd reports it.
twistd has no hook for this: the two methods of its Unix runner that
write and read the pipe are wrapped, in the daemon's process only (called
from C{makeService} on the global reactor).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from twisted.python.util import untilConcludes

from multiport.errors import StartupError

if TYPE_CHECKING:
    from twisted.scripts._twistd_unix import UnixApplicationRunner

#: What a whole message starts with on twistd's status pipe: twistd's
#: "1 " (an error), then the line C{-n} prints.
STATUS_PREFIX = b"1 multiport: "
#: At most this many bytes go through the pipe: one write below PIPE_BUF
#: (4096 on Linux) is atomic, so one read gets it whole.
MAX_STATUS = 4000


def statusMessage(error: StartupError) -> bytes:
    """
    What the daemon writes on twistd's status pipe for C{error}.
    """
    data = STATUS_PREFIX + str(error).encode("utf-8", "backslashreplace")
    return data[:MAX_STATUS]


def terminalLine(data: bytes) -> str | None:
    """
    The line to print for what came through the status pipe, if it is a
    whole message (L{statusMessage}); C{None} for anything else.
    """
    if not data.startswith(STATUS_PREFIX):
        return None
    return data[2:].decode("utf-8", "replace") + "\n"


def reportStartupErrorsWhole(
    runner: type[UnixApplicationRunner] | None = None,
) -> None:
    """
    Wrap the status pipe's two ends in twistd's Unix application runner
    (or C{runner}, a class with the same two methods): the daemon's end
    writes a L{StartupError} whole, the terminal's end prints it as a line.
    Calling it again changes nothing.
    """
    if runner is None:
        from twisted.scripts._twistd_unix import UnixApplicationRunner

        runner = UnixApplicationRunner
    twistdFormat = runner._formatChildException
    twistdWait = runner._waitForStart
    if getattr(twistdWait, "wholeStartupErrors", False):
        return

    def _formatChildException(
        self: UnixApplicationRunner, exception: BaseException
    ) -> bytes:
        if isinstance(exception, StartupError):
            return statusMessage(exception)
        # twistd's runner is unannotated.
        formatted: bytes = twistdFormat(self, exception)  # type: ignore[no-untyped-call]
        return formatted

    def _waitForStart(self: UnixApplicationRunner, readPipe: int) -> int:
        data = untilConcludes(os.read, readPipe, MAX_STATUS)
        line = terminalLine(data)
        if line is not None:
            stream = sys.__stderr__ or sys.stderr
            untilConcludes(stream.write, line)
            stream.flush()
            return 1
        # Not ours: twistd's own report, from a pipe holding what came.
        again, feed = os.pipe()
        try:
            with os.fdopen(feed, "wb") as writer:
                writer.write(data)
            waited: int = twistdWait(self, again)
            return waited
        finally:
            os.close(again)

    _waitForStart.wholeStartupErrors = True  # type: ignore[attr-defined]
    # Replacing twistd's two private methods is what this function is for.
    runner._formatChildException = _formatChildException  # type: ignore[method-assign]
    runner._waitForStart = _waitForStart  # type: ignore[method-assign]
