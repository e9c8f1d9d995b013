"""A clock a test moves by hand: pass it where code takes a ``() -> float`` time source."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Clock:
    """``clock()`` is ``clock.now``; set or advance ``now`` to move time."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now
