"""
The daemon's log: twistd's text format written cheaply, or JSON (one object
per line, C{--log-format json}).

twistd picks its log observer from C{--logger}, a dotted name it calls with
no arguments.  multiport points that option at L{textLogger} or
L{jsonLogger} (unless the command line chose a logger, or syslog) and
L{configure} tells them where twistd would have written.  Both write the
same file twistd would (a L{LogFile}, rotated at 1 MB and on SIGUSR1, as
twistd does), in the same text format as twistd's own observer for text.

What makes them cheaper than twistd's observer matters only for the
connection log, one line per connection: time stamps are formatted once a
second, an event whose whole message is a pre-formatted C{{line}} skips the
formatter, and connection lines are written together once per reactor turn
instead of with a system call each.  Every other event is written at once,
after any connection lines before it, so the order of lines is kept.
"""

from __future__ import annotations

import datetime
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    eventAsText,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

_destination: str = "-"

#: Event fields that are the logging system's own, not the event's.
_SKIP = frozenset({"log_logger", "log_source", "log_format", "log_io", "log_trace"})

#: The namespaces of the lines written once per reactor turn: the
#: connection log and the http access log, a line per connection or request,
#: and (in the main process of C{--workers N}) the workers' output, which
#: carries theirs.
BULK_NAMESPACES = frozenset(
    {"multiport.connection", "multiport.access", "multiport.worker"}
)

#: The message format of an event whose message is its C{line} field as is.
LINE_FORMAT = "{line}"


class Writable(Protocol):
    def write(self, data: str, /) -> object: ...

    def flush(self) -> object: ...


def configure(destination: str) -> None:
    """
    Where L{textLogger}'s and L{jsonLogger}'s observers write: a file name,
    or C{-} for standard output.
    """
    global _destination
    _destination = destination


def preformatted(event: dict[str, Any]) -> str | None:
    """
    The message of an event that is a pre-formatted line (L{emitLine}'s:
    format C{{line}}, a non-empty string, no failure to append), or
    C{None} for any other event.
    """
    if event.get("log_format") == LINE_FORMAT and "log_failure" not in event:
        line = event.get("line")
        if type(line) is str and line:
            return line
    return None


class TimeStamps:
    """
    twistd's time stamps (L{formatTime}, RFC 3339 to the second), formatted
    once per second rather than once per event.
    """

    def __init__(self, timeFormat: str = timeFormatRFC3339) -> None:
        self._format = timeFormat
        self._second: int | None = None
        self._text = ""

    def __call__(self, when: float | None) -> str:
        if when is None:
            return formatTime(None)
        second = math.floor(when)
        if second != self._second:
            self._text = formatTime(second, self._format)
            self._second = second
        return self._text


class ClassicText:
    """
    Events as twistd's text lines (L{formatEventAsClassicLogText}), with the
    common case of a pre-formatted C{line} taken without the formatter.
    """

    def __init__(self, stamps: Callable[[float | None], str] | None = None) -> None:
        self.stamps = TimeStamps() if stamps is None else stamps

    def __call__(self, event: dict[str, Any]) -> str | None:
        line = preformatted(event)
        if line is not None:
            level = event.get("log_level")
            system = event.get("log_system")
            if level is not None and (system is None or type(system) is str):
                if "\n" in line:
                    line = line.replace("\n", "\n\t")
                stamp = self.stamps(event.get("log_time"))
                if system is None:
                    system = f"{event.get('log_namespace', '-')}#{level.name}"
                return f"{stamp} [{system}] {line}\n"
        return formatEventAsClassicLogText(event, formatTime=self.stamps)


@implementer(ILogObserver)
class TextFileObserver:
    """
    Writes formatted events to a file.  Events in L{BULK_NAMESPACES} wait
    for the end of the reactor turn (C{later(0, flush)}) and go out in one
    write; any other event is written and flushed at once, after them.

    @param later: C{IReactorTime.callLater}.
    """

    def __init__(
        self,
        out: Writable,
        format: Callable[[dict[str, Any]], str | None],
        later: Callable[..., object],
    ) -> None:
        self._out = out
        self._format = format
        self._later = later
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        text = self._format(event)
        if not text:
            return
        with self._lock:
            pending = self._pending
            pending.append(text)
            if event.get("log_namespace") in BULK_NAMESPACES:
                if len(pending) == 1:
                    self._later(0, self.flush)
                return
        self.flush()

    def flush(self) -> None:
        """
        Write what is waiting, now.
        """
        with self._lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            self._out.write(text)
            self._out.flush()


def emitLine(logger: Logger, line: str, **fields: object) -> None:
    """
    Log C{line}, already formatted, at level info, with C{fields} for the
    JSON log: the event C{logger.info("{line}", line=line, **fields)} emits,
    without L{Logger.emit}'s checks, for the logs written once per
    connection or request.
    """
    fields["line"] = line
    fields["log_logger"] = logger
    fields["log_level"] = LogLevel.info
    fields["log_namespace"] = logger.namespace
    fields["log_source"] = None
    fields["log_format"] = LINE_FORMAT
    fields["log_time"] = time.time()
    logger.observer(fields)


def _open(destination: str) -> IO[str] | LogFile:
    if destination == "-":
        return sys.stdout
    logFile = LogFile.fromFullPath(destination)
    # As twistd does for its own log file: SIGUSR1 rotates it, unless
    # something else handles that signal.
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(logFile.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return logFile


def batchedObserver(
    out: Writable, format: Callable[[dict[str, Any]], str | None], reactor: Any
) -> TextFileObserver:
    """
    A L{TextFileObserver} on C{reactor}, which also writes what waits once
    the reactor has stopped.
    """
    observer = TextFileObserver(out, format, reactor.callLater)
    reactor.addSystemEventTrigger("after", "shutdown", observer.flush)
    return observer


def _observer(format: Callable[[dict[str, Any]], str | None]) -> TextFileObserver:
    from twisted.internet import reactor

    return batchedObserver(_open(_destination), format, reactor)


def textLogger() -> ILogObserver:
    """
    The observer twistd's C{--logger} makes for C{--log-format text}, the
    default: twistd's own format and file.
    """
    return _observer(ClassicText())


def messageLine(event: dict[str, Any]) -> str | None:
    """
    An event's message alone, as one line of text (more, indented, for a
    traceback), without time stamp or system: what a worker process writes
    for the main process to log.
    """
    line = preformatted(event)
    if line is not None:
        return line + "\n"
    text = eventAsText(event, includeTimestamp=False, includeSystem=False)
    return text.rstrip("\n") + "\n" if text else None


def eventAsJSON(event: dict[str, Any]) -> str:
    """
    One log event as a line of JSON: time, level, namespace, the formatted
    message, the event's own simple fields, and a traceback if it has one.
    """
    record: dict[str, object] = {
        "time": datetime.datetime.fromtimestamp(
            event.get("log_time", 0), datetime.UTC
        ).isoformat(timespec="milliseconds"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key in _SKIP or key.startswith("log_") or key in record:
            continue
        if isinstance(value, str | int | float | bool) or value is None:
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, sort_keys=False) + "\n"


def jsonObserver(stream: IO[str]) -> ILogObserver:
    """
    An observer writing L{eventAsJSON} lines to C{stream}, each at once.
    """
    from twisted.logger import FileLogObserver

    return FileLogObserver(stream, eventAsJSON)


def jsonLogger() -> ILogObserver:
    """
    The observer twistd's C{--logger} makes for C{--log-format json}.
    """
    return _observer(eventAsJSON)
