"""Initial schema: organizations, API keys, accounts, inquiries, documents, idempotency records."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("inquiry_quota", sa.Integer, nullable=True),
        sa.Column("inquiries_used", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "organization_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "organization_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("reference_id", sa.String(255), nullable=True),
        sa.Column("name_first", sa.String(255), nullable=True),
        sa.Column("name_last", sa.String(255), nullable=True),
        sa.Column("email_address", sa.String(320), nullable=True),
        sa.Column("birthdate", sa.String(10), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("organization_id", "reference_id", name="uq_accounts_org_reference"),
    )
    op.create_index("ix_accounts_org_id", "accounts", ["organization_id", "id"])
    op.create_table(
        "inquiries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "organization_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("reference_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_inquiries_org_id", "inquiries", ["organization_id", "id"])
    op.create_index("ix_inquiries_org_reference", "inquiries", ["organization_id", "reference_id"])
    op.create_table(
        "documents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "organization_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("inquiry_id", sa.String(40), sa.ForeignKey("inquiries.id"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_path", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "idempotency_records",
        sa.Column("organization_id", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("locked_until", sa.Float, nullable=True),
        sa.Column("lock_token", sa.String(32), nullable=True),
        sa.Column("recovery_point", sa.String(64), nullable=True),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("response_content_type", sa.String(255), nullable=True),
        sa.Column("response_location", sa.Text, nullable=True),
        sa.Column("response_body", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_idempotency_records_expires_at", "idempotency_records", ["expires_at"])


def downgrade() -> None:
    for table in ("idempotency_records", "documents", "inquiries", "accounts", "api_keys"):
        op.drop_table(table)
    op.drop_table("organizations")
