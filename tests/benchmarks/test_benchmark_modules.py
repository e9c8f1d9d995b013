"""The benchmark scripts' pure parts: wrk output parsing, medians and targets, the docs splice.

The benchmarks themselves are scripts (``python benchmarks/run.py``), never run by
the suite; these checks keep them importable and their arithmetic right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import report, wrk
from benchmarks.growth import GrowthPoint
from benchmarks.rows import ROWS_BY_KEY, Measurement
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
        {"bare": _measurement("bare", 1000), "create": _measurement("create", 700)},
        {"bare": _measurement("bare", 500), "create": _measurement("create", 400)},
    ]
    summaries = {s.key: s for s in report.summarize(passes)}
    # Paired: median(0.7, 0.8) = 0.75, not 550 / 750.
    assert summaries["create"].ratio == pytest.approx(0.75)
    assert summaries["create"].worker_share == "75/25 %"
    found = {t.name: t for t in report.targets(passes)}
    create = found["create ≥ 0.6× baseline"]
    assert create.met
    assert create.margin == "+25 %"
    assert not found["create p99 ≤ 40 ms at 32 connections"].met


def test_a_row_answered_mostly_with_other_statuses_does_not_meet_a_target() -> None:
    passes = [
        {"bare": _measurement("bare", 1000), "replay": _measurement("replay", 2000, {409: 900})},
        {"bare": _measurement("bare", 1000), "replay": _measurement("replay", 2000, {409: 900})},
    ]
    (replay,) = [t for t in report.targets(passes) if t.name.startswith("replay")]
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
