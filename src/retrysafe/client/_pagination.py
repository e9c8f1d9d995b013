"""Auto-paginating iterators over the API's cursor-paginated lists.

Each page is an ordinary call through the client's retry loop. The next page
is requested by reusing the query of ``links.next`` on the original path,
rather than following the link's URL: the server builds that URL from the
``Host`` it saw, which behind a proxy or a path prefix is not where the
client can reach it, while the cursor in the query is all that matters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from ._errors import UnexpectedResponseError
from ._models import Model, parse_resource

__all__ = ["AsyncPaginator", "Page", "Paginator", "parse_page"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items and the query of the next page, if any."""

    items: tuple[T, ...]
    next_params: Mapping[str, str] | None


def parse_page(model: type[Model], document: Any) -> Page[Model]:
    """A list document (``{"data": [...], "links": {"next": ...}}``) as a :class:`Page`."""
    if not isinstance(document, Mapping) or not isinstance(document.get("data"), list):
        raise UnexpectedResponseError(f"expected a list of {model.__name__} resources")
    items = tuple(parse_resource(model, resource) for resource in document["data"])
    links = document.get("links")
    next_link = links.get("next") if isinstance(links, Mapping) else None
    next_params = dict(httpx.URL(str(next_link)).params) if next_link else None
    return Page(items=items, next_params=next_params)


def _advance(current: Mapping[str, str], page: Page[Any]) -> Mapping[str, str] | None:
    # A next link that would ask for the same page again ends the iteration
    # instead of looping forever on a misbehaving server.
    if page.next_params is None or dict(page.next_params) == dict(current):
        return None
    return page.next_params


class Paginator(Generic[T]):
    """Iterates every item of a list, fetching pages lazily as the loop reaches them."""

    def __init__(
        self, fetch: Callable[[Mapping[str, str]], Page[T]], params: Mapping[str, str]
    ) -> None:
        self._fetch = fetch
        self._params = params

    def __iter__(self) -> Iterator[T]:
        params: Mapping[str, str] | None = self._params
        while params is not None:
            page = self._fetch(params)
            yield from page.items
            params = _advance(params, page)


class AsyncPaginator(Generic[T]):
    """Async flavour of :class:`Paginator`: ``async for item in client.accounts.list()``."""

    def __init__(
        self, fetch: Callable[[Mapping[str, str]], Awaitable[Page[T]]], params: Mapping[str, str]
    ) -> None:
        self._fetch = fetch
        self._params = params

    async def __aiter__(self) -> AsyncIterator[T]:
        params: Mapping[str, str] | None = self._params
        while params is not None:
            page = await self._fetch(params)
            for item in page.items:
                yield item
            params = _advance(params, page)
