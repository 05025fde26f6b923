"""
Tests for L{benchmarks.profiles}: that it reads py-spy's and strace's
output, and that a short profile of a real row runs, names the daemon's
functions and system calls, and leaves no process behind.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import processes, profiles
from benchmarks.profiles import Entry, frameName, table, topFunctions, topSyscalls
from tests.test_benchmarks import liveChildren, requireTools

#: py-spy 0.4's raw (collapsed) output: a stack, a space, its samples.
RAW = """\
<module> (t.py:3);run (/x/base.py:1317);doPoll (/x/multiport/io/reactor.py:88) 60
<module> (twisted/scripts/twistd.py:36);doRead (/x/twisted/internet/tcp.py:248) 30
<module> (twisted/scripts/twistd.py:36);doRead (/x/twisted/internet/tcp.py:251) 5
<module> (twisted/scripts/twistd.py:36);epoll_wait (libc.so.6) 5
"""

#: strace 6's summary (strace -c).
STRACE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 50.10    0.500000           5    100000           sendto
 45.00    0.450000           4    100000      2000 recvfrom
  4.90    0.049000          49      1000           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.999000           4    201000      2000 total
"""


class ParseTests(SynchronousTestCase):
    """
    Reading py-spy's and strace's output.
    """

    def test_frameName(self) -> None:
        """
        A frame is named by its function and the last two parts of its
        file's path, without the line number.
        """
        self.assertEqual(
            frameName("doRead (/usr/lib/python3/twisted/internet/tcp.py:248)"),
            "doRead (internet/tcp.py)",
        )

    def test_nativeFrame(self) -> None:
        """
        A native frame (no line number) keeps its library's name.
        """
        self.assertEqual(frameName("epoll_wait (libc.so.6)"), "epoll_wait (libc.so.6)")

    def test_topFunctions(self) -> None:
        """
        The functions on top of the stack, the same function's lines added
        up, ranked by their share of all samples.
        """
        self.assertEqual(
            topFunctions(RAW, 2),
            [
                Entry("doPoll (io/reactor.py)", 0.6),
                Entry("doRead (internet/tcp.py)", 0.35),
            ],
        )

    def test_topSyscalls(self) -> None:
        """
        The system calls ranked by calls, each with its share and its calls
        per operation; the total line is no system call.
        """
        self.assertEqual(
            topSyscalls(STRACE, 50000.0),
            [
                Entry("sendto", 100000 / 201000, 2.0),
                Entry("recvfrom", 100000 / 201000, 2.0),
                Entry("epoll_wait", 1000 / 201000, 0.02),
            ],
        )

    def test_table(self) -> None:
        """
        Entries are written as a reStructuredText table, calls per
        operation in a third column when known.
        """
        self.assertEqual(
            table("system call", [Entry("sendto", 0.5, 2.0)]),
            "=========== ===== =============\n"
            "system call share per operation\n"
            "=========== ===== =============\n"
            "sendto      50.0% 2.00         \n"
            "=========== ===== =============",
        )


class ProfileTests(SynchronousTestCase):
    """
    C{python -m benchmarks.profiles} on a real daemon.
    """

    def test_echo(self) -> None:
        """
        A one-second profile of the echo row finds the echo handler in the
        daemon's stacks and its reads and writes among its system calls,
        keeps the raw files when asked, and leaves no process behind.
        """
        requireTools("gcc", "py-spy", "strace")
        children = liveChildren()
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        keep = Path(self.mktemp())
        self.assertEqual(
            profiles.main(["echo", "--seconds", "1", "--keep", str(keep)]), 0
        )
        self.assertIn("Echo.dataReceived", (keep / "echo.pyspy.txt").read_text())
        calls = [e.name for e in topSyscalls((keep / "echo.strace.txt").read_text(), 1)]
        self.assertIn("sendto", calls[:2])
        self.assertIn("recvfrom", calls[:2])
        self.assertIn("system call (strace -c -f)", stdout.getvalue())
        self.assertEqual(processes._RUNNING, {})
        self.assertEqual(liveChildren(), children)
