"""What a process runs on: the pool, migrated schema, checkpointer, job queue, event hub, tool
registry and (optionally) the executor, shared by `assistgraph serve` and `assistgraph worker`; and
`Services`, the bundle a request handler reaches them through."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from api.files.ingest_jobs import IngestionJobs
from api.runs.events import EventSink
from api.runs.executor import RunExecutor, setup_checkpointer
from api.runs.streaming import EventHub
from api.security.auth import DEFAULT_CALLER, Caller
from api.settings import Settings
from api.storage.database import migrate, open_pool
from api.storage.queue import RunQueue
from api.tooling import tool_types
from api.tooling.code_sessions import CodeSessions
from tools.registry import ToolRegistry


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
        tasks = [asyncio.create_task(self.executor.run_worker()), asyncio.create_task(self.ingestion.run_worker())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


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
