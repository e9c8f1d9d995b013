"""The security limits are flags of ``serve`` and RETRYSAFE_* variables, like every other knob."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.server_process import run_cli, start_server

from retrysafe.config import ConfigError, settings_from_env

VARIABLES = {
    "RETRYSAFE_AUTH_FAILURE_LIMIT": "2/minute",
    "RETRYSAFE_MAX_HEADER_BYTES": "2000",
    "RETRYSAFE_MAX_QUERY_BYTES": "300",
    "RETRYSAFE_MAX_JSON_DEPTH": "5",
}


def test_variables_reach_the_settings() -> None:
    settings = settings_from_env(VARIABLES)
    assert settings.auth_failure_limit == "2/minute"
    assert (settings.max_header_bytes, settings.max_query_bytes) == (2000, 300)
    assert settings.max_json_depth == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETRYSAFE_AUTH_FAILURE_LIMIT", "often"),
        ("RETRYSAFE_MAX_HEADER_BYTES", "0"),
        ("RETRYSAFE_MAX_JSON_DEPTH", "0"),
    ],
)
def test_unusable_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings_from_env({name: value})


@pytest.mark.slow
def test_serve_applies_them(tmp_path: Path) -> None:
    """A real ``retrysafe serve`` configured only by variables enforces each limit."""
    database = f"sqlite:///{tmp_path / 'limits.db'}"
    created = run_cli("keys", "create", "--org", "acme", "--database", database, cwd=tmp_path)
    key = created.stdout.strip().splitlines()[-1]
    server = start_server(["--database", database], cwd=tmp_path, env=VARIABLES)
    try:
        server.wait_healthy()
        api = server.base_url + "/api/v1"
        good = {"Authorization": f"Bearer {key}"}
        big = httpx.get(f"{api}/accounts", headers={**good, "X-Padding": "a" * 2500})
        assert big.json()["errors"][0]["code"] == "headers_too_large"
        long = httpx.get(
            f"{api}/accounts", params={"filter[reference_id]": "r" * 400}, headers=good
        )
        assert long.json()["errors"][0]["code"] == "query_too_long"
        deep = httpx.post(
            f"{api}/accounts", json={"data": {"attributes": {"a": [[[[[1]]]]]}}}, headers=good
        )
        assert deep.json()["errors"][0]["code"] == "invalid_json"
        wrong = {"Authorization": "Bearer rsk_key_0000000000000000.wrong"}
        statuses = [httpx.get(f"{api}/accounts", headers=wrong).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
    finally:
        server.stop()
