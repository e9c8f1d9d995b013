"""The retry policy, pure: which outcomes are retried, after how long, with which key."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from retrysafe.client._retry import (
    CallState,
    ErrorResponse,
    FailureKind,
    GiveUp,
    NetworkFailure,
    Retry,
    RetryPolicy,
    RetrySettings,
    parse_rate_limit_reset,
    parse_retry_after,
)

CONNECTION_LOST = NetworkFailure(FailureKind.CONNECTION_LOST, "RemoteProtocolError")
TIMEOUT = NetworkFailure(FailureKind.TIMEOUT, "ReadTimeout")
CONNECT = NetworkFailure(FailureKind.CONNECT, "ConnectError")


def make_policy(random_value: float = 1.0, **settings: object) -> RetryPolicy:
    """A policy whose jitter draws ``random_value`` and whose keys are key-1, key-2, …"""
    counter = itertools.count(1)
    return RetryPolicy(
        RetrySettings(**settings),  # type: ignore[arg-type]
        random=lambda: random_value,
        new_key=lambda: f"key-{next(counter)}",
    )


def post(policy: RetryPolicy, now: float = 0.0, key: str | None = None) -> CallState:
    return policy.start("POST", now=now, idempotency_key=key)


def retry(decision: Retry | GiveUp) -> Retry:
    assert isinstance(decision, Retry), decision
    return decision


def give_up(decision: Retry | GiveUp) -> GiveUp:
    assert isinstance(decision, GiveUp), decision
    return decision


class TestKeys:
    def test_post_and_patch_get_a_fresh_key_reads_get_none(self) -> None:
        """Writes covered by the server's idempotency layer get a key; reads need none."""
        policy = make_policy()
        assert policy.start("POST", now=0).idempotency_key == "key-1"
        assert policy.start("patch", now=0).idempotency_key == "key-2"
        assert policy.start("GET", now=0).idempotency_key is None

    def test_real_keys_are_uuid4(self) -> None:
        """Without an injected factory the key is a random uuid4, distinct per call."""
        import uuid

        policy = RetryPolicy(RetrySettings())
        first = policy.start("POST", now=0).idempotency_key
        second = policy.start("POST", now=0).idempotency_key
        assert first is not None
        assert second is not None
        assert first != second
        assert uuid.UUID(first).version == 4

    def test_callers_key_is_kept(self) -> None:
        policy = make_policy()
        assert post(policy, key="mine").idempotency_key == "mine"

    @pytest.mark.parametrize("failure", [CONNECTION_LOST, TIMEOUT, CONNECT])
    def test_network_failures_keep_the_key(self, failure: NetworkFailure) -> None:
        """A lost answer is retried with the same key: the server replays, never re-runs."""
        policy = make_policy()
        state = post(policy, key="mine")
        decision = retry(policy.decide(state, failure, now=0))
        assert decision.state.idempotency_key == "mine"
        assert not decision.new_key
        assert decision.state.attempt == 2

    @pytest.mark.parametrize(
        "response",
        [
            ErrorResponse(429, "rate_limited", retry_after=1),
            ErrorResponse(409, "idempotency_request_in_progress", retry_after=1),
            ErrorResponse(503, "service_unavailable", retry_after=1),
        ],
    )
    def test_backpressure_keeps_the_key(self, response: ErrorResponse) -> None:
        """429, 409 in flight and 503 are never recorded, so the same key runs the request."""
        policy = make_policy()
        decision = retry(policy.decide(post(policy, key="mine"), response, now=0))
        assert decision.state.idempotency_key == "mine"

    def test_server_error_with_opt_in_gets_a_new_key(self) -> None:
        """A recorded 5xx would only replay under the old key: the opt-in retry needs a new one."""
        policy = make_policy(retry_server_errors=True)
        state = post(policy, key="mine")
        decision = retry(policy.decide(state, ErrorResponse(500, "internal_error"), now=0))
        assert decision.new_key
        assert decision.state.idempotency_key == "key-1"


class TestWhatIsRetried:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (400, "invalid_json"),
            (401, "unauthenticated"),
            (403, "permission_denied"),
            (403, "quota_exceeded"),
            (404, "not_found"),
            (409, "duplicate_resource"),
            (413, "payload_too_large"),
            (415, "unsupported_media_type"),
            (422, "idempotency_key_mismatch"),
            (422, "invalid_state_transition"),
        ],
    )
    def test_client_errors_are_raised_at_once(self, status: int, code: str) -> None:
        policy = make_policy()
        decision = give_up(policy.decide(post(policy), ErrorResponse(status, code), now=0))
        assert str(status) in decision.reason

    @pytest.mark.parametrize("status", [500, 502, 504])
    def test_server_errors_on_writes_are_indeterminate(self, status: int) -> None:
        """Without the opt-in a 5xx on a write is raised: it may have happened."""
        policy = make_policy()
        decision = give_up(policy.decide(post(policy), ErrorResponse(status), now=0))
        assert "indeterminate" in decision.reason

    def test_503_without_retry_after_is_a_server_error(self) -> None:
        policy = make_policy()
        give_up(policy.decide(post(policy), ErrorResponse(503, "service_unavailable"), now=0))

    def test_server_errors_on_reads_are_retried(self) -> None:
        """Repeating a GET changes nothing, so a 5xx on a read is worth another try."""
        policy = make_policy()
        state = policy.start("GET", now=0)
        decision = retry(policy.decide(state, ErrorResponse(502), now=0))
        assert decision.state.idempotency_key is None

    def test_lost_connection_on_unkeyed_write_is_not_retried(self) -> None:
        """A DELETE-like write without a key might run twice; only a connect error is safe."""
        policy = make_policy()
        state = CallState(method="POST", started_at=0, idempotency_key=None)
        give_up(policy.decide(state, CONNECTION_LOST, now=0))
        retry(policy.decide(state, CONNECT, now=0))

    def test_unreplayable_body_is_never_retried(self) -> None:
        """A pipe already read from cannot be sent again, whatever the failure."""
        policy = make_policy()
        decision = policy.decide(post(policy), CONNECTION_LOST, now=0, replayable=False)
        assert "cannot be sent again" in give_up(decision).reason


class TestBudgets:
    def test_max_retries_bounds_network_retries(self) -> None:
        policy = make_policy(max_retries=2)
        state = post(policy)
        state = retry(policy.decide(state, CONNECTION_LOST, now=0)).state
        state = retry(policy.decide(state, TIMEOUT, now=0)).state
        assert state.attempt == 3
        assert "max_retries=2" in give_up(policy.decide(state, CONNECTION_LOST, now=0)).reason

    def test_max_retries_zero_disables_retries(self) -> None:
        policy = make_policy(max_retries=0)
        give_up(policy.decide(post(policy), CONNECTION_LOST, now=0))

    def test_backpressure_has_its_own_larger_budget(self) -> None:
        """Waiting out 429s does not use up the budget for real faults, and vice versa."""
        policy = make_policy(max_retries=1, max_backpressure_retries=3)
        state = post(policy)
        for _ in range(3):
            state = retry(policy.decide(state, ErrorResponse(429, retry_after=0), now=0)).state
        state = retry(policy.decide(state, CONNECTION_LOST, now=0)).state
        assert (
            "max_backpressure_retries=3"
            in give_up(policy.decide(state, ErrorResponse(429, retry_after=0), now=0)).reason
        )
        assert "max_retries=1" in give_up(policy.decide(state, CONNECTION_LOST, now=0)).reason

    def test_server_error_retries_count_against_max_retries(self) -> None:
        policy = make_policy(max_retries=1, retry_server_errors=True)
        state = retry(policy.decide(post(policy), ErrorResponse(500), now=0)).state
        give_up(policy.decide(state, ErrorResponse(500), now=0))


class TestWaits:
    def test_backoff_is_exponential_full_jitter_capped(self) -> None:
        """The wait is drawn in [0, min(cap, initial * 2**n)): at jitter 1.0 it is the bound."""
        policy = make_policy(random_value=1.0, initial_backoff=0.5, max_backoff=3.0, max_retries=9)
        state = post(policy)
        waits = []
        for _ in range(5):
            decision = retry(policy.decide(state, CONNECTION_LOST, now=0))
            waits.append(decision.wait)
            state = decision.state
        assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]

    def test_full_jitter_can_draw_near_zero(self) -> None:
        policy = make_policy(random_value=0.0)
        assert retry(policy.decide(post(policy), CONNECTION_LOST, now=0)).wait == 0.0

    def test_429_waits_retry_after_plus_small_jitter(self) -> None:
        policy = make_policy(random_value=0.5)
        response = ErrorResponse(429, "rate_limited", retry_after=2.0, rate_limit_reset=9.0)
        decision = retry(policy.decide(post(policy), response, now=0))
        assert decision.wait == pytest.approx(2.0 * 1.05)
        assert "Retry-After 2" in decision.reason

    def test_429_without_retry_after_waits_rate_limit_reset(self) -> None:
        policy = make_policy(random_value=0.0)
        decision = retry(
            policy.decide(post(policy), ErrorResponse(429, rate_limit_reset=3.0), now=0)
        )
        assert decision.wait == 3.0
        assert "RateLimit-Reset 3" in decision.reason

    def test_429_without_hints_backs_off(self) -> None:
        policy = make_policy(random_value=1.0, initial_backoff=0.5)
        state = post(policy)
        first = retry(policy.decide(state, ErrorResponse(429), now=0))
        second = retry(policy.decide(first.state, ErrorResponse(429), now=0))
        assert (first.wait, second.wait) == (0.5, 1.0)

    def test_in_flight_conflict_waits_retry_after(self) -> None:
        policy = make_policy(random_value=0.0)
        response = ErrorResponse(409, "idempotency_request_in_progress", retry_after=1.5)
        assert retry(policy.decide(post(policy), response, now=0)).wait == 1.5


class TestDeadline:
    def test_remaining_counts_down_from_the_start(self) -> None:
        policy = make_policy(deadline=10.0)
        state = post(policy, now=100.0)
        assert policy.remaining(state, now=104.0) == 6.0
        assert make_policy(deadline=None).remaining(state, now=1e9) is None

    def test_no_retry_whose_wait_passes_the_deadline(self) -> None:
        """A wait that would end after the deadline is not slept: the caller learns now."""
        policy = make_policy(deadline=10.0, random_value=0.0)
        state = post(policy, now=0.0)
        retry(policy.decide(state, ErrorResponse(429, retry_after=5), now=4.0))
        decision = give_up(policy.decide(state, ErrorResponse(429, retry_after=5), now=6.0))
        assert "deadline" in decision.reason

    def test_network_retry_after_the_deadline_is_refused(self) -> None:
        policy = make_policy(deadline=1.0, random_value=0.0)
        state = post(policy, now=0.0)
        assert "deadline" in give_up(policy.decide(state, TIMEOUT, now=1.0)).reason

    def test_without_deadline_long_retry_after_is_raised(self) -> None:
        """With no deadline, a server asking for minutes of waiting is refused past the cap."""
        policy = make_policy(deadline=None, max_retry_after=60.0)
        state = post(policy)
        retry(policy.decide(state, ErrorResponse(429, retry_after=60), now=0))
        give_up(policy.decide(state, ErrorResponse(429, retry_after=61), now=0))


class TestHeaderParsing:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [("1", 1.0), (" 2 ", 2.0), ("0.25", 0.25), ("0", 0.0), ("-3", 0.0), ("soon", None)],
    )
    def test_retry_after_seconds(self, value: str, seconds: float | None) -> None:
        assert parse_retry_after(value) == seconds

    def test_retry_after_http_date(self) -> None:
        now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
        later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        assert parse_retry_after(later, now=now) == 30.0
        assert parse_retry_after("Wed, 01 Jan 2020 00:00:00 GMT", now=now) == 0.0

    def test_retry_after_absent(self) -> None:
        assert parse_retry_after(None) is None

    def test_rate_limit_reset_delta_and_epoch(self) -> None:
        assert parse_rate_limit_reset("5", now_epoch=1_700_000_000) == 5.0
        assert parse_rate_limit_reset("1700000007", now_epoch=1_700_000_000) == 7.0
        assert parse_rate_limit_reset("nope", now_epoch=0) is None
        assert parse_rate_limit_reset(None, now_epoch=0) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"max_retries": -1},
        {"max_backpressure_retries": -1},
        {"deadline": 0},
        {"initial_backoff": -1},
    ],
)
def test_nonsensical_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetrySettings(**settings)  # type: ignore[arg-type]
