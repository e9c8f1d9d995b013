"""A small chaos run in CI: 300 SDK operations through faults, two server kills, one PostgreSQL
restart, and the Jepsen-style check of the final database finds no duplicate and no loss.

``python -m benchmarks.chaos`` is the full run (10,000 operations); this is the
same code with smaller numbers, so a change that breaks exactly-once shows up
in CI and not only when someone runs the big one.
"""

from __future__ import annotations

import pytest
from tests.support.throwaway import skip_without_postgres_binaries

from benchmarks.chaos.config import Backend, ChaosConfig
from benchmarks.chaos.report import summary
from benchmarks.chaos.run import run

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_small_chaos_run_loses_nothing_and_duplicates_nothing() -> None:
    skip_without_postgres_binaries()
    config = ChaosConfig(
        seed=7,
        operations=300,
        workers=16,
        servers=2,
        backend=Backend.POSTGRES,
        server_kills=2,
        postgres_restarts=1,
        max_seconds=45,
        progress_interval=0,
    )
    result = run(config)
    printed = summary(result)
    assert result.ok, printed
    assert not result.timed_out, printed
    assert len(result.operations) == 300
    # The nemesis really struck, and the faults really hit answers after execution.
    assert result.nemesis_skipped == 0, printed
    assert result.events["server_kill"] == 2, printed
    assert result.events["postgres_stop"] == 1, printed
    assert sum(n for name, n in result.faults.items() if name != "none") > 0, printed
    assert result.during.replays_seen > 0, printed
    for verdict in (result.during, result.settled):
        assert verdict is not None
        assert verdict.count("duplicate") == verdict.count("lost") == 0, printed
