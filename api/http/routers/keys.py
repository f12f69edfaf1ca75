"""The admin API that manages API keys (/v1/admin/keys), behind the admin key."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from api.contract import objects
from api.contract.errors import NotFound
from api.contract.schemas import Body
from api.http.deps import PageParams, Server
from api.runs.notify import publish_revocation
from api.security import crypto, keys
from api.security.auth import Forbidden, Unauthorized, bearer
from api.storage import store


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
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500 for a stray header).
    expected = settings.admin_key.get_secret_value().encode()
    if token is None or not secrets.compare_digest(token.encode("utf-8", "surrogateescape"), expected):
        raise Unauthorized("Incorrect or missing admin key.", code="invalid_api_key")


router = APIRouter(prefix="/admin/keys", tags=["admin"], dependencies=[Depends(_admin)])


@router.post("")
async def create_key(body: CreateKey, svc: Server) -> dict:
    secret = crypto.configured_secret(svc.settings)
    async with svc.pool.connection() as conn:
        return await keys.create(conn, secret, **body.model_dump())


@router.get("")
async def list_keys(svc: Server, page: PageParams) -> dict:
    async with svc.pool.connection() as conn:
        items, more = await store.list_page(conn, "api_keys", tenant=None, filters={}, **vars(page))
    return objects.page(items, more)


@router.get("/{key_id}")
async def retrieve_key(key_id: str, svc: Server) -> dict:
    async with svc.pool.connection() as conn:
        obj = await keys.get(conn, key_id)
    if obj is None:
        raise NotFound(f"No API key found with id '{key_id}'.")
    return obj


@router.delete("/{key_id}")
async def revoke_key(key_id: str, svc: Server) -> dict:
    async with svc.pool.connection() as conn, conn.transaction():
        obj = await keys.revoke(conn, key_id)
        if obj is None:
            raise NotFound(f"No API key found with id '{key_id}'.")
        # Streams opened with this key end at their next event (see streaming.EventHub).
        await publish_revocation(conn, key_id)
    return obj
