"""Typed, immutable views of the API's JSON:API resources.

Each model names the attributes SPEC §4 promises and keeps the raw
``attributes`` mapping too, so a field the server adds later is readable
before the client learns its name; ``last_response`` is the metadata of the
answer it came from. Parsing is lenient about what the server
omits (``None``) but strict about the envelope itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, TypeVar

from ._errors import UnexpectedResponseError
from ._metadata import ResponseMetadata

__all__ = [
    "Account",
    "Document",
    "Inquiry",
    "InquiryStatus",
    "Verification",
    "parse_resource",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class InquiryStatus:
    """The inquiry statuses the service uses today (compare ``Inquiry.status`` to these).

    Plain strings rather than an Enum: a status added by the server later
    must not make the client fail to parse an inquiry.
    """

    CREATED = "created"
    COMPLETED = "completed"
    APPROVED = "approved"
    DECLINED = "declined"
    EXPIRED = "expired"


def _str(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    return None if value is None else str(value)


def _int(attributes: Mapping[str, Any], name: str) -> int | None:
    value = attributes.get(name)
    return None if value is None else int(value)


def _date(attributes: Mapping[str, Any], name: str) -> date | None:
    value = attributes.get(name)
    return None if value is None else date.fromisoformat(str(value))


def _datetime(attributes: Mapping[str, Any], name: str) -> datetime | None:
    value = attributes.get(name)
    return None if value is None else datetime.fromisoformat(str(value))


def _related_id(
    resource: Mapping[str, Any], attributes: Mapping[str, Any], name: str
) -> str | None:
    """``<name>_id`` from the attributes, or from ``relationships.<name>.data.id``."""
    direct = _str(attributes, f"{name}_id")
    if direct is not None:
        return direct
    relationships = resource.get("relationships")
    if isinstance(relationships, Mapping):
        related = relationships.get(name)
        if isinstance(related, Mapping) and isinstance(related.get("data"), Mapping):
            return _str(related["data"], "id")
    return None


def _attributes(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = resource.get("attributes", _EMPTY)
    if not isinstance(attributes, Mapping):
        raise UnexpectedResponseError(f"resource {resource.get('id')!r} has no attributes object")
    return MappingProxyType(dict(attributes))


@dataclass(frozen=True, slots=True)
class Account:
    """A person the organization knows, grouped by the caller's ``reference_id``."""

    id: str
    reference_id: str | None
    name_first: str | None
    name_last: str | None
    email_address: str | None
    birthdate: date | None
    created_at: datetime | None
    updated_at: datetime | None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)
    """Every attribute as sent by the server, including ones newer than this client."""
    last_response: ResponseMetadata | None = field(default=None, repr=False, compare=False)
    """The answer this object came from: Request-Id, replay flag, keys, rate limit, quota."""

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> Account:
        attributes = _attributes(resource)
        return cls(
            id=str(resource["id"]),
            reference_id=_str(attributes, "reference_id"),
            name_first=_str(attributes, "name_first"),
            name_last=_str(attributes, "name_last"),
            email_address=_str(attributes, "email_address"),
            birthdate=_date(attributes, "birthdate"),
            created_at=_datetime(attributes, "created_at"),
            updated_at=_datetime(attributes, "updated_at"),
            attributes=attributes,
        )


@dataclass(frozen=True, slots=True)
class Inquiry:
    """One identity check of an account; ``status`` moves through :class:`InquiryStatus`."""

    id: str
    status: str
    reference_id: str | None
    account_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)
    last_response: ResponseMetadata | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> Inquiry:
        attributes = _attributes(resource)
        return cls(
            id=str(resource["id"]),
            status=_str(attributes, "status") or "",
            reference_id=_str(attributes, "reference_id"),
            account_id=_related_id(resource, attributes, "account"),
            created_at=_datetime(attributes, "created_at"),
            updated_at=_datetime(attributes, "updated_at"),
            attributes=attributes,
        )


@dataclass(frozen=True, slots=True)
class Document:
    """Metadata of an uploaded file; ``sha256`` lets the caller check what the server stored."""

    id: str
    inquiry_id: str | None
    kind: str | None
    filename: str | None
    content_type: str | None
    size: int | None
    sha256: str | None
    created_at: datetime | None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)
    last_response: ResponseMetadata | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> Document:
        attributes = _attributes(resource)
        return cls(
            id=str(resource["id"]),
            inquiry_id=_related_id(resource, attributes, "inquiry"),
            kind=_str(attributes, "kind"),
            filename=_str(attributes, "filename"),
            content_type=_str(attributes, "content_type"),
            size=_int(attributes, "size"),
            sha256=_str(attributes, "sha256"),
            created_at=_datetime(attributes, "created_at"),
            attributes=attributes,
        )


@dataclass(frozen=True, slots=True)
class Verification:
    """A check against the upstream provider: ``passed`` or ``failed``, with its reasons."""

    id: str
    inquiry_id: str | None
    kind: str | None
    status: str
    reasons: tuple[str, ...]
    created_at: datetime | None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)
    last_response: ResponseMetadata | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> Verification:
        attributes = _attributes(resource)
        reasons = attributes.get("reasons") or ()
        return cls(
            id=str(resource["id"]),
            inquiry_id=_related_id(resource, attributes, "inquiry"),
            kind=_str(attributes, "kind"),
            status=_str(attributes, "status") or "",
            reasons=tuple(str(reason) for reason in reasons),
            created_at=_datetime(attributes, "created_at"),
            attributes=attributes,
        )


Model = TypeVar("Model", Account, Inquiry, Document, Verification)


def parse_resource(model: type[Model], resource: Any) -> Model:
    """One resource object as ``model``; a contract break is :class:`UnexpectedResponseError`."""
    if not isinstance(resource, Mapping) or "id" not in resource:
        raise UnexpectedResponseError(
            f"expected a {model.__name__} resource object, got {resource!r:.200}"
        )
    try:
        return model.from_resource(resource)
    except (TypeError, ValueError) as exc:
        raise UnexpectedResponseError(f"invalid {model.__name__} resource: {exc}") from exc
