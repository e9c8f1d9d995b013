"""benchmarks/library_cpu.py runs the library mount end to end and reports what it measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import servers

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for shared/bench/anchor_sqlite.py: the script's own handler that answers 201
# at once, so the script's parts are checked without the shared anchors.
ANCHOR = "from benchmarks.library_cpu import plain as app\n"


def _run(tmp_path: Path, *args: str) -> str:
    anchors = tmp_path / "anchors"
    anchors.mkdir(exist_ok=True)
    (anchors / "anchor_sqlite.py").write_text(ANCHOR)
    env = {**os.environ, servers.ANCHOR_DIR_ENV: str(anchors)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "library_cpu.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_new_keys_through_the_mount_are_measured_and_all_answered(
    tmp_path: Path, store: str
) -> None:
    out = _run(tmp_path, "--store", store, "--concurrency", "3", "--requests", "7")
    assert f"{store} store around the anchor app, new key, 3 x 7:" in out
    assert "answers: 201: 21" in out
    assert "CPU per request:" in out
    assert "full garbage collections:" in out
    if store == "sqlite":
        assert "units per group commit:" in out


def test_replays_are_one_key_recorded_first(tmp_path: Path) -> None:
    out = _run(tmp_path, "--store", "sqlite", "--replay", "--concurrency", "2", "--requests", "4")
    assert "new key" not in out
    assert "answers: 201: 8" in out
