"""The benchmark scripts' pure parts: wrk output parsing, medians and targets, the docs splice.

The benchmarks themselves are scripts (``python benchmarks/run.py``), never run by
the suite; these checks keep them importable and their arithmetic right.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from benchmarks import growth, proc, report, run, servers, wrk
from benchmarks.growth import GrowthPoint
from benchmarks.rows import ROWS_BY_KEY, Measurement, database_processes
from benchmarks.run import parse_args

WRK_OUTPUT = """\
Running 6s test @ http://127.0.0.1:40123
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    38.30ms   10.00ms   1.20s    90.00%
    Req/Sec   410.00     50.00   500.00     70.00%
  Latency Distribution
     50%   38.30ms
     75%  840.00us
     90%   45.00ms
     99%    1.03s
  4902 requests in 6.01s, 2.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:    815.64
Transfer/sec:    340.00KB
status 201: 4890
status 409: 12
"""


def test_wrk_summary_is_read_with_units_and_status_counts() -> None:
    result = wrk.parse(WRK_OUTPUT)
    assert result.requests == 4902
    assert result.seconds == pytest.approx(6.01)
    assert result.rps == pytest.approx(815.64)
    assert result.p50_ms == pytest.approx(38.3)
    assert result.p99_ms == pytest.approx(1030.0)
    assert result.non_2xx == 12
    assert result.socket_errors == 3
    assert result.statuses == {201: 4890, 409: 12}


def test_wrk_output_without_figures_is_an_error() -> None:
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_wrk_command_names_the_script_and_a_timeout_above_any_tail() -> None:
    argv = wrk.command("http://127.0.0.1:1", seconds=6, connections=32)
    assert argv[:4] == ["wrk", "-t2", "-c32", "-d6s"]
    assert f"--timeout={wrk.TIMEOUT_SECONDS}s" in argv
    assert argv[-2:] == [str(wrk.SCRIPT), "http://127.0.0.1:1"]
    assert wrk.SCRIPT.exists()


def _measurement(row: str, rps: float, statuses: dict[int, int] | None = None) -> Measurement:
    answers = statuses or {ROWS_BY_KEY[row].expected_status: int(rps * 6)}
    result = wrk.WrkResult(
        requests=sum(answers.values()),
        seconds=6.0,
        rps=rps,
        p50_ms=30.0,
        p99_ms=50.0,
        non_2xx=0,
        socket_errors=0,
        statuses=answers,
    )
    return Measurement(row, result, 1.0, (3.0, 1.0), 90.0, ("python",))


def test_ratios_are_paired_within_a_pass_and_targets_carry_their_margin() -> None:
    passes = [
        {
            "anchor_sqlite": _measurement("anchor_sqlite", 1000),
            "create": _measurement("create", 700),
        },
        {
            "anchor_sqlite": _measurement("anchor_sqlite", 500),
            "create": _measurement("create", 400),
        },
    ]
    summaries = {s.key: s for s in report.summarize(passes)}
    # Paired: median(0.7, 0.8) = 0.75, not 550 / 750.
    assert summaries["create"].ratio == pytest.approx(0.75)
    assert summaries["anchor_sqlite"].ratio == pytest.approx(1.0)
    assert summaries["create"].worker_share == "75/25 %"
    found = {t.name: t for t in report.targets(passes)}
    create = found["SQLite create ≥ 0.6× anchor_sqlite"]
    assert create.met
    assert create.margin == "+25 %"
    assert not found["stretch: SQLite create ≥ 0.8× anchor_sqlite"].met
    assert not found["SQLite create p99 ≤ 25 ms at 32 connections"].met
    assert not found["server CPU per create ≤ 0.35 ms (SQLite)"].met


def test_cpu_goals_are_also_given_against_the_anchors_cpu_in_the_same_pass() -> None:
    def costing(row: str, cpu_ms: float) -> Measurement:
        result = _measurement(row, 1000).result
        return Measurement(row, result, cpu_ms, (cpu_ms * 6,), 90.0, ())

    passes = [
        {"anchor_sqlite": costing("anchor_sqlite", 0.40), "create": costing("create", 0.60)},
        {"anchor_sqlite": costing("anchor_sqlite", 0.30), "create": costing("create", 0.60)},
    ]
    found = {t.name: t for t in report.targets(passes)}
    assert not found["server CPU per create ≤ 0.35 ms (SQLite)"].met
    scaled = found[
        "reference: server CPU per SQLite create ≤ 1.75× anchor_sqlite's in the same pass"
        " (0.35 ms where it cost 0.2 ms)"
    ]
    # Paired within each pass: median(1.5, 2.0), against 0.35 / 0.20.
    assert scaled.measured == pytest.approx(1.75)
    assert scaled.goal == pytest.approx(1.75)
    assert scaled.met


def test_postgres_rows_are_measured_against_the_postgres_anchor() -> None:
    one = {
        "anchor_sqlite": _measurement("anchor_sqlite", 3000),
        "anchor_postgres": _measurement("anchor_postgres", 1000),
        "postgres": _measurement("postgres", 700),
        "postgres-workers": _measurement("postgres-workers", 1400),
    }
    summaries = {s.key: s for s in report.summarize([one, one])}
    assert summaries["postgres"].ratio == pytest.approx(0.7)
    found = {t.name: t for t in report.targets([one, one])}
    assert found["PostgreSQL create ≥ 0.6× anchor_postgres"].measured == pytest.approx(0.7)
    assert found["PostgreSQL --workers 2 ≥ 1.6× one worker"].measured == pytest.approx(2.0)


def test_each_library_row_is_compared_with_the_best_peer_of_its_kind() -> None:
    one = {
        "lib-memory": _measurement("lib-memory", 900),
        "lib-memory-replay": _measurement("lib-memory-replay", 3000),
        "peer-asgi-idempotency-header": _measurement("peer-asgi-idempotency-header", 1000),
        "peer-fastapi-idempotency-key": _measurement("peer-fastapi-idempotency-key", 600),
        "peer-fastapi-idempotency-replay": _measurement("peer-fastapi-idempotency-replay", 2000),
        # Faster, but every answer a 422: it did not replay, so it is not the peer to beat.
        "peer-fastapi-idempotency-key-replay": _measurement(
            "peer-fastapi-idempotency-key-replay", 9000, {422: 1000}
        ),
    }
    found = {t.name: t for t in report.targets([one, one])}
    new = found["lib-memory ahead of every peer on new keys (best: peer-asgi-idempotency-header)"]
    assert new.measured == pytest.approx(0.9)
    assert not new.met
    replay = found[
        "lib-memory-replay ahead of every peer on replays (best: peer-fastapi-idempotency-replay)"
    ]
    assert replay.met


def test_a_row_answered_mostly_with_other_statuses_does_not_meet_a_target() -> None:
    passes = [
        {
            "anchor_sqlite": _measurement("anchor_sqlite", 1000),
            "replay": _measurement("replay", 2000, {409: 900}),
        }
    ] * 2
    (replay,) = [t for t in report.targets(passes) if t.name.startswith("SQLite replay")]
    assert "100 % of row replay's answers were not 201" in replay.invalid
    assert "not measured" in report.targets_table([replay])


def test_growth_targets_compare_the_largest_table_with_the_empty_one() -> None:
    points = [
        GrowthPoint("0", 0, 800, 40, 100, 1),
        GrowthPoint("1 M", 1_000_000, 700, 45, 120, 600),
    ]
    found = {t.name: t for t in report.targets([], points)}
    change = found["growth: req/s within ±10 % from 0 to 1 M records"]
    assert change.measured == pytest.approx(12.5)
    assert not change.met
    assert found["growth: server RSS ≤ 200 MB"].met


def test_a_prefilled_database_is_on_disk_before_it_is_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fill runs without fsync; its dirty pages, written back during the first
    # measurement, once stalled it for half a second (a p99 of 429 ms at 1 M records).
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(growth.os, "fsync", fsync)
    notes: list[str] = []
    with growth.databases((1000,), notes.append) as made:
        url, _key = made[1000]
        path = url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            (count,) = conn.execute("SELECT count(*) FROM idempotency_records").fetchone()
    assert count == 1000
    assert synced == [path]
    assert notes[-2:] == ["1 k: prefilled 1,000/1,000 records", "1 k: synced to disk"]


def test_a_run_rewrites_only_the_results_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\nprose before\n\n{report.START}\nold\n{report.END}\n\nprose after\n")
    report.write(doc, f"{report.START}\nnew\n{report.END}", lambda section: section)
    assert doc.read_text() == (
        f"# Title\n\nprose before\n\n{report.START}\nnew\n{report.END}\n\nprose after\n"
    )


def test_the_command_line_refuses_a_single_pass_and_unknown_rows() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--passes", "1"])
    with pytest.raises(SystemExit):
        parse_args(["--rows", "create,nonsense"])
    assert parse_args(["--quick"]).seconds == 3


def test_rows_without_their_prerequisites_are_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "_serve_has", lambda flag: False)
    chosen = [ROWS_BY_KEY[key] for key in ("create", "sync-normal", "peer-idempotency-kit")]
    to_run, skipped = run.runnable(chosen)
    assert [row.key for row in to_run] == ["create"]
    assert "--sqlite-synchronous" in skipped["sync-normal"]
    assert "no HTTP integration" in skipped["peer-idempotency-kit"]


def test_missing_anchors_skip_every_row_built_on_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(servers.ANCHOR_DIR_ENV, str(tmp_path))
    with pytest.raises(servers.AnchorsMissing):
        servers.anchor_dir()
    chosen = [ROWS_BY_KEY[key] for key in ("anchor_sqlite", "lib-memory", "replay")]
    to_run, skipped = run.runnable(chosen)
    assert [row.key for row in to_run] == ["replay"]
    assert set(skipped) == {"anchor_sqlite", "lib-memory"}


def test_the_anchors_start_as_their_readme_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "anchor_sqlite.py").write_text("")
    monkeypatch.setenv(servers.ANCHOR_DIR_ENV, str(tmp_path))
    argv = servers.command(ROWS_BY_KEY["anchor_sqlite"].server, 8101, "sqlite:////tmp/a.db")
    assert argv == [
        "python", "-m", "uvicorn", "anchor_sqlite:app", "--app-dir", str(tmp_path),
        "--port", "8101", "--loop", "uvloop", "--http", "httptools",
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    env = servers.environment(ROWS_BY_KEY["anchor_postgres"].server, "postgresql://h/db")
    assert env == {"PERF_PG": "postgresql://h/db"}
    peer = servers.environment(ROWS_BY_KEY["peer-fastapi-idempotency-key"].server, "sqlite:////x")
    assert peer["PERF_DB"] == "/x"
    assert peer["PEER"] == "fastapi-idempotency-key"
    assert peer["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)


def test_the_documented_commands_name_no_port_path_or_key() -> None:
    row = ROWS_BY_KEY["lib-sqlite"]
    argv = ["python", "-m", "uvicorn", "library_app:app", "--port", "40123"]
    words = run._generic(row, argv)
    assert "PORT" in words
    assert "40123" not in words
    assert "LIB_STORE=sqlite" in words
    assert "BENCH_KEY=KEY" in words


def test_the_database_cpu_column_reads_the_store_each_row_talks_to() -> None:
    assert database_processes(ROWS_BY_KEY["postgres"]) == {"postgres"}
    assert database_processes(ROWS_BY_KEY["anchor_postgres-workers"]) == {"postgres"}
    assert database_processes(ROWS_BY_KEY["lib-redis-replay"]) == {"redis-server"}
    assert database_processes(ROWS_BY_KEY["peer-asgi-idempotency-header"]) == {"redis-server"}
    # In-process stores: SQLite and the memory ones have no server of their own.
    for key in ("create", "anchor_sqlite", "lib-sqlite", "lib-memory", "peer-fastapi-idempotency"):
        assert database_processes(ROWS_BY_KEY[key]) == frozenset(), key


def test_processes_are_found_by_their_command_name() -> None:
    own = Path("/proc/self/comm").read_text().strip()
    assert os.getpid() in proc.named(frozenset({own}))
    assert os.getpid() not in proc.named(frozenset({own + "-not"}))


def test_the_anchor_in_two_workers_runs_as_its_readme_says_plus_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clone elsewhere has no shared/bench beside it: the command only needs the file to exist.
    (tmp_path / "anchor_sqlite.py").touch()
    monkeypatch.setenv(servers.ANCHOR_DIR_ENV, str(tmp_path))
    one = servers.command(servers.ServerSpec("anchor_postgres", database="postgres"), 1, "")
    two = servers.command(
        servers.ServerSpec("anchor_postgres", database="postgres", workers=2), 1, ""
    )
    assert "--workers" not in one
    assert two[-2:] == ["--workers", "2"]
    # Only the log level differs otherwise: at info each worker reports its start-up.
    assert [a for a in two[:-2] if a != "info"] == [a for a in one if a != "warning"]


def test_the_database_cpu_median_skips_rows_without_one() -> None:
    with_db = _measurement("postgres", 700)
    passes = [
        {"anchor_postgres": _measurement("anchor_postgres", 1000), "postgres": with_db},
        {
            "anchor_postgres": _measurement("anchor_postgres", 1000),
            "postgres": Measurement(
                "postgres", with_db.result, 1.0, (1.0,), 90.0, ("python",), 0.0, 0.6
            ),
        },
    ]
    summaries = {s.key: s for s in report.summarize(passes)}
    assert summaries["postgres"].database_cpu_ms_per_request == pytest.approx(0.6)
    assert summaries["anchor_postgres"].database_cpu_ms_per_request is None
    assert "| 0.60 |" in report.table(list(summaries.values()))
