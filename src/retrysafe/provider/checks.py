"""What the provider checks: deterministic rules over a person's name, birthdate and documents.

The rules stand in for a real data source's records. They are fixed so that a
test (or a reader of the docs) knows the answer in advance:

- ``name_missing``: ``name_first`` or ``name_last`` is empty;
- ``birthdate_missing`` / ``birthdate_invalid``: no birthdate, or not YYYY-MM-DD;
- ``underage``: younger than 18 on the day of the check (UTC);
- ``watchlist_match``: the last name is on the provider's watch list;
- ``document_missing``: a ``document`` check for an inquiry without documents.

No reason means ``passed``; any reason means ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

KINDS = ("database", "document")
"""The kinds of check the provider runs."""

ADULT_AGE = 18
WATCH_LIST = frozenset({"mallory", "moriarty"})
"""Last names (lower case) the provider's records flag."""


class InvalidCheckRequest(ValueError):
    """The request body is not a check the provider understands (answered 400)."""


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """One check: who, what kind, and how many documents the inquiry has."""

    kind: str
    reference: str | None
    name_first: str | None
    name_last: str | None
    birthdate: str | None
    documents: int

    @classmethod
    def from_json(cls, body: bytes) -> CheckRequest:
        """Parse and check a request body; raises :class:`InvalidCheckRequest`."""
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InvalidCheckRequest("the body is not JSON") from exc
        if not isinstance(document, dict):
            raise InvalidCheckRequest("the body must be a JSON object")
        kind = document.get("kind", "database")
        if kind not in KINDS:
            raise InvalidCheckRequest(f"kind must be one of {', '.join(KINDS)}")
        person = document.get("person", {})
        if not isinstance(person, dict):
            raise InvalidCheckRequest("person must be an object")
        documents = document.get("documents", 0)
        if not isinstance(documents, int) or isinstance(documents, bool) or documents < 0:
            raise InvalidCheckRequest("documents must be a count")
        return cls(
            kind=kind,
            reference=_optional_text(document, "reference"),
            name_first=_optional_text(person, "name_first"),
            name_last=_optional_text(person, "name_last"),
            birthdate=_optional_text(person, "birthdate"),
            documents=documents,
        )


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: str
    """``passed`` or ``failed``."""
    reasons: tuple[str, ...]


def run_check(request: CheckRequest, *, today: date | None = None) -> CheckResult:
    """Apply the rules of this module's docstring, in that order."""
    today = today or datetime.now(UTC).date()
    reasons: list[str] = []
    if not request.name_first or not request.name_last:
        reasons.append("name_missing")
    if not request.birthdate:
        reasons.append("birthdate_missing")
    else:
        born = _date(request.birthdate)
        if born is None:
            reasons.append("birthdate_invalid")
        elif _age(born, today) < ADULT_AGE:
            reasons.append("underage")
    if request.name_last and request.name_last.strip().lower() in WATCH_LIST:
        reasons.append("watchlist_match")
    if request.kind == "document" and request.documents == 0:
        reasons.append("document_missing")
    return CheckResult("failed" if reasons else "passed", tuple(reasons))


def _optional_text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidCheckRequest(f"{name} must be a string or null")
    return value


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
