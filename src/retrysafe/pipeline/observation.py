"""Observation: one record per request, for the request log line, metrics and the API log."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from limits.errors import StorageError
from starlette.routing import BaseRoute, compile_path

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, header
from retrysafe.envelope import error_for
from retrysafe.observability.metrics import Metrics
from retrysafe.observability.records import (
    DEPENDENCY_ERROR_STATE_KEY,
    ApiLogSink,
    RequestRecord,
)
from retrysafe.pipeline.idempotency import IDEMPOTENT_METHODS, OUTCOME_STATE_KEY
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, REQUEST_ID_STATE_KEY, Principal
from retrysafe.pipeline.rate_limit import RATE_LIMIT_STATE_KEY, RateLimitState
from retrysafe.pipeline.shedding import SHED_STATE_KEY
from retrysafe.unavailable import StoreUnavailable

__all__ = ["CLIENT_CLOSED", "ObservationLayer"]

CLIENT_CLOSED = 499
"""Status recorded for a request abandoned before any answer (nginx's convention)."""

UNMATCHED_ROUTE = "unmatched"
"""Route label of a path no route matches: raw paths would let clients mint label values."""

_ERROR_BODY_LIMIT = 4096  # bytes of an error answer kept to read its code
_MAX_KEY_LENGTH = 255  # the longest valid Idempotency-Key (SPEC §3)
_QUIET_PATHS = frozenset({"/health", "/metrics"})
_ROUTE_CACHE_SIZE = 1024
"""Paths whose route label is remembered; past it the cache starts over (ids make paths many)."""

logger = structlog.get_logger("retrysafe.request")


def _never(_path: str) -> bool:
    return False


class _Answer:
    """What went out: the status, and the bodies kept for the error code and the API log."""

    __slots__ = ("body", "body_size", "content_type", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.content_type: str | None = None
        self.body: list[bytes] = []
        self.body_size = 0


class _RequestLogger:
    """The request line's logger, bound once per structlog configuration.

    ``structlog.get_logger`` gives a lazy proxy that binds a new logger (and makes
    a new output logger) on every call: 1.7 µs a request even when the level
    filters the line out, plus its 13 fields. This keeps one bound logger while
    the configuration is the same one (the same wrapper class, processor list,
    factory and stdout: ``structlog.configure`` replaces them, ``capture_logs``
    edits the list in place) and knows which levels it drops, so a filtered line
    costs a dict lookup.
    """

    __slots__ = ("_bound", "_context", "_enabled", "_factory", "_processors", "_stdout", "_wrapper")

    def __init__(self) -> None:
        self._wrapper: object = None
        self._processors: object = None
        self._factory: object = None
        self._context: object = None
        self._stdout: object = None
        self._bound: Any = None
        self._enabled: dict[int, bool] = {}

    def method(self, level: int) -> Callable[..., Any] | None:
        """The bound logger's method for ``level``, or ``None`` when that level is filtered."""
        config = structlog.get_config()
        if (
            config["wrapper_class"] is not self._wrapper
            or config["processors"] is not self._processors
            or config["logger_factory"] is not self._factory
            or config["context_class"] is not self._context
            or sys.stdout is not self._stdout
        ):
            self._bind(config)
        if not self._enabled[level]:
            return None
        return getattr(self._bound, logging.getLevelName(level).lower())  # type: ignore[no-any-return]

    def _bind(self, config: dict[str, Any]) -> None:
        self._bound = logger.bind()
        is_enabled = getattr(self._bound, "is_enabled_for", None)
        self._enabled = {
            each: bool(is_enabled(each)) if callable(is_enabled) else True
            for each in (logging.DEBUG, logging.INFO, logging.WARNING)
        }
        self._wrapper = config["wrapper_class"]
        self._processors = config["processors"]
        self._factory = config["logger_factory"]
        self._context = config["context_class"]
        self._stdout = sys.stdout


class ObservationLayer:
    """Turns every request into a :class:`RequestRecord`: one log line, metrics, an API-log entry.

    It sits right inside the request-id/envelope layer, so every answer passes
    through it: the shed 503, the 413/415, the 429 and the 401 as much as the
    handler's. An exception on its way up to the envelope is recorded with the
    status the envelope will give it, using the envelope's own builders. The
    layer never changes a request or a response, and its bookkeeping happens
    after the answer has been sent.

    ``recorded(path)`` says which requests go to the API-log ``sink``;
    ``body_limit`` > 0 keeps up to that many bytes of both bodies for it.

    It runs on every request, so it does the least it can: one clock read while
    the request runs (the wall-clock arrival time is derived at the end, and only
    when a record is built), metrics updated without a record, and the record
    built once and only when the sink or the log line will take it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        sink: ApiLogSink | None = None,
        recorded: Callable[[str], bool] = _never,
        routes: Sequence[BaseRoute] = (),
        body_limit: int = 0,
        quiet_paths: frozenset[str] = _QUIET_PATHS,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.sink = sink
        self.recorded = recorded if sink is not None else _never
        self.routes = tuple(routes)
        self.body_limit = body_limit
        self.quiet_paths = quiet_paths
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None
        self._route_cache: dict[str, str] = {}
        self._log = _RequestLogger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        to_sink = self.recorded(scope["path"])
        keep_bodies = to_sink and self.body_limit > 0
        answer = _Answer()
        request_body: list[bytes] = []
        # Errors keep a few KiB to name their code; with body capture on, every answer does.
        limit = self.body_limit if keep_bodies else _ERROR_BODY_LIMIT

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                if keep_bodies:
                    answer.content_type = _header_value(message, b"content-type")
            elif (
                message["type"] == "http.response.body"
                and answer.body_size <= limit
                and (keep_bodies or (answer.status or 0) >= 400)
            ):
                chunk = message.get("body", b"")
                answer.body.append(chunk[: limit + 1 - answer.body_size])
                answer.body_size += len(chunk)
            await send(message)

        async def observed_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                size = sum(map(len, request_body))
                if size <= self.body_limit:
                    request_body.append(message.get("body", b"")[: self.body_limit + 1 - size])
            return message

        error: Exception | None = None
        try:
            await self.app(scope, observed_receive if keep_bodies else receive, observed_send)
        except Exception as exc:
            error = exc
            raise
        finally:
            try:
                self._finish(
                    scope,
                    answer,
                    error,
                    time.perf_counter() - started,
                    to_sink,
                    request_body if keep_bodies else None,
                )
            except Exception:  # observing must never cost the client its answer
                logger.exception("observation_failed", path=scope.get("path"))

    def _finish(
        self,
        scope: Scope,
        answer: _Answer,
        error: Exception | None,
        seconds: float,
        to_sink: bool,
        request_body: list[bytes] | None,
    ) -> None:
        """Count the request, then build its record if the sink or the log line takes it."""
        values = scope.get("state") or {}
        request_id = values.get(REQUEST_ID_STATE_KEY)
        request_id = request_id if isinstance(request_id, str) else "unknown"
        status, code = _final_status(answer, error, request_id)
        method: str = scope["method"]
        route = self._route(scope)
        key = None
        outcome = values.get(OUTCOME_STATE_KEY)
        if method in IDEMPOTENT_METHODS:
            raw_key = header(scope, b"idempotency-key")
            if raw_key is not None:
                key = raw_key
                # Turned away before the idempotency layer (401, 429, 413, shed) or by it
                # (an invalid key, the store unreachable): whatever it was, nothing was kept.
                outcome = outcome or "not_recorded"
        outcome = outcome if isinstance(outcome, str) else None

        metrics = self.metrics
        metrics.observe_request(method, route, status, seconds)
        if outcome is not None:
            metrics.observe_outcome(outcome)
        if status == 429:  # the limiter's, or failed authentications' (SPEC §1)
            metrics.rate_limited.inc()
        if values.get(SHED_STATE_KEY):
            metrics.shed.inc()
        dependency = values.get(DEPENDENCY_ERROR_STATE_KEY) or _dependency_of(error)
        if isinstance(dependency, str):
            metrics.dependency_error(dependency)

        path: str = scope["path"]
        level = (
            logging.DEBUG
            if path in self.quiet_paths
            else logging.WARNING
            if status >= 500
            else logging.INFO
        )
        log = self._log.method(level)
        if not to_sink and log is None:
            return
        principal = values.get(PRINCIPAL_STATE_KEY)
        principal = principal if isinstance(principal, Principal) else None
        rate = values.get(RATE_LIMIT_STATE_KEY)
        rate_limit = None
        if isinstance(rate, RateLimitState):
            rate_limit = "allowed" if rate.allowed else "limited"
        keep = request_body is not None
        record = RequestRecord(
            request_id=request_id,
            # One clock read at the end instead of a second one at the start.
            started_at=time.time() - seconds,
            method=method,
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            route=route,
            status=status,
            duration_ms=seconds * 1000,
            organization_id=principal.organization_id if principal else None,
            api_key_id=principal.key_id if principal else None,
            idempotency_key=key[:_MAX_KEY_LENGTH].decode("latin-1") if key is not None else None,
            outcome=outcome,
            rate_limit=rate_limit,
            error_code=code,
            request_body=b"".join(request_body) if request_body is not None else None,
            request_content_type=_decoded(header(scope, b"content-type")) if keep else None,
            response_body=b"".join(answer.body) if keep else None,
            response_content_type=answer.content_type,
        )
        if to_sink and self.sink is not None:
            self.sink.submit(record)
        if log is not None:
            _log(log, record)

    def _route(self, scope: Scope) -> str:
        template = _routed_template(scope)
        if template is not None:
            return template
        # Requests answered before routing (replays, 401, 429, 413, shed 503) are matched
        # here against every route of the handler app, once per path.
        path: str = scope["path"]
        cached = self._route_cache.get(path)
        if cached is not None:
            return cached
        route = UNMATCHED_ROUTE
        for pattern, route_path in self._templates():
            if pattern.match(path):
                route = route_path
                break
        if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
            self._route_cache.clear()
        self._route_cache[path] = route
        return route

    def _templates(self) -> list[tuple[re.Pattern[str], str]]:
        # Built on first use: the app may gain routes after the pipeline is composed.
        if self._compiled is None:
            self._compiled = [(compile_path(path)[0], path) for path in _route_paths(self.routes)]
        return self._compiled


def _routed_template(scope: Scope) -> str | None:
    """The full template of the route the router matched, or None.

    The matched route knows its template relative to where it was included
    (FastAPI's ``include_router(prefix=…)`` may leave the prefix out), so the
    prefix is taken from the request path: the template's segments replace the
    path's last ones. A ``{…:path}`` parameter spans several segments and is left
    to the regex fallback.
    """
    relative = getattr(scope.get("route"), "path", None)
    if not isinstance(relative, str) or ":path}" in relative:
        return None
    segments = scope["path"].split("/")
    depth = relative.count("/")
    if depth >= len(segments):
        return None
    return "/".join(segments[: len(segments) - depth]) + relative if depth else relative


def _route_paths(routes: Sequence[BaseRoute]) -> list[str]:
    """Every route's full path template, looking inside FastAPI's included routers."""
    paths: list[str] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            paths.extend(
                context.path_format for context in contexts() if hasattr(context, "path_format")
            )
            continue
        path = getattr(route, "path", None)
        if isinstance(path, str):
            paths.append(path)
    return paths


def _final_status(
    answer: _Answer, error: Exception | None, request_id: str
) -> tuple[int, str | None]:
    """The status the client gets, and the error code of a non-2xx answer."""
    if answer.status is not None:
        code = _error_code(b"".join(answer.body)) if answer.status >= 400 else None
        return answer.status, code
    if error is None:
        return CLIENT_CLOSED, None  # cancelled (client gone, shutdown) before any answer
    # The envelope layer renders this exception next, with this same mapping.
    rendered = error_for(error, request_id)
    return rendered.status, rendered.errors[0].code


# Replayed errors (a recorded 400 sent again) are the same bytes every time: parse once.
@functools.lru_cache(maxsize=256)
def _error_code(body: bytes) -> str | None:
    try:
        code = json.loads(body)["errors"][0]["code"]
    except (ValueError, LookupError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _dependency_of(error: BaseException | None) -> str | None:
    """``database`` or ``redis`` when ``error`` (or what caused it) is an unreachable one."""
    while error is not None:
        if isinstance(error, StoreUnavailable):
            return error.dependency
        if isinstance(error, StorageError) or type(error).__module__.startswith("redis"):
            return "redis"
        error = error.__cause__
    return None


def _header_value(message: Message, name: bytes) -> str | None:
    for key, value in message.get("headers", ()):
        if key.lower() == name:
            return _decoded(value)
    return None


def _decoded(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("latin-1")


def _log(method: Callable[..., Any], record: RequestRecord) -> None:
    # Every field is safe to ship: no header but the idempotency key, never a body.
    method(
        "request",
        request_id=record.request_id,
        method=record.method,
        path=record.path,
        route=record.route,
        status=record.status,
        duration_ms=round(record.duration_ms, 2),
        organization_id=record.organization_id,
        api_key_id=record.api_key_id,
        idempotency_key=record.idempotency_key,
        outcome=record.outcome,
        rate_limit=record.rate_limit,
        code=record.error_code,
    )
