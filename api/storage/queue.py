"""The run queue: procrastinate jobs in the same Postgres database.

API processes only defer jobs (by task name); executors (`assistgraph serve` by default, or any
number of `assistgraph worker` processes) claim and execute them.
"""

from __future__ import annotations

import logging

import procrastinate
import psycopg_pool
from psycopg import AsyncConnection
from procrastinate.psycopg_connector import PsycopgConnector

from api.storage.database import Pool, check_when_idle

log = logging.getLogger(__name__)

ADVANCE_RUN = "assistgraph.advance_run"
EXPIRE_RUNS = "assistgraph.expire_overdue_runs"
PRUNE_EVENTS = "assistgraph.prune_run_events"
RECOVER_RUNS = "assistgraph.recover_runs"
QUEUE = "runs"
# Files to ingest wait in a queue of their own, served by a worker of their own: a deep backlog of
# files never holds the run executor's job slots (see api/files/ingest_jobs.py).
INGESTION_QUEUE = "ingestion"


async def _autocommit(conn) -> None:
    await conn.set_autocommit(True)


def _autocommit_pool(**pool_args) -> psycopg_pool.AsyncConnectionPool:
    # Every procrastinate query is one atomic statement (a call of its SQL functions); in a
    # transaction of its own it would cost a BEGIN and a COMMIT round trip each, twice per run.
    # (Set when a connection is made, not through `kwargs`: procrastinate reuses those for its
    # LISTEN connection, which it opens with autocommit itself.)
    pool_args["check"] = check_when_idle
    return Pool(**pool_args, configure=_autocommit)


class RunQueue:
    def __init__(self, database_url: str, max_size: int = 10) -> None:
        # Its own small pool: procrastinate opens LISTEN connections with settings of its own,
        # which clash with the API pool's connection kwargs.
        self.app = procrastinate.App(
            connector=PsycopgConnector(
                conninfo=database_url, min_size=1, max_size=max_size, pool_factory=_autocommit_pool
            )
        )

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def enqueue_run(self, run_id: str, conn: AsyncConnection | None = None) -> int:
        """Defer the run's execution; with `conn`, inside that connection's transaction, so the run
        and its job are committed together (a crash can never leave a queued run without a job)."""
        # lock: a run's jobs never overlap (a resume submitted while the previous job is still
        # finishing, or a job handed back by a stopping worker, waits for it).
        return await self.app.configure_task(
            name=ADVANCE_RUN, queue=QUEUE, lock=run_id, connection=conn
        ).defer_async(run_id=run_id)

    async def abort(self, run_id: str) -> str | None:
        """Stop the run's job: a waiting one is cancelled, a running one is told to abort (the
        worker cancels its task). Returns "doing" when a worker was running it."""
        found = None
        for job in await self.app.job_manager.list_jobs_async(lock=run_id, queue=QUEUE):
            status = str(getattr(job.status, "value", job.status))
            if status in ("todo", "doing"):
                await self.app.job_manager.cancel_job_by_id_async(job.id, abort=True)
                found = "doing" if status == "doing" or found == "doing" else "cancelled"
        return found
