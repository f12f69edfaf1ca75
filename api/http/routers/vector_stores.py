"""Vector stores, their files and file batches, and search (`/vector_stores`).

Attaching a file only records it (`in_progress`) and queues its ingestion; the job queue's workers
parse, chunk and embed it (api/files/ingest_jobs.py). Counts, statuses and usage are computed from the
rows on every read (api/files/vector_stores.py); search is api/files/retrieval.py.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from api.contract import objects
from api.contract.errors import InvalidRequest, NotFound, ServerError
from api.contract.schemas import Body, WithMetadata
from api.files import retrieval
from api.files import vector_stores as vs
from api.http.deps import App, PageParams, _id_checker
from api.storage import store

router = APIRouter(prefix="/vector_stores", tags=["vector_stores"])

VectorStoreId = Annotated[str, Depends(_id_checker("vector_store_id", "vs_"))]
BatchId = Annotated[str, Depends(_id_checker("batch_id", "vsfb_"))]
FileId = Annotated[str, Path()]

MAX_ATTRIBUTES = 16

# --- request bodies ----------------------------------------------------------------------------


# `chunking_strategy` is checked by `_strategy` (ingestion's own validation, with the exact param
# of the offending field) rather than as a pydantic union, whose error locations carry the tag.
ChunkingParam = dict[str, Any]

AttributeValue = Union[StrictBool, StrictInt, StrictFloat, Annotated[StrictStr, Field(max_length=512)]]


def check_attributes(value: dict | None) -> dict | None:
    if value is None:
        return value
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"attributes can have at most {MAX_ATTRIBUTES} keys")
    for key in value:
        if len(key) > 64:
            raise ValueError(f"attribute key '{key[:20]}...' is longer than 64 characters")
    return value


class WithAttributes(Body):
    attributes: dict[str, AttributeValue] | None = None

    _check_attributes = field_validator("attributes")(check_attributes)


class ExpiresAfter(Body):
    anchor: Literal["last_active_at"]
    days: StrictInt = Field(ge=1, le=365)


class CreateVectorStore(WithMetadata):
    name: str | None = None
    description: str | None = None
    file_ids: list[str] | None = Field(default=None, max_length=500)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingParam | None = None


class ModifyVectorStore(WithMetadata):
    name: str | None = None
    expires_after: ExpiresAfter | None = None


class CreateVectorStoreFile(WithAttributes):
    file_id: str
    chunking_strategy: ChunkingParam | None = None


class UpdateVectorStoreFile(Body):
    attributes: dict[str, AttributeValue] | None

    _check_attributes = field_validator("attributes")(check_attributes)


class BatchFile(WithAttributes):
    file_id: str
    chunking_strategy: ChunkingParam | None = None


class CreateFileBatch(WithAttributes):
    file_ids: list[str] | None = Field(default=None, min_length=1, max_length=2000)
    files: list[BatchFile] | None = Field(default=None, min_length=1, max_length=2000)
    chunking_strategy: ChunkingParam | None = None

    @model_validator(mode="after")
    def _one_of(self):
        if self.file_ids is not None and self.files is not None:
            raise ValueError("'file_ids' and 'files' are mutually exclusive")
        return self


COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")


def check_filter(node: Any, param: str = "filters") -> dict:
    """A ComparisonFilter / CompoundFilter, or a 400 naming the offending field. (Checked here rather
    than as a pydantic union, whose error locations would carry the `type` tag.)"""
    if not isinstance(node, dict):
        raise InvalidRequest(f"Invalid value for '{param}': expected an object.", param=param)
    kind = node.get("type")
    if kind in COMPARISONS:
        fields = ("type", "key", "value")
    elif kind in ("and", "or"):
        fields = ("type", "filters")
    else:
        allowed = ", ".join(f"'{k}'" for k in (*COMPARISONS, "and", "or"))
        raise InvalidRequest(f"Invalid value for '{param}.type': expected one of {allowed}.", param=f"{param}.type")
    for name in node:
        if name not in fields:
            raise InvalidRequest(f"Unrecognized request argument supplied: {param}.{name}", param=f"{param}.{name}")
    for name in fields:
        if name not in node:
            raise InvalidRequest(f"Missing required parameter: '{param}.{name}'.", param=f"{param}.{name}")
    if kind in ("and", "or"):
        children = node["filters"]
        if not isinstance(children, list):
            raise InvalidRequest(f"Invalid value for '{param}.filters': expected an array.", param=f"{param}.filters")
        return {"type": kind, "filters": [check_filter(c, f"{param}.filters[{i}]") for i, c in enumerate(children)]}
    key, value = node["key"], node["value"]
    if not isinstance(key, str):
        raise InvalidRequest(f"Invalid value for '{param}.key': expected a string.", param=f"{param}.key")
    scalar = (str, int, float, bool)
    if kind in ("in", "nin"):
        ok = isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value)
        expected = "an array of strings or numbers"
    else:
        ok = isinstance(value, scalar)
        expected = "a string, a number or a boolean"
    if not ok:
        raise InvalidRequest(f"Invalid value for '{param}.value': expected {expected}.", param=f"{param}.value")
    return {"type": kind, "key": key, "value": value}


class SearchRanking(Body):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0, le=1)


class SearchRequest(Body):
    query: Union[str, Annotated[list[str], Field(min_length=1)]]
    rewrite_query: bool = False
    max_num_results: StrictInt = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: SearchRanking | None = None


def _embedding_error(exc: Exception) -> ServerError:
    return ServerError(str(exc))


# --- vector stores -----------------------------------------------------------------------------


@router.post("")
async def create_vector_store(body: CreateVectorStore, app: App) -> dict:
    strategy = vs.chunking_strategy_of(body.chunking_strategy)
    try:
        model = await asyncio.to_thread(vs.configured_model, app.settings)
    except vs.EmbeddingUnavailable as exc:
        raise _embedding_error(exc) from None
    obj = vs.new_store_object(body.name, body.description, body.metadata)
    days = body.expires_after.days if body.expires_after else None
    jobs: list[vs.Job] = []
    async with app.pool.connection() as conn:
        async with conn.transaction():
            await vs.insert_store(conn, obj, app.tenant, model, days)
            if body.file_ids:
                items = [vs.Attach(file_id, strategy, None) for file_id in body.file_ids]
                _, jobs = await vs.attach_files(conn, obj["id"], app.tenant, items, file_param="file_ids")
        await vs.enqueue(app.queue, app.pool, jobs)
        return await vs.get_store(conn, obj["id"], app.tenant)


@router.get("")
async def list_vector_stores(app: App, page: PageParams) -> dict:
    async with app.pool.connection() as conn:
        items, more = await store.list_page(
            conn, "vector_stores", tenant=app.tenant, filters={}, **vars(page)
        )
        rendered = await vs.get_stores(conn, [item["id"] for item in items], app.tenant)
    return objects.page(rendered, more)


@router.get("/{vector_store_id}")
async def retrieve_vector_store(vector_store_id: VectorStoreId, app: App) -> dict:
    async with app.pool.connection() as conn:
        return await vs.get_store(conn, vector_store_id, app.tenant)


@router.post("/{vector_store_id}")
async def modify_vector_store(vector_store_id: VectorStoreId, body: ModifyVectorStore, app: App) -> dict:
    given = body.model_fields_set
    async with app.pool.connection() as conn:
        async with conn.transaction():
            await vs.lock_store(conn, vector_store_id, app.tenant)
            current = await vs.get_store(conn, vector_store_id, app.tenant)
            obj = {k: current[k] for k in ("id", "object", "created_at", "name", "description", "metadata")}
            if "name" in given:
                obj["name"] = body.name or ""
            if "metadata" in given:
                obj["metadata"] = body.metadata or {}
            days = (current.get("expires_after") or {}).get("days")
            if "expires_after" in given:
                days = body.expires_after.days if body.expires_after else None
            await vs.modify_store(conn, vector_store_id, app.tenant, obj, days)
        return await vs.get_store(conn, vector_store_id, app.tenant)


@router.delete("/{vector_store_id}")
async def delete_vector_store(vector_store_id: VectorStoreId, app: App) -> dict:
    async with app.pool.connection() as conn:
        if not await vs.delete_store(conn, vector_store_id, app.tenant):
            raise vs.no_such_store(vector_store_id)
    return objects.deleted(vector_store_id, "vector_store")


@router.post("/{vector_store_id}/search")
async def search_vector_store(vector_store_id: VectorStoreId, body: SearchRequest, app: App) -> dict:
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    if not any(q.strip() for q in queries):
        raise InvalidRequest("Invalid value for 'query': the query must not be empty.", param="query")
    async with app.pool.connection() as conn:
        current = await vs.get_store(conn, vector_store_id, app.tenant)
    if current["status"] == "expired":
        raise InvalidRequest(f"Vector store {vector_store_id} has expired and can no longer be searched.")
    ranking = body.ranking_options or SearchRanking()
    if body.rewrite_query:
        queries = await retrieval.rewrite(app.pool, queries)
    try:
        hits = await retrieval.search_queries(
            app.pool,
            [vector_store_id],
            queries,
            max_num_results=body.max_num_results,
            score_threshold=ranking.score_threshold,
            filters=check_filter(body.filters) if body.filters is not None else None,
            settings=app.settings,
            ranker=ranking.ranker,
        )
    except retrieval.SearchError as exc:
        raise _embedding_error(exc) from None
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": hit.score,
                "attributes": hit.attributes,
                "content": [{"type": "text", "text": hit.content}],
            }
            for hit in hits
        ],
        "has_more": False,
        "next_page": None,
    }


# --- vector store files ------------------------------------------------------------------------


@router.post("/{vector_store_id}/files")
async def create_vector_store_file(vector_store_id: VectorStoreId, body: CreateVectorStoreFile, app: App) -> dict:
    strategy = vs.chunking_strategy_of(body.chunking_strategy)
    async with app.pool.connection() as conn:
        async with conn.transaction():
            await vs.lock_store(conn, vector_store_id, app.tenant)
            objs, jobs = await vs.attach_files(
                conn, vector_store_id, app.tenant, [vs.Attach(body.file_id, strategy, body.attributes)]
            )
        await vs.enqueue(app.queue, app.pool, jobs)
    return objs[0]


@router.get("/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: VectorStoreId,
    app: App,
    page: PageParams,
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = Query(None),
) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        items, more = await vs.list_files(
            conn, vector_store_id, app.tenant, batch_id=None, status=filter, **vars(page)
        )
    return objects.page(items, more)


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(vector_store_id: VectorStoreId, file_id: FileId, app: App) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        return await vs.get_file(conn, vector_store_id, file_id, app.tenant)


@router.post("/{vector_store_id}/files/{file_id}")
async def update_vector_store_file(
    vector_store_id: VectorStoreId, file_id: FileId, body: UpdateVectorStoreFile, app: App
) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        async with conn.transaction():
            obj = await vs.get_file(conn, vector_store_id, file_id, app.tenant, for_update=True)
            obj = {**obj, "attributes": body.attributes or {}}
            await vs.update_file_obj(conn, obj)
    return obj


@router.delete("/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(vector_store_id: VectorStoreId, file_id: FileId, app: App) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        if not await vs.delete_file(conn, vector_store_id, file_id, app.tenant):
            raise NotFound(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
    return objects.deleted(file_id, "vector_store.file")


@router.get("/{vector_store_id}/files/{file_id}/content")
async def vector_store_file_content(vector_store_id: VectorStoreId, file_id: FileId, app: App) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        await vs.get_file(conn, vector_store_id, file_id, app.tenant)
        pieces = await vs.file_content(conn, vector_store_id, file_id)
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": piece} for piece in pieces],
        "has_more": False,
        "next_page": None,
    }


# --- file batches ------------------------------------------------------------------------------


@router.post("/{vector_store_id}/file_batches")
async def create_file_batch(vector_store_id: VectorStoreId, body: CreateFileBatch, app: App) -> dict:
    if body.files is not None:
        items = [
            vs.Attach(f.file_id, vs.chunking_strategy_of(f.chunking_strategy, f"files[{i}].chunking_strategy"), f.attributes)
            for i, f in enumerate(body.files)
        ]
        param = "files"
    elif body.file_ids is not None:
        strategy = vs.chunking_strategy_of(body.chunking_strategy)
        items = [vs.Attach(file_id, strategy, body.attributes) for file_id in body.file_ids]
        param = "file_ids"
    else:
        raise InvalidRequest("Missing required parameter: 'file_ids'.", param="file_ids")
    batch = vs.new_batch_object(vector_store_id)
    async with app.pool.connection() as conn:
        async with conn.transaction():
            await vs.lock_store(conn, vector_store_id, app.tenant)
            await vs.insert_batch(conn, batch, app.tenant)
            _, jobs = await vs.attach_files(
                conn, vector_store_id, app.tenant, items, batch_id=batch["id"], file_param=param
            )
        await vs.enqueue(app.queue, app.pool, jobs)
        return await vs.get_batch(conn, vector_store_id, batch["id"], app.tenant)


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(vector_store_id: VectorStoreId, batch_id: BatchId, app: App) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        return await vs.get_batch(conn, vector_store_id, batch_id, app.tenant)


@router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(vector_store_id: VectorStoreId, batch_id: BatchId, app: App) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_store(conn, vector_store_id, app.tenant)
        return await vs.cancel_batch(conn, vector_store_id, batch_id, app.tenant)


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(
    vector_store_id: VectorStoreId,
    batch_id: BatchId,
    app: App,
    page: PageParams,
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = Query(None),
) -> dict:
    async with app.pool.connection() as conn:
        await vs.get_batch(conn, vector_store_id, batch_id, app.tenant)
        items, more = await vs.list_files(
            conn, vector_store_id, app.tenant, batch_id=batch_id, status=filter, **vars(page)
        )
    return objects.page(items, more)
