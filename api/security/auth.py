"""Who is calling: API keys (stored as digests) and the tenant their objects belong to."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from psycopg import AsyncConnection

from api.contract.errors import APIError
from api.security import crypto

SELECT_KEY_BY_HASH = "SELECT id, tenant_id, revoked_at, obj FROM api_keys WHERE key_hash = %s"
SELECT_KEY = "SELECT id, tenant_id, revoked_at, model_api_key, obj FROM api_keys WHERE id = %s"


class Unauthorized(APIError):
    status_code = 401


class Forbidden(APIError):
    status_code = 403


@dataclass(frozen=True)
class Caller:
    """The authenticated key (None when auth is off) and the tenant its objects belong to."""

    tenant: str
    key_id: str | None = None
    allowed_models: tuple[str, ...] | None = None
    # The key has a model endpoint of its own (every model it names goes there, not by the catalogue).
    own_endpoint: bool = False


DEFAULT_CALLER = Caller(tenant="default")


def bearer(request: HTTPConnection) -> str | None:
    """The key of `Authorization: Bearer <key>`, or of `api-key: <key>` (what the AzureOpenAI client sends)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key", "").strip() or None


def redact(key: str) -> str:
    return f"{key[:6]}...{key[-4:]}"


async def authenticate(conn: AsyncConnection, token: str | None) -> Caller:
    if not token:
        raise Unauthorized(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    row = await (await conn.execute(SELECT_KEY_BY_HASH, (crypto.key_hash(token),))).fetchone()
    if row is None or row["revoked_at"] is not None:
        raise Unauthorized(f"Incorrect API key provided: {redact(token)}.", code="invalid_api_key")
    allowed = row["obj"].get("allowed_models")
    return Caller(
        tenant=row["tenant_id"],
        key_id=row["id"],
        allowed_models=tuple(allowed) if allowed else None,
        own_endpoint=bool(row["obj"].get("model_base_url")),
    )


async def model_credentials(conn: AsyncConnection, key_id: str, secret: str | None) -> tuple[dict, bool]:
    """({base_url, api_key} overrides of the key, whether the key is revoked)."""
    row = await (await conn.execute(SELECT_KEY, (key_id,))).fetchone()
    if row is None:
        return {}, True
    creds = {}
    if row["obj"].get("model_base_url"):
        creds["base_url"] = row["obj"]["model_base_url"]
    if row["model_api_key"] is not None:
        creds["api_key"] = crypto.decrypt(secret, row["model_api_key"])
    return creds, row["revoked_at"] is not None
