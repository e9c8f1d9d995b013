"""A verification counts its inquiry's documents through an index, never by reading them all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from tests.stores.conftest import SQL_BACKENDS, migrated_database

from retrysafe.database import Database
from retrysafe.database.schema import accounts, documents, inquiries
from retrysafe.service.admin import create_organization
from retrysafe.service.verifications import _SUBJECT

INQUIRIES = 500
DOCUMENTS_EACH = 4
STAMP = "2026-12-02T00:00:00Z"


@pytest.fixture(params=SQL_BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path) as db:
        yield db


def _inquiry(org: str, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
    account = {
        "id": f"act_{number}",
        "organization_id": org,
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    inquiry = {
        "id": f"inq_{number}",
        "organization_id": org,
        "account_id": account["id"],
        "status": "created",
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    return account, inquiry


def _document(org: str, inquiry: str, number: int) -> dict[str, Any]:
    return {
        "id": f"doc_{number}",
        "organization_id": org,
        "inquiry_id": inquiry,
        "size": 1,
        "sha256": "0" * 64,
        "storage_path": f"/nowhere/{number}",
        "created_at": STAMP,
    }


async def test_the_document_count_probes_the_inquiry_index(database: Database) -> None:
    org, _ = await create_organization(database, "acme")
    made = [_inquiry(org, number) for number in range(INQUIRIES)]
    async with database.write() as conn:
        await conn.execute(insert(accounts), [account for account, _ in made])
        await conn.execute(insert(inquiries), [inquiry for _, inquiry in made])
        rows = [
            _document(org, inquiry["id"], number * DOCUMENTS_EACH + each)
            for number, (_, inquiry) in enumerate(made)
            for each in range(DOCUMENTS_EACH)
        ]
        await conn.execute(insert(documents), rows)
        await conn.execute(text("ANALYZE"))

    subject = _SUBJECT.params(inquiry=made[7][1]["id"], org=org)
    async with database.read() as conn:
        assert (await conn.execute(subject)).one().documents == DOCUMENTS_EACH
        literal = str(subject.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if database.is_sqlite:
            steps = [row[-1] for row in await conn.execute(text("EXPLAIN QUERY PLAN " + literal))]
            assert any("ix_documents_org_inquiry" in step for step in steps), steps
            assert not any(step.startswith("SCAN documents") for step in steps), steps
        else:
            plan = (await conn.execute(text("EXPLAIN (FORMAT JSON) " + literal))).scalar_one()
            nodes = _nodes(plan[0]["Plan"])  # SQLAlchemy decodes the JSON document
            on_documents = [node for node in nodes if node.get("Relation Name") == "documents"]
            assert on_documents, nodes
            assert all(node["Node Type"] != "Seq Scan" for node in on_documents), on_documents


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", ()):
        found.extend(_nodes(child))
    return found
