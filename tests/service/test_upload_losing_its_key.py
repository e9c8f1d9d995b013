"""An upload whose key another process holds when it claims it keeps nothing: no row, no file.

Uploads claim their idempotency key at their commit, so the bytes are received and
written before the claim. Here another session holds the key's advisory lock, as
another server process's claim of the same key would: the upload's claim finds it
taken, the answer is 409 in flight, and the file it wrote is removed again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.conftest import LiveServer, run_sync

from .api_calls import create_inquiry

pytestmark = pytest.mark.postgres

KEY = "upload-key"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_upload_that_loses_its_key_leaves_no_file(
    server: LiveServer, http: httpx.Client
) -> None:
    inquiry = create_inquiry(http, reference_id="holder")["id"]
    organization = http.get(f"/inquiries/{inquiry}").json()
    del organization  # the key is scoped by the organization; read it from the database
    documents = Path(server.settings.document_dir)

    async def upload_while_the_key_is_held() -> httpx.Response:
        other = await asyncpg.connect(server.database_url)
        try:
            org_id = await other.fetchval(
                "SELECT organization_id FROM inquiries WHERE id = $1", inquiry
            )
            async with other.transaction():
                await other.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{org_id}\x1f{KEY}"
                )
                return await asyncio.to_thread(
                    lambda: http.post(
                        f"/inquiries/{inquiry}/documents",
                        files={"file": ("id.png", b"\x89PNG" + b"x" * 4096)},
                        headers={"Idempotency-Key": KEY},
                    )
                )
        finally:
            await other.close()

    held = run_sync(upload_while_the_key_is_held)
    assert held.status_code == 409, held.text
    assert held.json()["errors"][0]["code"] == "idempotency_request_in_progress"
    assert not list(documents.glob("doc_*"))
    assert not list(documents.glob(".doc_*"))
    retry = http.post(
        f"/inquiries/{inquiry}/documents",
        files={"file": ("id.png", b"\x89PNG" + b"x" * 4096)},
        headers={"Idempotency-Key": KEY},
    )
    assert retry.status_code == 201, retry.text
    assert len(list(documents.glob("doc_*"))) == 1
