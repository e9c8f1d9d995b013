"""Observation: one record per request, for the request log line, metrics and the API log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from limits.errors import StorageError
from starlette.routing import BaseRoute, compile_path

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, header
from retrysafe.envelope import ApiError, database_unavailable, internal_error
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

logger = structlog.get_logger("retrysafe.request")


def _never(_path: str) -> bool:
    return False


@dataclass(slots=True)
class _Answer:
    """What went out: the status, and the bodies kept for the error code and the API log."""

    status: int | None = None
    content_type: str | None = None
    body: list[bytes] = field(default_factory=list)
    body_size: int = 0


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        started_at = time.time()
        keep_bodies = self.body_limit > 0 and self.recorded(scope["path"])
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
                record = self._record(
                    scope, answer, error, started, started_at, request_body if keep_bodies else None
                )
                self._publish(scope, record, error)
            except Exception:  # observing must never cost the client its answer
                logger.exception("observation_failed", path=scope.get("path"))

    def _record(
        self,
        scope: Scope,
        answer: _Answer,
        error: Exception | None,
        started: float,
        started_at: float,
        request_body: list[bytes] | None,
    ) -> RequestRecord:
        duration_ms = (time.perf_counter() - started) * 1000
        values = scope.get("state") or {}
        request_id = values.get(REQUEST_ID_STATE_KEY)
        request_id = request_id if isinstance(request_id, str) else "unknown"
        status, code = _final_status(answer, error, request_id)
        principal = values.get(PRINCIPAL_STATE_KEY)
        principal = principal if isinstance(principal, Principal) else None
        method: str = scope["method"]
        key = None
        outcome = values.get(OUTCOME_STATE_KEY)
        if method in IDEMPOTENT_METHODS:
            raw_key = header(scope, b"idempotency-key")
            if raw_key is not None:
                key = raw_key[:_MAX_KEY_LENGTH].decode("latin-1")
                # Turned away before the idempotency layer (401, 429, 413, shed) or by it
                # (an invalid key, the store unreachable): whatever it was, nothing was kept.
                outcome = outcome or "not_recorded"
        rate = values.get(RATE_LIMIT_STATE_KEY)
        rate_limit = None
        if isinstance(rate, RateLimitState):
            rate_limit = "allowed" if rate.allowed else "limited"
        keep = request_body is not None
        return RequestRecord(
            request_id=request_id,
            started_at=started_at,
            method=method,
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            route=self._route(scope),
            status=status,
            duration_ms=duration_ms,
            organization_id=principal.organization_id if principal else None,
            api_key_id=principal.key_id if principal else None,
            idempotency_key=key,
            outcome=outcome if isinstance(outcome, str) else None,
            rate_limit=rate_limit,
            error_code=code,
            request_body=b"".join(request_body) if request_body is not None else None,
            request_content_type=_decoded(header(scope, b"content-type")) if keep else None,
            response_body=b"".join(answer.body) if keep else None,
            response_content_type=answer.content_type,
        )

    def _publish(self, scope: Scope, record: RequestRecord, error: Exception | None) -> None:
        metrics = self.metrics
        metrics.observe_request(
            record.method, record.route, record.status, record.duration_ms / 1000
        )
        if record.outcome is not None:
            metrics.observe_outcome(record.outcome)
        if record.status == 429:  # the limiter's, or failed authentications' (SPEC §1)
            metrics.rate_limited.inc()
        values = scope.get("state") or {}
        if values.get(SHED_STATE_KEY):
            metrics.shed.inc()
        dependency = values.get(DEPENDENCY_ERROR_STATE_KEY) or _dependency_of(error)
        if isinstance(dependency, str):
            metrics.dependency_error(dependency)
        if self.recorded(record.path) and self.sink is not None:
            self.sink.submit(record)
        _log(record, quiet=record.path in self.quiet_paths)

    def _route(self, scope: Scope) -> str:
        template = _routed_template(scope)
        if template is not None:
            return template
        # Requests answered before routing (401, 429, 413, shed 503) are matched here,
        # off the hot path, against every route of the handler app.
        path = scope["path"]
        for pattern, route_path in self._templates():
            if pattern.match(path):
                return route_path
        return UNMATCHED_ROUTE

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
    # The envelope layer renders this exception next, with these same builders.
    rendered = (
        error
        if isinstance(error, ApiError)
        else database_unavailable()
        if isinstance(error, StoreUnavailable)
        else internal_error(request_id)
    )
    return rendered.status, rendered.errors[0].code


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


def _log(record: RequestRecord, *, quiet: bool) -> None:
    # Every field is safe to ship: no header but the idempotency key, never a body.
    method = logger.debug if quiet else logger.warning if record.status >= 500 else logger.info
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
