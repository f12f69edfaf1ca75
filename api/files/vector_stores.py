"""Vector stores, their files and file batches: persistence, rendering, embedding models, ingestion
enqueueing. The HTTP layer is `api/http/routers/vector_stores.py`; the ingestion job `api/files/ingest_jobs.py`;
search `api/files/retrieval.py`.

What is stored and what is computed:
- `file_counts`, `status` (in_progress while any file is) and `usage_bytes` of a store, and the
  `file_counts` / `status` of a batch, are computed from the `vector_store_files` rows on every read,
  never stored: a file deleted through the Files API (its rows cascade) or detached leaves nothing
  stale behind.
- `usage_bytes` is the UTF-8 size of the chunk text a file stored (overlapping chunks count their
  overlap again); a store's is the sum over its files. Vectors and index overhead are not counted.
- `last_active_at` / `expires_after_days` / `expired` are columns: a store is `expired` once
  `last_active_at + days` has passed (checked on every read, and a periodic sweep makes it sticky);
  an expired store never becomes active again.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api.contract.errors import InvalidRequest, NotFound
from api.contract.ids import new_id, now
from api.settings import Settings
from api.storage import store
from api.storage.queue import INGESTION_QUEUE, RunQueue
from ingestion import ChunkingStrategy, EmbeddingModel, InvalidChunkingStrategy, embeddings_from_settings
from ingestion.embeddings import MINILM_MODEL, OPENAI_DIMENSIONS, WORDLLAMA_MODEL

log = logging.getLogger(__name__)

INGEST_FILE = "assistgraph.ingest_vector_store_file"
EXPIRE_STORES = "assistgraph.expire_vector_stores"

DAY = 86400
OPENAI_PREFIX = "openai:"  # recorded model names of the `openai` provider (local models have their own names)

# --- SQL ---------------------------------------------------------------------------------------

# "Overdue": past last_active_at + days. Combined with the sticky `expired` flag it is "expired".
_OVERDUE = "(vs.expires_after_days IS NOT NULL AND vs.last_active_at + vs.expires_after_days * 86400 <= %(now)s)"
_EXPIRED = f"(vs.expired OR {_OVERDUE})"
_COUNTS = """
    count(*) FILTER (WHERE f.status = 'in_progress') AS in_progress,
    count(*) FILTER (WHERE f.status = 'completed') AS completed,
    count(*) FILTER (WHERE f.status = 'failed') AS failed,
    count(*) FILTER (WHERE f.status = 'cancelled') AS cancelled,
    count(f.file_id) AS total
"""

INSERT_STORE = """
    INSERT INTO vector_stores (id, tenant_id, embedding_model, embedding_dimension, last_active_at, expires_after_days, obj)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
SELECT_STORES = f"""
    SELECT vs.id, vs.obj, vs.last_active_at, vs.expires_after_days, {_EXPIRED} AS is_expired, c.*
    FROM vector_stores vs
    CROSS JOIN LATERAL (
        SELECT {_COUNTS}, coalesce(sum(f.usage_bytes), 0)::bigint AS usage_bytes
        FROM vector_store_files f WHERE f.vector_store_id = vs.id
    ) c
    WHERE vs.id = ANY(%(ids)s) AND vs.tenant_id = %(tenant)s
"""
LOCK_STORE = f"""
    SELECT vs.obj, vs.embedding_model, vs.embedding_dimension, {_EXPIRED} AS is_expired
    FROM vector_stores vs WHERE vs.id = %(id)s AND vs.tenant_id = %(tenant)s FOR NO KEY UPDATE
"""
# The `expired` flag is folded in before the policy changes, so a store that already expired stays so.
MODIFY_STORE = f"""
    UPDATE vector_stores vs SET obj = %(obj)s, expires_after_days = %(days)s, expired = {_EXPIRED}
    WHERE vs.id = %(id)s AND vs.tenant_id = %(tenant)s
"""
DELETE_STORE = "DELETE FROM vector_stores WHERE id = %s AND tenant_id = %s"
# Use (search, attaching files) makes a store active; an expired one stays expired. A store used
# again within TOUCH_EVERY seconds is not rewritten (a search would otherwise cost a commit).
TOUCH_EVERY = 60
TOUCH_STORES = f"""
    UPDATE vector_stores vs SET last_active_at = %(now)s
    WHERE vs.id = ANY(%(ids)s) AND vs.last_active_at < %(now)s - %(every)s AND NOT {_EXPIRED}
"""
SWEEP_EXPIRED = """
    UPDATE vector_stores SET expired = true
    WHERE expires_after_days IS NOT NULL AND NOT expired
      AND last_active_at + expires_after_days * 86400 <= %(now)s
"""

SELECT_FILES_FOR_ATTACH = "SELECT id, obj FROM files WHERE id = ANY(%s) AND tenant_id = %s"
DELETE_CHUNKS_OF_FILES = "DELETE FROM chunks WHERE vector_store_id = %s AND file_id = ANY(%s)"
# Re-attaching a file starts it over: a new attempt, so a job still running for the old one is ignored.
UPSERT_STORE_FILES = """
    INSERT INTO vector_store_files (vector_store_id, file_id, tenant_id, status, batch_id, attempt, obj)
    SELECT %(vs)s, t.file_id, %(tenant)s, 'in_progress', %(batch)s, t.attempt, t.obj
    FROM unnest(%(file_ids)s::text[], %(attempts)s::text[], %(objs)s::jsonb[]) AS t(file_id, attempt, obj)
    ON CONFLICT (vector_store_id, file_id) DO UPDATE SET
        status = 'in_progress', batch_id = EXCLUDED.batch_id, attempt = EXCLUDED.attempt,
        obj = EXCLUDED.obj, usage_bytes = 0, chunk_count = 0
"""
SELECT_STORE_FILE = """
    SELECT obj FROM vector_store_files WHERE vector_store_id = %s AND file_id = %s AND tenant_id = %s
"""
SELECT_STORE_FILE_FOR_UPDATE = SELECT_STORE_FILE + " FOR UPDATE"
UPDATE_STORE_FILE_OBJ = "UPDATE vector_store_files SET obj = %s WHERE vector_store_id = %s AND file_id = %s"
DELETE_STORE_FILE = "DELETE FROM vector_store_files WHERE vector_store_id = %s AND file_id = %s AND tenant_id = %s"
SELECT_FILE_CHUNKS = """
    SELECT content, metadata FROM chunks WHERE vector_store_id = %s AND file_id = %s ORDER BY chunk_index
"""

INSERT_BATCH = "INSERT INTO vector_store_file_batches (id, tenant_id, vector_store_id, obj) VALUES (%s, %s, %s, %s)"
SELECT_BATCH = f"""
    SELECT b.obj, c.*
    FROM vector_store_file_batches b
    CROSS JOIN LATERAL (SELECT {_COUNTS} FROM vector_store_files f WHERE f.batch_id = b.id) c
    WHERE b.id = %s AND b.vector_store_id = %s AND b.tenant_id = %s
"""
LOCK_BATCH = """
    SELECT obj FROM vector_store_file_batches WHERE id = %s AND vector_store_id = %s AND tenant_id = %s FOR UPDATE
"""
UPDATE_BATCH_OBJ = "UPDATE vector_store_file_batches SET obj = %s WHERE id = %s"
# Cancelling a batch cancels its files that have not finished; their jobs then find nothing to do.
CANCEL_BATCH_FILES = """
    UPDATE vector_store_files
    SET status = 'cancelled', obj = obj || '{"status": "cancelled"}'::jsonb
    WHERE batch_id = %s AND status = 'in_progress'
"""

# --- the ingestion job's side (api/files/ingest_jobs.py) ---
SELECT_JOB = """
    SELECT f.status, f.attempt, f.obj, f.tenant_id, fl.storage_path, fl.obj->>'filename' AS filename,
           coalesce((fl.obj->>'bytes')::bigint, 0) AS bytes, vs.embedding_model, vs.embedding_dimension
    FROM vector_store_files f
    JOIN files fl ON fl.id = f.file_id
    JOIN vector_stores vs ON vs.id = f.vector_store_id
    WHERE f.vector_store_id = %s AND f.file_id = %s
"""
LOCK_JOB = """
    SELECT obj FROM vector_store_files
    WHERE vector_store_id = %s AND file_id = %s AND attempt = %s AND status = 'in_progress'
    FOR UPDATE
"""
FINISH_STORE_FILE = """
    UPDATE vector_store_files SET status = %s, obj = %s, usage_bytes = %s, chunk_count = %s
    WHERE vector_store_id = %s AND file_id = %s
"""
COPY_CHUNKS = """
    COPY chunks (vector_store_id, file_id, chunk_index, content, token_count, metadata, embedding) FROM STDIN
"""
COUNT_TENANT_BACKLOG = """
    SELECT tenant_id, count(*) AS n FROM vector_store_files
    WHERE tenant_id = ANY(%s) AND status = 'in_progress' GROUP BY tenant_id
"""
SELECT_HNSW_INDEX = "SELECT 1 FROM pg_indexes WHERE tablename = 'chunks' AND indexname = %s"


# --- objects -----------------------------------------------------------------------------------


def store_object(row: dict) -> dict:
    """The VectorStore object of a SELECT_STORES row."""
    obj = dict(row["obj"])
    days = row["expires_after_days"]
    if row["is_expired"]:
        status = "expired"
    elif row["in_progress"]:
        status = "in_progress"
    else:
        status = "completed"
    obj.update(
        usage_bytes=row["usage_bytes"],
        file_counts=_counts(row),
        status=status,
        last_active_at=row["last_active_at"],
        expires_at=row["last_active_at"] + days * DAY if days else None,
    )
    # `expires_after` is typed non-null in the contract (unlike `expires_at`): absent when unset.
    obj.pop("expires_after", None)
    if days:
        obj["expires_after"] = {"anchor": "last_active_at", "days": days}
    return obj


def batch_object(row: dict) -> dict:
    obj = dict(row["obj"])
    counts = _counts(row)
    if obj["status"] == "cancelled":
        status = "cancelled"
    elif counts["in_progress"]:
        status = "in_progress"
    elif counts["total"] and counts["failed"] == counts["total"]:
        status = "failed"
    else:
        status = "completed"
    obj.update(status=status, file_counts=counts)
    return obj


def _counts(row: dict) -> dict:
    return {k: row[k] for k in ("in_progress", "completed", "failed", "cancelled", "total")}


def new_store_object(name: str | None, description: str | None, metadata: dict | None) -> dict:
    return {
        "id": new_id("vector_store"),
        "object": "vector_store",
        "created_at": now(),
        "name": name or "",
        "description": description,
        "metadata": metadata or {},
    }


def new_file_object(vector_store_id: str, file_id: str, chunking: ChunkingStrategy, attributes: dict | None) -> dict:
    return {
        "id": file_id,
        "object": "vector_store.file",
        "usage_bytes": 0,
        "created_at": now(),
        "vector_store_id": vector_store_id,
        "status": "in_progress",
        "last_error": None,
        "chunking_strategy": chunking.to_api(),
        "attributes": attributes or {},
    }


def no_such_file(file_id: str, param: str | None = "file_id") -> NotFound:
    return NotFound(f"No such File object: {file_id}", param=param)


def no_such_store(vector_store_id: str) -> NotFound:
    return NotFound(f"No vector store found with id '{vector_store_id}'.")


# --- stores ------------------------------------------------------------------------------------


async def insert_store(conn: AsyncConnection, obj: dict, tenant: str, model: EmbeddingModel, days: int | None) -> None:
    await conn.execute(
        INSERT_STORE,
        (obj["id"], tenant, model_key(model), model.dimension, obj["created_at"], days, Jsonb(obj)),
    )


async def get_stores(conn: AsyncConnection, ids: Sequence[str], tenant: str) -> list[dict]:
    """The rendered stores, in the order of `ids` (missing ones left out)."""
    cur = await conn.execute(SELECT_STORES, {"ids": list(ids), "tenant": tenant, "now": now()})
    by_id = {row["id"]: store_object(row) for row in await cur.fetchall()}
    return [by_id[i] for i in ids if i in by_id]


async def get_store(conn: AsyncConnection, vector_store_id: str, tenant: str) -> dict:
    found = await get_stores(conn, [vector_store_id], tenant)
    if not found:
        raise no_such_store(vector_store_id)
    return found[0]


async def lock_store(conn: AsyncConnection, vector_store_id: str, tenant: str) -> dict:
    """Lock the store's row for the transaction (attaching files, modifying it)."""
    row = await (await conn.execute(LOCK_STORE, {"id": vector_store_id, "tenant": tenant, "now": now()})).fetchone()
    if row is None:
        raise no_such_store(vector_store_id)
    return row


async def modify_store(conn: AsyncConnection, vector_store_id: str, tenant: str, obj: dict, days: int | None) -> None:
    await conn.execute(
        MODIFY_STORE, {"obj": Jsonb(obj), "days": days, "id": vector_store_id, "tenant": tenant, "now": now()}
    )


async def delete_store(conn: AsyncConnection, vector_store_id: str, tenant: str) -> bool:
    cur = await conn.execute(DELETE_STORE, (vector_store_id, tenant))
    return cur.rowcount > 0


async def touch(conn: AsyncConnection, ids: Sequence[str], *, every: int = TOUCH_EVERY) -> None:
    if ids:
        await conn.execute(TOUCH_STORES, {"ids": list(ids), "now": now(), "every": every})


async def sweep_expired(conn: AsyncConnection) -> int:
    cur = await conn.execute(SWEEP_EXPIRED, {"now": now()})
    return cur.rowcount


# --- store files -------------------------------------------------------------------------------


@dataclass
class Attach:
    file_id: str
    chunking: ChunkingStrategy
    attributes: dict | None


@dataclass
class Job:
    vector_store_id: str
    file_id: str
    attempt: str
    tenant: str | None = None  # known where the job is made; sets its place in the queue

    def kwargs(self) -> dict:
        return {"vector_store_id": self.vector_store_id, "file_id": self.file_id, "attempt": self.attempt}


async def attach_files(
    conn: AsyncConnection,
    vector_store_id: str,
    tenant: str,
    items: Sequence[Attach],
    *,
    batch_id: str | None = None,
    file_param: str = "file_id",
) -> tuple[list[dict], list[Job]]:
    """Attach files (in the caller's transaction, with the store locked): each starts `in_progress`
    with a fresh attempt. Unknown, other tenants' or expired files are a 404 before anything is
    written. Returns the objects and the jobs to enqueue once the transaction has committed."""
    unique: dict[str, Attach] = {}
    for item in items:
        unique.pop(item.file_id, None)
        unique[item.file_id] = item  # the last mention of a file wins
    ids = list(unique)
    cur = await conn.execute(SELECT_FILES_FOR_ATTACH, (ids, tenant))
    found = {row["id"]: row["obj"] for row in await cur.fetchall()}
    moment = now()
    for file_id in ids:
        obj = found.get(file_id)
        if obj is None or (obj.get("expires_at") is not None and obj["expires_at"] <= moment):
            raise no_such_file(file_id, file_param)
    objs = [new_file_object(vector_store_id, i, unique[i].chunking, unique[i].attributes) for i in ids]
    attempts = [secrets.token_hex(8) for _ in ids]
    # The upsert takes the rows' locks first (waiting for a job of a previous attempt that is
    # committing its chunks), so the delete then sees, and removes, everything stored before.
    await conn.execute(
        UPSERT_STORE_FILES,
        {
            "vs": vector_store_id,
            "tenant": tenant,
            "batch": batch_id,
            "file_ids": ids,
            "attempts": attempts,
            "objs": [Jsonb(o) for o in objs],
        },
    )
    await conn.execute(DELETE_CHUNKS_OF_FILES, (vector_store_id, ids))
    await touch(conn, [vector_store_id], every=0)
    return objs, [Job(vector_store_id, i, a, tenant) for i, a in zip(ids, attempts)]


async def enqueue(queue: RunQueue, pool, jobs: Sequence[Job]) -> None:
    """Defer one ingestion job per file. If the queue refuses, the files fail instead of staying
    `in_progress` forever.

    Fair queueing: a job's priority is minus the number of files its tenant already had in
    progress, so workers (which take the highest priority first) serve the first files of a
    tenant with little waiting before the 500th file of a tenant with a deep backlog."""
    if not jobs:
        return
    try:
        tenants = sorted({job.tenant for job in jobs if job.tenant is not None})
        backlog: dict[str, int] = {}
        if tenants:
            async with pool.connection() as conn:
                rows = await (await conn.execute(COUNT_TENANT_BACKLOG, (tenants,))).fetchall()
            backlog = {row["tenant_id"]: row["n"] for row in rows}
        new = {t: sum(1 for job in jobs if job.tenant == t) for t in tenants}
        seen: dict[str | None, int] = {}
        deferred = []
        for job in jobs:
            ahead = max(0, backlog.get(job.tenant, 0) - new.get(job.tenant, 0)) + seen.get(job.tenant, 0)
            seen[job.tenant] = seen.get(job.tenant, 0) + 1
            configured = queue.app.configure_task(
                name=INGEST_FILE, queue=INGESTION_QUEUE, priority=-min(ahead, 1_000_000_000)
            )
            deferred.append(configured.make_new_job(**job.kwargs()))
        await queue.app.job_manager.batch_defer_jobs_async(deferred)
    except Exception as exc:
        log.exception("could not queue the ingestion of %d files", len(jobs))
        error = {"code": "server_error", "message": f"The file could not be queued for processing: {exc}"}
        async with pool.connection() as conn:
            for job in jobs:
                await finish_file(conn, job, "failed", last_error=error)


async def get_file(conn: AsyncConnection, vector_store_id: str, file_id: str, tenant: str, *, for_update: bool = False) -> dict:
    cur = await conn.execute(SELECT_STORE_FILE_FOR_UPDATE if for_update else SELECT_STORE_FILE, (vector_store_id, file_id, tenant))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
    return row["obj"]


async def update_file_obj(conn: AsyncConnection, obj: dict) -> None:
    await conn.execute(UPDATE_STORE_FILE_OBJ, (Jsonb(obj), obj["vector_store_id"], obj["id"]))


async def delete_file(conn: AsyncConnection, vector_store_id: str, file_id: str, tenant: str) -> bool:
    cur = await conn.execute(DELETE_STORE_FILE, (vector_store_id, file_id, tenant))
    return cur.rowcount > 0


async def list_files(
    conn: AsyncConnection,
    vector_store_id: str,
    tenant: str,
    *,
    batch_id: str | None,
    status: str | None,
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
) -> tuple[list[dict], bool]:
    """Cursor pagination of a store's (or a batch's) files in attach order; cursors are file ids."""
    filters: dict[str, Any] = {"vector_store_id": vector_store_id}
    if batch_id is not None:
        filters["batch_id"] = batch_id
    if status is not None:
        filters["status"] = status
    return await store.list_page(
        conn, "vector_store_files", tenant=tenant, filters=filters, limit=limit, order=order,
        after=after, before=before, cursor_key="file_id",
    )


async def file_content(conn: AsyncConnection, vector_store_id: str, file_id: str) -> list[str]:
    """The parsed text of a file, one piece per chunk without the overlap with the previous chunk:
    the pieces joined are the document's text as it was chunked."""
    cur = await conn.execute(SELECT_FILE_CHUNKS, (vector_store_id, file_id))
    pieces: list[str] = []
    covered = 0
    for row in await cur.fetchall():
        text, meta = row["content"], row["metadata"] or {}
        start, end = meta.get("char_start"), meta.get("char_end")
        if isinstance(start, int) and isinstance(end, int) and end - start == len(text):
            if end <= covered:
                continue
            piece = text[max(0, covered - start) :]
            if pieces and start > covered:
                piece = "\n\n" + piece  # chunks skip only separators; keep the pieces apart
            covered = end
        else:
            piece = text
        if piece:
            pieces.append(piece)
    return pieces


# --- batches -----------------------------------------------------------------------------------


def new_batch_object(vector_store_id: str) -> dict:
    return {
        "id": new_id("file_batch"),
        "object": "vector_store.files_batch",
        "created_at": now(),
        "vector_store_id": vector_store_id,
        "status": "in_progress",
    }


async def insert_batch(conn: AsyncConnection, obj: dict, tenant: str) -> None:
    await conn.execute(INSERT_BATCH, (obj["id"], tenant, obj["vector_store_id"], Jsonb(obj)))


async def get_batch(conn: AsyncConnection, vector_store_id: str, batch_id: str, tenant: str) -> dict:
    row = await (await conn.execute(SELECT_BATCH, (batch_id, vector_store_id, tenant))).fetchone()
    if row is None:
        raise NotFound(f"No file batch found with id '{batch_id}' in vector store '{vector_store_id}'.")
    return batch_object(row)


async def cancel_batch(conn: AsyncConnection, vector_store_id: str, batch_id: str, tenant: str) -> dict:
    """Cancel a batch still in progress (its unfinished files become `cancelled`); a finished batch
    is returned as it is."""
    async with conn.transaction():
        row = await (await conn.execute(LOCK_BATCH, (batch_id, vector_store_id, tenant))).fetchone()
        if row is None:
            raise NotFound(f"No file batch found with id '{batch_id}' in vector store '{vector_store_id}'.")
        current = await get_batch(conn, vector_store_id, batch_id, tenant)
        if current["status"] == "in_progress":
            await conn.execute(CANCEL_BATCH_FILES, (batch_id,))
            await conn.execute(UPDATE_BATCH_OBJ, (Jsonb({**row["obj"], "status": "cancelled"}), batch_id))
    return await get_batch(conn, vector_store_id, batch_id, tenant)


# --- ingestion results -------------------------------------------------------------------------


async def finish_file(
    conn: AsyncConnection,
    job: Job,
    status: str,
    *,
    last_error: dict | None = None,
    usage_bytes: int = 0,
    chunk_count: int = 0,
) -> bool:
    """Record the end of one attempt, in the caller's transaction if any. False (nothing written)
    when the attempt is stale: the file was detached, re-attached, cancelled or already finished."""
    async with conn.transaction():
        row = await (await conn.execute(LOCK_JOB, (job.vector_store_id, job.file_id, job.attempt))).fetchone()
        if row is None:
            return False
        obj = {**row["obj"], "status": status, "last_error": last_error, "usage_bytes": usage_bytes}
        await conn.execute(
            FINISH_STORE_FILE, (status, Jsonb(obj), usage_bytes, chunk_count, job.vector_store_id, job.file_id)
        )
    return True


# --- embedding models --------------------------------------------------------------------------


class EmbeddingUnavailable(RuntimeError):
    """The embedding model a store was created with cannot be used by this server."""


_models: dict[tuple, EmbeddingModel] = {}
_models_lock = threading.Lock()


def model_key(model: EmbeddingModel) -> str:
    """What a store records as its `embedding_model`."""
    if model.model in (WORDLLAMA_MODEL, MINILM_MODEL):
        return model.model
    return OPENAI_PREFIX + model.model


def _openai_kwargs(settings: Settings) -> dict:
    key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else settings.openai_api_key
    return {"base_url": settings.embedding_base_url or settings.openai_base_url, "api_key": key}


def configured_model(settings: Settings) -> EmbeddingModel:
    """The embedding model new stores get (may call the endpoint once to learn an unknown model's
    dimension: run it in a worker thread)."""
    provider = (settings.embedding_provider or "default").strip().lower()
    cache_key = ("configured", provider, settings.embedding_model, settings.embedding_dimensions)
    with _models_lock:
        if cache_key in _models:
            return _models[cache_key]
    try:
        if provider == "openai":
            model = embeddings_from_settings(
                "openai",
                model=settings.embedding_model,
                dimensions=settings.embedding_dimensions,
                **_openai_kwargs(settings),
            )
        else:
            model = embeddings_from_settings(provider)
    except Exception as exc:
        raise EmbeddingUnavailable(f"The configured embedding model ({provider}) is not usable: {exc}") from exc
    with _models_lock:
        _models[cache_key] = model
    return model


def store_model_spec(recorded: str, dimension: int, settings: Settings) -> tuple[str, dict]:
    """How to build the embedding model a store was created with: `embeddings_from_settings`'
    (kind, keyword arguments). Raises EmbeddingUnavailable when this server cannot."""
    try:
        if recorded == WORDLLAMA_MODEL:
            return "wordllama", {}
        if recorded == MINILM_MODEL:
            if importlib.util.find_spec("sentence_transformers") is None:
                raise RuntimeError("the optional 'minilm' dependencies are not installed (pip install 'assistgraph[minilm]')")
            return "minilm", {}
        if recorded.startswith(OPENAI_PREFIX):
            name = recorded[len(OPENAI_PREFIX) :]
            native = OPENAI_DIMENSIONS.get(name)
            if native is not None:
                dimensions = None if native == dimension else dimension
            elif name == settings.embedding_model and settings.embedding_dimensions == dimension:
                dimensions = dimension
            else:
                dimensions = None  # learnt from one call to the endpoint
            return "openai", {"model": name, "dimensions": dimensions, **_openai_kwargs(settings)}
        raise RuntimeError("this server does not know that model")
    except Exception as exc:
        raise EmbeddingUnavailable(
            f"The vector store's embedding model '{recorded}' ({dimension} dimensions) is not available on this server: {exc}"
        ) from exc


def store_model(recorded: str, dimension: int, settings: Settings) -> EmbeddingModel:
    """The embedding model a store was created with, whatever is configured now. Raises
    EmbeddingUnavailable when this server cannot produce the store's vectors (a missing optional
    dependency, no endpoint configured, a model of another dimension). Blocking: use a thread."""
    cache_key = ("store", recorded, dimension)
    with _models_lock:
        if cache_key in _models:
            return _models[cache_key]
    kind, options = store_model_spec(recorded, dimension, settings)
    try:
        model = embeddings_from_settings(kind, **options)
    except Exception as exc:
        raise EmbeddingUnavailable(
            f"The vector store's embedding model '{recorded}' ({dimension} dimensions) is not available on this server: {exc}"
        ) from exc
    if model.dimension != dimension:
        raise EmbeddingUnavailable(
            f"The vector store's embedding model '{recorded}' now returns {model.dimension}-dimensional vectors; "
            f"the store holds {dimension}-dimensional ones."
        )
    with _models_lock:
        _models[cache_key] = model
    return model


def vector_literal(values: Sequence[float]) -> str:
    """pgvector's text form."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def hnsw_index_name(dimension: int) -> str:
    return f"chunks_hnsw_{int(dimension)}"


_HNSW_DDL = (
    "CREATE INDEX IF NOT EXISTS {name} ON chunks USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
    "WHERE vector_dims(embedding) = {dim}"
)
_indexed: set[int] = set()


async def ensure_hnsw_index(conn: AsyncConnection, dimension: int) -> None:
    """The HNSW index for one embedding dimension (a partial index on a cast expression: the
    `embedding` column has no fixed dimension). Created once, the first time a store of that
    dimension stores chunks; concurrent creators are serialised by an advisory lock."""
    dimension = int(dimension)
    if dimension in _indexed:
        return
    name = hnsw_index_name(dimension)
    if await (await conn.execute(SELECT_HNSW_INDEX, (name,))).fetchone() is None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
            await conn.execute(sql.SQL(_HNSW_DDL.format(name=name, dim=dimension)))
    _indexed.add(dimension)


def chunking_strategy_of(value: dict | None, param: str = "chunking_strategy") -> ChunkingStrategy:
    """A request's `chunking_strategy` (auto | static), or a 400 naming the offending field."""
    if value is None:
        return ChunkingStrategy()
    kind = value.get("type")
    allowed = {"auto": {"type"}, "static": {"type", "static"}}.get(kind)
    if allowed is None:
        raise InvalidRequest(
            f"Invalid value for '{param}.type': expected 'auto' or 'static'.", param=f"{param}.type"
        )
    extra = set(value) - allowed or (
        set(value.get("static") or {}) - {"max_chunk_size_tokens", "chunk_overlap_tokens"}
        if isinstance(value.get("static"), dict)
        else set()
    )
    if extra:
        where = param if set(value) - allowed else f"{param}.static"
        raise InvalidRequest(f"Unrecognized request argument supplied: {where}.{sorted(extra)[0]}", param=f"{where}.{sorted(extra)[0]}")
    try:
        return ChunkingStrategy.from_api(value)
    except InvalidChunkingStrategy as exc:
        message = str(exc)
        field = message.split(" ", 1)[0].rstrip(".")
        exact = param + field[len("chunking_strategy") :] if field.startswith("chunking_strategy") else param
        if exact != param:
            message = exact + message[len(field) :]
        raise InvalidRequest(message, param=exact) from None
