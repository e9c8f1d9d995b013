"""Each resource's attributes, described once: handlers validate and answer by them, the
OpenAPI document is generated from them (``retrysafe.service.openapi``).

A :class:`ResourceType` names what a response carries, in the order it carries it;
what a client may write is a :class:`~retrysafe.service.validation.RequestAttributes`
of :class:`~retrysafe.service.validation.Field` limits. Attributes only the server
writes are stated as the JSON Schema of their value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrysafe.provider.checks import KINDS
from retrysafe.service.validation import EMAIL, PAST_DATE, Field, RequestAttributes

__all__ = [
    "ACCOUNT",
    "ACCOUNT_INPUT",
    "API_LOG",
    "API_LOG_OUTCOMES",
    "DOCUMENT",
    "DOCUMENT_KIND",
    "INQUIRY",
    "INQUIRY_INPUT",
    "INQUIRY_STATUSES",
    "VERIFICATION",
    "VERIFICATION_INPUT",
    "Attribute",
    "ResourceType",
]

Schema = dict[str, Any]
Attribute = Field | Schema
"""A client-written attribute (its :class:`Field`) or a server-written one (its schema)."""


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One JSON:API resource type: its ``type`` and the attributes of its answers."""

    type: str
    attributes: Mapping[str, Attribute]

    @property
    def names(self) -> tuple[str, ...]:
        """The attribute names, in the order responses carry them."""
        return tuple(self.attributes)


_TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
_NULLABLE_TEXT: Schema = {"type": ["string", "null"]}

ACCOUNT_INPUT = RequestAttributes(
    {
        "reference_id": Field(max_length=255, min_length=1, description="Unique per organization."),
        "name_first": Field(max_length=255),
        "name_last": Field(max_length=255),
        "email_address": Field(
            max_length=320,
            format=EMAIL,
            description="One @, no whitespace, a dotted domain; deliverability is not checked.",
        ),
        # Longer than a date on purpose: "2020-01-011" deserves the date message, not a
        # length one; the format's fixed length is what the document states.
        "birthdate": Field(
            max_length=32, format=PAST_DATE, description="YYYY-MM-DD, not in the future."
        ),
    }
)
ACCOUNT = ResourceType(
    "account", {**ACCOUNT_INPUT.fields, "created_at": _TIMESTAMP, "updated_at": _TIMESTAMP}
)

INQUIRY_STATUSES = ("created", "completed", "approved", "declined", "expired")
INQUIRY_INPUT = RequestAttributes(
    {
        "reference_id": Field(
            max_length=255,
            min_length=1,
            description="Joins the account with this reference id, creating it if absent.",
        ),
        "account_id": Field(
            max_length=64, min_length=1, description="An existing account (act_…)."
        ),
    },
    either=("reference_id", "account_id"),
)
INQUIRY = ResourceType(
    "inquiry",
    {
        "status": {"enum": list(INQUIRY_STATUSES)},
        "reference_id": _NULLABLE_TEXT,
        "account_id": {"type": "string"},
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
    },
)

DOCUMENT_KIND = Field(
    max_length=64, min_length=1, description="What the document is, e.g. passport."
)
"""The upload's optional form field beside the part ``file``."""
DOCUMENT = ResourceType(
    "document",
    {
        "inquiry_id": {"type": "string"},
        "kind": _NULLABLE_TEXT,
        "filename": _NULLABLE_TEXT,
        "content_type": _NULLABLE_TEXT,
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "created_at": _TIMESTAMP,
    },
)

VERIFICATION_INPUT = RequestAttributes(
    {
        "kind": Field(
            max_length=64,
            min_length=1,
            enum=KINDS,
            default="database",
            description="database: name and birthdate against the provider's records;"
            " document: the same, and the inquiry must have a document.",
        ),
    }
)
VERIFICATION = ResourceType(
    "verification",
    {
        "inquiry_id": {"type": "string"},
        "kind": {"enum": list(KINDS)},
        "status": {"enum": ["passed", "failed"]},
        "reasons": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The provider's reasons for a failed check, e.g. underage.",
        },
        "provider_reference": {"type": "string", "description": "The provider's check id."},
        "created_at": _TIMESTAMP,
    },
)

API_LOG_OUTCOMES = ("executed", "replayed", "mismatch", "in_flight", "not_recorded")
"""What the idempotency layer did with a keyed request (``outcome``)."""
API_LOG = ResourceType(
    "api_log",
    {
        "request_id": {"type": "string", "description": "The Request-Id of the answer."},
        "created_at": _TIMESTAMP,
        "method": {"type": "string"},
        "path": {"type": "string"},
        "query": _NULLABLE_TEXT,
        "route": {"type": ["string", "null"], "description": "The route template."},
        "status": {"type": "integer"},
        "duration_ms": {"type": "number"},
        "api_key_id": _NULLABLE_TEXT,
        "idempotency_key": _NULLABLE_TEXT,
        "outcome": {
            "enum": [*API_LOG_OUTCOMES, None],
            "description": "What the idempotency layer did; null without a key.",
        },
        "rate_limit": {"enum": ["allowed", "limited", None]},
        "error_code": _NULLABLE_TEXT,
        "request_body": {
            "type": ["string", "null"],
            "description": "Redacted JSON, with --api-log-bodies only.",
        },
        "response_body": {
            "type": ["string", "null"],
            "description": "Redacted JSON, with --api-log-bodies only.",
        },
    },
)
