"""Running a coroutine to completion from synchronous or asynchronous test code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_sync(coroutine_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync *or* async test code.

    A fresh thread gets its own event loop, so this works even while the test's
    own loop is running (``asyncio.run`` would refuse there).
    """

    async def main() -> T:
        return await coroutine_factory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()
