"""The shared Redis on 127.0.0.1:6379, for tests that need one but never stop it."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

URL = "redis://127.0.0.1:6379/0"
SKIP_REASON = "Redis is not reachable on 127.0.0.1:6379"


async def reachable(url: str = URL) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:  # any failure to answer PING means there is no usable server
        return False
    finally:
        await client.aclose()


def fresh_prefix(what: str) -> str:
    """A key prefix no other test uses, so tests share the server without meeting."""
    return f"retrysafe-test:{what}:{uuid.uuid4().hex[:12]}:"


async def delete_prefixed(prefix: str, url: str = URL) -> int:
    """Delete every key under ``prefix``; returns how many went."""
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        return int(await client.delete(*keys)) if keys else 0
    finally:
        await client.aclose()
