"""API keys at rest: created with a random value shown once and stored as a digest; a key may carry
its own model endpoint, model API key (encrypted, never returned) and an allow-list of models."""

from __future__ import annotations

import secrets

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.contract.ids import now
from api.security import crypto
from api.security.auth import SELECT_KEY, redact

INSERT_KEY = "INSERT INTO api_keys (id, tenant_id, key_hash, model_api_key, obj) VALUES (%s, %s, %s, %s, %s)"
REVOKE_KEY = """
    UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s),
        obj = jsonb_set(obj, '{revoked_at}', to_jsonb(COALESCE(revoked_at, %s)))
    WHERE id = %s RETURNING obj
"""


async def create(
    conn: AsyncConnection,
    secret: str | None,
    *,
    name: str | None,
    project_id: str | None,
    model_base_url: str | None,
    model_api_key: str | None,
    allowed_models: list[str] | None,
) -> dict:
    """Store a new key; the key object with its `value` (the only time it is shown)."""
    key = crypto.new_api_key()
    key_id = "key_" + secrets.token_hex(12)
    tenant = project_id or "proj_" + secrets.token_hex(12)
    obj = {
        "id": key_id,
        "object": "api_key",
        "created_at": now(),
        "name": name,
        "project_id": tenant,
        "redacted_value": redact(key),
        "model_base_url": model_base_url,
        "has_model_api_key": model_api_key is not None,
        "allowed_models": allowed_models,
        "revoked_at": None,
    }
    sealed = crypto.encrypt(secret, model_api_key) if model_api_key is not None else None
    await conn.execute(INSERT_KEY, (key_id, tenant, crypto.key_hash(key), sealed, Jsonb(obj)))
    return {**obj, "value": key}


async def get(conn: AsyncConnection, key_id: str) -> dict | None:
    row = await (await conn.execute(SELECT_KEY, (key_id,))).fetchone()
    return row["obj"] if row else None


async def revoke(conn: AsyncConnection, key_id: str) -> dict | None:
    """Mark the key revoked (a second revoke keeps the first time); the key object, or None."""
    revoked_at = now()
    row = await (await conn.execute(REVOKE_KEY, (revoked_at, revoked_at, key_id))).fetchone()
    return row["obj"] if row else None
