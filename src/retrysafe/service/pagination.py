"""List query parameters (``filter[…]``, ``page[size]``, ``page[after]``) and ``links.next``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Select
from starlette.requests import Request
from starlette.responses import Response

from retrysafe import ids
from retrysafe.database import Database
from retrysafe.envelope import ApiError
from retrysafe.service.serialization import Resource, page

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_FILTER_LENGTH = 255


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One validated list request: newest first, items strictly older than ``after``."""

    size: int
    after: str | None
    filters: Mapping[str, str]

    def next_link(self, path: str, items: Sequence[Mapping[str, object]]) -> str | None:
        """The URL of the following page, or ``None`` when ``items`` was the last one."""
        if len(items) <= self.size:
            return None
        query = {f"filter[{k}]": v for k, v in self.filters.items()}
        query["page[size]"] = str(self.size)
        query["page[after]"] = str(items[self.size - 1]["id"])
        return f"{path}?{urlencode(query)}"


async def newest_first(
    db: Database,
    query: Select[Any],
    id_column: ColumnElement[str],
    wanted: PageRequest,
    render: Callable[[Mapping[str, Any]], Resource],
    path: str,
) -> Response:
    """The page ``wanted`` asks for of ``query``'s rows, highest (newest) id first, with links.next.

    One row more than the page is read: its presence is what says a next page exists.
    """
    if wanted.after is not None:
        query = query.where(id_column < wanted.after)
    query = query.order_by(id_column.desc()).limit(wanted.size + 1)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    items = [render(row._mapping) for row in rows]
    return page(items[: wanted.size], wanted.next_link(path, items))


def invalid_parameter(name: str, requirement: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"Query parameter {name} {requirement}.")


def page_request(
    request: Request,
    *,
    id_prefix: str,
    filters: Mapping[str, Callable[[str], str | None]],
) -> PageRequest:
    """Validate the list parameters; unknown ``page[…]``/``filter[…]`` names are 400.

    ``filters`` maps each filter name to a check returning why a value is refused.
    A misspelt filter must not silently list everything, hence the strictness.
    """
    params = request.query_params
    chosen: dict[str, str] = {}
    for key, value in params.multi_items():
        if key.startswith("filter[") and key.endswith("]"):
            name = key[len("filter[") : -1]
            check = filters.get(name)
            if check is None:
                allowed = ", ".join(f"filter[{n}]" for n in sorted(filters)) or "none"
                raise invalid_parameter(key, f"is not supported (supported: {allowed})")
            problem = _text_problem(value) or check(value)
            if problem is not None:
                raise invalid_parameter(key, problem)
            chosen[name] = value
        elif key.startswith("page[") and key not in ("page[size]", "page[after]"):
            raise invalid_parameter(key, "is not supported (supported: page[size], page[after])")
    size = DEFAULT_PAGE_SIZE
    raw_size = params.get("page[size]")
    if raw_size is not None:
        # The length check comes first: int() of a huge digit string is slow, then refused.
        valid = len(raw_size) <= 3 and raw_size.isascii() and raw_size.isdigit()
        if not valid or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
            raise invalid_parameter("page[size]", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
        size = int(raw_size)
    after = params.get("page[after]")
    if after is not None and not ids.is_valid(id_prefix, after):
        raise invalid_parameter(
            "page[after]", f"must be a {id_prefix}_… id taken from links.next or a listed item"
        )
    return PageRequest(size=size, after=after, filters=chosen)


def _text_problem(value: str) -> str | None:
    if len(value) > MAX_FILTER_LENGTH:
        return "is too long"
    # PostgreSQL cannot compare text with NUL in it: the query would fail as a 500.
    if "\x00" in value:
        return "must not contain NUL characters"
    return None


def any_value(_value: str) -> str | None:
    return None
