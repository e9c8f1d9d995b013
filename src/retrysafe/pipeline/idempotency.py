"""The idempotency layer: a thin ASGI adapter over the store's claim-execute-record cycle."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, header, state
from retrysafe.envelope import ApiError, error_for, naming_request, send_error
from retrysafe.idempotency.decisions import (
    Attempt,
    Execute,
    InFlight,
    LeaseLost,
    Mismatch,
    Replay,
    RunAgain,
    Superseded,
)
from retrysafe.idempotency.fingerprint import ParamsDigest, params_digest_for, request_fingerprint
from retrysafe.idempotency.keys import InvalidIdempotencyKey, parse_idempotency_key
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.idempotency.recovery import RECOVERY_STATE_KEY, RecoveryPoints
from retrysafe.idempotency.store import DeferringIdempotencyStore, IdempotencyStore
from retrysafe.pipeline.body_spool import BodySpool
from retrysafe.pipeline.principal import Principal, principal_of, request_id_of
from retrysafe.unavailable import StoreUnavailable

if TYPE_CHECKING:
    from retrysafe.pipeline.tenancy import TenantResolver

IDEMPOTENT_METHODS = frozenset({"POST", "PATCH"})
OUTCOME_STATE_KEY = "retrysafe.idempotency_outcome"
MAX_RUNS = 2
"""A request runs once, and once more when a write that waited for the commit failed there."""

DEFAULT_MAX_RECORDED_RESPONSE = 10 * 1024 * 1024
"""Largest response body, in bytes, a keyed request's record holds (and this layer buffers)."""


class ResponseTooLarge(Exception):
    """Raised into the app from ``send`` once its response outgrew what a record holds.

    It stops a streaming handler early; whatever the framework makes of it, the
    layer then records (and answers) the 500 of :func:`_too_large` instead.
    """


logger = structlog.get_logger("retrysafe.idempotency")


@dataclass(slots=True)
class _Captured:
    """A response held back until the record that contains it has committed."""

    limit: int = DEFAULT_MAX_RECORDED_RESPONSE
    start: Message | None = None
    body: list[bytes] = field(default_factory=list)
    complete: bool = False
    size: int = 0
    overflowed: bool = False

    async def send(self, message: Message) -> None:
        if self.overflowed:
            raise ResponseTooLarge(self.limit)
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.limit:
                # Drop what was held: memory stays bounded by the limit.
                self.overflowed, self.body = True, []
                raise ResponseTooLarge(self.limit)
            self.body.append(chunk)
            self.complete = not message.get("more_body", False)

    def stored(self) -> StoredResponse:
        assert self.start is not None
        headers = dict(self.start.get("headers", []))
        content_type = headers.get(b"content-type")
        location = headers.get(b"location")
        return StoredResponse(
            status=self.start["status"],
            body=b"".join(self.body),
            content_type=content_type.decode("latin-1") if content_type else None,
            location=location.decode("latin-1") if location else None,
        )

    async def forward(self, send: Send) -> None:
        assert self.start is not None
        await send(self.start)
        await send({"type": "http.response.body", "body": b"".join(self.body)})


class IdempotencyLayer:
    """Runs a POST/PATCH carrying ``Idempotency-Key`` at most once per organization and key.

    It sits below authentication on purpose: the organization scopes the key,
    and the 401s and 429s answered above it are never recorded.

    Requests ``deferrable`` accepts, when the store can defer its claim
    (:class:`~retrysafe.idempotency.store.DeferringIdempotencyStore`), run with the
    claim deferred to their commit: only for endpoints whose every effect goes
    through the database, since across processes two of them with one key may
    both run before one of them wins (the other is answered from its record).

    The layer never silently does nothing: a key needs a scope, so it is built
    either with ``tenant`` (a resolver on the request scope, see
    :mod:`.tenancy`: the layer then names the tenant itself, 401 for a keyed
    request without one) or with ``scoped_above=True``, saying a layer above it
    sets the principal (:class:`~.authentication.AuthenticationLayer` or
    :class:`~.tenancy.TenantLayer`, as :func:`~retrysafe.pipeline.build_pipeline`
    does). Without either it refuses to be built. Given both, ``tenant`` serves
    the requests that came through without a principal.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore,
        ttl: float,
        clock: Callable[[], float] | None = None,
        deferrable: Callable[[Scope], bool] | None = None,
        max_recorded_response: int = DEFAULT_MAX_RECORDED_RESPONSE,
        tenant: TenantResolver | None = None,
        scoped_above: bool = False,
    ) -> None:
        if tenant is None and not scoped_above:
            raise ValueError(
                "IdempotencyLayer needs a scope for its keys, or it would record nothing:"
                " pass tenant= (retrysafe.asgi.by_credential(), single_tenant(), or a"
                " callable on the request scope), or scoped_above=True when a layer above"
                " it sets the principal (AuthenticationLayer or TenantLayer, as"
                " build_pipeline and retrysafe.asgi.RetrySafe do)."
            )
        self._unscoped: ASGIApp | None = None
        if tenant is not None:
            from retrysafe.pipeline.tenancy import TenantLayer  # tenancy imports this module

            # A keyed request without a principal goes through the tenant layer, which
            # sets one (or answers 401) and hands the request back to this layer.
            self._unscoped = TenantLayer(self._scoped, tenant)
        self.app = app
        self.store = store
        self.ttl = ttl
        self.clock = clock or time.time
        self._deferring = (
            store
            if deferrable is not None and isinstance(store, DeferringIdempotencyStore)
            else None
        )
        self._deferrable = deferrable
        self.max_recorded_response = max_recorded_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in IDEMPOTENT_METHODS:
            await self.app(scope, receive, send)
            return
        raw_key = header(scope, b"idempotency-key")
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        principal = principal_of(scope)
        if principal is None:
            if self._unscoped is not None:
                await self._unscoped(scope, receive, send)
            else:
                # Let through above without a principal (the service's public paths):
                # there is no scope to record the key in.
                await self.app(scope, receive, send)
            return
        await self._keyed(scope, receive, send, raw_key, principal)

    async def _scoped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A keyed request the tenant layer has just given a principal."""
        raw_key = header(scope, b"idempotency-key")
        principal = principal_of(scope)
        assert raw_key is not None
        assert principal is not None
        await self._keyed(scope, receive, send, raw_key, principal)

    async def _keyed(
        self, scope: Scope, receive: Receive, send: Send, raw_key: bytes, principal: Principal
    ) -> None:
        try:
            key = RecordKey(principal.organization_id, parse_idempotency_key(raw_key))
        except InvalidIdempotencyKey as exc:
            raise ApiError(400, "invalid_idempotency_key", str(exc)) from None
        spool = BodySpool()
        try:
            digest = params_digest_for(header(scope, b"content-type"))
            if not await _read_body(receive, spool, digest):
                return  # the client went away before sending its body: nothing to run
            fingerprint = request_fingerprint(
                scope["method"], scope["path"], scope["query_string"], digest
            )
            await self._handle(scope, lambda: spool.receiver(receive), send, key, fingerprint)
        finally:
            spool.close()

    async def _handle(
        self,
        scope: Scope,
        receivers: Callable[[], Receive],
        send: Send,
        key: RecordKey,
        fingerprint: str,
    ) -> None:
        outcomes = state(scope)
        opener = self.store.attempt
        if self._deferring is not None and self._deferrable is not None and self._deferrable(scope):
            opener = self._deferring.deferred_attempt
        answer: _Captured | Replay | Mismatch | InFlight | None = None
        async with opener(key, fingerprint, now=self.clock(), ttl=self.ttl) as decision:
            if isinstance(decision, Execute):
                answer = await self._execute(decision.attempt, scope, receivers)
        # Everything below is sent only now, after the store's context has closed:
        # an executed response has committed with its record by this point.
        if isinstance(decision, Execute):
            if answer is None:
                outcomes[OUTCOME_STATE_KEY] = "not_recorded"
                raise _in_progress(1)
            if isinstance(answer, _Captured):
                status = answer.start["status"] if answer.start else 0
                outcomes[OUTCOME_STATE_KEY] = "not_recorded" if status == 503 else "executed"
                await answer.forward(send)
                return
            decision = answer  # another request's record settled the key meanwhile
        if isinstance(decision, Replay):
            outcomes[OUTCOME_STATE_KEY] = "replayed"
            await _send_replay(send, decision.response)
        elif isinstance(decision, Mismatch):
            outcomes[OUTCOME_STATE_KEY] = "mismatch"
            raise ApiError(
                422,
                "idempotency_key_mismatch",
                "This request does not match the original request sent with this "
                "Idempotency-Key (method, path, query or parameters differ). "
                "Use a new key for a new request.",
            )
        elif isinstance(decision, InFlight):
            outcomes[OUTCOME_STATE_KEY] = "in_flight"
            raise _in_progress(decision.retry_after)

    async def _execute(
        self, attempt: Attempt, scope: Scope, receivers: Callable[[], Receive]
    ) -> _Captured | Replay | Mismatch | InFlight | None:
        """Run the app under ``attempt``: its recorded answer, or what to answer instead.

        ``None`` when a retry took the record over: a request that lost its lease must
        not answer from its own work, the record belongs to the request that took it
        over, whose answer is the one to replay. A replay, mismatch or in-flight
        answer when another request settled a deferred claim first. A request whose
        deferred write failed at the commit runs a second time, claiming first.
        """
        for _ in range(MAX_RUNS - 1):
            try:
                return await self._run_once(attempt, scope, receivers())
            except RunAgain:
                continue
        return await self._run_once(attempt, scope, receivers())

    async def _run_once(
        self, attempt: Attempt, scope: Scope, receive: Receive
    ) -> _Captured | Replay | Mismatch | InFlight | None:
        state(scope)[RECOVERY_STATE_KEY] = RecoveryPoints(attempt, clock=self.clock)
        captured = capture = _Captured(limit=self.max_recorded_response)
        try:
            await self.app(scope, receive, capture.send)
        except StoreUnavailable:
            await attempt.abandon()
            raise
        except LeaseLost:
            return None
        except Superseded as superseded:
            return superseded.decision
        except RunAgain:
            raise  # nothing was kept: run the request again, claiming first
        except ApiError as exc:
            captured = await _render(error_for(exc, request_id_of(scope)))
        except Exception as exc:
            # ResponseTooLarge, as the framework passed it on (maybe wrapped), is logged below.
            if not capture.overflowed:
                logger.exception(
                    "handler_failed", request_id=request_id_of(scope), path=scope["path"]
                )
            # Starlette may already have rendered a 500 (plain text, or the app's own
            # handler) before re-raising; the envelope's 500 replaces it either way,
            # and is recorded like any other answer of the handler.
            captured = await _render(error_for(exc, request_id_of(scope)))
        if capture.overflowed:
            logger.error(
                "response_too_large_to_record",
                request_id=request_id_of(scope),
                path=scope["path"],
                limit=self.max_recorded_response,
            )
            captured = await _render(_too_large(self.max_recorded_response, request_id_of(scope)))
        if not captured.complete:
            await attempt.abandon()
            raise RuntimeError("the application finished without a complete response")
        response = captured.stored()
        if response.status == 503:
            # A 503 means "did not run" (shed, store down): retrying must execute.
            await attempt.abandon()
            return captured
        try:
            await attempt.complete(response)
        except LeaseLost:
            return None
        except Superseded as superseded:
            return superseded.decision
        return captured


def _too_large(limit: int, request_id: str) -> ApiError:
    """The 500 recorded instead of a response larger than a record holds: never a stuck key."""
    return naming_request(
        ApiError(
            500,
            "internal_error",
            f"The response to this request is larger than the {limit} bytes an idempotency"
            " record can hold, so it was not sent; this error is what the key replays.",
        ),
        request_id,
    )


def _in_progress(retry_after: int) -> ApiError:
    return ApiError(
        409,
        "idempotency_request_in_progress",
        "A request with this Idempotency-Key is still being processed; "
        f"retry after {retry_after} s to receive its result.",
        headers={"Retry-After": str(retry_after)},
    )


async def _read_body(receive: Receive, spool: BodySpool, digest: ParamsDigest) -> bool:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        chunk = message.get("body", b"")
        if chunk:
            spool.write(chunk)
            digest.feed(chunk)
        if not message.get("more_body", False):
            return True


async def _render(error: ApiError) -> _Captured:
    captured = _Captured()
    await send_error(captured.send, error)
    return captured


async def _send_replay(send: Send, response: StoredResponse) -> None:
    headers = [(b"content-length", str(len(response.body)).encode())]
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type.encode("latin-1")))
    if response.location is not None:
        headers.append((b"location", response.location.encode("latin-1")))
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
