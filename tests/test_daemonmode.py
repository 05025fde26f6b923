"""
Tests for L{multiport.daemon.daemonmode}: twistd's status pipe carries a start-up
error whole.  (tests.test_twistd.DaemonModeTests runs the real command.)
"""

from __future__ import annotations

import io
import os
import sys

from twisted.scripts._twistd_unix import UnixApplicationRunner
from twisted.trial.unittest import SynchronousTestCase

from multiport.daemon.daemonmode import MAX_STATUS, reportStartupErrorsWhole
from multiport.errors import StartupError


class StatusPipeTests(SynchronousTestCase):
    """
    The daemon's end writes a StartupError whole; the terminal's end prints
    it as a line.  Anything else goes as twistd has it.
    """

    def setUp(self) -> None:
        # A subclass, so that twistd's own class is left as it is.
        self.runnerClass = type("Runner", (UnixApplicationRunner,), {})
        reportStartupErrorsWhole(self.runnerClass)
        self.runner = self.runnerClass.__new__(self.runnerClass)
        self.terminal = io.StringIO()
        self.patch(sys, "__stderr__", self.terminal)

    def through(self, data: bytes) -> int:
        """
        Send C{data} through a pipe to the terminal's end; its exit code.
        """
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        try:
            return self.runner._waitForStart(read)
        finally:
            os.close(read)

    def test_whole(self):
        """
        A StartupError longer than twistd's 100 bytes arrives whole, printed
        as the line -n prints; status 1.
        """
        message = "cannot listen on 127.0.0.1:8080: " + "é, " * 100 + "[here]"
        data = self.runner._formatChildException(StartupError(message))
        self.assertEqual(self.through(data), 1)
        self.assertEqual(self.terminal.getvalue(), f"multiport: {message}\n")

    def test_bounded(self):
        """
        What goes through the pipe is cut to one atomic write.
        """
        data = self.runner._formatChildException(StartupError("x" * 10_000))
        self.assertEqual(len(data), MAX_STATUS)

    def test_otherErrors(self):
        """
        Another exception is reported as twistd reports it.
        """
        data = self.runner._formatChildException(ValueError("boom"))
        self.assertEqual(data, b"1 ValueError: boom")
        self.assertEqual(self.through(data), 1)
        self.assertEqual(
            self.terminal.getvalue(),
            "An error has occurred: b'ValueError: boom'\n"
            "Please look at log file for more information.\n",
        )

    def test_started(self):
        """
        twistd's "0" (started) still exits 0, printing nothing.
        """
        self.assertEqual(self.through(b"0"), 0)
        self.assertEqual(self.terminal.getvalue(), "")

    def test_once(self):
        """
        Wrapping twice wraps once.
        """
        wait = self.runnerClass._waitForStart
        reportStartupErrorsWhole(self.runnerClass)
        self.assertIs(self.runnerClass._waitForStart, wait)
