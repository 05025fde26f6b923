"""
Reading the files an operator names (certificates, keys, CA bundles, the
configuration file, the admin token): regular files only, and only so much
of one.

A FIFO would block the reactor at C{open} until a writer came, a device
such as C{/dev/zero} would read without end, and a directory is no file:
each is refused before a byte is read.  This module imports nothing heavy,
so that C{multiport-ctl} can use it too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: What C{stat} says a path is, for the error about anything but a file.
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileError(Exception):
    """
    A file can't be read; C{str()} names what it is for, its path and why.

    @ivar path: The file.
    @ivar reason: Why, without the path (C{"No such file or directory"},
        C{"not a regular file (a FIFO)"}, C{"larger than 1 MiB"}).
    @ivar errno: The system's error number when opening or reading failed,
        else C{None}.
    """

    def __init__(
        self, what: str, path: Path, reason: str, errno: int | None = None
    ) -> None:
        super().__init__(f"cannot read {what} {path}: {reason}")
        self.path = path
        self.reason = reason
        self.errno = errno


def sizeText(size: int) -> str:
    """
    C{size} bytes as a person writes it: C{1 MiB}, C{4 KiB}, C{100 bytes}.
    """
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def _kind(mode: int) -> str | None:
    """
    Why a file of C{mode} can't be read as one, or C{None} if it can.
    """
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        # The operating system's own words, as reading it would give.
        return os.strerror(errno.EISDIR)
    for test, name in _KINDS:
        if test(mode):
            return f"not a regular file ({name})"
    return "not a regular file"


def _readUpTo(descriptor: int, size: int) -> bytes:
    """
    At most C{size} bytes from C{descriptor}, fewer only at its end.
    """
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.read(descriptor, min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def readRegularFile(path: Path, limit: int, what: str) -> bytes:
    """
    The contents of the regular file C{path}, read without ever blocking on
    it: anything else (a FIFO, a device, a directory, a socket) is refused
    before it is read.

    @param limit: The most bytes it may hold.
    @param what: What the file is for, for the error (C{"certificate"},
        C{"the admin token"}).
    @raise FileError: naming C{what} and C{path}, if it can't be opened, is
        not a regular file, or holds more than C{limit} bytes.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (the check
        # below then refuses it); it changes nothing for a regular file.
        descriptor = os.open(
            path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        )
    except OSError as e:
        raise FileError(what, path, e.strerror or str(e), e.errno) from None
    except ValueError as e:  # a NUL in the path
        raise FileError(what, path, str(e)) from None
    try:
        status = os.fstat(descriptor)
        refused = _kind(status.st_mode)
        if refused is not None:
            raise FileError(what, path, refused)
        if status.st_size > limit:
            raise FileError(what, path, f"larger than {sizeText(limit)}")
        # One byte more than allowed tells a file that grew (or a /proc
        # file, whose size says 0) from one that fits.
        data = _readUpTo(descriptor, limit + 1)
    except OSError as e:
        raise FileError(what, path, e.strerror or str(e), e.errno) from None
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise FileError(what, path, f"larger than {sizeText(limit)}")
    return data


def whyNotWritable(folder: Path) -> str | None:
    """
    Why files could not be made in C{folder} (made first if missing), in the
    system's words, or C{None} if they could: asked without writing, for
    C{--check}.  The folder, or the nearest one above it that exists, must
    be a folder the process may write on a file system mounted read-write.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return os.strerror(errno.ENOTDIR)
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return os.strerror(errno.EROFS)
    if not os.access(existing, os.W_OK | os.X_OK):
        return os.strerror(errno.EACCES)
    return None
