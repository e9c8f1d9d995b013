"""A revoked key is refused at once by every server process sharing the database.

Two real ``retrysafe serve`` processes; the key works on both (so any cache would
be warm), ``retrysafe keys revoke`` runs as a third process, and the very next
request to each server is 401. Nothing is cached between requests.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.server_process import ServerProcess, run_cli, start_server


@pytest.mark.slow
def test_revocation_reaches_every_process_at_once(empty_database_url: str, tmp_path: Path) -> None:
    created = run_cli(
        "keys", "create", "--org", "acme", "--database", empty_database_url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    key_id = key.removeprefix("rsk_").split(".", 1)[0]
    headers = {"Authorization": f"Bearer {key}"}

    args = ["--database", empty_database_url, "--document-dir", str(tmp_path / "docs")]
    servers: list[ServerProcess] = []
    try:
        for _ in range(2):
            servers.append(start_server(args, cwd=tmp_path))
        for server in servers:
            server.wait_healthy()
            assert (
                httpx.get(f"{server.base_url}/api/v1/accounts", headers=headers).status_code == 200
            )

        revoked = run_cli("keys", "revoke", key_id, "--database", empty_database_url, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr

        for server in servers:
            response = httpx.get(f"{server.base_url}/api/v1/accounts", headers=headers)
            assert response.status_code == 401, f"{server.base_url}: {response.text}"
            assert response.json()["errors"][0]["code"] == "unauthenticated"
    finally:
        for server in servers:
            server.stop()
