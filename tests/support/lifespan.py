"""An ASGI app between its lifespan start-up and shutdown, as a server runs it.

httpx's ASGITransport sends no lifespan events: an app driven through it alone never
opens or closes what its lifespan owns (a service's database connections stay open
and their driver threads keep the test process from exiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from retrysafe.asgi import Message, Scope


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[list[Message]]:
    """The app between its lifespan start-up and shutdown, as a server runs it.

    Yields what the app has sent the server (the start-up's answer first); a
    start-up that failed ends the context at once, since a server would exit.
    """
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []
    answered = asyncio.Event()
    await inbox.put({"type": "lifespan.startup"})

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"].startswith("lifespan.startup."):
            answered.set()

    async def serve() -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        try:
            await app(scope, receive, send)
        except Exception:
            # Starlette re-raises a failed start-up after reporting it, as servers expect.
            if not any(m["type"] == "lifespan.startup.failed" for m in sent):
                raise
        finally:
            answered.set()

    task = asyncio.create_task(serve())
    await asyncio.wait_for(answered.wait(), timeout=10)
    if sent and sent[0]["type"] == "lifespan.startup.complete":
        try:
            yield sent
        finally:
            await inbox.put({"type": "lifespan.shutdown"})
            await asyncio.wait_for(task, timeout=10)
    else:
        await asyncio.wait_for(task, timeout=10)
        yield sent


async def lifespan(app: Any) -> list[Message]:
    """Start the app and shut it down again; return what it sent the server."""
    async with running(app) as sent:
        pass
    return sent
