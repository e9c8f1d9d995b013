"""Recovery points for handlers with effects outside the database (the handler's side of §3).

The idempotency layer hands every request it runs a :class:`RecoveryPoints`
handle; a handler reads it with :func:`recovery_of`. Its life is a small state
machine the handler writes itself:

.. code-block:: python

    recovery = recovery_of(request)
    if recovery.point is None:                 # a fresh request
        ...local reads and writes...
        await recovery.checkpoint("started", {"order": order})
    if recovery.point == "started":            # fresh, or resumed after a crash
        receipt = await upstream.charge(order, idempotency_key=recovery.external_key)
        await recovery.checkpoint("charged", {"receipt": receipt})
    ...final writes, from recovery.data...     # committed with the recorded response

Each checkpoint commits the writes made since the previous one together with
the point and its JSON data, and leaves the request holding no transaction (and,
on SQLite, no write lock) while it talks to the upstream service. A retry after
a crash resumes at the last point with the same data, and ``external_key`` is
the same for every attempt of one idempotency record, so an upstream service
that honours idempotency keys never performs the call twice.

Without an ``Idempotency-Key`` nothing makes a retry safe: the handle then
starts at no point, its ``external_key`` is a fresh random value, and
``checkpoint`` only moves the handle along (each ``Database.write`` commits on
its own anyway). Ask clients to send a key for such endpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from retrysafe.idempotency.decisions import Attempt
from retrysafe.unique import random_hex

__all__ = ["RECOVERY_STATE_KEY", "RecoveryPoints", "lease_seconds", "recovery_of"]

RECOVERY_STATE_KEY = "retrysafe.recovery"
"""Where the idempotency layer leaves the handle in the request state."""

LEASE_MARGIN = 5.0
"""Seconds a lease outlasts the request deadline (see :func:`lease_seconds`)."""


def lease_seconds(request_timeout: float) -> float:
    """How long a checkpointed record stays held after its last checkpoint.

    The deadline layer cancels a live holder at ``request_timeout``, so a lease
    that lasts longer can only lapse on a holder that is dead: it never fences off
    a request that is still working. The margin covers the holder's last write
    after the deadline (its 504) and clock differences between servers.
    """
    return request_timeout + LEASE_MARGIN


class RecoveryPoints:
    """Where this request resumes, and the means to commit the next point."""

    __slots__ = ("_attempt", "_clock", "_data", "_external_key", "_point", "_resumed")

    def __init__(self, attempt: Attempt | None, *, clock: Callable[[], float] = time.time) -> None:
        self._attempt = attempt
        self._clock = clock
        self._point: str | None = None
        self._data: Any = None
        self._external_key = "" if attempt is not None else random_hex(16)
        # The attempt's resumption is read on first use: most requests never look.
        self._resumed = attempt is None

    def _resume(self) -> None:
        if self._resumed:
            return
        assert self._attempt is not None
        resumption = self._attempt.resumption
        self._point = resumption.point
        self._data = None if resumption.data is None else json.loads(resumption.data)
        self._external_key = resumption.external_key
        self._resumed = True

    @property
    def point(self) -> str | None:
        """The last recovery point committed for this record; ``None`` on a fresh request."""
        self._resume()
        return self._point

    @property
    def data(self) -> Any:
        """The JSON value saved with :attr:`point` (``None`` when there is none)."""
        self._resume()
        return self._data

    @property
    def external_key(self) -> str:
        """The idempotency key to send upstream: the same on every retry of this record."""
        self._resume()
        return self._external_key

    @property
    def durable(self) -> bool:
        """Whether checkpoints survive a crash (the request carries an Idempotency-Key)."""
        return self._attempt is not None

    async def checkpoint(self, point: str, data: Any = None) -> None:
        """Commit the writes so far with ``point`` and ``data`` (any JSON value).

        Afterwards the request holds no database transaction until its next
        ``Database.read``/``write``. Raises
        :class:`~retrysafe.idempotency.decisions.LeaseLost` when the record was
        taken over by a retry; the layer then answers 409 and records nothing.
        """
        self._resume()
        text = None if data is None else json.dumps(data, separators=(",", ":"))
        if self._attempt is not None:
            await self._attempt.checkpoint(point, text, now=self._clock())
        self._point = point
        # Parsed back, so a resumed request and this one see identical values.
        self._data = None if text is None else json.loads(text)


class _HasScope(Protocol):
    @property
    def scope(self) -> MutableMapping[str, Any]: ...


def recovery_of(request_or_scope: _HasScope | MutableMapping[str, Any]) -> RecoveryPoints:
    """The request's recovery handle (a non-durable one when it carries no Idempotency-Key).

    Without a key the handle is made here and kept in the request state, so every
    call for one request returns the same handle.
    """
    scope = (
        request_or_scope if isinstance(request_or_scope, MutableMapping) else request_or_scope.scope
    )
    state: dict[str, Any] = scope.setdefault("state", {})
    handle = state.get(RECOVERY_STATE_KEY)
    if not isinstance(handle, RecoveryPoints):
        handle = state[RECOVERY_STATE_KEY] = RecoveryPoints(None)
    return handle
