"""Verifications: the upstream provider's checks of an inquiry's account."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "organization_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("inquiry_id", sa.String(40), sa.ForeignKey("inquiries.id"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("provider_reference", sa.String(255), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index(
        "ix_verifications_org_inquiry", "verifications", ["organization_id", "inquiry_id"]
    )


def downgrade() -> None:
    op.drop_table("verifications")
