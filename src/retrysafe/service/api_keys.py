"""The API key format: a public id to look the key up and a secret stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "rsk_"
ALL_SCOPES: tuple[str, ...] = (
    "accounts:read",
    "accounts:write",
    "inquiries:read",
    "inquiries:write",
    "documents:read",
    "documents:write",
    "logs:read",
)


def hash_secret(secret: str) -> str:
    # The secret has 256 bits of entropy, so a plain SHA-256 is enough: there is
    # nothing to brute-force, and a slow KDF would cost every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """Return ``(key_id, presented_secret, secret_hash)`` for a fresh key."""
    key_id = "key_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}.{secret}", hash_secret(secret)


def split_presented(presented: str) -> tuple[str, str] | None:
    """Split ``rsk_<key_id>.<secret>`` into its parts; ``None`` when it has another shape."""
    if not presented.startswith(PREFIX):
        return None
    key_id, dot, secret = presented[len(PREFIX) :].partition(".")
    if not dot or not key_id.startswith("key_") or not secret or len(presented) > 200:
        return None
    return key_id, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
