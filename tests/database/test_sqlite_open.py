"""Opening a connection while another process holds the new file's lock waits for it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from retrysafe.database import sqlite_driver


def test_the_writer_opens_a_file_another_connection_holds_for_a_moment(tmp_path: Path) -> None:
    """The switch to WAL needs the file's lock; the writer (busy timeout 0) waits for it.

    Two migrations started at once open the same new file: one of them failed with
    "database is locked" while the other switched it to WAL.
    """
    path = str(tmp_path / "new.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")  # still in rollback-journal mode
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.3, holder.execute, ["COMMIT"])
    release.start()
    try:
        writer = sqlite_driver._open(path, "full", 0)
    finally:
        release.join()
        holder.close()
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # Its own statements still meet a lock at once: the writer polls instead.
        assert writer.execute("PRAGMA busy_timeout").fetchone() == (0,)
    finally:
        writer.close()
