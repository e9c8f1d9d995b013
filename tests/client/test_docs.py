"""The README's client section is true: its examples run live, its table is the policy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrysafe.client._retry import (
    ErrorResponse,
    FailureKind,
    NetworkFailure,
    Outcome,
    Verdict,
    classify,
)

from .conftest import LiveServer, subprocess_env

DOC = Path(__file__).resolve().parents[2] / "README.md"
# The client section only: server-side sketches elsewhere (a recovery-point handler)
# name the reader's own functions and are not programs.
CLIENT_SECTION = re.search(r"^## The Python client\n(.*?)^## ", DOC.read_text(), re.M | re.S)
assert CLIENT_SECTION is not None, "README lost its '## The Python client' section"
EXAMPLES = re.findall(r"```python\n(.*?)```", CLIENT_SECTION.group(1), flags=re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_example_runs(source: str, live_server: LiveServer) -> None:
    env = subprocess_env()
    env["RETRYSAFE_API_KEY"] = live_server.api_key
    env["RETRYSAFE_BASE_URL"] = live_server.url
    result = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# -- the failure taxonomy table is the policy's ------------------------------------------

TAXONOMY = re.search(
    r"^#### What each failure means\n(.*?)^\*\*Waits", CLIENT_SECTION.group(1), re.M | re.S
)
assert TAXONOMY is not None, "README lost its taxonomy table"
ROWS = {
    cells[0]: cells[1:]
    for line in TAXONOMY.group(1).splitlines()
    if line.startswith("| ") and not line.startswith("| Failure")
    for cells in [[cell.strip() for cell in line.strip("|").split(" | ")]]
}

# A representative outcome for each row the classification decides on its own; the two
# rows it does not (a GET's failures, the deadline) are checked in test_client_loop.
REPRESENTATIVES: dict[str, list[tuple[Outcome, str]]] = {
    "Connection refused": [(NetworkFailure(FailureKind.CONNECT, ""), "POST")],
    "Connect timeout, or no pooled connection in time": [
        (NetworkFailure(FailureKind.CONNECT_TIMEOUT, ""), "POST"),
        (NetworkFailure(FailureKind.POOL_TIMEOUT, ""), "POST"),
    ],
    "Write error or timeout before the body was sent whole": [
        (NetworkFailure(FailureKind.WRITE_FAILED, ""), "POST")
    ],
    "Read timeout: the request was sent, no answer came": [
        (NetworkFailure(FailureKind.READ_TIMEOUT, ""), "POST")
    ],
    "Connection reset or closed after the request was sent": [
        (NetworkFailure(FailureKind.CONNECTION_LOST, ""), "POST")
    ],
    "5xx with the service's envelope and `Request-Id` (500, 502, 504)": [
        (ErrorResponse(status, code), "POST")
        for status, code in [
            (500, "internal_error"),
            (502, "bad_gateway"),
            (504, "gateway_timeout"),
        ]
    ],
    "5xx without the envelope or without `Request-Id` (a proxy's, a load balancer's)": [
        (ErrorResponse(status, None, from_service=False), "POST") for status in (500, 502, 503)
    ],
    "503 from the service (load shed, database unreachable), with `Retry-After`": [
        (ErrorResponse(503, "service_unavailable", retry_after=1), "POST")
    ],
    "429 rate limited": [(ErrorResponse(429, "rate_limited", retry_after=1), "POST")],
    "409 `idempotency_request_in_progress`": [
        (ErrorResponse(409, "idempotency_request_in_progress", retry_after=1), "POST")
    ],
    "409 `duplicate_resource`": [(ErrorResponse(409, "duplicate_resource"), "POST")],
    "400, 404, 422 from the handler": [
        (ErrorResponse(status, code), "POST")
        for status, code in [(400, "invalid_json"), (404, "not_found"), (422, "invalid_value")]
    ],
    "401, 403, 413, 415, 422 `idempotency_key_mismatch`": [
        (ErrorResponse(status, code), "POST")
        for status, code in [
            (401, "unauthenticated"),
            (403, "permission_denied"),
            (413, "payload_too_large"),
            (415, "unsupported_media_type"),
            (422, "idempotency_key_mismatch"),
        ]
    ],
    "Any failure of a `GET`": [
        (outcome, "GET")
        for outcome in [
            NetworkFailure(FailureKind.READ_TIMEOUT, ""),
            NetworkFailure(FailureKind.CONNECTION_LOST, ""),
            ErrorResponse(500, "internal_error"),
            ErrorResponse(502, None, from_service=False),
        ]
    ],
}
WORDS = {"yes": True, "no": False, "unknown": None}


def test_the_table_has_a_row_for_every_failure_the_issue_names() -> None:
    assert set(REPRESENTATIVES) <= set(ROWS)
    assert set(ROWS) - set(REPRESENTATIVES) == {"The deadline passes while a body moves"}


@pytest.mark.parametrize("row", sorted(REPRESENTATIVES))
def test_the_table_says_what_the_policy_decides(row: str) -> None:
    """Change the policy or the table, and this fails until the other follows."""
    executed, recorded, _ = ROWS[row]
    expected = Verdict(may_have_executed=WORDS[executed], recorded=WORDS[recorded])
    for outcome, method in REPRESENTATIVES[row]:
        keyed = method != "GET"
        assert classify(outcome, method=method, keyed=keyed) == expected, outcome
