"""
The daemon's log as JSON: one object per line (C{--log-format json}).

twistd picks its log observer from C{--logger}, a dotted name it calls with
no arguments; C{--log-format json} sets that option to L{jsonLogger} and
L{configure} tells it where twistd would have written.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent

_destination: str = "-"

#: Event fields that are the logging system's own, not the event's.
_SKIP = frozenset({"log_logger", "log_source", "log_format", "log_io", "log_trace"})


def configure(destination: str) -> None:
    """
    Where L{jsonLogger}'s observer writes: a file name, or C{-} for standard
    output.
    """
    global _destination
    _destination = destination


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
    An observer writing L{eventAsJSON} lines to C{stream}.
    """
    return FileLogObserver(stream, eventAsJSON)


def jsonLogger() -> ILogObserver:
    """
    The observer twistd's C{--logger} makes for C{--log-format json}.
    """
    stream: IO[str]
    if _destination == "-":
        stream = sys.stdout
    else:
        stream = open(_destination, "a", buffering=1)  # noqa: SIM115
    return jsonObserver(stream)
