"""SQLite's key locks: exclusive across processes and stores, freed by the kernel on a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrysafe.database.key_locks import KeyLocks, open_key_locks

pytestmark = pytest.mark.skipif(
    open_key_locks("/x.db") is None, reason="no open-file-description locks on this platform"
)


def test_a_held_name_is_refused_elsewhere_until_released(tmp_path: Path) -> None:
    one, two = KeyLocks(str(tmp_path / "db-keys")), KeyLocks(str(tmp_path / "db-keys"))
    try:
        held = one.acquire("org\x1fkey")
        assert held is not None
        assert one.acquire("org\x1fkey") is None  # the same store: one holder per name
        assert two.acquire("org\x1fkey") is None  # another store, as another process
        other = two.acquire("org\x1fother")
        assert other is not None  # other names are not held up
        one.release("org\x1fkey", held)
        one.release("org\x1fkey", held)  # twice is harmless
        assert two.acquire("org\x1fkey") is not None
    finally:
        one.close()
        two.close()


def test_a_stale_handle_does_not_release_the_next_holder(tmp_path: Path) -> None:
    locks, other = KeyLocks(str(tmp_path / "db-keys")), KeyLocks(str(tmp_path / "db-keys"))
    try:
        first = locks.acquire("k")
        assert first is not None
        locks.release("k", first)
        second = locks.acquire("k")
        assert second is not None
        locks.release("k", first)  # the first holder's late release
        assert other.acquire("k") is None
    finally:
        locks.close()
        other.close()


def test_closing_the_lock_file_releases_everything(tmp_path: Path) -> None:
    one, two = KeyLocks(str(tmp_path / "db-keys")), KeyLocks(str(tmp_path / "db-keys"))
    try:
        assert one.acquire("a") is not None
        assert one.acquire("b") is not None
        one.close()
        assert two.acquire("a") is not None
        assert two.acquire("b") is not None
    finally:
        two.close()


def test_a_killed_process_leaves_its_names_free(tmp_path: Path) -> None:
    path = str(tmp_path / "db-keys")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from retrysafe.database.key_locks import KeyLocks
                locks = KeyLocks({path!r})
                assert locks.acquire("org\\x1fkey") is not None
                print("held", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    locks = KeyLocks(path)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert locks.acquire("org\x1fkey") is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        assert locks.acquire("org\x1fkey") is not None
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
        locks.close()


def test_a_forked_child_does_not_share_its_parents_locks(tmp_path: Path) -> None:
    """An inherited descriptor shares its locks: the child must open the file again."""
    locks = KeyLocks(str(tmp_path / "db-keys"))
    try:
        opened = locks.acquire("opened")  # the parent's descriptor exists before the fork
        assert opened is not None
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            os.read(to_child, 1)  # the parent holds "k" now, through the kernel only
            refused = locks.acquire("k") is None
            os.write(from_child, b"refused" if refused else b"taken")
            os._exit(0)
        assert locks.acquire("k") is not None
        os.write(from_parent, b"!")
        answer = os.read(to_parent, 16)
        os.waitpid(pid, 0)
        for fd in (to_child, from_parent, to_parent, from_child):
            os.close(fd)
        assert answer == b"refused"
    finally:
        locks.close()


def test_memory_databases_have_none() -> None:
    assert open_key_locks(":memory:") is None
    assert open_key_locks("") is None
