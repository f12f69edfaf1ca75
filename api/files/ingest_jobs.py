"""Background ingestion of vector store files, and the expiry sweep of vector stores.

One job per attached file, in the job queue's `ingestion` queue, served by a procrastinate worker of
its own (`IngestionJobs.run_worker`, in `assistgraph serve` and every `assistgraph worker`), so files
waiting never hold the run executor's job slots. Each file is parsed, chunked and embedded in a
child process under memory, CPU-time and wall-time limits (`ingestion.isolation`); this process
only streams the child's rows into Postgres, so its memory stays flat whatever the file. Then, in
one transaction, the chunks are copied in and the file becomes `completed`. Each attach has an
`attempt` token, and the result is only written if the file is still `in_progress` under the same
attempt, so a file detached, re-attached or cancelled (its batch) meanwhile is left alone. A file
that cannot be ingested becomes `failed` with `last_error` (`unsupported_file` / `invalid_file`
from the ingestion error, naming the limit when one was crossed; `server_error` for anything else);
the job itself never fails, so one bad file never disturbs its batch, the worker or the server.

Fairness, so one tenant's huge files never starve another tenant's small ones:
- jobs are queued with a priority that falls with their tenant's backlog (`vector_stores.enqueue`),
  so the queue hands out the first files of every tenant before anyone's 100th;
- in each process, `FairSlots` gives a free slot to the waiting file whose tenant has the fewest
  files running (then small files first, then oldest); large files (`ingestion_large_file_bytes`)
  never hold every slot; and one extra slot is kept for a small file of a tenant that has nothing
  running, so it starts at once even while every regular slot is busy with long files.

A worker that cannot serve a job (it cannot get the file's bytes: not under its `data_dir`, or the
file store unreachable; or it cannot build the store's embedding model, e.g. an endpoint only other
workers are configured for) hands it back to the queue for another worker, up to `MAX_HOPS` times;
then the file fails with a message saying what was missing.

A worker that dies mid-job (killed, machine lost) leaves its job `doing` and the file `in_progress`.
A periodic sweep retries ingestion jobs whose worker stopped heart-beating; a job that lost its
worker `MAX_STALL_RETRIES` times fails its file instead (the file itself may be what kills them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import procrastinate
from psycopg_pool import AsyncConnectionPool

from api.files.file_store import StoreUnavailable, store_for
from api.files import vector_stores as vs
from api.observability import metrics
from api.settings import Settings
from api.storage.queue import INGESTION_QUEUE, QUEUE, RunQueue
from ingestion import IngestionError, LimitExceeded, isolation

log = logging.getLogger(__name__)

MAX_HOPS = 20
MAX_STALL_RETRIES = 2
RECOVER_INGESTIONS = "assistgraph.recover_stalled_ingestions"
COPY_BATCH_ROWS = 500


class _HandBack(Exception):
    """This worker cannot process the job; another one may."""


def limits_of(settings: Settings) -> isolation.Limits:
    return isolation.Limits(
        memory_mb=settings.ingestion_memory_limit_mb,
        cpu_seconds=settings.ingestion_cpu_seconds,
        wall_seconds=settings.ingestion_wall_seconds,
        max_tokens=settings.ingestion_max_tokens,
        max_unzipped_bytes=settings.ingestion_max_unzipped_bytes,
    )


class IngestionJobs:
    def __init__(self, pool: AsyncConnectionPool, queue: RunQueue, settings: Settings):
        self.pool = pool
        self.queue = queue
        self.settings = settings
        self.limits = limits_of(settings)
        self.slots = FairSlots(max(1, settings.ingestion_concurrency), settings.ingestion_large_file_bytes)
        self.scratch = Path(settings.data_dir) / "ingestion-scratch"
        self.files = store_for(settings)
        # The ingestion worker's own procrastinate app on the same connector: only the ingestion
        # task, no periodic tasks (the run queue's worker defers those), so running both workers
        # in one process does not double the periodic deferrer.
        self.app = procrastinate.App(connector=queue.app.connector)
        self.app.task(name=vs.INGEST_FILE, queue=INGESTION_QUEUE, pass_context=True)(self.ingest)
        app = queue.app
        # Jobs deferred into the run queue before ingestion had a queue of its own still run.
        app.task(name=vs.INGEST_FILE, queue=QUEUE, pass_context=True)(self.ingest)
        app.periodic(cron="* * * * *", periodic_id="vector_store_expiry")(
            app.task(name=vs.EXPIRE_STORES, queue=QUEUE, pass_context=False)(self.expire_stores)
        )
        self.stall_after = settings.worker_stall_timeout
        # Every 5 s (seconds are cron's 6th field): small next to the stall threshold, so a file
        # waits little more than that threshold for another worker.
        app.periodic(cron="* * * * * */5", periodic_id="ingestion_recovery")(
            app.task(name=RECOVER_INGESTIONS, queue=QUEUE, pass_context=False)(self.recover_stalled)
        )

    async def run_worker(self) -> None:
        # Jobs beyond the slots wait in this process, where FairSlots picks among them.
        await self.app.run_worker_async(
            queues=[INGESTION_QUEUE],
            concurrency=2 * self.slots.capacity + 1,
            fetch_job_polling_interval=self.settings.executor_poll_interval,
            abort_job_polling_interval=self.settings.executor_poll_interval,
            delete_jobs="successful",
            install_signal_handlers=False,
            name="assistgraph-ingestion",
            update_heartbeat_interval=self.stall_after / 3,
            stalled_worker_timeout=self.stall_after,
            shutdown_graceful_timeout=self.settings.shutdown_grace,
        )

    async def ingest(self, context, vector_store_id: str, file_id: str, attempt: str, hops: int = 0) -> None:
        job = vs.Job(vector_store_id, file_id, attempt)
        started = time.monotonic()
        outcome = "failed"
        try:
            outcome = await self._ingest(job)
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        except _HandBack as exc:
            outcome = "handed_back"
            if hops < MAX_HOPS:
                try:
                    # A short delay lets every polling worker have a chance at it, not only this one.
                    await self.queue.app.configure_task(
                        name=vs.INGEST_FILE,
                        queue=INGESTION_QUEUE,
                        schedule_in={"milliseconds": 300},
                        priority=context.job.priority,
                    ).defer_async(**job.kwargs(), hops=hops + 1)
                    return
                except Exception:
                    log.exception("could not hand back the ingestion of %s", file_id)
            outcome = "failed"
            await self._fail(job, {"code": "server_error", "message": str(exc)})
        except IngestionError as exc:
            if isinstance(exc, LimitExceeded):
                metrics.INGESTION_LIMITS.labels(exc.limit).inc()
                log.info("ingestion of %s into %s stopped at the %s limit", file_id, vector_store_id, exc.limit)
            await self._fail(job, exc.to_last_error())
        except Exception as exc:  # a bug or the environment: the file fails, the job does not
            log.exception("ingestion of %s into %s failed", file_id, vector_store_id)
            await self._fail(
                job, {"code": "server_error", "message": f"The file could not be processed: {type(exc).__name__}: {exc}"}
            )
        finally:
            if outcome in ("completed", "failed"):
                metrics.INGESTED_FILES.labels(outcome).inc()
                metrics.INGESTION_SECONDS.labels(outcome).observe(time.monotonic() - started)

    async def _ingest(self, job: vs.Job) -> str:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(vs.SELECT_JOB, (job.vector_store_id, job.file_id))).fetchone()
        if row is None or row["status"] != "in_progress" or row["attempt"] != job.attempt:
            return "skipped"  # detached, re-attached, cancelled or done already
        dimension = row["embedding_dimension"]
        try:
            # Built here (cached) to learn this worker can; the child builds its own from the spec.
            await asyncio.to_thread(vs.store_model, row["embedding_model"], dimension, self.settings)
            kind, options = vs.store_model_spec(row["embedding_model"], dimension, self.settings)
        except vs.EmbeddingUnavailable as exc:
            raise _HandBack(str(exc)) from exc
        rows_path = self.scratch / f"{job.file_id}-{job.attempt}.jsonl"
        try:
            async with self.slots.slot(row["tenant_id"], row["bytes"]):
                # The child parses a local file: the store's own (local directory), or a copy
                # downloaded for the job and removed after it (object storage).
                async with self._local_copy(row["storage_path"]) as path:
                    task = isolation.Task(
                        path=str(path),
                        filename=row["filename"] or job.file_id,
                        rows_path=str(rows_path),
                        chunking=row["obj"].get("chunking_strategy"),
                        embedding_kind=kind,
                        embedding_options=options,
                        dimension=dimension,
                        pdf_engine=self.settings.ingestion_pdf_engine,
                    )
                    result = await self._run_child(task)
            return await self._store(job, result, rows_path, dimension)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, rows_path)

    @asynccontextmanager
    async def _local_copy(self, stored: str):
        """The bytes as a local file; a worker that cannot get them hands the job back."""
        opened = False
        try:
            async with self.files.local_copy(stored, self.scratch) as path:
                opened = True
                yield path
        except (FileNotFoundError, StoreUnavailable) as exc:
            if opened:
                raise
            if isinstance(exc, StoreUnavailable):
                raise _HandBack(f"The file store was unavailable to the workers that tried ({exc}).") from None
            raise _HandBack(f"The file's bytes were not found by the workers that tried (one looked for {exc}).") from None

    async def _run_child(self, task: isolation.Task) -> isolation.Outcome:
        await asyncio.to_thread(self.scratch.mkdir, parents=True, exist_ok=True)
        child = await asyncio.to_thread(isolation.start, task, self.limits)
        metrics.INGESTION_RUNNING.inc()
        try:
            await asyncio.to_thread(child.wait, self.limits.wall_seconds)
        except asyncio.CancelledError:
            child.kill()  # the job was aborted or the worker is stopping: so is the child
            raise
        finally:
            metrics.INGESTION_RUNNING.dec()
        return await asyncio.to_thread(child.outcome)

    async def _store(self, job: vs.Job, result: isolation.Outcome, rows_path: Path, dimension: int) -> str:
        async with self.pool.connection() as conn:
            await vs.ensure_hnsw_index(conn, dimension)
            async with conn.transaction():
                if await (await conn.execute(vs.LOCK_JOB, (job.vector_store_id, job.file_id, job.attempt))).fetchone() is None:
                    return "skipped"
                await conn.execute(vs.DELETE_CHUNKS_OF_FILES, (job.vector_store_id, [job.file_id]))
                rows = await asyncio.to_thread(open, rows_path, encoding="utf-8")
                try:
                    async with conn.cursor() as cur, cur.copy(vs.COPY_CHUNKS) as copy:
                        # A few hundred rows at a time: the file may hold thousands of chunks.
                        while batch := await asyncio.to_thread(_read_rows, rows, job):
                            for line in batch:
                                await copy.write_row(line)
                finally:
                    await asyncio.to_thread(rows.close)
                await vs.finish_file(conn, job, "completed", usage_bytes=result.usage_bytes, chunk_count=result.chunks)
        return "completed"

    async def _fail(self, job: vs.Job, error: dict) -> None:
        try:
            async with self.pool.connection() as conn:
                await vs.finish_file(conn, job, "failed", last_error=error)
        except Exception:
            log.exception("could not record the failure of %s in %s", job.file_id, job.vector_store_id)

    async def recover_stalled(self, timestamp: int | None = None) -> None:
        # Only ingestion jobs: a run whose worker is lost is not re-executed (it expires instead).
        jobs = await self.queue.app.job_manager.get_stalled_jobs(
            task_name=vs.INGEST_FILE, seconds_since_heartbeat=self.stall_after
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


def _read_rows(rows, job: vs.Job) -> list[tuple]:
    out = []
    for line in itertools.islice(rows, COPY_BATCH_ROWS):
        index, text, tokens, metadata, vector = json.loads(line)
        out.append((job.vector_store_id, job.file_id, index, text, tokens, metadata, vector))
    return out


# --- fair slots ----------------------------------------------------------------------------------


@dataclass(order=True)
class _Waiter:
    key: tuple
    tenant: str = field(compare=False)
    large: bool = field(compare=False)
    granted: asyncio.Future = field(compare=False)


class FairSlots:
    """Who ingests next, in one process (a semaphore with a policy; asyncio has none that picks
    among its waiters): `capacity` regular slots plus one kept for a small file of a tenant with
    nothing running. Among waiters that may start, the one whose tenant runs the fewest files wins,
    then small before large, then first come. Large files hold at most `capacity - 1` slots when
    there are two or more."""

    def __init__(self, capacity: int, large_bytes: int):
        self.capacity = capacity
        self.large_bytes = large_bytes
        self.running: dict[str, int] = {}
        self.total = 0
        self.large = 0
        self._waiting: list[_Waiter] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, tenant: str, size: int):
        large = size >= self.large_bytes
        waiter = _Waiter((next(self._order),), tenant, large, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._dispatch()
        try:
            await waiter.granted
        except BaseException:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._release(waiter)
            raise
        try:
            yield
        finally:
            self._release(waiter)

    def _may_start(self, waiter: _Waiter) -> bool:
        if waiter.large and self.large >= max(1, self.capacity - 1):
            return False
        if self.total < self.capacity:
            return True
        # The extra slot: only for a small file of a tenant with nothing running.
        return self.total == self.capacity and not waiter.large and not self.running.get(waiter.tenant)

    def _dispatch(self) -> None:
        while True:
            ready = [w for w in self._waiting if self._may_start(w)]
            if not ready:
                return
            best = min(ready, key=lambda w: (self.running.get(w.tenant, 0), w.large, w.key))
            self._waiting.remove(best)
            self.running[best.tenant] = self.running.get(best.tenant, 0) + 1
            self.total += 1
            self.large += best.large
            best.granted.set_result(None)

    def _release(self, waiter: _Waiter) -> None:
        self.running[waiter.tenant] -= 1
        if not self.running[waiter.tenant]:
            del self.running[waiter.tenant]
        self.total -= 1
        self.large -= waiter.large
        self._dispatch()
