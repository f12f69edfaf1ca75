"""Background ingestion of vector store files, and the expiry sweep of vector stores: procrastinate
tasks registered on the run queue's app (so `assistgraph serve` and every `assistgraph worker`
execute them).

One job per attached file: parse + chunk (`ingestion.ingest_file`) and embed with the store's own
model in worker threads (CPU-bound; at most `ingestion_concurrency` files at once per process), then
in one transaction: the chunks are copied in and the file becomes `completed`. Each attach has an
`attempt` token, and the result is only written if the file is still `in_progress` under the same
attempt, so a file detached, re-attached or cancelled (its batch) meanwhile is left alone. A file
that cannot be ingested becomes `failed` with `last_error` (`unsupported_file` / `invalid_file`
from the ingestion error, `server_error` for anything else); the job itself never fails, so one bad
file never disturbs its batch, the worker or the server.

A worker that cannot serve a job (the file's bytes are not under its `data_dir`, or it cannot build
the store's embedding model, e.g. an endpoint only other workers are configured for) hands it back
to the queue for another worker, up to `MAX_HOPS` times; then the file fails with a message saying
what was missing.

A worker that dies mid-job (killed, machine lost) leaves its job `doing` and the file `in_progress`.
A periodic sweep retries ingestion jobs whose worker stopped heart-beating; a job that lost its
worker `MAX_STALL_RETRIES` times fails its file instead (the file itself may be what kills them).
"""

from __future__ import annotations

import asyncio
import json
import logging

from psycopg_pool import AsyncConnectionPool

from api.files import file_storage
from api.files import vector_stores as vs
from api.settings import Settings
from api.storage.queue import QUEUE, RunQueue
from ingestion import ChunkingStrategy, EmptyFile, IngestionError, embed_chunks, ingest_file

log = logging.getLogger(__name__)

MAX_HOPS = 20
MAX_STALL_RETRIES = 2
RECOVER_INGESTIONS = "assistgraph.recover_stalled_ingestions"


class _HandBack(Exception):
    """This worker cannot process the job; another one may."""


class IngestionJobs:
    def __init__(self, pool: AsyncConnectionPool, queue: RunQueue, settings: Settings):
        self.pool = pool
        self.queue = queue
        self.settings = settings
        self.slots = asyncio.Semaphore(max(1, settings.ingestion_concurrency))
        app = queue.app
        app.task(name=vs.INGEST_FILE, queue=QUEUE, pass_context=False)(self.ingest)
        app.periodic(cron="* * * * *", periodic_id="vector_store_expiry")(
            app.task(name=vs.EXPIRE_STORES, queue=QUEUE, pass_context=False)(self.expire_stores)
        )
        self.stall_after = settings.worker_stall_timeout
        # Every 5 s (seconds are cron's 6th field): small next to the stall threshold, so a file
        # waits little more than that threshold for another worker.
        app.periodic(cron="* * * * * */5", periodic_id="ingestion_recovery")(
            app.task(name=RECOVER_INGESTIONS, queue=QUEUE, pass_context=False)(self.recover_stalled)
        )

    async def ingest(self, vector_store_id: str, file_id: str, attempt: str, hops: int = 0) -> None:
        job = vs.Job(vector_store_id, file_id, attempt)
        try:
            await self._ingest(job)
        except asyncio.CancelledError:
            raise
        except _HandBack as exc:
            if hops < MAX_HOPS:
                try:
                    # A short delay lets every polling worker have a chance at it, not only this one.
                    await self.queue.app.configure_task(
                        name=vs.INGEST_FILE, queue=QUEUE, schedule_in={"milliseconds": 300}
                    ).defer_async(**job.kwargs(), hops=hops + 1)
                    return
                except Exception:
                    log.exception("could not hand back the ingestion of %s", file_id)
            await self._fail(job, {"code": "server_error", "message": str(exc)})
        except IngestionError as exc:
            await self._fail(job, exc.to_last_error())
        except Exception as exc:  # a bug or the environment: the file fails, the job does not
            log.exception("ingestion of %s into %s failed", file_id, vector_store_id)
            await self._fail(
                job, {"code": "server_error", "message": f"The file could not be processed: {type(exc).__name__}: {exc}"}
            )

    async def _ingest(self, job: vs.Job) -> None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(vs.SELECT_JOB, (job.vector_store_id, job.file_id))).fetchone()
        if row is None or row["status"] != "in_progress" or row["attempt"] != job.attempt:
            return  # detached, re-attached, cancelled or done already
        path = file_storage.local_path(self.settings.data_dir, row["storage_path"])
        strategy = ChunkingStrategy.from_api(row["obj"].get("chunking_strategy"))
        dimension = row["embedding_dimension"]
        if not await asyncio.to_thread(path.is_file):
            raise _HandBack(
                f"The file's bytes were not found by the workers that tried (one looked for {path}): "
                "every server and worker process must share the same data_dir."
            )
        try:
            model = await asyncio.to_thread(vs.store_model, row["embedding_model"], dimension, self.settings)
        except vs.EmbeddingUnavailable as exc:
            raise _HandBack(str(exc)) from exc
        async with self.slots:
            chunks = await asyncio.to_thread(ingest_file, path, row["filename"], strategy)
            if not chunks:
                raise EmptyFile("The file contains no text to index.")
            vectors = await asyncio.to_thread(embed_chunks, chunks, model.embeddings, dimension=dimension)
            lines = await asyncio.to_thread(_copy_rows, job, chunks, vectors)
        usage = sum(len(c.text.encode("utf-8")) for c in chunks)
        async with self.pool.connection() as conn:
            await vs.ensure_hnsw_index(conn, dimension)
            async with conn.transaction():
                if await (await conn.execute(vs.LOCK_JOB, (job.vector_store_id, job.file_id, job.attempt))).fetchone() is None:
                    return
                await conn.execute(vs.DELETE_CHUNKS_OF_FILES, (job.vector_store_id, [job.file_id]))
                async with conn.cursor() as cur, cur.copy(vs.COPY_CHUNKS) as copy:
                    for line in lines:
                        await copy.write_row(line)
                await vs.finish_file(conn, job, "completed", usage_bytes=usage, chunk_count=len(chunks))

    async def _fail(self, job: vs.Job, error: dict) -> None:
        try:
            async with self.pool.connection() as conn:
                await vs.finish_file(conn, job, "failed", last_error=error)
        except Exception:
            log.exception("could not record the failure of %s in %s", job.file_id, job.vector_store_id)

    async def recover_stalled(self, timestamp: int | None = None) -> None:
        # Only ingestion jobs: a run whose worker is lost is not re-executed (it expires instead).
        jobs = await self.queue.app.job_manager.get_stalled_jobs(
            queue=QUEUE, task_name=vs.INGEST_FILE, seconds_since_heartbeat=self.stall_after
        )
        for stalled in jobs:
            kwargs = stalled.task_kwargs
            try:
                job = vs.Job(kwargs["vector_store_id"], kwargs["file_id"], kwargs["attempt"])
                if stalled.attempts >= MAX_STALL_RETRIES:
                    await self._fail(
                        job,
                        {
                            "code": "server_error",
                            "message": f"The file could not be processed: the worker ingesting it stopped "
                            f"(killed or lost) {stalled.attempts + 1} times.",
                        },
                    )
                    log.error("gave up the ingestion of %s into %s: its worker stopped", job.file_id, job.vector_store_id)
                else:
                    log.warning("retrying the ingestion of %s into %s: its worker stopped", job.file_id, job.vector_store_id)
                # Retried even when given up: the file is no longer in progress under this attempt,
                # so the job ends at once (and is deleted) instead of being found stalled forever.
                # Two overlapping sweeps may both retry a job; it then runs twice, which the
                # attempt check makes harmless.
                await self.queue.app.job_manager.retry_job(stalled)
            except Exception:
                log.exception("could not recover the stalled ingestion job %s", stalled.id)

    async def expire_stores(self, timestamp: int | None = None) -> None:
        async with self.pool.connection() as conn:
            await vs.sweep_expired(conn)


def _copy_rows(job: vs.Job, chunks, vectors) -> list[tuple]:
    """COPY rows of the chunks (built in a worker thread: formatting vectors is CPU work)."""
    return [
        (
            job.vector_store_id,
            job.file_id,
            chunk.index,
            chunk.text.replace("\x00", ""),
            chunk.token_count,
            json.dumps(chunk.metadata()),
            vs.vector_literal(vector),
        )
        for chunk, vector in zip(chunks, vectors)
    ]
