"""Organization names as the commands accept them, checked before any database is opened."""

from __future__ import annotations

from retrysafe.cli.errors import BadInput

__all__ = ["MAX_ORG_NAME", "organization_name"]

MAX_ORG_NAME = 200
"""The ``organizations.name`` column's length."""


def organization_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_ORG_NAME:
        raise BadInput(f"the organization name must be 1 to {MAX_ORG_NAME} characters")
    return name
