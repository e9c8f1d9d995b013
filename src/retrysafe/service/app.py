"""The reference service: the FastAPI handler app and the full retry-safe ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

import structlog
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from retrysafe.asgi import ASGIApp, Scope
from retrysafe.database import Database, DatabaseUnavailable
from retrysafe.envelope import ApiError
from retrysafe.idempotency.recovery import lease_seconds
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.integrations import fastapi as fastapi_errors
from retrysafe.observability import Metrics, note_dependency_error
from retrysafe.observability.api_log_writer import ApiLogWriter
from retrysafe.observability.metrics import metrics_route
from retrysafe.observability.retention import purge_api_logs
from retrysafe.pipeline import METRICS_PATH, PipelineConfig, build_pipeline
from retrysafe.pipeline.authentication import DEFAULT_PUBLIC_PATHS
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.provider.client import ProviderClient, provider_client
from retrysafe.service import openapi
from retrysafe.service.accounts import accounts_router
from retrysafe.service.api_docs import DOCS_PATHS, api_docs_routes
from retrysafe.service.api_logs import api_logs_router, is_logged_path
from retrysafe.service.authenticator import DatabaseAuthenticator
from retrysafe.service.bodies import BodyReader
from retrysafe.service.dashboard import DASHBOARD_PATHS, dashboard_routes
from retrysafe.service.direct_routes import DirectRoutes
from retrysafe.service.documents import documents_router
from retrysafe.service.inquiries import inquiries_router
from retrysafe.service.scopes import RouteScopes
from retrysafe.service.serialization import API_PREFIX, JSON_MEDIA_TYPE
from retrysafe.service.verifications import verifications_router
from retrysafe.settings import Settings
from retrysafe.stores.sql import SqlIdempotencyStore
from retrysafe.stores.url import UrlStore, store_from_url

__all__ = ["create_api", "create_app", "pipeline_config"]

logger = structlog.get_logger("retrysafe.service")

HEALTH_TIMEOUT = 5.0
_HEALTHY = b'{"status":"ok"}'
_ACCOUNTS_PATH = f"{API_PREFIX}/accounts"

DIRECT_ROUTES = (
    ("POST", _ACCOUNTS_PATH),
    ("GET", f"{_ACCOUNTS_PATH}/{{account_id}}"),
    ("GET", f"{API_PREFIX}/inquiries/{{inquiry_id}}"),
    ("GET", f"{API_PREFIX}/verifications/{{verification_id}}"),
)
"""The hot routes called straight, past FastAPI's routing (see :mod:`.direct_routes`)."""


def _version() -> str:
    try:
        return version("retrysafe")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def create_app(settings: Settings, *, provider: ProviderClient | None = None) -> ASGIApp:
    """The whole server: the handlers inside the SPEC §2 pipeline, on one database.

    ``provider`` replaces the upstream provider client ``settings`` describe.
    ``settings.idempotency_store`` is a store URL
    (:func:`~retrysafe.stores.url.store_from_url`) for the records; by default they
    live in the service's database, in the same transaction as the handlers' writes.
    Any other store records them apart from those writes (the README's "What the
    memory and Redis stores guarantee").
    """
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    # Checkpointed records are held past the request deadline: see lease_seconds.
    lease = lease_seconds(settings.request_timeout)
    store: IdempotencyStore = (
        SqlIdempotencyStore(db, lease_seconds=lease)
        if settings.idempotency_store is None
        else store_from_url(
            settings.idempotency_store, lease_seconds=lease, sql_pool_size=settings.db_pool_size
        )
    )
    metrics = Metrics()
    api_log = (
        ApiLogWriter(
            db,
            metrics,
            interval=settings.api_log_flush_interval,
            body_limit=settings.api_log_body_limit,
        )
        if settings.api_log_retention > 0
        else None
    )
    api = create_api(
        db,
        settings,
        idempotency_store=store,
        metrics=metrics,
        api_log=api_log,
        provider=provider,
    )
    limiter = RateLimiter.from_settings(settings.rate_limit, settings.redis_url)
    auth_failures = RateLimiter.from_settings(settings.auth_failure_limit, settings.redis_url)
    for each in (limiter, auth_failures):
        each.on_storage_error = lambda: metrics.dependency_error("redis")
    return build_pipeline(
        DirectRoutes(api, DIRECT_ROUTES),
        config=pipeline_config(settings),
        # With the records in the same database, the key lookup brings the record too.
        authenticator=DatabaseAuthenticator(
            db, records=store if isinstance(store, SqlIdempotencyStore) else None
        ),
        idempotency_store=store,
        rate_limiter=limiter,
        auth_failure_limiter=auth_failures,
        metrics=metrics,
        api_log_sink=api_log,
        api_log_paths=is_logged_path,
        public_paths=DEFAULT_PUBLIC_PATHS | DASHBOARD_PATHS | DOCS_PATHS,
        route_table=RouteScopes(api.routes),
        deferrable=writes_only_through_the_database,
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The pipeline's limits out of the server's settings (the pipeline never sees them)."""
    return PipelineConfig(
        idempotency_ttl=settings.idempotency_ttl,
        max_body=settings.max_body,
        max_upload=settings.max_upload,
        request_timeout=settings.request_timeout,
        max_in_flight=settings.max_in_flight,
        max_header_bytes=settings.max_header_bytes,
        max_query_bytes=settings.max_query_bytes,
        api_log_body_limit=settings.api_log_body_limit if settings.api_log_bodies else 0,
    )


_UPLOAD_PATH = re.compile(rf"{re.escape(API_PREFIX)}/inquiries/[^/]+/documents")


def writes_only_through_the_database(scope: Scope) -> bool:
    """The endpoints whose idempotency claim may wait for their commit.

    Their every effect is a database write (the upload's file is written under a
    fresh name, and removed when the request does not win its key), so two
    processes running one key at once cost nothing but the loser's work: one
    commits, the other replays it. Verifications call the provider: not these.
    """
    if scope["method"] != "POST":
        return False
    path: str = scope["path"]
    return path == _ACCOUNTS_PATH or _UPLOAD_PATH.fullmatch(path) is not None


def create_api(
    db: Database,
    settings: Settings,
    *,
    idempotency_store: IdempotencyStore | None = None,
    metrics: Metrics | None = None,
    api_log: ApiLogWriter | None = None,
    provider: ProviderClient | None = None,
) -> FastAPI:
    """The handler app alone: routes, error rendering and lifespan, without the pipeline.

    The lifespan disposes ``db`` on shutdown and, given ``idempotency_store``,
    purges its expired records (and API-log entries past their retention) every
    ``settings.purge_interval`` seconds. Given ``api_log``, it runs that writer's
    batched inserts and flushes it on shutdown; given ``metrics``, it serves them.
    Verifications call ``provider``, by default the one ``settings`` describe.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if isinstance(idempotency_store, UrlStore):
            await idempotency_store.start()  # unreachable: the start-up fails, naming it
        purger = None
        if idempotency_store is not None:
            purger = asyncio.create_task(
                _purge_expired_forever(idempotency_store, db, settings, metrics)
            )
        if api_log is not None:
            api_log.start()
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            if api_log is not None:
                await api_log.stop()
            await upstream.aclose()
            if isinstance(idempotency_store, UrlStore):
                await idempotency_store.aclose()
            await db.dispose()

    app = FastAPI(
        title="retrysafe",
        version=_version(),
        description="Identity records (accounts, inquiries, documents) behind a retry-safe"
        " pipeline: one error envelope, rate limits and authentication before an"
        " idempotency layer that replays acknowledged results.",
        lifespan=lifespan,
        # Served from the package instead (api_docs): FastAPI's pages load a CDN.
        docs_url=None,
        redoc_url=None,
        # The same handlers a library user installs: every error in the one envelope.
        exception_handlers=fastapi_errors.exception_handlers(),
    )
    reader = BodyReader(max_json_depth=settings.max_json_depth)
    app.include_router(accounts_router(db, reader), prefix=API_PREFIX)
    app.include_router(inquiries_router(db, reader), prefix=API_PREFIX)
    app.include_router(documents_router(db, settings.document_dir), prefix=API_PREFIX)
    upstream = provider or provider_client(settings.provider_url, timeout=settings.provider_timeout)
    app.include_router(verifications_router(db, reader, upstream), prefix=API_PREFIX)
    app.include_router(api_logs_router(db), prefix=API_PREFIX)
    app.router.routes.extend(dashboard_routes())
    app.router.routes.extend(api_docs_routes())
    if metrics is not None:
        app.router.routes.append(metrics_route(metrics, METRICS_PATH))

    @app.get(
        "/health",
        tags=["health"],
        summary="Whether this process can reach its database",
        **openapi.operation(
            name="health_get",
            status=200,
            schema=None,
            description='{"status": "ok"}',
            errors=(503,),
            public=True,
        ),
    )
    async def health(request: Request) -> Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT), db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (DatabaseUnavailable, SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning("health check failed", error=str(exc))
            note_dependency_error(request.scope, "database")
            raise ApiError(
                503,
                "service_unavailable",
                "The database is not answering; this process cannot serve requests now.",
                headers={"Retry-After": "5"},
            ) from None
        return Response(_HEALTHY, media_type=JSON_MEDIA_TYPE)

    openapi.install(app)
    return app


async def _purge_expired_forever(
    store: IdempotencyStore, db: Database, settings: Settings, metrics: Metrics | None
) -> None:
    # Every worker purges; that is harmless (a DELETE of expired rows is idempotent)
    # and needs no coordination between processes.
    while True:
        await asyncio.sleep(settings.purge_interval)
        try:
            purged = await store.purge_expired(time.time())
        except Exception as exc:  # the next round retries; the server keeps serving
            logger.warning("purging expired idempotency records failed", error=str(exc))
            if metrics is not None:
                metrics.dependency_error("database")
        else:
            if metrics is not None:
                metrics.records_purged.inc(purged)
            if purged:
                logger.info("purged expired idempotency records", count=purged)
        if settings.api_log_retention > 0:
            await _purge_api_logs(db, settings.api_log_retention, metrics)


async def _purge_api_logs(db: Database, retention: int, metrics: Metrics | None) -> None:
    try:
        purged = await purge_api_logs(db, now=time.time(), retention=retention)
    except Exception as exc:  # as above: retried next round
        logger.warning("purging old api log entries failed", error=str(exc))
        if metrics is not None:
            metrics.dependency_error("database")
        return
    if metrics is not None:
        metrics.api_log_purged.inc(purged)
    if purged:
        logger.info("purged old api log entries", count=purged)
