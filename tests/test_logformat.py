"""
Tests for L{multiport.logformat}: the JSON log.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from multiport import logformat


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
        logformat.configure(path)
        observer = logformat.jsonLogger()
        observer({"log_time": 0, "log_format": "hello", "log_level": LogLevel.info})
        observer._outFile.close()
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["message"], "hello")
