"""Runs whose execution was lost are resumed, never left to expire.

A periodic sweep (every few seconds, on whichever executor wins the tick):
- hands back to the queue the jobs of executors that stopped heart-beating (killed, machine lost),
  using procrastinate's stalled-job detection; the next execution continues the run from its
  checkpoint (`resume.py`);
- re-queues active runs that have no job at all, and settles `cancelling` runs nobody is closing
  (their executor died, or the cancel raced the end of an execution).

How many times a run was taken over is counted in its config; past the limit it fails with a
`last_error` instead of being tried forever (a run that kills its executor every time, say).
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from api.contract.run_status import RunStatus
from api.runs import lifecycle
from api.runs.sink import EventSink
from api.settings import Settings
from api.storage import store
from api.storage.queue import ADVANCE_RUN, QUEUE, RECOVER_RUNS, RunQueue

log = logging.getLogger(__name__)

# A run is only called orphaned when its status has not changed for this long, so a transition
# being committed (or a job being deferred right after it) is never mistaken for a lost run.
ORPHAN_QUIET_SECONDS = 5.0


class RunRecovery:
    def __init__(self, pool: AsyncConnectionPool, queue: RunQueue, settings: Settings, sink: EventSink):
        self.pool = pool
        self.queue = queue
        self.settings = settings
        self.sink = sink
        app = queue.app
        # Every 5 s (seconds are cron's 6th field): small next to the stall threshold, so a run waits
        # little more than that threshold for another executor.
        app.periodic(cron="* * * * * */5", periodic_id="run_recovery")(
            app.task(name=RECOVER_RUNS, queue=QUEUE, pass_context=False)(self.recover)
        )

    async def recover(self, timestamp: int | None = None) -> None:
        manager = self.queue.app.job_manager
        for job in await manager.get_stalled_jobs(
            queue=QUEUE, task_name=ADVANCE_RUN, seconds_since_heartbeat=self.settings.worker_stall_timeout
        ):
            log.warning("run %s: its executor stopped responding; handing it to another", job.task_kwargs.get("run_id"))
            try:
                # Two overlapping sweeps may both retry it; the run's lock keeps its executions apart.
                await manager.retry_job(job)
            except Exception:
                log.exception("could not hand back the job of run %s", job.task_kwargs.get("run_id"))
        async with self.pool.connection() as conn:
            orphans = await store.orphaned_runs(conn, ORPHAN_QUIET_SECONDS)
        for run_id, status in orphans:
            try:
                if status == RunStatus.CANCELLING:
                    await self.settle_cancel(run_id)
                else:
                    log.warning("run %s: %s without a job; queueing it again", run_id, status)
                    await self.queue.enqueue_run(run_id)
            except Exception:
                log.exception("could not recover run %s", run_id)

    async def settle_cancel(self, run_id: str) -> None:
        """Close a `cancelling` run that no execution is closing: its open steps and message end
        cancelled with it."""
        async with self.pool.connection() as conn:
            row = await store.run_row(conn, run_id)
        if row is not None and row["status"] == RunStatus.CANCELLING:
            await lifecycle.close(self.sink, self.pool, row, RunStatus.CANCELLED)  # False: settled meanwhile
