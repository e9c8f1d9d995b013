"""CPU per request of ``RetrySafe`` on the Redis store, pipelined connection against redis-py.

    python benchmarks/redis_store_cpu.py [--url redis://127.0.0.1:6379/0]
                                         [--requests 4000] [--rounds 3] [--from-url | --plain]

A trivial ASGI handler (201, a small JSON body) mounted as a library user mounts
it, ``RetrySafe(app, store=RedisIdempotencyStore(Redis.from_url(url)))``, driven
in-process with canned ASGI messages on one uvloop event loop, at 1 and at 32
concurrent requests: new keys (two scripts each, claim and complete) and replays
of one key (one script). It prints the process CPU time (``time.process_time``:
this process only, not Redis's) per request, best of ``--rounds``, for the
store's per-request scripts on its pipelined connection and on redis-py (the
same store with its pipelined connection switched off: exactly the code path
every request took before the connection existed), in the same run.
``--from-url`` builds the store as ``store="redis://…"`` does instead
(``RedisIdempotencyStore.from_url``: timeouts, so a timer per command, and one retry);
``--plain`` gives the store ``Redis(host=…, port=…, db=…)``, redis-py's default
``Retry`` (three retries, backing off) included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from redis.asyncio import Redis

from retrysafe.asgi import Message, Receive, RetrySafe, Scope, Send
from retrysafe.stores.redis import RedisIdempotencyStore

BODY = b'{"amount":7}'
ANSWER = b'{"data":{"id":"thing_1"}}'


async def handler(scope: Scope, receive: Receive, send: Send) -> None:
    """The trivial app: reads the body, answers 201."""
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def scope_for(key: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/things",
        "raw_path": b"/things",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer bench"),
            (b"idempotency-key", key.encode()),
            (b"content-length", b"%d" % len(BODY)),
        ],
        "state": {},
    }


async def post(app: RetrySafe, key: str) -> None:
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_for(key), receive, send)
    if status != 201:
        raise RuntimeError(f"the app answered {status}, not 201: is Redis up?")


async def cpu_per_request(
    run: Callable[[int], Awaitable[None]], requests: int, concurrency: int
) -> float:
    """Microseconds of this process's CPU per request, ``concurrency`` requests at a time."""
    each = requests // concurrency
    gc.collect()
    start = time.process_time()
    await asyncio.gather(*(run(each) for _ in range(concurrency)))
    return (time.process_time() - start) / (each * concurrency) * 1e6


async def measure(url: str, requests: int, rounds: int, from_url: bool, plain: bool) -> None:
    prefix = f"rs-bench-cpu:{uuid.uuid4().hex[:8]}:"
    if from_url:
        built = "RedisIdempotencyStore.from_url"
        store = RedisIdempotencyStore.from_url(url, prefix=prefix)
    elif plain:
        # Redis(host=…) as most code builds it: redis-py's default Retry, which backs off.
        where = urlsplit(url)
        db = int(where.path.lstrip("/") or 0)
        client = Redis(host=where.hostname or "localhost", port=where.port or 6379, db=db)
        built = "Redis(host=…)"
        store = RedisIdempotencyStore(client, prefix=prefix)
    else:
        built = "Redis.from_url"
        store = RedisIdempotencyStore(Redis.from_url(url), prefix=prefix)
    if not store.pipelined:
        raise SystemExit(f"{url}: the store falls back to redis-py for this client")
    pipeline = store._pipeline  # switched off and on below: the two paths, one store
    app = RetrySafe(handler, store=store)
    serial = iter(range(10**9))

    async def creates(n: int) -> None:
        for _ in range(n):
            await post(app, f"new-{next(serial)}")

    async def replays(n: int) -> None:
        for _ in range(n):
            await post(app, "replayed")

    best: dict[tuple[str, str, int], float] = {}
    try:
        await creates(200)
        await replays(200)
        for _ in range(rounds):
            for path in ("redis-py", "pipelined"):
                store._pipeline = pipeline if path == "pipelined" else None
                for name, run in (("new key", creates), ("replay", replays)):
                    for concurrency in (1, 32):
                        await run(50)  # warm the path's connections
                        cpu = await cpu_per_request(run, requests, concurrency)
                        case = (name, path, concurrency)
                        best[case] = min(cpu, best.get(case, cpu))
    finally:
        store._pipeline = pipeline
        client = Redis.from_url(url)
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        await client.aclose()
        await store.aclose()
    print(f"CPU per request (µs, best of {rounds}), {requests} requests a case, {built}")
    print(f"{'':10} {'concurrency':>11} {'redis-py':>9} {'pipelined':>9}")
    for name in ("new key", "replay"):
        for concurrency in (1, 32):
            before = best[(name, "redis-py", concurrency)]
            after = best[(name, "pipelined", concurrency)]
            print(f"{name:10} {concurrency:>11} {before:>9.0f} {after:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    built = parser.add_mutually_exclusive_group()
    built.add_argument("--from-url", action="store_true", help="RedisIdempotencyStore.from_url")
    built.add_argument("--plain", action="store_true", help="Redis(host=…): default retry")
    args = parser.parse_args()
    uvloop.run(measure(args.url, args.requests, args.rounds, args.from_url, args.plain))


if __name__ == "__main__":
    main()
