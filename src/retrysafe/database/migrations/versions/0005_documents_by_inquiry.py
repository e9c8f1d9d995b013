"""Documents found by their inquiry: a verification counts its inquiry's documents.

Without this index that count read the whole documents table on every
verification (PostgreSQL and SQLite alike), a cost that grew with every upload of
every organization. It leads with the organization, as every other index does,
and the count matches on both columns. A plain CREATE INDEX, not CONCURRENTLY:
the migration runs in a transaction, and it holds up only uploads while it builds.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_documents_org_inquiry", "documents", ["organization_id", "inquiry_id"])


def downgrade() -> None:
    op.drop_index("ix_documents_org_inquiry", table_name="documents")
