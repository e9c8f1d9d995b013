"""The workers: random operations through the SDK, each judged against a small model.

Each worker owns the accounts and inquiries it created, so operations on one
object happen one after another and the model knows what every answer should
be. An object an operation left in doubt (indeterminate, or an unexpected
answer) is dropped from the worker's pool: the operation that put it in doubt
is the last one on it, which is what lets the checker judge its final state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from retrysafe import (
    Account,
    APIConnectionError,
    AsyncClient,
    ConflictError,
    IdempotencyInProgressError,
    Inquiry,
    InvalidStateTransitionError,
    RateLimitError,
    RetrysafeError,
    ServerError,
)

from .history import TRANSITIONS, Kind, Operation, Outcome

__all__ = ["KIND_WEIGHTS", "Workload", "perform"]

KIND_WEIGHTS: dict[Kind, float] = {
    Kind.CREATE_ACCOUNT: 20,
    Kind.CREATE_ACCOUNT_UNREFERENCED: 8,
    Kind.CREATE_INQUIRY: 15,
    Kind.CREATE_INQUIRY_FOR_ACCOUNT: 10,
    Kind.UPDATE_ACCOUNT: 20,
    Kind.TRANSITION: 20,
    Kind.DUPLICATE_REFERENCE: 3,
    Kind.INVALID_TRANSITION: 4,
}
"""Relative frequency of each kind; a kind with no object to act on falls back to a create."""

FIRST_NAMES = ("Ada", "Grace", "Edsger", "Barbara", "Alan", "Frances", "Donald", "Leslie")

Result = Account | Inquiry

INDETERMINATE_ERRORS = (APIConnectionError, ServerError, RateLimitError, IdempotencyInProgressError)
"""Errors after which the write may have happened: no answer, a 5xx, or a back-pressure
budget used up after earlier attempts that may have run."""


@dataclass
class AccountModel:
    reference_id: str | None
    name_first: str | None


class Workload:
    """``operations`` SDK calls spread over ``workers`` asyncio tasks on one client."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        operations: int,
        workers: int,
        seed: int,
        run_id: str,
        max_seconds: float,
    ) -> None:
        self._client = client
        self._total = operations
        self._workers = workers
        self._seed = seed
        self._run_id = run_id
        self._stop_at = time.monotonic() + max_seconds
        self._next = 0
        self.operations: list[Operation] = []
        self.finished = 0
        self.outcomes: Counter[Outcome] = Counter()
        self.timed_out = False
        """True when the time bound stopped the run before every operation started."""

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(number) for number in range(self._workers)))

    def _take(self) -> int | None:
        if self._next >= self._total:
            return None
        if time.monotonic() >= self._stop_at:
            self.timed_out = True
            return None
        index = self._next
        self._next += 1
        return index

    async def _worker(self, number: int) -> None:
        rng = random.Random(f"{self._seed}-worker-{number}")
        accounts: dict[str, AccountModel] = {}
        inquiries: dict[str, str] = {}
        while (index := self._take()) is not None:
            operation = self._choose(index, number, rng, accounts, inquiries)
            self.operations.append(operation)
            await perform(self._client, operation)
            _learn(operation, accounts, inquiries)
            self.finished += 1
            assert operation.outcome is not None
            self.outcomes[operation.outcome] += 1

    def _choose(
        self,
        index: int,
        worker: int,
        rng: random.Random,
        accounts: dict[str, AccountModel],
        inquiries: dict[str, str],
    ) -> Operation:
        kinds = list(KIND_WEIGHTS)
        kind = rng.choices(kinds, [KIND_WEIGHTS[k] for k in kinds])[0]
        tag = f"{self._run_id}-op-{index:05d}"
        operation = Operation(index, worker, kind, key=f"{tag}-key", tag=tag)
        referenced = [a for a, model in accounts.items() if model.reference_id is not None]
        open_inquiries = [i for i, s in inquiries.items() if s in ("created", "completed")]
        if kind is Kind.CREATE_INQUIRY_FOR_ACCOUNT and accounts:
            operation.target = rng.choice(sorted(accounts))
        elif kind is Kind.UPDATE_ACCOUNT and accounts:
            operation.target = rng.choice(sorted(accounts))
            operation.value = f"v{index}"
        elif kind is Kind.TRANSITION and open_inquiries:
            operation.target = rng.choice(sorted(open_inquiries))
            status = inquiries[operation.target]
            operation.value = rng.choice(
                sorted(action for action, (start, _) in TRANSITIONS.items() if status in start)
            )
        elif kind is Kind.INVALID_TRANSITION and inquiries:
            operation.target = rng.choice(sorted(inquiries))
            status = inquiries[operation.target]
            operation.value = rng.choice(
                sorted(action for action, (start, _) in TRANSITIONS.items() if status not in start)
            )
        elif kind is Kind.DUPLICATE_REFERENCE and referenced:
            operation.reference_id = accounts[rng.choice(sorted(referenced))].reference_id
            operation.value = rng.choice(FIRST_NAMES)
        elif kind is Kind.CREATE_INQUIRY:
            operation.reference_id = f"{tag}-ref"
        elif kind is Kind.CREATE_ACCOUNT_UNREFERENCED:
            operation.value = rng.choice(FIRST_NAMES)
        else:
            operation.kind = Kind.CREATE_ACCOUNT
            operation.reference_id = f"{tag}-ref"
            operation.value = rng.choice(FIRST_NAMES)
        return operation


def _call(client: AsyncClient, op: Operation) -> Awaitable[Result]:
    key = op.key
    if op.kind in (Kind.CREATE_ACCOUNT, Kind.DUPLICATE_REFERENCE):
        return client.accounts.create(
            reference_id=op.reference_id, name_first=op.value, name_last=op.tag, idempotency_key=key
        )
    if op.kind is Kind.CREATE_ACCOUNT_UNREFERENCED:
        return client.accounts.create(name_first=op.value, name_last=op.tag, idempotency_key=key)
    if op.kind is Kind.CREATE_INQUIRY:
        return client.inquiries.create(reference_id=op.reference_id, idempotency_key=key)
    assert op.target is not None
    if op.kind is Kind.CREATE_INQUIRY_FOR_ACCOUNT:
        return client.inquiries.create(account_id=op.target, idempotency_key=key)
    if op.kind is Kind.UPDATE_ACCOUNT:
        return client.accounts.update(op.target, name_first=op.value, idempotency_key=key)
    assert op.value is not None
    transition: Callable[..., Awaitable[Inquiry]] = getattr(client.inquiries, op.value)
    return transition(op.target, idempotency_key=key)


async def perform(client: AsyncClient, op: Operation) -> Outcome:
    """Run ``op`` through the SDK and judge its answer against the model; sets ``op.outcome``."""
    try:
        result = await _call(client, op)
    except INDETERMINATE_ERRORS as exc:
        op.outcome, op.detail = Outcome.INDETERMINATE, _describe(exc)
    except InvalidStateTransitionError as exc:
        op.outcome, op.detail = _refusal(op, Kind.INVALID_TRANSITION, exc)
    except ConflictError as exc:
        op.outcome, op.detail = _refusal(op, Kind.DUPLICATE_REFERENCE, exc)
    except RetrysafeError as exc:
        op.outcome, op.detail = Outcome.UNEXPECTED, _describe(exc)
    else:
        op.outcome, op.detail = _success(op, result)
    return op.outcome


def _refusal(op: Operation, expected: Kind, exc: RetrysafeError) -> tuple[Outcome, str]:
    if op.kind is expected:
        return Outcome.REJECTED, ""
    # A 409 on a reference_id nobody else used means an earlier attempt of this very
    # call created the account and the retry ran again instead of replaying; a 422 on
    # a valid transition means the same for the transition.
    return Outcome.UNEXPECTED, _describe(exc)


def _success(op: Operation, result: Result) -> tuple[Outcome, str]:
    if op.kind.expects_refusal:
        return Outcome.UNEXPECTED, f"succeeded, but the model expected a refusal: {result!r}"
    op.result_id = result.id
    problem = None
    if isinstance(result, Account):
        if op.kind is Kind.UPDATE_ACCOUNT and (result.id, result.name_first) != (
            op.target,
            op.value,
        ):
            problem = "the updated account does not carry the update"
        if op.kind.creates_account and (result.name_last, result.reference_id) != (
            op.tag,
            op.reference_id,
        ):
            problem = "the created account has other attributes than sent"
    else:
        op.result_account_id = result.account_id
        if op.kind is Kind.TRANSITION and (result.id, result.status) != (
            op.target,
            op.target_status,
        ):
            problem = f"the inquiry is {result.status}, not {op.target_status}"
        if op.kind is Kind.CREATE_INQUIRY_FOR_ACCOUNT and result.account_id != op.target:
            problem = "the inquiry joined another account"
        if op.kind is Kind.CREATE_INQUIRY and result.reference_id != op.reference_id:
            problem = "the inquiry has another reference_id"
    if problem is not None:
        return Outcome.UNEXPECTED, f"{problem}: {result!r}"
    return Outcome.OK, ""


def _describe(exc: RetrysafeError) -> str:
    notes = "; ".join(getattr(exc, "__notes__", ()))
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} ({notes})" if notes else text


def _learn(op: Operation, accounts: dict[str, AccountModel], inquiries: dict[str, str]) -> None:
    """Update a worker's model after ``op``: what it now knows, and what is now in doubt."""
    if op.outcome is Outcome.OK:
        if op.kind.creates_account and op.result_id is not None:
            accounts[op.result_id] = AccountModel(op.reference_id, op.value)
        elif op.kind is Kind.CREATE_INQUIRY and op.result_id and op.result_account_id:
            accounts.setdefault(op.result_account_id, AccountModel(op.reference_id, None))
            inquiries[op.result_id] = "created"
        elif op.kind is Kind.CREATE_INQUIRY_FOR_ACCOUNT and op.result_id is not None:
            inquiries[op.result_id] = "created"
        elif op.kind is Kind.UPDATE_ACCOUNT and op.target is not None:
            accounts[op.target].name_first = op.value
        elif op.kind is Kind.TRANSITION and op.target is not None:
            status = op.target_status
            assert status is not None
            inquiries[op.target] = status
    elif op.outcome in (Outcome.INDETERMINATE, Outcome.UNEXPECTED) and op.target is not None:
        accounts.pop(op.target, None)
        inquiries.pop(op.target, None)
