"""Persistence of File objects. SQL as named statements, every one scoped by tenant.

Listing goes through `store.list_page` (same cursor pagination as every other list).
Deleting a `files` row also removes the file from every vector store (`vector_store_files` rows
reference it with ON DELETE CASCADE, and their chunks cascade from those).
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

INSERT_FILE = "INSERT INTO files (id, tenant_id, purpose, storage_path, obj) VALUES (%s, %s, %s, %s, %s)"
SELECT_FILE = "SELECT obj, storage_path FROM files WHERE id = %s AND tenant_id = %s"
DELETE_FILE = "DELETE FROM files WHERE id = %s AND tenant_id = %s RETURNING obj, storage_path"
# Files past their `expires_at` behave as deleted; they are removed when next noticed.
DELETE_EXPIRED_FILES = """
    DELETE FROM files
    WHERE tenant_id = %s AND (obj->>'expires_at')::bigint <= %s
    RETURNING storage_path
"""


def is_expired(obj: dict, now: int) -> bool:
    return obj.get("expires_at") is not None and obj["expires_at"] <= now


async def insert(conn: AsyncConnection, obj: dict, tenant: str, storage_path: str) -> None:
    await conn.execute(INSERT_FILE, (obj["id"], tenant, obj["purpose"], storage_path, Jsonb(obj)))


async def get(conn: AsyncConnection, file_id: str, tenant: str) -> tuple[dict, str] | None:
    """The File object and its storage path."""
    row = await (await conn.execute(SELECT_FILE, (file_id, tenant))).fetchone()
    return (row["obj"], row["storage_path"]) if row else None


async def delete(conn: AsyncConnection, file_id: str, tenant: str) -> tuple[dict, str] | None:
    """Delete the row; the deleted File object and its storage path (None: there was none)."""
    row = await (await conn.execute(DELETE_FILE, (file_id, tenant))).fetchone()
    return (row["obj"], row["storage_path"]) if row else None


async def delete_expired(conn: AsyncConnection, tenant: str, now: int) -> list[str]:
    """Delete the tenant's expired files' rows; their storage paths."""
    cur = await conn.execute(DELETE_EXPIRED_FILES, (tenant, now))
    return [row["storage_path"] for row in await cur.fetchall()]
