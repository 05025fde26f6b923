"""
The daemon's log: twistd's text format written cheaply, or JSON (one object
per line, C{--log-format json}).

twistd picks its log observer from C{--logger}, a dotted name it calls with
no arguments.  multiport points that option at L{textLogger} or
L{jsonLogger} (unless the command line chose a logger, or syslog) and
L{configure} tells them where twistd would have written.  Both write the
same file twistd would, in the same text format as twistd's own observer
for text: a L{ReopeningLogFile}, rotated at 1 MB as twistd's (keeping at
most 10 rotated files, where twistd keeps them all), and on SIGUSR1 either
rotated, or reopened by name when something else (logrotate) has moved it
away, as nginx does on SIGUSR1.

What makes them cheaper than twistd's observer matters only for the
connection log, one line per connection: time stamps are formatted once a
second, an event whose whole message is a pre-formatted C{{line}} skips the
formatter, and connection lines are written together once per reactor turn
instead of with a system call each.  Every other event is written at once,
after any connection lines before it, so the order of lines is kept.
"""

from __future__ import annotations

# Twisted's methods called here are not annotated (mypy --strict): those
# calls carry type: ignore[no-untyped-call].
import datetime
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Container, Iterator
from typing import IO, Any, Protocol

from twisted.logger import (
    ILogObserver,
    InvalidLogLevelError,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from zope.interface import implementer

from multiport.daemon.logfile import ReopeningLogFile, _onUSR1, onLogSignal
from multiport.io.reactortype import ReactorLike, globalReactor

#: Where the observers write, and how their log file rotates (L{configure}).
_destination: str = "-"
#: Bytes after which the log file is rotated (twistd's figure); 0: never by
#: size.
DEFAULT_ROTATE_SIZE = 1_000_000
#: Rotated files kept (C{twistd.log.1} ... C{.10}); older ones are deleted.
DEFAULT_ROTATE_KEEP = 10
_rotateSize = DEFAULT_ROTATE_SIZE
_rotateKeep = DEFAULT_ROTATE_KEEP

log = Logger()

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

#: The log system of the events logged while a port starts listening
#: (L{multiport.ports.sockets.ListeningPort}) or a UDP socket opens or
#: closes (L{multiport.io.datagramport.DatagramPort}): Twisted's own
#: C{<factory> starting on N} and C{(UDP Port N Closed)} lines among them,
#: which multiport's C{listening on} and C{stopped listening on} lines
#: replace (and a relay session's socket says nothing).
PORT_START_SYSTEM = "multiport.ports.port-start"
_STARTING_ON = re.compile(r".* starting on \d+|\(UDP Port \d+ Closed\)")


def isTwistedPortLine(event: dict[str, Any]) -> bool:
    """
    Whether C{event} is Twisted's C{<factory> starting on N} (or C{(UDP
    Port N Closed)}) line for a multiport port, which the daemon's
    observers leave out.
    """
    if event.get("log_system") != PORT_START_SYSTEM:
        return False
    text = event.get("log_text")
    return isinstance(text, str) and _STARTING_ON.fullmatch(text) is not None


class Writable(Protocol):
    def write(self, data: str, /) -> object: ...

    def flush(self) -> object: ...


def configure(
    destination: str,
    rotateSize: int = DEFAULT_ROTATE_SIZE,
    rotateKeep: int = DEFAULT_ROTATE_KEEP,
) -> None:
    """
    Where L{textLogger}'s and L{jsonLogger}'s observers write: a file name,
    or C{-} for standard output.

    @param rotateSize: Bytes after which the file is rotated; 0: never by
        size (only on SIGUSR1, or by logrotate).
    @param rotateKeep: How many rotated files are kept.
    """
    global _destination, _rotateSize, _rotateKeep
    _destination = destination
    _rotateSize = rotateSize
    _rotateKeep = rotateKeep


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
        if line is None and isTwistedPortLine(event):
            return None
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
        # Reentrant: a signal handler that logs (the reactor's SIGTERM
        # handler does) may run on this thread in the middle of a write; a
        # plain lock would hang the daemon there for good.  Such a nested
        # event only joins the pending lines: the write under way takes it
        # after its own (a file object refuses a write inside a write).
        self._lock = threading.RLock()
        self._writing = False

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
            if self._writing:
                return
            self._writing = True
            try:
                while self._pending:
                    text = "".join(self._pending)
                    self._pending.clear()
                    self._out.write(text)
                    self._out.flush()
            finally:
                self._writing = False


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


def _open(destination: str) -> IO[str] | ReopeningLogFile:
    if destination == "-":
        return sys.stdout
    logFile: ReopeningLogFile = ReopeningLogFile.fromFullPath(  # type: ignore[no-untyped-call]
        destination,
        rotateLength=_rotateSize or None,
        maxRotatedFiles=_rotateKeep,
    )
    return logFile


def batchedObserver(
    out: Writable,
    format: Callable[[dict[str, Any]], str | None],
    reactor: ReactorLike,
) -> TextFileObserver:
    """
    A L{TextFileObserver} on C{reactor}, which also writes what waits once
    the reactor has stopped.
    """
    observer = TextFileObserver(out, format, reactor.callLater)
    reactor.addSystemEventTrigger("after", "shutdown", observer.flush)
    return observer


def _observer(format: Callable[[dict[str, Any]], str | None]) -> TextFileObserver:
    out = _open(_destination)
    observer = batchedObserver(out, format, globalReactor())
    if isinstance(out, ReopeningLogFile):
        _onUSR1(lambda: onLogSignal(out, observer.flush))
    else:
        # A daemon logging to standard output (systemd's journal) has no
        # file to reopen: SIGUSR1, sent by habit or a shared logrotate
        # rule, must not kill it (Python's default for the signal).
        _onUSR1(
            lambda: log.info(
                "SIGUSR1: the log goes to standard output; nothing to reopen"
            )
        )
    return observer


def textLogger() -> ILogObserver:
    """
    The observer twistd's C{--logger} makes for C{--log-format text}, the
    default: twistd's own format and file.
    """
    return _observer(ClassicText())


def _simpleFields(
    event: dict[str, Any], skip: Container[str]
) -> Iterator[tuple[str, object]]:
    """
    The event's own fields (not the logging system's, nor those in
    C{skip}) whose values JSON carries as they are.
    """
    for key, value in event.items():
        if key in _SKIP or key.startswith("log_") or key in skip:
            continue
        if isinstance(value, str | int | float | bool) or value is None:
            yield key, value


#: Fields of a worker's log event that are the logging system's (the legacy
#: log's own) or its message's, not the event's.
_NOT_WORKER_FIELDS = _SKIP | {
    "message",
    "format",
    "isError",
    "system",
    "time",
    "failure",
    "why",
    "line",
}
#: The types of field values a worker's record carries.
_SIMPLE = frozenset({str, int, float, bool, type(None)})


def workerRecord(event: dict[str, Any]) -> str | None:
    """
    What a worker process writes on its standard output for one log event,
    for the main process to log again (L{eventFromWorker}): one line of
    JSON with the time, level, namespace, message, the event's simple
    fields and its traceback, if any.
    """
    line = preformatted(event)
    if line is None:
        if isTwistedPortLine(event):
            return None
        message = formatEvent(event)
    else:
        message = line
    failure = event.get("log_failure")
    if not message and failure is None:
        return None
    level = event.get("log_level")
    record: dict[str, object] = {
        "t": event.get("log_time"),
        "l": "info" if level is None else level.name,
        "n": event.get("log_namespace", "-"),
        "m": message,
        # One pass, no generator: a line per connection goes through here.
        "f": {
            key: value
            for key, value in event.items()
            if type(value) in _SIMPLE
            and key not in _NOT_WORKER_FIELDS
            and not key.startswith("log_")
        },
    }
    if failure is not None:
        record["tb"] = failure.getTraceback()
    return json.dumps(record) + "\n"


def eventFromWorker(text: str, worker: int) -> dict[str, Any] | None:
    """
    The event to log in the main process for a line worker C{worker} wrote
    (L{workerRecord}), or C{None} if the line is not one.

    The event keeps its namespace, level, time and fields, plus C{worker};
    its message is a pre-formatted line: as the worker had it for the
    connection and access logs (whose lines parsers read the same with or
    without workers), after C{worker N: } for the rest.
    """
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("m"), str):
        return None
    namespace = record.get("n")
    namespace = namespace if isinstance(namespace, str) else "-"
    try:
        level = LogLevel.levelWithName(str(record.get("l")))
    except InvalidLogLevelError:
        level = LogLevel.info
    line = record["m"]
    if namespace not in BULK_NAMESPACES:
        line = f"worker {worker}: {line}"
    traceback = record.get("tb")
    if isinstance(traceback, str) and traceback:
        line = f"{line}\n{traceback.rstrip()}"
    fields = record.get("f")
    event: dict[str, Any] = dict(fields) if isinstance(fields, dict) else {}
    when = record.get("t")
    event.update(
        line=line,
        worker=worker,
        log_level=level,
        log_namespace=namespace,
        log_source=None,
        log_format=LINE_FORMAT,
        log_time=when if isinstance(when, int | float) else time.time(),
    )
    return event


def eventAsJSON(event: dict[str, Any]) -> str | None:
    """
    One log event as a line of JSON: time, level, namespace, the formatted
    message, the event's own simple fields, and a traceback if it has one.
    Twisted's C{starting on} line for a port is left out (C{None}).
    """
    if isTwistedPortLine(event):
        return None
    record: dict[str, object] = {
        "time": datetime.datetime.fromtimestamp(
            event.get("log_time", 0), datetime.UTC
        ).isoformat(timespec="milliseconds"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    record.update(_simpleFields(event, record))
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
