"""The provider's behaviour behind any transport: idempotent checks, a counter, fault knobs.

Both the HTTP app (``retrysafe provider``) and the in-process client of
``retrysafe serve`` call :meth:`ReferenceProvider.handle` with the raw request
body and get the raw answer back, so the two paths share every byte of logic.

Records live in this process's memory: they are lost when it stops, which is
what a reference service for tests needs and no more.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from dataclasses import dataclass, field

from retrysafe.provider.checks import CheckRequest, InvalidCheckRequest, run_check

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer of the provider: status, body and media type."""

    status: int
    body: bytes
    media_type: str = JSON


@dataclass(slots=True)
class _Record:
    fingerprint: str
    answer: asyncio.Future[Answer | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ReferenceProvider:
    """Runs checks at most once per idempotency key and counts the checks it really ran.

    ``delay`` seconds pass between starting a check (when it is counted) and
    answering, so a caller can die while the provider works. With probability
    ``fail_rate`` a request is answered with a failure instead (a 500, or a 200
    whose body is not JSON); a failure runs no check and records nothing.
    """

    def __init__(
        self, *, delay: float = 0.0, fail_rate: float = 0.0, rng: random.Random | None = None
    ) -> None:
        if delay < 0:
            raise ValueError(f"delay must be 0 or more seconds, got {delay}")
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, got {fail_rate}")
        self.delay = delay
        self.fail_rate = fail_rate
        self._rng = rng or random.Random()
        self._records: dict[str, _Record] = {}
        self.checks_run = 0

    def stats(self) -> Answer:
        return _json(200, {"checks_run": self.checks_run})

    async def handle(self, idempotency_key: str | None, body: bytes) -> Answer:
        """Answer one ``POST /v1/checks``."""
        if self.fail_rate and self._rng.random() < self.fail_rate:
            await asyncio.sleep(self.delay)
            if self._rng.random() < 0.5:
                return _json(500, {"error": "internal_error", "details": "injected failure"})
            return Answer(200, b"<html>upstream hiccup</html>", "text/html")
        try:
            request = CheckRequest.from_json(body)
        except InvalidCheckRequest as exc:
            return _json(400, {"error": "invalid_request", "details": str(exc)})
        if idempotency_key is None:
            return await self._run(request)
        fingerprint = hashlib.sha256(body).hexdigest()
        while True:
            record = self._records.get(idempotency_key)
            if record is None:
                break
            if record.fingerprint != fingerprint:
                return _json(
                    422,
                    {
                        "error": "idempotency_key_mismatch",
                        "details": "this key was used with another request body",
                    },
                )
            # A repeat, or a concurrent duplicate: the first one's answer, once it has one.
            answer = await asyncio.shield(record.answer)
            if answer is not None:
                return answer
            # The first one failed without answering: this request runs the check instead.
        record = self._records[idempotency_key] = _Record(fingerprint)
        try:
            answer = await self._run(request)
        except BaseException:
            del self._records[idempotency_key]
            record.answer.set_result(None)
            raise
        record.answer.set_result(answer)
        return answer

    async def _run(self, request: CheckRequest) -> Answer:
        self.checks_run += 1
        await asyncio.sleep(self.delay)
        result = run_check(request)
        return _json(
            200,
            {
                "id": "chk_" + uuid.uuid4().hex,
                "kind": request.kind,
                "reference": request.reference,
                "status": result.status,
                "reasons": list(result.reasons),
            },
        )


def _json(status: int, document: object) -> Answer:
    return Answer(status, json.dumps(document, separators=(",", ":")).encode())
