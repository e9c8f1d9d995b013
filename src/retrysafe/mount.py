"""RetrySafe: the pipeline mounted on your own ASGI app, in one line.

``app = RetrySafe(app, store="sqlite:///idem.db")`` wraps any ASGI app (FastAPI,
Starlette, Litestar, Django-ASGI) in the SPEC §2 pipeline: the one error
envelope, load shedding, request and body limits, an optional rate limiter, the
tenant that scopes idempotency keys, the idempotency layer and a deadline. It
owns the store it builds from a URL: opened and checked at start-up (an
unreachable store fails the start-up with a clear message), closed at shutdown,
expired records purged in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import structlog

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send
from retrysafe.heap import freeze_startup_heap
from retrysafe.idempotency.recovery import lease_seconds
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.log_config import configure_structlog
from retrysafe.observability.metrics import Metrics
from retrysafe.pipeline import MIB, PipelineConfig, build_pipeline
from retrysafe.pipeline.idempotency import DEFAULT_MAX_RECORDED_RESPONSE
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.pipeline.tenancy import TenantResolver, by_credential
from retrysafe.stores.url import UrlStore, store_from_url

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["DEFAULT_PURGE_INTERVAL", "AnyASGIApp", "RetrySafe", "install_exception_handlers"]

DEFAULT_PURGE_INTERVAL = 600.0
"""Seconds between purges of expired records while the app runs."""

AnyASGIApp: TypeAlias = ASGIApp | Callable[..., Awaitable[None]]
"""An ASGI app as any framework types it (Litestar's scope is a TypedDict, say)."""

_UNSET: Any = object()

logger = structlog.get_logger("retrysafe")


class RetrySafe:
    """An ASGI app: ``app`` inside the retry-safe pipeline.

    ``store`` is a URL (``memory://``, ``sqlite:///idem.db``,
    ``postgresql://…``, ``redis://…``) or a store object. ``tenant`` names whose
    keys a request uses (:mod:`retrysafe.pipeline.tenancy`): by default the hash
    of the ``Authorization`` header the request presents; ``single_tenant()``
    for an app with one client; or any callable on the request scope. There is
    no rate limiter unless ``rate_limit`` is given (``"100/second"`` per
    presented credential or client address; ``rate_limit_storage="redis://…"``
    shares it between processes). The limits default to the reference server's:
    1 MiB bodies, 50 MiB multipart uploads, 512 requests in flight, a 30 s
    deadline, records kept 24 h, responses to keyed requests up to 10 MiB (a larger
    one is not sent: a 500 saying so is recorded and replayed instead).

    Logging: retrysafe logs with structlog. When nothing has configured structlog
    (whose default prints every event to stdout, at a real CPU cost per request),
    RetrySafe configures it to keep ``log_level`` and above (``"warning"``: the lines
    of 5xx answers and of outages) as JSON lines on stdout; ``log_level="info"``
    logs every request's line, and ``log_level=None`` leaves structlog alone. An
    app that configures structlog itself keeps its configuration.

    The app's own errors are turned into the envelope too: the exception
    handlers of :mod:`retrysafe.integrations` are installed on a FastAPI,
    Starlette or Litestar app (where the app has not registered its own for the
    same error), unless ``install_error_handlers=False``.

    Garbage collection: once the app has started (lifespan), the heap it built is
    collected once and frozen (``gc.freeze()``), as ``retrysafe serve`` does, so
    CPython's full collections no longer walk it while serving: each of them
    otherwise held the event loop for tens of milliseconds, every request in
    flight waiting (the p99 of new keys). The young generation's threshold is
    raised to 10 000 (from CPython's 700; one set higher is kept), so the objects
    of the requests in flight are not walked every dozen requests. What is created
    afterwards is collected as before. ``freeze_heap=False`` leaves the collector
    alone.
    """

    def __init__(
        self,
        app: AnyASGIApp,
        *,
        store: str | IdempotencyStore,
        tenant: TenantResolver | None = _UNSET,
        rate_limit: str | None = None,
        rate_limit_storage: str | None = None,
        max_body: int = 1 * MIB,
        max_upload: int = 50 * MIB,
        max_in_flight: int = 512,
        request_timeout: float = 30.0,
        idempotency_ttl: float = 24 * 60 * 60,
        max_recorded_response: int = DEFAULT_MAX_RECORDED_RESPONSE,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        install_error_handlers: bool = True,
        log_level: str | None = "warning",
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        freeze_heap: bool = True,
    ) -> None:
        if tenant is _UNSET:
            tenant = by_credential()
        if tenant is None:
            raise ValueError(
                "RetrySafe needs a tenant to scope idempotency keys: leave tenant out for the"
                " hash of the Authorization header, pass single_tenant() for an app with one"
                " client, or a callable on the request scope."
            )
        if idempotency_ttl <= 0 or purge_interval <= 0:
            raise ValueError("idempotency_ttl and purge_interval must be positive.")
        if rate_limit_storage is not None and rate_limit is None:
            raise ValueError("rate_limit_storage is given but rate_limit is not: give both.")
        self.app = cast(ASGIApp, app)
        self.store: IdempotencyStore = (
            store_from_url(store, lease_seconds=lease_seconds(request_timeout))
            if isinstance(store, str)
            else store
        )
        self.rate_limiter = (
            None
            if rate_limit is None
            else RateLimiter.from_settings(rate_limit, rate_limit_storage)
        )
        self.config = PipelineConfig(
            idempotency_ttl=idempotency_ttl,
            max_body=max_body,
            max_upload=max_upload,
            request_timeout=request_timeout,
            max_in_flight=max_in_flight,
            max_recorded_response=max_recorded_response,
        )
        self.purge_interval = purge_interval
        self.freeze_heap = freeze_heap
        self._clock = clock or time.time
        if log_level is not None and not structlog.is_configured():
            configure_structlog(log_level)
        if install_error_handlers:
            install_exception_handlers(app)
        self.pipeline = build_pipeline(
            self.app,
            config=self.config,
            idempotency_store=self.store,
            tenant=tenant,
            rate_limiter=self.rate_limiter,
            metrics=metrics,
            clock=clock,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.pipeline(scope, receive, send)

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """The handler's writes, in the idempotency record's own transaction (SQL stores).

        ``async with app.transaction() as conn:`` yields a SQLAlchemy
        ``AsyncConnection``. Inside a request the idempotency layer runs (a keyed
        POST/PATCH), it is that attempt's transaction: the writes commit together
        with the recorded response, which is sent only after that commit, and they
        roll back with it when the answer is an error or the process dies. Outside
        one, it is a transaction of its own, committed when the block ends. Do not
        commit or roll it back yourself: the block's end (or the record) does.
        :meth:`session` and :meth:`asyncpg_connection` give the same transaction as
        an ``AsyncSession`` and as asyncpg's connection. A store that cannot share a
        transaction (memory, Redis) raises TypeError: its guarantee is the README's
        weaker one.
        """
        return cast(AbstractAsyncContextManager[Any], self._database().write())

    @contextlib.asynccontextmanager
    async def session(self, **options: Any) -> AsyncIterator[AsyncSession]:
        """A SQLAlchemy ``AsyncSession`` on :meth:`transaction`'s connection.

        ``async with app.session() as session:`` then ``session.add(...)`` and
        ``await session.commit()``, as usual: the session joins the attempt's
        transaction in a SAVEPOINT (``join_transaction_mode="create_savepoint"``), so
        its ``commit()`` releases that savepoint and its ``rollback()`` undoes only
        the session's own work; neither ends the attempt's transaction, which
        commits with the record. What the session did not commit when the block
        ends is rolled back, as with any session. ``options`` go to
        ``AsyncSession`` (``expire_on_commit`` is False unless given).
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        options.setdefault("expire_on_commit", False)
        async with (
            self.transaction() as conn,
            AsyncSession(bind=conn, join_transaction_mode="create_savepoint", **options) as session,
        ):
            yield session

    @contextlib.asynccontextmanager
    async def asyncpg_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The asyncpg connection under :meth:`transaction` (a ``postgresql://`` store).

        ``async with app.asyncpg_connection() as conn: await conn.execute(...)``:
        statements run in the attempt's transaction and commit with its record.
        Do not start or end transactions on it other than with
        ``conn.transaction()`` blocks nested inside (savepoints). Outside a keyed
        request it is a transaction of its own, committed when the block ends.
        """
        database = self._database()
        if database.is_sqlite:
            raise TypeError(
                f"The idempotency store {self.store!r} is on SQLite: asyncpg_connection()"
                " needs a postgresql:// store; use transaction() or session() here."
            )
        async with database.write() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            if driver.is_in_transaction():
                yield driver
            else:
                # SQLAlchemy begins on asyncpg only at its first statement: begin here.
                async with driver.transaction():
                    yield driver

    def _database(self) -> Any:
        """The SQL store's ``retrysafe.database.Database`` (not imported: a library part)."""
        store = self.store.store if isinstance(self.store, UrlStore) else self.store
        database = getattr(store, "database", None)
        if database is None:
            raise TypeError(
                f"The idempotency store {self.store!r} cannot share a transaction with the"
                " app's writes; only the SQL stores (sqlite:///…, postgresql://…) can."
            )
        return database

    async def startup(self) -> None:
        """Open the store and check it answers; what lifespan start-up does."""
        if isinstance(self.store, UrlStore):
            await self.store.start()

    async def shutdown(self) -> None:
        """Close what :meth:`startup` opened; what lifespan shutdown does."""
        if isinstance(self.store, UrlStore):
            await self.store.aclose()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the store before the app starts, and close it after the app has stopped.

        An app that does not speak lifespan (it raises before answering start-up)
        still gets the store opened, checked and closed: this layer then answers
        the server itself.
        """
        startup = await receive()
        try:
            await self.startup()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"retrysafe: {exc}"})
            return
        purger = asyncio.create_task(self._purge_forever())
        app_answered = False
        handed_startup = False

        async def app_receive() -> Message:
            nonlocal handed_startup
            if not handed_startup:
                handed_startup = True
                return startup
            return await receive()

        async def app_send(message: Message) -> None:
            nonlocal app_answered
            app_answered = True
            if message["type"] == "lifespan.startup.complete":
                self._started()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._stop(purger)
            await send(message)

        try:
            await self.pipeline(scope, app_receive, app_send)
        except Exception:
            if app_answered:
                await self._stop(purger)
                raise
            # The app has no lifespan support: answer for it, and keep the store's.
            self._started()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await self._stop(purger)
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await self._stop(purger)

    def _started(self) -> None:
        """The app and the store are up: what they built lives as long as the process."""
        if self.freeze_heap:
            freeze_startup_heap()

    async def _stop(self, purger: asyncio.Task[None]) -> None:
        if not purger.done():
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
        await self.shutdown()

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            try:
                purged = await self.store.purge_expired(self._clock())
            except Exception as exc:  # the next round retries; the app keeps serving
                logger.warning("purging expired idempotency records failed", error=str(exc))
            else:
                if purged:
                    logger.info("purged expired idempotency records", count=purged)


def install_exception_handlers(app: object) -> bool:
    """Install the envelope's exception handlers on a FastAPI, Starlette or Litestar app.

    A handler the app registered itself for the same error is kept (only the
    framework's defaults are replaced). Returns whether ``app`` was one of them.
    Frameworks are looked up in ``sys.modules``: an app of one has imported it.
    """
    fastapi = sys.modules.get("fastapi")
    if fastapi is not None and isinstance(app, fastapi.FastAPI):
        from retrysafe.integrations import fastapi as handlers

        _install_missing(app, handlers.exception_handlers(), handlers.install, ("fastapi",))
        return True
    applications = sys.modules.get("starlette.applications")
    if applications is not None and isinstance(app, applications.Starlette):
        from retrysafe.integrations import starlette as starlette_handlers

        _install_missing(
            app,
            starlette_handlers.exception_handlers(),
            starlette_handlers.install,
            ("starlette",),
        )
        return True
    litestar = sys.modules.get("litestar")
    if litestar is not None and isinstance(app, litestar.Litestar):
        from retrysafe.integrations import litestar as litestar_handlers

        _install_missing(
            app, litestar_handlers.exception_handlers(), litestar_handlers.install, ("litestar",)
        )
        return True
    return False


def _install_missing(
    app: Any,
    handlers: Mapping[Any, Any],
    install: Callable[[Any, Mapping[Any, Any]], None],
    framework_modules: tuple[str, ...],
) -> None:
    existing: Mapping[Any, Any] = getattr(app, "exception_handlers", {}) or {}

    def is_default(key: Any) -> bool:
        current = existing.get(key)
        module = getattr(current, "__module__", "") or ""
        return current is None or module.split(".")[0] in framework_modules

    install(app, {key: handler for key, handler in handlers.items() if is_default(key)})
