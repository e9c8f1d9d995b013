"""How the service calls the provider: over HTTP, or in-process on the same code.

Every way a call can go wrong ends in one of two exceptions, which the
verifications endpoint turns into SPEC §1 answers: :class:`ProviderFailed`
(no answer, or an answer that is a failure or not a check result: 502) and
:class:`ProviderTimedOut` (no answer within the timeout: 504).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from retrysafe.provider.upstream import Answer, ReferenceProvider

CHECK_STATUSES = ("passed", "failed")
MAX_ANSWER_BYTES = 64 * 1024
"""A check result is a few hundred bytes; anything far bigger is not one (and is not read)."""


class ProviderFailed(Exception):
    """The provider could not be reached, or answered with a failure or with nonsense."""


class ProviderTimedOut(Exception):
    """The provider did not answer within the timeout."""


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """A successful check result, whatever its verdict."""

    check_id: str
    """The provider's id for the check (``chk_…``)."""
    status: str
    """``passed`` or ``failed``."""
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.check_id, "status": self.status, "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, document: Any) -> CheckAnswer:
        """Accept exactly the shape of a check result; raise :class:`ValueError` otherwise."""
        if not isinstance(document, Mapping):
            raise ValueError("the answer is not a JSON object")
        check_id = document.get("id")
        status = document.get("status")
        reasons = document.get("reasons")
        if not isinstance(check_id, str) or not check_id:
            raise ValueError("the answer has no check id")
        if status not in CHECK_STATUSES:
            raise ValueError(f"the answer's status is {status!r}, not passed or failed")
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise ValueError("the answer's reasons are not a list of strings")
        return cls(check_id, status, tuple(reasons))


def parse_answer(answer: Answer) -> CheckAnswer:
    """The check result in ``answer``, or :class:`ProviderFailed` saying what was wrong."""
    if answer.status != 200:
        raise ProviderFailed(f"the provider answered HTTP {answer.status}")
    try:
        return CheckAnswer.from_json(json.loads(answer.body))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProviderFailed("the provider's answer is not JSON") from exc
    except ValueError as exc:
        raise ProviderFailed(str(exc)) from exc


class ProviderClient(Protocol):
    """One check per call, sent under the caller's idempotency key."""

    async def check(self, payload: Mapping[str, Any], *, idempotency_key: str) -> CheckAnswer: ...

    async def aclose(self) -> None: ...


class HttpProviderClient:
    """The provider at ``base_url`` over HTTP; every call bounded by ``timeout`` seconds."""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def check(self, payload: Mapping[str, Any], *, idempotency_key: str) -> CheckAnswer:
        try:
            # httpx bounds each phase (connect, write, read) on its own; the whole
            # call gets the same bound here.
            async with asyncio.timeout(self.timeout):
                status, body = await self._post(payload, idempotency_key)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderTimedOut(f"no answer within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ProviderFailed(
                f"the provider could not be reached ({type(exc).__name__})"
            ) from exc
        return parse_answer(Answer(status, body))

    async def _post(self, payload: Mapping[str, Any], idempotency_key: str) -> tuple[int, bytes]:
        request = self._http.build_request(
            "POST", "/v1/checks", json=payload, headers={"Idempotency-Key": idempotency_key}
        )
        response = await self._http.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise ProviderFailed(f"the answer is longer than {MAX_ANSWER_BYTES} bytes")
            return response.status_code, bytes(body)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


class InProcessProviderClient:
    """The reference provider in this process: the same handling, no HTTP in between."""

    def __init__(self, provider: ReferenceProvider, *, timeout: float) -> None:
        self.provider = provider
        self.timeout = timeout

    async def check(self, payload: Mapping[str, Any], *, idempotency_key: str) -> CheckAnswer:
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.provider.handle(idempotency_key, body)
        except TimeoutError as exc:
            raise ProviderTimedOut(f"no answer within {self.timeout:g} s") from exc
        return parse_answer(answer)

    async def aclose(self) -> None:
        return None


def provider_client(provider_url: str | None, *, timeout: float) -> ProviderClient:
    """The client ``serve`` uses: HTTP to ``provider_url``, else the provider in-process."""
    if provider_url is None:
        return InProcessProviderClient(ReferenceProvider(), timeout=timeout)
    return HttpProviderClient(provider_url, timeout=timeout)
