"""The network faults of a chaos run: which one each API request meets, drawn at random.

Every kind is a failure a real network or load balancer produces, and each
tests a different branch of the client's and the server's promise:

* answers lost *after* the server committed (drop, reset, truncated, stalled,
  replaced by a gateway's 502/503): the retry must replay, never re-run;
* requests lost *before* the server saw them (reset before forwarding, a
  canned 429/409/503 from "the load balancer"): the retry must run them;
* slow bodies in either direction, which must change nothing at all.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping

from tests.support.fault_proxy import (
    Action,
    Canned,
    Fault,
    ReplaceAnswer,
    SlowAnswer,
    SlowRequest,
)

__all__ = ["FAULT_WEIGHTS", "FaultChooser", "fault_name"]

API_PREFIX = "/api/v1/"

FAULT_WEIGHTS: Mapping[str, float] = {
    "drop_after_response": 20,
    "reset_after_response": 12,
    "reset_before_forward": 12,
    "truncate_answer": 8,
    "stall": 3,
    "slow_answer": 12,
    "slow_request": 8,
    "canned_503": 5,
    "canned_429": 5,
    "canned_409_in_flight": 4,
    "gateway_502_after_execution": 3,
    "gateway_503_after_execution": 4,
}
"""Relative weights of the faults, among the requests that get one."""


def _action(name: str, rng: random.Random) -> Action:
    """The proxy action for fault ``name``; slow ones draw their pace from ``rng``."""
    if name == "drop_after_response":
        return Fault.DROP_AFTER_RESPONSE
    if name == "reset_after_response":
        return Fault.RESET
    if name == "reset_before_forward":
        return Fault.RESET_BEFORE_FORWARD
    if name == "truncate_answer":
        return Fault.TRUNCATE_ANSWER
    if name == "stall":
        return Fault.STALL
    # Paced so a body takes well under a second: slow, yet no read timeout fires.
    if name == "slow_answer":
        return SlowAnswer(chunk_size=rng.choice((16, 64, 256)), interval=rng.uniform(0.002, 0.02))
    if name == "slow_request":
        return SlowRequest(chunk_size=rng.choice((16, 64, 256)), interval=rng.uniform(0.002, 0.02))
    if name == "canned_503":
        return Canned.error(503, "service_unavailable", retry_after=0)
    if name == "canned_429":
        return Canned.error(429, "rate_limited", retry_after=0)
    if name == "canned_409_in_flight":
        return Canned.error(409, "idempotency_request_in_progress", retry_after=0)
    if name == "gateway_502_after_execution":
        return ReplaceAnswer(Canned.error(502, "bad_gateway"))
    if name == "gateway_503_after_execution":
        return ReplaceAnswer(Canned.error(503, "service_unavailable", retry_after=0))
    raise ValueError(f"unknown fault {name!r}")


def fault_name(action: Action) -> str:
    """The fault's name in the summary, from the action the proxy recorded."""
    if action is Fault.RELAY:
        return "none"
    if action is Fault.DROP_AFTER_RESPONSE:
        return "drop_after_response"
    if action is Fault.RESET:
        return "reset_after_response"
    if isinstance(action, Fault):
        return str(action.value)
    if isinstance(action, SlowAnswer):
        return "slow_answer"
    if isinstance(action, SlowRequest):
        return "slow_request"
    if isinstance(action, Canned):
        status = action.status
        return "canned_409_in_flight" if status == 409 else f"canned_{status}"
    return f"gateway_{action.answer.status}_after_execution"


class FaultChooser:
    """``chooser(method, path)`` for :meth:`FaultProxy.set_chooser`: relay, or a random fault.

    Only API requests get faults (``/health`` probes pass untouched). It runs on
    the proxy's thread, so it keeps its own seeded generator behind a lock; the
    order in which concurrent requests draw from it is up to the scheduler.
    """

    def __init__(self, seed: int, rate: float, weights: Mapping[str, float] = FAULT_WEIGHTS):
        self._rng = random.Random(seed)
        self._rate = rate
        self._names = list(weights)
        self._weights = [weights[name] for name in self._names]
        self._lock = threading.Lock()
        self.chosen: Counter[str] = Counter()
        """How many requests got each fault (``"none"`` for relayed ones)."""

    def __call__(self, method: str, path: str) -> Action:
        with self._lock:
            if not path.startswith(API_PREFIX) or self._rng.random() >= self._rate:
                self.chosen["none"] += 1
                return Fault.RELAY
            name = self._rng.choices(self._names, self._weights)[0]
            self.chosen[name] += 1
            return _action(name, self._rng)
