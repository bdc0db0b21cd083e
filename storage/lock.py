"""The exclusive lock a store holds on its directory while it is open.

LMDB lets many processes open one environment; letitcrash does not: a store is its
environment's only writer (it remembers the revisions it committed, and an old process
still running beside a new one would overwrite what the new one acknowledged). So a
store takes `flock(LOCK_EX | LOCK_NB)` on `<dir>/letitcrash.lock` before it opens LMDB and
keeps it until it is closed. The kernel drops the lock with the process, so a SIGKILL
leaves nothing stale behind (the file stays; its contents only name the last holder).

A second opener fails at once with `StoreLocked`, naming the directory and the pid the
holder wrote into the file: another process, or this one (flock locks belong to an
open file, so a second open in the same process conflicts too). A child forked while
a store is open inherits the lock with its descriptor (opened close-on-exec, so an
exec'd program does not).
"""
from __future__ import annotations

import errno
import fcntl
import os

from .errors import StorageIOError, StoreLocked

LOCK_NAME = "letitcrash.lock"
_HOLDER_BYTES = 32  # what the holder writes: its pid and a newline


class DirectoryLock:
    """`flock` on `<path>/letitcrash.lock`, taken in the constructor (the directory is
    created if missing, as LMDB would); `release()` once."""

    __slots__ = ("path", "created", "_fd")

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageIOError(f"cannot open the store at {path}: {exc}") from None
        name = os.path.join(path, LOCK_NAME)
        try:
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                self.created = True
            except FileExistsError:
                fd = os.open(name, os.O_RDWR | os.O_CLOEXEC)
                self.created = False
        except OSError as exc:
            raise StorageIOError(f"cannot open the store at {path}: its lock file: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageIOError(f"cannot open the store at {path}: locking {name}: {exc}") from None
            raise StoreLocked(path, holder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock is what protects the store; the pid only helps the message
        self._fd = fd

    def release(self, discard: bool = False) -> None:
        """Drop the lock; `discard`: also remove the lock file if this lock created it
        (an open that was refused leaves the directory as it found it)."""
        fd, self._fd = self._fd, -1
        assert fd >= 0, f"the lock on {self.path} was released twice"
        if discard and self.created:
            os.unlink(os.path.join(self.path, LOCK_NAME))  # still held: nobody else has it open
        os.close(fd)  # closing the descriptor drops the flock


def _holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it reads as one."""
    try:
        text = os.pread(fd, _HOLDER_BYTES, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
