"""
Tests for L{multiport.daemon.logformat}: the text and JSON logs.
"""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    Logger,
    LogLevel,
    capturedLogs,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from multiport.daemon import logfile, logformat
from multiport.ports.connectionparts import connectionLog


class JSONTests(SynchronousTestCase):
    """
    Each event becomes one JSON object on one line.
    """

    def test_event(self):
        """
        Time, level, namespace, the formatted message and the simple fields.
        """
        line = logformat.eventAsJSON(
            {
                "log_time": 0.5,
                "log_level": LogLevel.warn,
                "log_namespace": "multiport.connection",
                "log_format": "{port} closed {reason}",
                "port": "tcp:127.0.0.1:7000",
                "reason": "clean",
                "sent": 12,
                "log_logger": object(),
                "unserialisable": object(),
            }
        )
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertEqual(
            json.loads(line),
            {
                "time": "1970-01-01T00:00:00.500+00:00",
                "level": "warn",
                "namespace": "multiport.connection",
                "message": "tcp:127.0.0.1:7000 closed clean",
                "port": "tcp:127.0.0.1:7000",
                "reason": "clean",
                "sent": 12,
            },
        )

    def test_failure(self):
        """
        A failure's traceback is in the object.
        """
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        record = json.loads(
            logformat.eventAsJSON(
                {"log_time": 0, "log_format": "oops", "log_failure": failure}
            )
        )
        self.assertIn("ValueError: boom", record["traceback"])

    def test_observer(self):
        """
        Logging through the observer writes one JSON line per event.
        """
        stream = io.StringIO()
        log = Logger(observer=logformat.jsonObserver(stream), namespace="test")
        log.info("one {n}", n=1)
        log.info("two")
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
        self.assertEqual([r["message"] for r in records], ["one 1", "two"])
        self.assertEqual(records[0]["n"], 1)

    def test_loggerWritesToConfiguredFile(self):
        """
        jsonLogger writes where configure said.
        """
        path = self.mktemp()
        self.addCleanup(logformat.configure, "-")
        # A log file rotates on SIGUSR1, as twistd's does.
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        logformat.configure(path)
        observer = logformat.jsonLogger()
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)
        observer({"log_time": 0, "log_format": "hello", "log_level": LogLevel.info})
        observer._out.close()
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["message"], "hello")


class TimeStampsTests(SynchronousTestCase):
    """
    Time stamps are twistd's, formatted once a second.
    """

    def test_sameAsTwisted(self):
        """
        Any time within a second gives twistd's stamp for it.
        """
        stamps = logformat.TimeStamps()
        for when in (0.0, 0.25, 0.999, 1.0, 1_700_000_000.5, 1_700_000_001.0):
            self.assertEqual(stamps(when), formatTime(when))
        self.assertEqual(stamps(None), formatTime(None))

    def test_once(self):
        """
        The stamp of a second is made once, not per call.
        """
        stamps = logformat.TimeStamps()
        first = stamps(100.1)
        self.assertIs(stamps(100.9), first)
        self.assertIsNot(stamps(101.0), first)


class ClassicTextTests(SynchronousTestCase):
    """
    ClassicText writes what twistd's text observer writes.
    """

    def assertSameAsTwisted(self, event):
        self.assertEqual(
            logformat.ClassicText()(event), formatEventAsClassicLogText(event)
        )

    def test_line(self):
        """
        A pre-formatted line: its text, stamped and named.
        """
        event = {
            "log_time": 1_700_000_000.4,
            "log_level": LogLevel.info,
            "log_namespace": "multiport.connection",
            "log_format": "{line}",
            "line": "tcp:127.0.0.1:7000 echo 127.0.0.1:5000 closed clean",
        }
        self.assertSameAsTwisted(event)
        text = logformat.ClassicText()(event)
        self.assertIn("[multiport.connection#info] tcp:", text)

    def test_multiline(self):
        """
        Lines after the first are indented, as twistd does.
        """
        self.assertSameAsTwisted(
            {
                "log_time": 5.0,
                "log_level": LogLevel.warn,
                "log_namespace": "x",
                "log_format": "{line}",
                "line": "one\ntwo",
            }
        )

    def test_others(self):
        """
        Events with a system, a failure, another format, no level or no line
        take twistd's formatter.
        """
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        base = {"log_time": 5.0, "log_level": LogLevel.info, "log_format": "{line}"}
        for event in (
            {**base, "line": "a", "log_system": "sys"},
            {**base, "line": "a", "log_failure": failure},
            {**base, "log_format": "n={n}", "n": 3},
            {"log_time": 5.0, "log_format": "{line}", "line": "no level"},
            {**base, "line": ""},
            {**base, "line": 7},
            {"log_time": 5.0},
        ):
            self.assertSameAsTwisted(event)


class Stream:
    """
    A file that records what each write and flush saw.
    """

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        self.flushes += 1


class TextFileObserverTests(SynchronousTestCase):
    """
    Connection lines go out once per reactor turn; anything else at once,
    in order.
    """

    def setUp(self):
        self.clock = Clock()
        self.stream = Stream()
        self.observer = logformat.TextFileObserver(
            self.stream, logformat.ClassicText(), self.clock.callLater
        )
        self.connections = Logger(
            observer=self.observer, namespace="multiport.connection"
        )
        self.other = Logger(observer=self.observer, namespace="other")

    def test_batched(self):
        """
        Connection lines wait for the end of the turn, then go in one write.
        """
        for n in range(3):
            self.connections.info("{line}", line=f"closed {n}")
        self.assertEqual(self.stream.writes, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(len(self.stream.writes), 1)
        self.assertEqual(
            [line.split("] ")[1] for line in self.stream.writes[0].splitlines()],
            ["closed 0", "closed 1", "closed 2"],
        )
        self.assertEqual(self.stream.flushes, 1)

    def test_otherFlushesInOrder(self):
        """
        Another event is written at once, after the connection lines
        before it.
        """
        self.connections.info("{line}", line="first")
        self.other.info("second")
        self.assertEqual(len(self.stream.writes), 1)
        text = self.stream.writes[0]
        self.assertLess(text.index("first"), text.index("second"))
        self.clock.advance(0)
        self.assertEqual(len(self.stream.writes), 1)

    def test_reentrant(self):
        """
        An event logged while a write is under way on the same thread (a
        signal handler that logs) is written too, after the write around it
        and not inside it, instead of waiting forever for it.
        """
        import threading

        observer = self.observer

        class Interrupted(Stream):
            inWrite = False

            def write(self, text: str) -> None:
                # As io's buffered files do: no write inside a write.
                if self.inWrite:
                    raise RuntimeError("reentrant call inside write")
                self.inWrite = True
                try:
                    super().write(text)
                    if len(self.writes) == 1:
                        Logger(observer=observer, namespace="signal").info("received")
                finally:
                    self.inWrite = False

        self.stream = Interrupted()
        observer._out = self.stream
        done = threading.Event()

        def write() -> None:
            self.other.info("first")
            done.set()

        threading.Thread(target=write, daemon=True).start()
        self.assertTrue(done.wait(10), "the write never finished")
        self.assertEqual(len(self.stream.writes), 2)
        self.assertIn("received", self.stream.writes[1])

    def test_nothingToWrite(self):
        """
        An event with no text writes nothing.
        """
        self.observer({"log_time": 1.0})
        self.assertEqual((self.stream.writes, self.stream.flushes), ([], 0))

    def test_emitLine(self):
        """
        L{logformat.emitLine} makes the event C{Logger.info} would, and the
        text and JSON observers write it.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        logformat.emitLine(
            connectionLog, "tcp:x echo 1.2.3.4:5 closed clean", port="tcp:x", sent=4
        )
        [event] = events
        self.assertEqual(event["log_namespace"], "multiport.connection")
        self.assertEqual(event["log_level"], LogLevel.info)
        self.observer(event)
        self.clock.advance(0)
        self.assertIn(
            "[multiport.connection#info] tcp:x echo 1.2.3.4:5 closed clean\n",
            self.stream.writes[0],
        )
        record = json.loads(logformat.eventAsJSON(event))
        self.assertEqual(
            (record["message"], record["port"], record["sent"]),
            ("tcp:x echo 1.2.3.4:5 closed clean", "tcp:x", 4),
        )


class WorkerRecordTests(SynchronousTestCase):
    """
    What a worker writes for each event, and the event the main process
    makes of it: namespace, level, time and fields kept.
    """

    def roundTrip(self, event, worker=2):
        text = logformat.workerRecord(event)
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(text.count("\n"), 1)
        return logformat.eventFromWorker(text.rstrip("\n"), worker)

    def test_accessLine(self):
        """
        An access log line comes back as it was, in its namespace, with its
        fields and the worker's number.
        """
        line = 'tcp:x 1.2.3.4 - - [t] "GET / HTTP/1.1" 200 5 "-" "ua"'
        event = self.roundTrip(
            {
                "log_time": 1234.5,
                "log_level": LogLevel.info,
                "log_namespace": "multiport.access",
                "log_format": "{line}",
                "line": line,
                "client": "1.2.3.4",
                "status": 200,
                "request_time": 0.25,
                "log_logger": object(),
                "unserialisable": object(),
            }
        )
        self.assertEqual(formatEvent(event), line)
        self.assertEqual(
            {k: event[k] for k in ("log_namespace", "log_level", "log_time")},
            {
                "log_namespace": "multiport.access",
                "log_level": LogLevel.info,
                "log_time": 1234.5,
            },
        )
        self.assertEqual(
            (event["client"], event["status"], event["request_time"], event["worker"]),
            ("1.2.3.4", 200, 0.25, 2),
        )
        self.assertNotIn("unserialisable", event)
        text = logformat.ClassicText()(event)
        self.assertIn(f"[multiport.access#info] {line}\n", text)
        record = json.loads(logformat.eventAsJSON(event))
        self.assertEqual(
            (
                record["namespace"],
                record["message"],
                record["client"],
                record["worker"],
            ),
            ("multiport.access", line, "1.2.3.4", 2),
        )

    def test_otherLine(self):
        """
        Any other event keeps its namespace and level; its message says
        which worker, and a traceback follows it.
        """
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        event = self.roundTrip(
            {
                "log_time": 5.0,
                "log_level": LogLevel.error,
                "log_namespace": "multiport.ports.port",
                "log_format": "handler {handler} raised",
                "handler": "echo",
                "log_failure": failure,
            },
            worker=0,
        )
        self.assertEqual(event["log_namespace"], "multiport.ports.port")
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertEqual(event["handler"], "echo")
        message = formatEvent(event)
        self.assertTrue(message.startswith("worker 0: handler echo raised\n"), message)
        self.assertIn("ValueError: boom", message)

    def test_notRecords(self):
        """
        Lines that are not records are not events; events with nothing to
        say write nothing.
        """
        for text in ("plain text", "{broken", "[1, 2]", '{"n": "x"}', '{"m": 5}'):
            self.assertIsNone(logformat.eventFromWorker(text, 1), text)
        self.assertIsNone(logformat.workerRecord({"log_time": 1.0}))

    def test_badLevel(self):
        """
        An unknown level is taken as info.
        """
        event = logformat.eventFromWorker('{"m": "x", "l": "loud", "n": "a"}', 1)
        self.assertEqual(event["log_level"], LogLevel.info)


class TwistedPortLineTests(SynchronousTestCase):
    """
    Twisted's "<factory> starting on N" line for a multiport port is left
    out by the daemon's observers; the same text from elsewhere is not.
    """

    def events(self, system):
        from twisted.python import log as legacy

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        legacy.callWithContext(
            {"system": system}, legacy.msg, "PortSite starting on 8080"
        )
        legacy.callWithContext({"system": system}, legacy.msg, "something else")
        return events

    def test_leftOut(self):
        starting, other = self.events(logformat.PORT_START_SYSTEM)
        self.assertIsNone(logformat.ClassicText()(starting))
        self.assertIsNone(logformat.eventAsJSON(starting))
        self.assertIsNone(logformat.workerRecord(starting))
        self.assertIn("something else", logformat.ClassicText()(other))

    def test_elsewhere(self):
        starting, _ = self.events("-")
        self.assertIn("PortSite starting on 8080", logformat.ClassicText()(starting))


class BatchedObserverTests(SynchronousTestCase):
    """
    L{logformat.batchedObserver} flushes once the reactor has stopped.
    """

    def test_flushAfterShutdown(self):
        reactor = MemoryReactorClock()
        stream = Stream()
        observer = logformat.batchedObserver(
            stream, lambda e: e["line"] + "\n", reactor
        )
        observer(
            {
                "log_namespace": "multiport.connection",
                "log_format": "{line}",
                "line": "a",
            }
        )
        self.assertEqual(stream.writes, [])
        [(flush, args, kwargs)] = reactor.triggers["after"]["shutdown"]
        flush(*args, **kwargs)
        self.assertEqual(stream.writes, ["a\n"])


class ReopeningLogFileTests(SynchronousTestCase):
    """
    The log file rotates with a cap on rotated files, and reopens by name
    when something else (logrotate) moved it away.
    """

    def setUp(self):
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.path = self.folder / "twistd.log"

    def open(self, **kwargs) -> logfile.ReopeningLogFile:
        logFile = logfile.ReopeningLogFile.fromFullPath(str(self.path), **kwargs)
        self.addCleanup(lambda: logFile.closed or logFile.close())
        return logFile

    def test_rotatedFilesCapped(self):
        """
        Size rotation keeps at most maxRotatedFiles rotated files.
        """
        logFile = self.open(rotateLength=100, maxRotatedFiles=3)
        for n in range(50):
            logFile.write(f"line {n:03} {'x' * 30}\n")
        self.assertEqual(logFile.listLogs(), [1, 2, 3])
        self.assertEqual(
            sorted(p.name for p in self.folder.iterdir()),
            ["twistd.log", "twistd.log.1", "twistd.log.2", "twistd.log.3"],
        )

    def test_notMoved(self):
        """
        A file still at its path was not moved; rotating renames it to .1.
        """
        logFile = self.open()
        logFile.write("before\n")
        self.assertFalse(logFile.movedAway())
        logFile.rotate()
        logFile.write("after\n")
        logFile.flush()
        self.assertEqual(self.path.read_text(), "after\n")
        self.assertEqual((self.folder / "twistd.log.1").read_text(), "before\n")

    def test_movedReopens(self):
        """
        Once moved away, rotating opens a new file at the path and leaves the
        moved one as it is.
        """
        logFile = self.open()
        logFile.write("before\n")
        moved = self.folder / "twistd.log-20261205"
        self.path.rename(moved)
        self.assertTrue(logFile.movedAway())
        logFile.rotate()
        logFile.write("after\n")
        logFile.flush()
        self.assertFalse(logFile.movedAway())
        self.assertEqual(self.path.read_text(), "after\n")
        self.assertEqual(moved.read_text(), "before\n")
        self.assertFalse((self.folder / "twistd.log.1").exists())

    def test_replacedReopens(self):
        """
        logrotate's C{create}: a new empty file at the path is not renamed,
        it is the one written next.
        """
        logFile = self.open()
        logFile.write("before\n")
        self.path.rename(self.folder / "twistd.log.1")
        self.path.write_text("")
        self.assertTrue(logFile.movedAway())
        logFile.rotate()
        logFile.write("after\n")
        logFile.flush()
        self.assertEqual(self.path.read_text(), "after\n")
        self.assertEqual((self.folder / "twistd.log.1").read_text(), "before\n")
        self.assertFalse((self.folder / "twistd.log.2").exists())

    def test_sizeRotationAfterMove(self):
        """
        Reaching the size after the file was moved away opens a new one at
        the path instead of writing on into the moved file.
        """
        logFile = self.open(rotateLength=10)
        logFile.write("0123456789\n")
        moved = self.folder / "elsewhere.log"
        self.path.rename(moved)
        logFile.write("next\n")
        logFile.flush()
        self.assertEqual(moved.read_text(), "0123456789\n")
        self.assertEqual(self.path.read_text(), "next\n")

    def test_onLogSignal(self):
        """
        SIGUSR1's work: write what waits, then rotate or reopen, and say
        which in the log.
        """
        logFile = self.open()
        flushed = []
        with capturedLogs() as events:
            self.assertEqual(
                logfile.onLogSignal(logFile, lambda: flushed.append(1)), "rotated"
            )
            self.path.rename(self.folder / "moved.log")
            self.assertEqual(
                logfile.onLogSignal(logFile, lambda: flushed.append(2)), "reopened"
            )
        self.assertEqual(flushed, [1, 2])
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"SIGUSR1: rotated {self.path.absolute()}",
                f"SIGUSR1: {self.path.absolute()} was moved away: reopened it",
            ],
        )
        self.assertTrue(self.path.exists())
