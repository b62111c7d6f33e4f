"""API keys: made here, stored hashed, checked per request.

A key is ``aiom_<id>_<secret>``: ``id`` is 12 hex characters (public: listings, ownership, logs), ``secret`` is
32 random bytes in URL-safe base64 (256 bits). Only SHA-256 of the whole key is stored.

Why SHA-256 and not a password hash (bcrypt, scrypt, Argon2): those are slow on purpose so that guessing a
*low-entropy* password from its hash is expensive. A 256-bit random secret cannot be guessed whatever the
hash speed, and a slow hash would add ~50-100 ms of CPU to every authenticated request. This is what
GitHub (tokens) and Stripe-style API key schemes do. A lookup is by the hash of the presented token, so the
comparison never runs over secret material.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.store import ApiKeyRecord, KeyStore

KEY_PREFIX = "aiom_"
ROLES = ("user", "admin")
_KEY_SHAPE = re.compile(r"^aiom_([0-9a-f]{12})_[A-Za-z0-9_\-]{43}$")


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_key(token: str) -> bool:
    """Whether ``token`` has the shape of one of our keys (cheap check before any store lookup)."""
    return bool(_KEY_SHAPE.match(token))


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``key`` is shown once and never stored."""

    key: str
    record: ApiKeyRecord


async def create_key(store: KeyStore, name: str, role: str, *, expires_in_s: float | None = None,
                     clock: Callable[[], float] = time.time) -> CreatedKey:
    """Make and store a new key.

    Raises:
        ValueError: unknown role or empty name.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name.strip() or len(name) > 100:
        raise ValueError("name must be 1 to 100 characters")
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    now = clock()
    record = ApiKeyRecord(id=key_id, name=name.strip(), role=role, key_hash=hash_key(key), prefix=key[:10],
                          created_at=now, expires_at=None if expires_in_s is None else now + expires_in_s)
    await store.put_api_key(record)
    return CreatedKey(key, record)


def key_state(record: ApiKeyRecord, now: float) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"
