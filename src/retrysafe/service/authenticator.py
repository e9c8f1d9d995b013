"""API keys looked up in the service's database: the authenticator the pipeline calls."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import bindparam, select

from retrysafe.database import Database
from retrysafe.database.schema import api_keys
from retrysafe.pipeline.principal import Principal
from retrysafe.service.admin import SCOPE_SEPARATOR
from retrysafe.service.api_keys import secret_matches, split_presented

# By primary key, so one index probe; a revoked key simply is not found.
_ACTIVE_KEY = select(api_keys.c.organization_id, api_keys.c.secret_hash, api_keys.c.scopes).where(
    api_keys.c.id == bindparam("key_id"), api_keys.c.revoked_at.is_(None)
)


@lru_cache(maxsize=256)
def _scopes(stored: str) -> frozenset[str]:
    # Few distinct scope sets exist; parsing each once keeps the hot path lean. This
    # caches the parse of a string only, never a key: revocation is still seen at once.
    return frozenset(s for s in stored.split(SCOPE_SEPARATOR) if s)


class DatabaseAuthenticator:
    """Resolves a presented ``rsk_<key id>.<secret>`` to the key's :class:`Principal`.

    Nothing is cached between requests, so a revocation takes effect immediately
    in every process sharing the database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._active_key = db.prepare(_ACTIVE_KEY)

    async def __call__(self, presented: str) -> Principal | None:
        parts = split_presented(presented)
        if parts is None:
            return None
        key_id, secret = parts
        # Inline on SQLite, one statement straight on asyncpg on PostgreSQL: every
        # request pays this lookup, and no cache may hide a revocation.
        row = await self._db.first_committed(self._active_key, {"key_id": key_id})
        if row is None:
            return None
        organization_id, secret_hash, scopes = row
        # Constant-time comparison of hashes: timing reveals nothing about the secret.
        if not secret_matches(secret, secret_hash):
            return None
        return Principal(organization_id, key_id, _scopes(scopes))
