"""Table definitions (SQLAlchemy Core); the Alembic migrations create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    # NULL means unlimited; otherwise the lifetime number of inquiries the org may create.
    Column("inquiry_quota", Integer, nullable=True),
    Column("inquiries_used", Integer, nullable=False, server_default="0"),
    Column("created_at", String(32), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    # SHA-256 of the secret part; the secret itself is shown once and never stored.
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("reference_id", String(255), nullable=True),
    Column("name_first", String(255), nullable=True),
    Column("name_last", String(255), nullable=True),
    Column("email_address", String(320), nullable=True),
    Column("birthdate", String(10), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    UniqueConstraint("organization_id", "reference_id", name="uq_accounts_org_reference"),
    Index("ix_accounts_org_id", "organization_id", "id"),
)

inquiries = Table(
    "inquiries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("reference_id", String(255), nullable=True),
    Column("status", String(20), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Index("ix_inquiries_org_id", "organization_id", "id"),
    Index("ix_inquiries_org_reference", "organization_id", "reference_id"),
)

documents = Table(
    "documents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("inquiry_id", String(40), ForeignKey("inquiries.id"), nullable=False),
    Column("kind", String(64), nullable=True),
    Column("filename", String(255), nullable=True),
    Column("content_type", String(255), nullable=True),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("storage_path", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    # A verification counts its inquiry's documents (migration 0005).
    Index("ix_documents_org_inquiry", "organization_id", "inquiry_id"),
)

verifications = Table(
    "verifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("inquiry_id", String(40), ForeignKey("inquiries.id"), nullable=False),
    # What was checked: "database" (name, birthdate, reference against the provider's records).
    Column("kind", String(64), nullable=False),
    # "passed" or "failed", as the provider answered.
    Column("status", String(16), nullable=False),
    # JSON list of the provider's reasons.
    Column("reasons", Text, nullable=False),
    # The provider's own id for the check, for support across the two systems.
    Column("provider_reference", String(255), nullable=True),
    Column("created_at", String(32), nullable=False),
    Index("ix_verifications_org_inquiry", "organization_id", "inquiry_id"),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("organization_id", String(40), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    # Lease for records held across a commit (external side effects): epoch seconds.
    Column("locked_until", Float, nullable=True),
    Column("lock_token", String(32), nullable=True),
    Column("recovery_point", String(64), nullable=True),
    # JSON saved with the recovery point, e.g. an upstream answer a retry resumes from.
    Column("recovery_data", Text, nullable=True),
    Column("response_status", Integer, nullable=True),
    Column("response_content_type", String(255), nullable=True),
    Column("response_location", Text, nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_idempotency_records_expires_at", "expires_at"),
)

api_logs = Table(
    "api_logs",
    metadata,
    # log_… ids are time-ordered (retrysafe.ids): ORDER BY id DESC is newest first.
    Column("id", String(40), primary_key=True),
    # NULL for requests turned away before authentication (401, 429, 413, shed 503):
    # no organization is proven, so no organization sees them through the API.
    Column("organization_id", String(40), nullable=True),
    Column("api_key_id", String(40), nullable=True),
    Column("request_id", String(40), nullable=False),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("query", Text, nullable=True),
    Column("route", String(255), nullable=True),
    Column("status", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("rate_limit", String(16), nullable=True),
    Column("error_code", String(64), nullable=True),
    # Redacted JSON, size-capped; only with --api-log-bodies.
    Column("request_body", Text, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Index("ix_api_logs_org_id", "organization_id", "id"),
    Index("ix_api_logs_org_request", "organization_id", "request_id"),
    Index("ix_api_logs_org_key", "organization_id", "idempotency_key"),
    Index("ix_api_logs_created_at", "created_at"),
)
