"""Per-key locks across the processes sharing one SQLite file, released by the kernel on a crash.

On PostgreSQL a request holds its key's advisory lock while it runs; other
processes trying the key answer 409 at once, and a process that dies lets go of
it with its connection. SQLite has no such lock, so a claim there used to be an
uncommitted row under the file's one write lock, held from the claim through the
handler to the commit: every other request of every process waited behind it,
one request at a time.

These locks play the advisory lock's part for SQLite: one byte of a lock file
beside the database per key (``<database>-keys``, empty: the bytes are only lock
ranges), taken with Linux's open-file-description locks (``F_OFD_SETLK``). They
belong to the open file, not to the thread or the process, so two stores in one
process exclude each other like two processes, closing another descriptor of the
file releases nothing, and the kernel drops them when the process dies however it
dies: a crash mid-request leaves the key free, as a rolled-back transaction did.
Taken without waiting: a key held elsewhere is a 409, never a queue.

Where these locks are missing (not Linux), :func:`open_key_locks` gives ``None``
and the store claims in the request's transaction as before.
"""

from __future__ import annotations

import hashlib
import os
import struct

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["KeyLocks", "open_key_locks"]

_SET_LOCK: int = getattr(fcntl, "F_OFD_SETLK", 0)
"""0 where the platform has no open-file-description locks."""
# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (0 for open-file-description locks), padded to 32 bytes.
_FLOCK = struct.Struct("@hhqqi4x")
_OFFSET_MASK = (1 << 62) - 1
"""Lock offsets stay below 2**62: a byte range needs no file that long, only the number."""


def _offset(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest()) & _OFFSET_MASK


class KeyLocks:
    """Non-blocking locks on names (``organization\\x1fkey``), one byte of the lock file each.

    In this process a name is held by at most one holder (a dict, since
    open-file-description locks of one descriptor do not exclude each other);
    across processes the kernel decides. 63-bit offsets make two names sharing a
    byte (and so a needless 409) a chance of about one in 10**18 per pair.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._pid = 0
        self._held: dict[int, object] = {}

    def acquire(self, name: str) -> object | None:
        """A handle for :meth:`release` if ``name`` was free everywhere, else ``None``."""
        fd = self._descriptor()
        offset = _offset(name)
        if offset in self._held:
            return None
        try:
            fcntl.fcntl(fd, _SET_LOCK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
        except OSError:  # EAGAIN/EACCES: another process holds it
            return None
        handle = object()
        self._held[offset] = handle
        return handle

    def release(self, name: str, handle: object) -> None:
        """Give ``name`` back if ``handle`` still holds it (a second call does nothing)."""
        offset = _offset(name)
        if self._held.get(offset) is not handle:
            return
        del self._held[offset]
        if self._pid == os.getpid():
            fcntl.fcntl(self._fd, _SET_LOCK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0))

    def close(self) -> None:
        """Close the lock file: every lock this process holds through it goes with it."""
        self._held.clear()
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    def _descriptor(self) -> int:
        # Opened on first use, and again in a forked child: a descriptor inherited
        # across fork shares its locks with the parent, which would not exclude it.
        if self._pid != os.getpid():
            self._held.clear()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self._pid = os.getpid()
        return self._fd


def open_key_locks(database_path: str) -> KeyLocks | None:
    """Key locks for the SQLite file at ``database_path``; None in memory or without OFD locks."""
    if not _SET_LOCK or database_path in ("", ":memory:") or database_path.startswith("file:"):
        return None
    return KeyLocks(database_path + "-keys")
