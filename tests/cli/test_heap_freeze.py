"""serve freezes the startup heap, so full garbage collections skip it while serving,
and raises the young generation's threshold, so requests in flight are not walked for nothing."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from retrysafe.heap import YOUNG_THRESHOLD, freeze_startup_heap

from .conftest import MainRunner


class _Node:
    """Something that can sit in a reference cycle and be watched by a weak reference."""

    other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was found."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_startup_are_frozen_and_later_cycles_still_collected() -> None:
    survivor = _Node()
    freeze_startup_heap()
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(survivor)

    cycle = _Node()
    cycle.other = _Node()
    cycle.other.other = cycle
    watched = weakref.ref(cycle)
    del cycle
    gc.collect()
    assert watched() is None


@pytest.mark.usefixtures("unfrozen")
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((700, 10, 10), (YOUNG_THRESHOLD, 10, 10)),  # CPython's default
        ((2000, 5, 20), (YOUNG_THRESHOLD, 5, 20)),  # the older generations are kept
        ((50_000, 10, 10), (50_000, 10, 10)),  # already higher: left alone
        ((0, 10, 10), (0, 10, 10)),  # automatic collection off: left off
    ],
)
def test_the_young_threshold_is_raised_never_lowered(
    before: tuple[int, int, int], after: tuple[int, int, int]
) -> None:
    gc.set_threshold(*before)
    freeze_startup_heap()
    assert gc.get_threshold() == after


@pytest.mark.usefixtures("unfrozen")
def test_serve_freezes_after_building_the_app_and_before_serving(
    run_main: MainRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    frozen_when_served: list[int] = []

    def serve(server: uvicorn.Server, sockets: object = None) -> None:
        assert callable(server.config.app)
        frozen_when_served.append(gc.get_freeze_count())
        server.started = True  # as a server that served and stopped

    gc.unfreeze()
    monkeypatch.setattr(uvicorn.Server, "run", serve)
    outcome = run_main("serve", "--port", "0")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(frozen_when_served) == 1
    assert frozen_when_served[0] > 0
