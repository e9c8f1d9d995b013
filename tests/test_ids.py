"""Time-ordered ids: the base-32 encoding, and creation order as string order."""

from __future__ import annotations

import random

import pytest

from retrysafe import ids


def _digits(value: int, width: int) -> str:
    """The encoding spelled out: one Crockford digit per 5 bits, most significant first."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "".join(alphabet[(value >> (5 * place)) & 31] for place in reversed(range(width)))


@pytest.mark.parametrize("width", [1, 9, 10, 16, 26])
def test_the_encoding_is_crockford_base32_most_significant_first(width: int) -> None:
    rand = random.Random(7)
    values = [
        0,
        1,
        31,
        32,
        (1 << (5 * width)) - 1,
        *(rand.getrandbits(5 * width) for _ in range(500)),
    ]
    for value in values:
        assert ids._encode(value, width) == _digits(value, width)


def test_an_id_is_its_time_and_counter_in_26_characters() -> None:
    value = ids.new_id("act")
    assert ids.is_valid("act", value)
    assert len(value) == len("act_") + 26


def test_ids_sort_in_the_order_they_were_made() -> None:
    made = [ids.new_id("log") for _ in range(2000)]
    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_lowest_id_sorts_before_every_id_made_since() -> None:
    floor = ids.lowest_id("log", 0)
    assert floor < ids.new_id("log")
