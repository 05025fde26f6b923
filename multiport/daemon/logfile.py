"""
The file the daemon's log goes to: L{ReopeningLogFile} rotates by size
as twistd's does, and on SIGUSR1 (L{onLogSignal}) reopens by name when
something else (logrotate) has moved it away, as nginx does, else
rotates it.
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
import os
import signal
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.logfile import LogFile

# The namespace these lines had before the log file moved out of
# logformat: log filters and the JSON log's "n" name it.
log = Logger(namespace="multiport.daemon.logformat")


class ReopeningLogFile(LogFile):
    """
    A L{LogFile} that notices when something else has moved it away (as
    logrotate does) and then opens a new file at its path rather than
    writing on into the moved one.

    Twisted's L{LogFile} keeps writing the file it has open, and its
    rotation renames whatever is at the path: once logrotate has moved the
    file, rotating either silently does nothing (the path is gone) or
    renames logrotate's new empty file.  Here both size rotation and
    L{rotate} reopen by name instead when the file at the path is not the
    one open (another inode, or none).
    """

    # Rotating takes the file's lock, as LogFile's own write and rotate do.
    synchronized = ["rotate"]

    def _openFile(self) -> None:
        super()._openFile()  # type: ignore[no-untyped-call]
        opened = os.fstat(self._file.fileno())
        self._identity = (opened.st_dev, opened.st_ino)

    def movedAway(self) -> bool:
        """
        Whether the file at the path is no longer the one being written.
        """
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (current.st_dev, current.st_ino) != self._identity

    def rotate(self) -> None:
        """
        Reopen by name if the file was moved away; else rotate it as
        L{LogFile} does (C{path} to C{path.1}, and so on, at most
        C{maxRotatedFiles} kept).
        """
        if self.movedAway():
            self.reopen()  # type: ignore[no-untyped-call]
        else:
            super().rotate()  # type: ignore[no-untyped-call]


threadable.synchronize(ReopeningLogFile)  # type: ignore[no-untyped-call]


def onLogSignal(logFile: ReopeningLogFile, flush: Callable[[], object]) -> str:
    """
    What SIGUSR1 does to the log file: write what waits, then reopen it if
    it was moved away (logrotate), else rotate it; logged, in the file it
    goes on with.  Returns C{"reopened"} or C{"rotated"}.
    """
    flush()
    done = "reopened" if logFile.movedAway() else "rotated"
    logFile.rotate()
    if done == "reopened":
        log.info("SIGUSR1: {path} was moved away: reopened it", path=logFile.path)
    else:
        log.info("SIGUSR1: rotated {path}", path=logFile.path)
    return done


def _onUSR1(callback: Callable[[], object]) -> None:
    """
    Have SIGUSR1 call C{callback} on the reactor's thread, unless something
    else handles that signal already (as twistd does for its log file).
    """
    if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
        return

    def received(signum: int, frame: object) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(callback)  # type: ignore[attr-defined]

    signal.signal(signal.SIGUSR1, received)
