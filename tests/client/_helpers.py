"""Helpers that let one test body drive ``Client`` and ``AsyncClient`` alike."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any, TypeVar

from retrysafe import AsyncClient, AsyncPaginator, Client

T = TypeVar("T")
AnyClient = Client | AsyncClient


async def resolve(value: T | Awaitable[T]) -> T:
    """The result of a sync call, or of an async one awaited."""
    if inspect.isawaitable(value):
        return await value
    return value


async def collect(items: Any) -> list[Any]:
    """Every item of a sync or async paginator."""
    if isinstance(items, AsyncPaginator):
        return [item async for item in items]
    return list(items)
