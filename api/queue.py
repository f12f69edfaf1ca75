"""The run queue: procrastinate jobs in the same Postgres database.

API processes only defer jobs (by task name); executors (`assistgraph serve` by default, or any
number of `assistgraph worker` processes) claim and execute them.
"""

from __future__ import annotations

import datetime as dt
import logging

import procrastinate
from procrastinate.psycopg_connector import PsycopgConnector

log = logging.getLogger(__name__)

ADVANCE_RUN = "assistgraph.advance_run"
EXPIRE_RUN = "assistgraph.expire_run"
PRUNE_EVENTS = "assistgraph.prune_event_payloads"
QUEUE = "runs"


class RunQueue:
    def __init__(self, database_url: str, max_size: int = 10) -> None:
        # Its own small pool: procrastinate opens LISTEN connections with settings of its own,
        # which clash with the API pool's connection kwargs.
        self.app = procrastinate.App(
            connector=PsycopgConnector(conninfo=database_url, min_size=1, max_size=max_size)
        )

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def enqueue_run(self, run_id: str) -> int:
        # queueing_lock: at most one waiting job per run; lock: a run's jobs never overlap
        # (a resume submitted while the previous job is still finishing waits for it).
        return await self.app.configure_task(
            name=ADVANCE_RUN, queue=QUEUE, lock=run_id
        ).defer_async(run_id=run_id)

    async def schedule_expiry(self, run_id: str, at: int) -> None:
        await self.app.configure_task(
            name=EXPIRE_RUN, queue=QUEUE, schedule_at=dt.datetime.fromtimestamp(at, dt.timezone.utc)
        ).defer_async(run_id=run_id)

    async def abort(self, job_id: int | None) -> str | None:
        """Ask the worker holding `job_id` to stop it; returns the job's status afterwards."""
        if job_id is None:
            return None
        await self.app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        return await self.job_status(job_id)

    async def job_status(self, job_id: int) -> str | None:
        jobs = await self.app.job_manager.list_jobs_async(id=job_id)
        jobs = list(jobs)
        # procrastinate hands the status over as a plain string here (an enum elsewhere).
        return str(getattr(jobs[0].status, "value", jobs[0].status)) if jobs else None
