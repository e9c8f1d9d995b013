"""``retrysafe provider`` as a real process: its HTTP API, its counter and its knobs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.support.provider_process import ProviderProcess, start_provider

from server_process import run_cli

pytestmark = pytest.mark.slow

CALL = {
    "kind": "database",
    "reference": "inq_1",
    "person": {"name_first": "Ada", "name_last": "Lovelace", "birthdate": "2015-01-01"},
}


def test_checks_are_answered_once_per_key_and_counted(
    tmp_path: Path, processes: list[ProviderProcess]
) -> None:
    provider = start_provider(tmp_path)
    processes.append(provider)
    with httpx.Client(base_url=provider.url, timeout=10) as http:
        first = http.post("/v1/checks", json=CALL, headers={"Idempotency-Key": "k1"})
        again = http.post("/v1/checks", json=CALL, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "failed"
        assert first.json()["reasons"] == ["underage"]
        assert again.content == first.content
        assert http.get("/stats").json() == {"checks_run": 1}
        assert http.post("/v1/checks", content=b"{").status_code == 400
        assert http.get("/stats").json() == {"checks_run": 1}


def test_delay_is_read_from_the_environment_and_the_check_counts_while_it_runs(
    tmp_path: Path, processes: list[ProviderProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETRYSAFE_PROVIDER_DELAY holds the answer back; /stats already counts the check."""
    monkeypatch.setenv("RETRYSAFE_PROVIDER_DELAY", "1.5")
    provider = start_provider(tmp_path, env_passthrough=("RETRYSAFE_PROVIDER_DELAY",))
    processes.append(provider)
    with httpx.Client(base_url=provider.url, timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/checks", json=CALL, headers={"Idempotency-Key": "slow"})
        assert http.get("/stats").json() == {"checks_run": 1}
    # The check goes on although its caller gave up: a repeat gets its answer, no new check.
    with httpx.Client(base_url=provider.url, timeout=5) as http:
        replay = http.post("/v1/checks", json=CALL, headers={"Idempotency-Key": "slow"})
        assert replay.status_code == 200
        assert http.get("/stats").json() == {"checks_run": 1}


def test_full_fail_rate_answers_failures(tmp_path: Path, processes: list[ProviderProcess]) -> None:
    provider = start_provider(tmp_path, "--fail-rate", "1")
    processes.append(provider)
    with httpx.Client(base_url=provider.url, timeout=10) as http:
        for attempt in range(6):
            response = http.post(
                "/v1/checks", json=CALL, headers={"Idempotency-Key": f"f{attempt}"}
            )
            if response.status_code == 200:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(response.content)
            else:
                assert response.status_code == 500
        assert http.get("/stats").json() == {"checks_run": 0}


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--fail-rate", "1.5"), "--fail-rate"),
        (("--fail-rate", "-0.1"), "--fail-rate"),
        (("--delay", "-1"), "--delay"),
        (("--delay", "soon"), "--delay"),
        (("--port", "70000"), "--port"),
    ],
)
def test_bad_knobs_are_refused_with_a_message_naming_the_flag(
    tmp_path: Path, args: tuple[str, ...], flag: str
) -> None:
    result = run_cli("provider", *args, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert flag in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_serve_refuses_a_provider_timeout_that_is_not_a_positive_number(
    tmp_path: Path, value: str
) -> None:
    result = run_cli(
        "serve",
        "--provider-timeout",
        value,
        "--database",
        f"sqlite:///{tmp_path / 'db'}",
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--provider-timeout" in result.stderr
    assert "Traceback" not in result.stderr
