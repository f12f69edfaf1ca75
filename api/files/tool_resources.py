"""`tool_resources` of assistants and threads: what they reference must exist for the caller's
tenant, and the `file_search.vector_stores` helper creates the store it describes."""

from __future__ import annotations

import asyncio
from typing import Protocol

from psycopg import AsyncConnection

from api.contract import schemas
from api.contract.errors import InvalidRequest, NotFound
from api.files import files_store
from api.files import vector_stores as vs
from api.settings import Settings

# Stores made for a thread expire 7 days after their last use, as on OpenAI.
THREAD_STORE_DAYS = 7


class Scope(Protocol):
    """The caller's tenant and the server's settings (a request's services)."""

    tenant: str
    settings: Settings


async def resolve(
    conn: AsyncConnection,
    svc: Scope,
    resources: schemas.ToolResources | None,
    jobs: list[vs.Job],
    *,
    for_thread: bool,
) -> dict:
    """The `tool_resources` to store (inside the caller's transaction); ingestion jobs of files
    added through the helper go to `jobs`, to enqueue after commit."""
    if resources is None:
        return {}
    out: dict = {}
    if resources.code_interpreter is not None:
        file_ids = list(dict.fromkeys(resources.code_interpreter.file_ids))
        for file_id in file_ids:
            if await files_store.get(conn, file_id, svc.tenant) is None:
                raise NotFound(f"No such File object: {file_id}", param="tool_resources.code_interpreter.file_ids")
        out["code_interpreter"] = {"file_ids": file_ids}
    if resources.file_search is not None:
        ids = list(resources.file_search.vector_store_ids)
        helpers = resources.file_search.vector_stores or []
        if ids and helpers:
            raise InvalidRequest(
                "Give either vector_store_ids or vector_stores, not both (one vector store at most).",
                param="tool_resources.file_search",
            )
        for vector_store_id in ids:
            await vs.get_store(conn, vector_store_id, svc.tenant)  # 404 for unknown and foreign stores
        for helper in helpers:
            ids.append(await _create_store(conn, svc, helper, jobs, for_thread=for_thread))
        out["file_search"] = {"vector_store_ids": ids}
    return out


async def _create_store(
    conn: AsyncConnection, svc: Scope, helper: schemas.VectorStoreHelper, jobs: list[vs.Job], *, for_thread: bool
) -> str:
    strategy = vs.chunking_strategy_of(helper.chunking_strategy, "tool_resources.file_search.vector_stores[0].chunking_strategy")
    model = await asyncio.to_thread(vs.configured_model, svc.settings)
    obj = vs.new_store_object(None, None, helper.metadata)
    await vs.insert_store(conn, obj, svc.tenant, model, THREAD_STORE_DAYS if for_thread else None)
    if helper.file_ids:
        items = [vs.Attach(file_id, strategy, None) for file_id in helper.file_ids]
        _, new_jobs = await vs.attach_files(
            conn, obj["id"], svc.tenant, items, file_param="tool_resources.file_search.vector_stores[0].file_ids"
        )
        jobs += new_jobs
    return obj["id"]
