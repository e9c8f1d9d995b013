"""API logs: one row per request through /api/v1, searchable by the organization that sent it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_logs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("organization_id", sa.String(40), nullable=True),
        sa.Column("api_key_id", sa.String(40), nullable=True),
        sa.Column("request_id", sa.String(40), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("query", sa.Text, nullable=True),
        sa.Column("route", sa.String(255), nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("rate_limit", sa.String(16), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("request_body", sa.Text, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    # Every API query is scoped to one organization, so each index leads with it:
    # listing (newest first), lookup by Request-Id, and an idempotency key's timeline.
    op.create_index("ix_api_logs_org_id", "api_logs", ["organization_id", "id"])
    op.create_index("ix_api_logs_org_request", "api_logs", ["organization_id", "request_id"])
    op.create_index("ix_api_logs_org_key", "api_logs", ["organization_id", "idempotency_key"])
    # Retention deletes by age across organizations.
    op.create_index("ix_api_logs_created_at", "api_logs", ["created_at"])


def downgrade() -> None:
    op.drop_table("api_logs")
