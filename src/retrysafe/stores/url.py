"""Idempotency stores built from a URL: ``memory://``, ``sqlite:///…``, ``postgresql://…``, ``redis://…``.

:func:`store_from_url` is the one factory the library mount, ``retrysafe serve``
and the tests use. A URL with an unknown scheme, or for a backend whose extra is
not installed, is a :class:`ValueError` at once; an unreachable backend is found
by :meth:`UrlStore.start` (at start-up, before the first request) and reported as
:class:`~retrysafe.unavailable.StoreUnavailable` naming the kind of store and
the URL without its password; one that goes away later is a 503 naming the
idempotency store and its kind. Backends are imported only when their scheme is
asked for, so a memory or Redis store loads no SQL driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from retrysafe.idempotency.decisions import Decision
from retrysafe.idempotency.records import RecordKey
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.unavailable import StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from retrysafe.database import Database

__all__ = ["SCHEMES", "UrlStore", "display_url", "store_from_url"]

SCHEMES = ("memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix")
"""URL schemes :func:`store_from_url` understands (``unix`` is Redis over a socket)."""

_SQL = frozenset({"sqlite", "postgresql", "postgres"})
_REDIS = frozenset({"redis", "rediss", "unix"})
_EXTRA = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres"}
_KIND = {"postgres": "postgresql", "rediss": "redis", "unix": "redis"}
"""The kind of store a scheme names, in messages, where it is not the scheme itself."""


def display_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@dataclass(frozen=True, slots=True)
class _Opened:
    store: IdempotencyStore
    close: Callable[[], Awaitable[None]]


class UrlStore:
    """An idempotency store named by a URL, opened and checked once, closed at shutdown.

    It is an :class:`~retrysafe.idempotency.store.IdempotencyStore` itself: the
    first ``attempt`` opens the backend if :meth:`start` was not called (an app
    served without lifespan events), so an unreachable store answers 503 there
    rather than failing the process. :meth:`start` is what a server's start-up
    calls, so that an unreachable store stops the process with a clear message.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 60.0,
        redis_prefix: str | None = None,
        sql_pool_size: int = 10,
    ) -> None:
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in SCHEMES:
            raise ValueError(
                f"Unknown idempotency store URL {display_url(url)!r}: expected memory://,"
                " sqlite:///path, postgresql://user@host/db or redis://host:6379/0."
            )
        self.url = url
        self.backend = "memory" if scheme == "memory" else "sql" if scheme in _SQL else "redis"
        self.kind = _KIND.get(scheme, scheme)
        """``memory``, ``sqlite``, ``postgresql`` or ``redis``: what messages call the store."""
        self.subject = f"idempotency store ({self.kind})"
        """What a 503 tells the client is unreachable when this store is."""
        self._dependency = "database" if self.backend == "sql" else self.backend
        self.lease_seconds = lease_seconds
        self._opened: _Opened | None = None
        self._lock = asyncio.Lock()
        self._open: Callable[[], Awaitable[_Opened]]
        if scheme == "memory":
            if url.partition("://")[2]:
                raise ValueError(f"A memory store URL takes nothing after memory://, got {url!r}.")
            memory = MemoryIdempotencyStore(lease_seconds=lease_seconds)
            self._opened = _Opened(memory, _nothing_to_close)
        elif scheme in _SQL:
            self._open = self._sql_opener(_database(url, scheme, sql_pool_size))
        else:
            self._open = self._redis_opener(_redis_client(url), redis_prefix)

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    @property
    def store(self) -> IdempotencyStore:
        """The backend's store; only once :meth:`start` has opened it."""
        if self._opened is None:
            raise RuntimeError(f"The store at {self.display_url} is not open yet.")
        return self._opened.store

    async def start(self) -> None:
        """Open the backend and check it answers; raises StoreUnavailable when it does not."""
        if self._opened is not None:
            return
        async with self._lock:
            if self._opened is None:
                try:
                    self._opened = await self._open()
                except StoreUnavailable as exc:
                    exc.subject = self.subject
                    raise

    async def aclose(self) -> None:
        """Close the backend's connections (a memory store keeps its records until exit)."""
        opened = self._opened
        if opened is None or self.backend == "memory":
            return
        self._opened = None
        await opened.close()

    @contextlib.asynccontextmanager
    async def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AsyncIterator[Decision]:
        opened = self._opened
        if opened is None:
            await self.start()
            opened = self._opened
            assert opened is not None
        try:
            async with opened.store.attempt(key, fingerprint, now=now, ttl=ttl) as decision:
                yield decision
        except StoreUnavailable as exc:
            # The backend went away mid-run: the client's 503 names this store (on a SQL
            # store the app's joined writes are in its database too), not "the database".
            if exc.subject is None and exc.dependency == self._dependency:
                exc.subject = self.subject
            raise

    async def purge_expired(self, now: float) -> int:
        await self.start()
        assert self._opened is not None
        return await self._opened.store.purge_expired(now)

    def _sql_opener(self, db: Database) -> Callable[[], Awaitable[_Opened]]:
        async def open_sql() -> _Opened:
            from retrysafe.database.schema import idempotency_records
            from retrysafe.stores.sql import SqlIdempotencyStore

            try:
                async with db.write() as conn:
                    # Only the records' table: the app's database is the app's, and the
                    # service's own tables come from its migrations.
                    await conn.run_sync(
                        lambda sync: idempotency_records.create(sync, checkfirst=True)
                    )
            except Exception as exc:
                await db.dispose()
                raise StoreUnavailable(
                    f"The {self.subject} at {self.display_url} is unreachable: {exc}",
                    dependency="database",
                ) from exc
            store = SqlIdempotencyStore(db, lease_seconds=self.lease_seconds)
            return _Opened(store, db.dispose)

        return open_sql

    def _redis_opener(self, client: Redis, prefix: str | None) -> Callable[[], Awaitable[_Opened]]:
        async def open_redis() -> _Opened:
            from redis.exceptions import RedisError

            from retrysafe.stores.redis import DEFAULT_PREFIX, RedisIdempotencyStore

            try:
                await client.ping()  # type: ignore[misc]  # redis-py types ping sync|async
            except (RedisError, OSError) as exc:
                await client.aclose()
                raise StoreUnavailable(
                    f"The {self.subject} at {self.display_url} is unreachable: {exc}",
                    dependency="redis",
                ) from exc
            store = RedisIdempotencyStore(
                client, lease_seconds=self.lease_seconds, prefix=prefix or DEFAULT_PREFIX
            )
            return _Opened(store, store.aclose)

        return open_redis


def store_from_url(
    url: str,
    *,
    lease_seconds: float = 60.0,
    redis_prefix: str | None = None,
    sql_pool_size: int = 10,
) -> UrlStore:
    """The idempotency store ``url`` names; call ``await store.start()`` at start-up.

    ``lease_seconds`` is how long a claim is held without news from its holder
    (pass :func:`~retrysafe.idempotency.recovery.lease_seconds` of the request
    timeout). ``redis_prefix`` prefixes every Redis key; ``sql_pool_size`` bounds
    the PostgreSQL connections of this process.
    """
    return UrlStore(
        url, lease_seconds=lease_seconds, redis_prefix=redis_prefix, sql_pool_size=sql_pool_size
    )


async def _nothing_to_close() -> None:
    return None


def _missing_extra(url: str, extra: str, exc: ImportError) -> ValueError:
    return ValueError(
        f"The idempotency store {display_url(url)!r} needs the {extra} extra"
        f" (pip install 'retrysafe[{extra}]'): {exc}"
    )


def _database(url: str, scheme: str, pool_size: int) -> Database:
    try:
        from retrysafe.database import Database
    except ImportError as exc:
        raise _missing_extra(url, _EXTRA[scheme], exc) from None
    try:
        return Database(url, pool_size=pool_size)
    except Exception as exc:  # SQLAlchemy's ArgumentError, a missing driver, a bad port
        raise ValueError(f"Invalid idempotency store URL {display_url(url)!r}: {exc}") from None


def _redis_client(url: str) -> Redis:
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from retrysafe.stores.redis import COMMAND_TIMEOUT, CONNECT_TIMEOUT
    except ImportError as exc:
        raise _missing_extra(url, "redis", exc) from None
    try:
        # The Redis store's own client settings: short timeouts, one immediate retry.
        return Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError as exc:
        raise ValueError(f"Invalid idempotency store URL {display_url(url)!r}: {exc}") from None
