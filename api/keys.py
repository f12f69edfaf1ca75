"""The admin API that manages API keys.

Keys are shown once at creation and stored as a digest. A key may carry its own model endpoint,
model API key (encrypted at rest, never returned) and an allow-list of models.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import Field

from api import crypto
from api.auth import SELECT_KEY, Forbidden, Unauthorized, bearer, redact
from api.contract import objects
from api.contract.errors import NotFound
from api.contract.ids import now
from api.contract.schemas import Body
from api.deps import PageParams, Server
from api.events import publish_revocation
from api.storage import store

INSERT_KEY = "INSERT INTO api_keys (id, tenant_id, key_hash, model_api_key, obj) VALUES (%s, %s, %s, %s, %s)"
REVOKE_KEY = """
    UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s),
        obj = jsonb_set(obj, '{revoked_at}', to_jsonb(COALESCE(revoked_at, %s)))
    WHERE id = %s RETURNING obj
"""


# --- admin API ---------------------------------------------------------------------------------


class CreateKey(Body):
    name: str | None = Field(default=None, max_length=256)
    project_id: str | None = Field(
        default=None, max_length=64, description="Tenant to join; a new one is created when omitted."
    )
    model_base_url: str | None = Field(default=None, max_length=2048)
    model_api_key: str | None = Field(default=None, max_length=4096)
    allowed_models: list[str] | None = Field(default=None, max_length=256)


async def _admin(request: Request) -> None:  # async: no thread-pool hop
    settings = request.app.state.services.settings
    if settings.admin_key is None:
        raise Forbidden("The admin API is disabled: set ASSISTGRAPH_ADMIN_KEY to enable it.")
    token = bearer(request)
    if token is None or not secrets.compare_digest(token, settings.admin_key.get_secret_value()):
        raise Unauthorized("Incorrect or missing admin key.", code="invalid_api_key")


router = APIRouter(prefix="/admin/keys", tags=["admin"], dependencies=[Depends(_admin)])


@router.post("")
async def create_key(body: CreateKey, svc: Server) -> dict:
    key = crypto.new_api_key()
    key_id = "key_" + secrets.token_hex(12)
    tenant = body.project_id or "proj_" + secrets.token_hex(12)
    obj = {
        "id": key_id,
        "object": "api_key",
        "created_at": now(),
        "name": body.name,
        "project_id": tenant,
        "redacted_value": redact(key),
        "model_base_url": body.model_base_url,
        "has_model_api_key": body.model_api_key is not None,
        "allowed_models": body.allowed_models,
        "revoked_at": None,
    }
    secret = svc.settings.secret_key.get_secret_value() if svc.settings.secret_key else None
    sealed = crypto.encrypt(secret, body.model_api_key) if body.model_api_key is not None else None
    async with svc.pool.connection() as conn:
        await conn.execute(INSERT_KEY, (key_id, tenant, crypto.key_hash(key), sealed, Jsonb(obj)))
    return {**obj, "value": key}


@router.get("")
async def list_keys(svc: Server, page: PageParams) -> dict:
    async with svc.pool.connection() as conn:
        items, more = await store.list_page(conn, "api_keys", tenant=None, filters={}, **vars(page))
    return objects.page(items, more)


@router.get("/{key_id}")
async def retrieve_key(key_id: str, svc: Server) -> dict:
    async with svc.pool.connection() as conn:
        row = await (await conn.execute(SELECT_KEY, (key_id,))).fetchone()
    if row is None:
        raise NotFound(f"No API key found with id '{key_id}'.")
    return row["obj"]


@router.delete("/{key_id}")
async def revoke_key(key_id: str, svc: Server) -> dict:
    revoked_at = now()
    async with svc.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(REVOKE_KEY, (revoked_at, revoked_at, key_id))).fetchone()
        if row is None:
            raise NotFound(f"No API key found with id '{key_id}'.")
        # Streams opened with this key end at their next event (see streaming.EventHub).
        await publish_revocation(conn, key_id)
    return row["obj"]
