"""The provider's rules: fixed answers a test or a reader can predict."""

from __future__ import annotations

import json
from datetime import date

import pytest

from retrysafe.provider.checks import CheckRequest, InvalidCheckRequest, run_check

TODAY = date(2026, 6, 15)


def request(**person: str | None) -> CheckRequest:
    body = {
        "kind": "database",
        "person": {
            "name_first": "Ada",
            "name_last": "Lovelace",
            "birthdate": "1990-12-10",
            **person,
        },
    }
    return CheckRequest.from_json(json.dumps(body).encode())


def test_a_complete_adult_passes() -> None:
    assert run_check(request(), today=TODAY) == run_check(request(), today=TODAY)
    result = run_check(request(), today=TODAY)
    assert (result.status, result.reasons) == ("passed", ())


@pytest.mark.parametrize(
    ("person", "reasons"),
    [
        ({"name_first": None}, ("name_missing",)),
        ({"name_last": ""}, ("name_missing",)),
        ({"birthdate": None}, ("birthdate_missing",)),
        ({"birthdate": "10/12/1990"}, ("birthdate_invalid",)),
        ({"birthdate": "2008-06-16"}, ("underage",)),
        ({"name_last": "Moriarty"}, ("watchlist_match",)),
        ({"name_first": None, "birthdate": "2020-01-01"}, ("name_missing", "underage")),
    ],
)
def test_each_rule_fails_the_check_with_its_reason(
    person: dict[str, str | None], reasons: tuple[str, ...]
) -> None:
    result = run_check(request(**person), today=TODAY)
    assert (result.status, result.reasons) == ("failed", reasons)


def test_eighteen_today_is_an_adult() -> None:
    assert run_check(request(birthdate="2008-06-15"), today=TODAY).status == "passed"


def test_a_document_check_needs_a_document() -> None:
    body = {
        "kind": "document",
        "person": {"name_first": "A", "name_last": "B", "birthdate": "1990-01-01"},
        "documents": 0,
    }
    without = CheckRequest.from_json(json.dumps(body).encode())
    with_one = CheckRequest.from_json(json.dumps({**body, "documents": 1}).encode())
    assert run_check(without, today=TODAY).reasons == ("document_missing",)
    assert run_check(with_one, today=TODAY).status == "passed"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"kind":"dna"}',
        b'{"person":"Ada"}',
        b'{"documents":-1}',
        b'{"documents":true}',
        b'{"person":{"name_first":7}}',
    ],
)
def test_a_body_that_is_not_a_check_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidCheckRequest):
        CheckRequest.from_json(body)
