"""
L{multiport.config.files}: reading an operator's file never blocks and never reads
without end.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.config.files import FileError, readRegularFile, sizeText, whyNotWritable


def bounded(call, seconds: float = 10):
    """
    C{call()} in a thread, its result or exception, or C{TimeoutError} if it
    has not returned after C{seconds} (a blocking read is a failure, not a
    hung test).
    """
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as e:  # handed back to the test
            outcome.append((False, e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"still blocked after {seconds} s")
    [(returned, result)] = outcome
    if not returned:
        assert isinstance(result, BaseException)
        raise result
    return result


class ReadRegularFileTests(SynchronousTestCase):
    """
    L{readRegularFile} reads regular files up to a limit and refuses the
    rest at once.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)

    def refused(self, path: Path, limit: int = 100) -> FileError:
        """
        The L{FileError} reading C{path} raises, within seconds.
        """

        def read() -> FileError | bytes:
            try:
                return readRegularFile(path, limit, "thing")
            except FileError as e:
                return e

        error = bounded(read)
        assert isinstance(error, FileError), error
        return error

    def test_regularFile(self):
        """
        A regular file of at most the limit is read whole.
        """
        path = self.folder / "f"
        path.write_bytes(b"x" * 100)
        self.assertEqual(readRegularFile(path, 100, "thing"), b"x" * 100)

    def test_overLimit(self):
        """
        A file one byte over the limit is refused, naming the limit.
        """
        path = self.folder / "f"
        path.write_bytes(b"x" * 101)
        error = self.refused(path)
        self.assertEqual(str(error), f"cannot read thing {path}: larger than 100 bytes")

    def test_fifo(self):
        """
        A FIFO with no writer is refused at once: opening it does not wait
        for one.
        """
        path = self.folder / "fifo"
        os.mkfifo(path)
        error = self.refused(path)
        self.assertEqual(error.reason, "not a regular file (a FIFO)")
        self.assertIsNone(error.errno)

    def test_fifoWithWriter(self):
        """
        A FIFO that a writer holds open is refused too, without reading
        what it sends.
        """
        path = self.folder / "fifo"
        os.mkfifo(path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        writer = os.open(path, os.O_WRONLY)
        self.addCleanup(os.close, writer)
        os.write(writer, b"x" * 1000)
        self.assertEqual(self.refused(path).reason, "not a regular file (a FIFO)")

    def test_device(self):
        """
        /dev/zero, which would read without end, is refused unread.
        """
        error = self.refused(Path("/dev/zero"))
        self.assertEqual(
            str(error),
            "cannot read thing /dev/zero: not a regular file (a character device)",
        )

    def test_directory(self):
        """
        A directory is refused in the system's words.
        """
        self.assertEqual(self.refused(self.folder).reason, "Is a directory")

    def test_missing(self):
        """
        A missing file is refused with the system's reason and number.
        """
        error = self.refused(self.folder / "missing")
        self.assertEqual(
            (error.reason, error.errno), ("No such file or directory", errno.ENOENT)
        )

    def test_nul(self):
        """
        A path with a NUL in it is refused, not raised as ValueError.
        """
        self.assertIn("null", self.refused(Path("a\x00b")).reason)

    def test_growingProcFile(self):
        """
        A file whose size says 0 but that holds more (as /proc's do) is
        still held to the limit.
        """
        error = self.refused(Path("/proc/self/status"), limit=10)
        self.assertEqual(error.reason, "larger than 10 bytes")

    def test_noDescriptorLeft(self):
        """
        Refused or read, the file is closed again.
        """
        fifo = self.folder / "fifo"
        os.mkfifo(fifo)
        regular = self.folder / "f"
        regular.write_bytes(b"x")
        before = len(os.listdir("/proc/self/fd"))
        for path in (fifo, self.folder, Path("/dev/zero"), regular):
            try:
                readRegularFile(path, 10, "thing")
            except FileError:
                pass
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)


class SizeTextTests(SynchronousTestCase):
    """
    L{sizeText} writes sizes as people do.
    """

    def test_units(self):
        """
        Whole MiB, KiB and GiB get their unit; anything else is bytes.
        """
        self.assertEqual(
            [sizeText(n) for n in (1 << 20, 16 << 20, 4096, 1 << 30, 1000, 1025)],
            ["1 MiB", "16 MiB", "4 KiB", "1 GiB", "1000 bytes", "1025 bytes"],
        )


class WhyNotWritableTests(SynchronousTestCase):
    """
    L{whyNotWritable} says, without writing, why files could not be made
    in a folder.
    """

    def test_writable(self):
        """
        A writable folder, or a missing one below it, is fine.
        """
        folder = Path(self.mktemp()).absolute()
        folder.mkdir()
        self.assertIsNone(whyNotWritable(folder))
        self.assertIsNone(whyNotWritable(folder / "a" / "b"))
        self.assertFalse((folder / "a").exists())

    def test_fileInTheWay(self):
        """
        A file where a folder should be: "Not a directory", as mkdir says.
        """
        file = Path(self.mktemp()).absolute()
        file.write_text("")
        self.assertEqual(whyNotWritable(file / "state"), "Not a directory")
        self.assertEqual(whyNotWritable(file), "Not a directory")
