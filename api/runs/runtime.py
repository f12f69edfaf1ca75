"""What a process runs on: the pool, migrated schema, checkpointer, job queue, event hub, tool
registry and (optionally) the executor, shared by `assistgraph serve` and `assistgraph worker`; and
`Services`, the bundle a request handler reaches them through."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from api.files.ingest_jobs import IngestionJobs
from api.observability.logs import raised_from
from api.runs.sink import EventSink
from api.runs.executor import RunExecutor, setup_checkpointer
from api.runs.streaming import EventHub
from api.security.auth import DEFAULT_CALLER, Caller
from api.settings import Settings
from api.storage.database import DATABASE_UNAVAILABLE, OUTAGE, RECONNECT_TIMEOUT, Backoff, migrate, open_pool
from api.storage.queue import RunQueue
from api.tooling import tool_types
from api.tooling.code_sessions import CodeSessions
from tools.registry import ToolRegistry

log = logging.getLogger(__name__)

# Seconds before a stopped worker is started again: doubling up to the maximum while it keeps
# stopping, back to the first once it ran for a while.
RESTART_FIRST = 0.5
RESTART_MAX = 10.0
RESTART_RESET_AFTER = 60.0


@dataclass
class Services:
    settings: Settings
    pool: AsyncConnectionPool
    queue: RunQueue
    sink: EventSink
    hub: EventHub
    tools: ToolRegistry = dataclasses.field(default_factory=ToolRegistry)
    caller: Caller = DEFAULT_CALLER

    @property
    def tenant(self) -> str:
        return self.caller.tenant


@dataclass
class Workers:
    """What executes queued work in this process: the run executor and the ingestion worker (each a
    procrastinate worker on its own queue)."""

    executor: RunExecutor
    ingestion: IngestionJobs

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(_keep_running("run executor", self.executor.run_worker)),
            asyncio.create_task(_keep_running("ingestion worker", self.ingestion.run_worker)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _keep_running(name: str, worker: Callable[[], Awaitable[None]]) -> None:
    """Runs a procrastinate worker until this task is cancelled. procrastinate stops a worker whose
    LISTEN connection broke (a database restart or failover does that): this process would then
    accept runs and never execute them. So a worker that stops is started again, at growing
    intervals while the database stays away; the jobs it held are taken over once it is back
    (`recovery.py`)."""
    backoff = Backoff(RESTART_FIRST, RESTART_MAX)
    while True:
        started = time.monotonic()
        database_gone = False
        try:
            await worker()
            reason = "stopped"
        except Exception as exc:
            reason = f"failed ({exc.__class__.__name__}: {str(exc).strip()})"
            if raised_from(exc, psycopg.OperationalError, wrapped_only=True):
                OUTAGE.seen(exc)  # said once for the whole process, not at every restart
            # A pool still reconnecting just after an outage times out too: part of the same outage.
            database_gone = raised_from(exc, DATABASE_UNAVAILABLE) and OUTAGE.recent(2 * RECONNECT_TIMEOUT)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # This process is stopping (a worker that cannot reach the database to say goodbye
            # raises instead of being cancelled): nothing to start again.
            if reason != "stopped":
                log.warning("%s %s while stopping", name, reason)
            raise asyncio.CancelledError
        if time.monotonic() - started > RESTART_RESET_AFTER:
            backoff.reset()
        log.log(logging.DEBUG if database_gone else logging.WARNING, "%s %s; starting it again in %.1f s", name, reason, backoff.delay)
        await backoff.wait()


@asynccontextmanager
async def runtime(settings: Settings, database_url: str, *, with_executor: bool):
    """Pool, schema, queue and (optionally) the in-process workers: shared by `serve` and `worker`.
    Yields the services and the `Workers` (None without an executor)."""
    pool = await open_pool(database_url, settings.db_pool_size, prepare=settings.db_prepared_statements)
    try:
        await migrate(pool)
        await setup_checkpointer(pool)
        queue = RunQueue(database_url)
        await queue.open()
        hub = EventHub(database_url)
        await hub.start()
        registry = await asyncio.to_thread(tool_types.discover, settings)
        # One sink for requests and executions: streams of this process get its events straight away.
        sink = EventSink(pool, relay=hub.relay)
        services = Services(settings=settings, pool=pool, queue=queue, sink=sink, hub=hub, tools=registry)
        # Only processes that execute runs run code: they keep the code_interpreter sessions.
        code = await CodeSessions.open(pool, settings) if with_executor else None
        workers = None
        if with_executor:
            # vector store file ingestion + store expiry tasks, then the runs' own
            ingestion = IngestionJobs(pool, queue, settings)
            workers = Workers(RunExecutor(pool, queue, settings, registry, code, sink=sink), ingestion)
        try:
            yield services, workers
        finally:
            if code is not None:
                await code.close()
            await hub.stop()
            await queue.close()
    finally:
        await pool.close()
