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
    Verdict,
    classify,
    parse_rate_limit_reset,
    parse_retry_after,
)

CONNECTION_LOST = NetworkFailure(FailureKind.CONNECTION_LOST, "RemoteProtocolError")
TIMEOUT = NetworkFailure(FailureKind.READ_TIMEOUT, "ReadTimeout")
CONNECT = NetworkFailure(FailureKind.CONNECT, "ConnectError")
WRITE_FAILED = NetworkFailure(FailureKind.WRITE_FAILED, "WriteError")
FOREIGN_502 = ErrorResponse(502, None, from_service=False)


def make_policy(random_value: float = 1.0, **settings: object) -> RetryPolicy:
    """A policy whose jitter draws ``random_value`` and whose keys are key-1, key-2, …"""
    counter = itertools.count(1)
    return RetryPolicy(
        RetrySettings(**settings),  # type: ignore[arg-type]
        random=lambda: random_value,
        new_key=lambda: f"key-{next(counter)}",
    )


def post(
    policy: RetryPolicy,
    now: float = 0.0,
    key: str | None = None,
    *,
    retry_server_errors: bool | None = None,
    regroupable: bool = False,
) -> CallState:
    return policy.start(
        "POST",
        now=now,
        idempotency_key=key,
        retry_server_errors=retry_server_errors,
        regroupable=regroupable,
    )


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
        state = post(policy, regroupable=True)
        decision = retry(policy.decide(state, ErrorResponse(500, "internal_error"), now=0))
        assert decision.new_key
        assert decision.state.idempotency_key == "key-2"
        assert decision.state.new_keys == 1

    def test_client_wide_opt_in_never_replaces_the_callers_key(self) -> None:
        """A key the caller chose names *their* operation: only they may swap it."""
        policy = make_policy(retry_server_errors=True)
        state = post(policy, key="mine", regroupable=True)
        decision = give_up(policy.decide(state, ErrorResponse(500, "internal_error"), now=0))
        assert "never replaces it" in decision.reason

    def test_per_call_opt_in_replaces_even_the_callers_key(self) -> None:
        policy = make_policy()
        state = post(policy, key="mine", retry_server_errors=True)
        decision = retry(policy.decide(state, ErrorResponse(504, "gateway_timeout"), now=0))
        assert decision.state.idempotency_key == "key-1"

    def test_client_wide_opt_in_skips_calls_that_are_not_regroupable(self) -> None:
        """A verification (or a create without reference_id) would really run twice."""
        policy = make_policy(retry_server_errors=True)
        state = post(policy, regroupable=False)
        assert not state.new_key_on_server_error
        give_up(policy.decide(state, ErrorResponse(504, "gateway_timeout"), now=0))

    def test_per_call_opt_out_beats_the_client_wide_opt_in(self) -> None:
        policy = make_policy(retry_server_errors=True)
        state = post(policy, regroupable=True, retry_server_errors=False)
        give_up(policy.decide(state, ErrorResponse(502, "bad_gateway"), now=0))

    def test_foreign_server_error_keeps_the_key(self) -> None:
        """A load balancer's 502 says nothing was recorded: the same key replays or runs."""
        policy = make_policy(retry_server_errors=True)
        state = post(policy, key="mine", regroupable=True)
        decision = retry(policy.decide(state, FOREIGN_502, now=0))
        assert decision.state.idempotency_key == "mine"
        assert not decision.new_key
        assert "without the service's envelope" in decision.reason


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
    def test_recorded_server_errors_on_writes_are_raised(self, status: int) -> None:
        """Without the opt-in a 5xx from the service is raised: the same key would replay it."""
        policy = make_policy()
        decision = give_up(policy.decide(post(policy), ErrorResponse(status), now=0))
        assert "retrying with it replays this answer" in decision.reason

    def test_services_503_without_retry_after_is_still_waited_out(self) -> None:
        """The service's 503 is never recorded, Retry-After or not: back off, same key."""
        policy = make_policy(random_value=1.0)
        state = post(policy, key="mine")
        decision = retry(policy.decide(state, ErrorResponse(503, "service_unavailable"), now=0))
        assert decision.state.idempotency_key == "mine"
        assert decision.state.backpressure_retries == 1

    def test_foreign_503_with_retry_after_is_waited_out(self) -> None:
        policy = make_policy(random_value=0.0)
        response = ErrorResponse(503, None, retry_after=2.0, from_service=False)
        assert retry(policy.decide(post(policy), response, now=0)).wait == 2.0

    def test_server_errors_on_reads_are_retried(self) -> None:
        """Repeating a GET changes nothing, so a 5xx on a read is worth another try."""
        policy = make_policy()
        state = policy.start("GET", now=0)
        decision = retry(policy.decide(state, ErrorResponse(502), now=0))
        assert decision.state.idempotency_key is None

    def test_lost_connection_on_unkeyed_write_is_not_retried(self) -> None:
        """A write without a key might run twice; only what never reached the server is safe."""
        policy = make_policy()
        state = CallState(method="POST", started_at=0, idempotency_key=None)
        give_up(policy.decide(state, CONNECTION_LOST, now=0))
        give_up(policy.decide(state, TIMEOUT, now=0))
        retry(policy.decide(state, CONNECT, now=0))
        retry(policy.decide(state, WRITE_FAILED, now=0))

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
        policy = make_policy(max_retries=1)
        state = post(policy, retry_server_errors=True)
        state = retry(policy.decide(state, ErrorResponse(500), now=0)).state
        give_up(policy.decide(state, ErrorResponse(500), now=0))

    def test_connect_failures_are_retried_until_the_deadline(self) -> None:
        """Nothing was sent, so a server that is restarting is waited for, not given up on."""
        policy = make_policy(max_retries=2, deadline=30.0, random_value=1.0)
        state = post(policy)
        now = 0.0
        waits = []
        while isinstance(decision := policy.decide(state, CONNECT, now=now), Retry):
            waits.append(decision.wait)
            now += decision.wait
            state = decision.state
        assert len(waits) > 10  # far past max_retries=2
        assert max(waits) == 2.0  # max_connect_backoff
        assert "deadline" in decision.reason
        assert state.retries == 0  # the fault budget is untouched

    def test_connect_retries_without_deadline_use_max_retries(self) -> None:
        policy = make_policy(max_retries=2, deadline=None)
        state = post(policy)
        state = retry(policy.decide(state, CONNECT, now=0)).state
        state = retry(policy.decide(state, CONNECT, now=0)).state
        assert "2 connect retries used up" in give_up(policy.decide(state, CONNECT, now=0)).reason

    def test_explicit_connect_budget(self) -> None:
        policy = make_policy(max_connect_retries=1)
        state = retry(policy.decide(post(policy), CONNECT, now=0)).state
        give_up(policy.decide(state, CONNECT, now=0))


class TestWaits:
    def test_backoff_is_exponential_full_jitter_capped(self) -> None:
        """The wait is drawn in [floor, min(cap, initial * 2**n)]: at jitter 1.0 it is the bound."""
        policy = make_policy(random_value=1.0, initial_backoff=0.5, max_backoff=3.0, max_retries=9)
        state = post(policy)
        waits = []
        for _ in range(5):
            decision = retry(policy.decide(state, CONNECTION_LOST, now=0))
            waits.append(decision.wait)
            state = decision.state
        assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]

    def test_full_jitter_never_draws_below_the_floor(self) -> None:
        """An immediate retry would meet the fault it follows: the draw starts at min_backoff."""
        policy = make_policy(random_value=0.0, min_backoff=0.25)
        assert retry(policy.decide(post(policy), CONNECTION_LOST, now=0)).wait == 0.25

    def test_jitter_spreads_over_the_whole_range(self) -> None:
        policy = make_policy(random_value=0.5, min_backoff=0.25, initial_backoff=0.5)
        assert retry(policy.decide(post(policy), CONNECTION_LOST, now=0)).wait == 0.375

    def test_429_waits_retry_after_plus_small_jitter(self) -> None:
        policy = make_policy(random_value=0.5)
        response = ErrorResponse(429, "rate_limited", retry_after=2.0, rate_limit_reset=9.0)
        decision = retry(policy.decide(post(policy), response, now=0))
        assert decision.wait == pytest.approx(2.0 * 1.05)
        assert "Retry-After 2" in decision.reason

    def test_rate_limit_reset_is_only_read_on_a_429(self) -> None:
        policy = make_policy(random_value=1.0)
        response = ErrorResponse(503, "service_unavailable", rate_limit_reset=30.0)
        assert retry(policy.decide(post(policy), response, now=0)).wait == 0.5

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


class TestTaxonomy:
    """``classify``: may the request have executed, and is the answer recorded under the key?"""

    @pytest.mark.parametrize(
        ("outcome", "verdict"),
        [
            (CONNECT, Verdict(False, False)),
            (NetworkFailure(FailureKind.CONNECT_TIMEOUT, "t"), Verdict(False, False)),
            (NetworkFailure(FailureKind.POOL_TIMEOUT, "t"), Verdict(False, False)),
            (WRITE_FAILED, Verdict(False, False)),
            (TIMEOUT, Verdict(True, None)),
            (CONNECTION_LOST, Verdict(True, None)),
            (ErrorResponse(500, "internal_error"), Verdict(True, True)),
            (ErrorResponse(502, "bad_gateway"), Verdict(True, True)),
            (ErrorResponse(504, "gateway_timeout"), Verdict(True, True)),
            (FOREIGN_502, Verdict(True, False)),
            (ErrorResponse(404, None, from_service=False), Verdict(False, False)),
            (ErrorResponse(503, "service_unavailable", retry_after=1), Verdict(False, False)),
            (ErrorResponse(429, "rate_limited", retry_after=1), Verdict(False, False)),
            (ErrorResponse(409, "idempotency_request_in_progress"), Verdict(True, False)),
            (ErrorResponse(409, "duplicate_resource"), Verdict(False, True)),
            (ErrorResponse(400, "invalid_json"), Verdict(False, True)),
            (ErrorResponse(422, "invalid_value"), Verdict(False, True)),
            (ErrorResponse(401, "unauthenticated"), Verdict(False, False)),
            (ErrorResponse(403, "permission_denied"), Verdict(False, False)),
            (ErrorResponse(413, "payload_too_large"), Verdict(False, False)),
            (ErrorResponse(422, "idempotency_key_mismatch"), Verdict(False, False)),
        ],
    )
    def test_keyed_write(self, outcome: NetworkFailure | ErrorResponse, verdict: Verdict) -> None:
        assert classify(outcome, method="POST", keyed=True) == verdict

    @pytest.mark.parametrize(
        "outcome", [TIMEOUT, CONNECTION_LOST, ErrorResponse(500, "internal_error"), FOREIGN_502]
    )
    def test_reads_never_executed_anything(self, outcome: NetworkFailure | ErrorResponse) -> None:
        """A failed GET changed nothing, whatever the failure."""
        assert classify(outcome, method="GET", keyed=False) == Verdict(False, False)

    def test_nothing_is_recorded_without_a_key(self) -> None:
        verdict = classify(ErrorResponse(500, "internal_error"), method="POST", keyed=False)
        assert verdict == Verdict(True, False)
        assert classify(TIMEOUT, method="POST", keyed=False) == Verdict(True, False)


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
