"""Executes queued runs: drives the checkpointed graph and turns its stream into Assistants events.

Everything it needs is read from Postgres (the run, its checkpoint, its resume values), so it can
run in `assistgraph serve` or in any number of separate `assistgraph worker` processes, and a run
whose executor died is taken over by another (see `resume.py` and `recovery.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import procrastinate
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from procrastinate.job_context import AbortReason, JobContext
from psycopg_pool import AsyncConnectionPool

from api.contract.ids import now
from api.contract.run_status import ACTIVE, STARTABLE, RunStatus
from api.observability.callbacks import run_callbacks
from api.runs import lifecycle, resume
from api.runs.binding import RunBinder
from api.runs.checkpoints import RunSaver
from api.runs.failures import RunLost, describe_model_error, expiry_error
from api.runs.mapper import RunEventMapper
from api.runs.pump import EventPump
from api.runs.recovery import RunRecovery
from api.runs.sink import EventSink, RunPreempted, prune_events
from api.settings import Settings
from api.storage import store
from api.storage.database import DATABASE_UNAVAILABLE
from api.storage.queue import ADVANCE_RUN, EXPIRE_RUNS, PRUNE_EVENTS, QUEUE, RunQueue
from api.tooling.code_sessions import CodeSessions
from api.files.file_store import store_for
from graph.graph import builder
from tools.registry import ToolRegistry

log = logging.getLogger(__name__)

CHECKPOINTER_SETUP_LOCK = 0x61677370  # "agsp": any constant other processes of this database agree on

# A run taken over this many times (its executor killed, lost or stopped each time) fails instead.
MAX_TAKEOVERS = 5
# Hand-backs of a stopping worker's jobs procrastinate retries (each then counts as a takeover).
MAX_HANDBACKS = 10


@dataclass
class _Execution:
    """What one execution of a run has produced so far, for whoever has to close it."""

    run_id: str
    mapper: RunEventMapper | None = None
    pump: EventPump | None = None
    totals: resume.RunTotals | None = None


class RunExecutor:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        queue: RunQueue,
        settings: Settings,
        tools: ToolRegistry,
        code: CodeSessions | None = None,
        sink: EventSink | None = None,
    ):
        self.pool = pool
        self.queue = queue
        self.settings = settings
        self.sink = sink or EventSink(pool)
        self.binder = RunBinder(pool, settings, tools, code)
        self.recovery = RunRecovery(pool, queue, settings, self.sink)
        self.saver = RunSaver(pool)
        self.graph = builder.compile(checkpointer=self.saver, name="assistant")
        app = queue.app
        # A job cancelled because its worker is stopping (not because the run was cancelled: that
        # marks the job aborted, which procrastinate never retries) goes back to the queue, and the
        # next execution continues the run from its checkpoint.
        handed_back = procrastinate.RetryStrategy(
            max_attempts=MAX_HANDBACKS, wait=0, retry_exceptions={asyncio.CancelledError}
        )
        app.task(name=ADVANCE_RUN, queue=QUEUE, pass_context=True, retry=handed_back)(self.advance)
        # Every second (procrastinate's cron takes seconds as a 6th field); one worker wins each tick.
        app.periodic(cron="* * * * * *", periodic_id="expiry")(
            app.task(name=EXPIRE_RUNS, queue=QUEUE, pass_context=False)(self.expire_overdue)
        )
        app.periodic(cron="* * * * *", periodic_id="prune")(
            app.task(name=PRUNE_EVENTS, queue=QUEUE, pass_context=False)(self.prune)
        )

    async def run_worker(self) -> None:
        stall = self.settings.worker_stall_timeout
        await self.queue.app.run_worker_async(
            queues=[QUEUE],
            concurrency=self.settings.executor_concurrency,
            fetch_job_polling_interval=self.settings.executor_poll_interval,
            abort_job_polling_interval=self.settings.executor_poll_interval,
            delete_jobs="successful",
            install_signal_handlers=False,
            name="assistgraph-executor",
            update_heartbeat_interval=stall / 3,
            stalled_worker_timeout=stall,
            shutdown_graceful_timeout=self.settings.shutdown_grace,
        )

    # --- tasks --------------------------------------------------------------------------------

    async def advance(self, context: JobContext, run_id: str) -> None:
        execution = _Execution(run_id)
        try:
            await self._advance(execution)
        except asyncio.CancelledError:
            if context.abort_reason() == AbortReason.SHUTDOWN:
                # The worker is stopping: the run stays in_progress and its job goes back to the queue.
                log.info("run %s handed back to the queue: its executor is stopping", run_id)
                raise
            # Procrastinate cancels the task when the run is cancelled or expires.
            await asyncio.shield(self._after_preemption(execution))
            raise
        finally:
            if execution.pump is not None:
                await execution.pump.close()

    async def _advance(self, execution: _Execution) -> None:
        run_id = execution.run_id
        async with self.pool.connection() as conn:
            row = await store.run_start(conn, run_id)
        if row is None:
            return
        if row["status"] == RunStatus.CANCELLING:
            await self.recovery.settle_cancel(run_id)
            return
        if row["status"] not in STARTABLE:
            return
        config = row["config"]
        execution.mapper = RunEventMapper(row["obj"])
        try:
            # Stored while the run's tools and input are prepared: a cancel that came first fails
            # that write, and the pump raises it at the next event.
            execution.pump = pump = EventPump(self.sink, run_id, window=self.settings.delta_window_ms / 1000)
            pump.put(lifecycle.start(execution.mapper))
            run = execution.mapper.run  # now in_progress, with its start time
            context, kinds = await self.binder.context(run, row["tenant_id"], config)
            plan = await resume.plan(self.pool, self.graph, {**row, "obj": run}, kinds, store_for(self.settings))
            execution.mapper, execution.totals = plan.mapper, plan.totals
            if plan.taken_over:
                await self._count_takeover(run_id, config)
            # Deltas only matter to a stream; a polled run skips publishing them.
            publish_deltas = config.get("stream", True)
            pump.put([e for e in plan.replay if publish_deltas or not e.is_delta])
            if plan.graph_input is not resume.FINISHED:
                # Checkpointed after every step, before the next starts: a run whose process dies is
                # continued from its last completed node by whichever executor takes it over.
                graph_config = {
                    "configurable": {"thread_id": run_id},
                    "callbacks": run_callbacks(run_id, row["tenant_id"]),  # observability: metrics, traces
                }
                if plan.fresh:
                    self.saver.expect_fresh(run_id)
                try:
                    async for mode, payload in self.graph.astream(
                        plan.graph_input,
                        graph_config,
                        context=context,
                        stream_mode=["messages", "updates"],
                        durability="sync",
                    ):
                        if mode == "updates":
                            plan.totals.observe(payload)
                        events = plan.mapper.handle(mode, payload)
                        if not publish_deltas:
                            events = [e for e in events if not e.is_delta]
                        if plan.totals.usage:
                            # A cancel or expiry while the run waits reports the usage so far: stored
                            # with the pause itself, so no cancel can come between.
                            events = [
                                dataclasses.replace(e, config={"usage": plan.totals.usage})
                                if e.event == "thread.run.requires_action" else e
                                for e in events
                            ]
                        if events:
                            pump.put(events)
                finally:
                    self.saver.forget(run_id)
            await pump.flush()
            if plan.mapper.run["status"] == RunStatus.REQUIRES_ACTION:
                return
            # Computed on a copy: a finish the database refuses (a cancel got there first) leaves the
            # mapper's message and steps open for the cancel to close.
            await self.sink.emit(lifecycle.finish(plan.mapper.fork(), plan.totals.usage, plan.totals.incomplete), run_id=run_id)
        except RunPreempted:
            await self._after_preemption(execution)
        except Exception as exc:  # the model, the network, a bad tool schema: the run fails, never hangs
            await self._settle(execution.pump)
            if execution.pump is not None and isinstance(execution.pump.error, RunPreempted):
                # Cancelled (or expired) before this failure: that ending stands.
                await self._after_preemption(execution)
                return
            if isinstance(exc, DATABASE_UNAVAILABLE) or isinstance(execution.pump and execution.pump.error, DATABASE_UNAVAILABLE):
                # Not the run's fault (a database restart or failover): the execution is lost, not
                # the run. Its job ends here; once the database is back the recovery sweep queues
                # the run again (an active run without a job) and the next execution continues it
                # from its checkpoint.
                log.warning("run %s: the database went away mid-execution (%s); it is continued once it is back", run_id, exc.__class__.__name__)
                return
            log.warning("run %s failed: %s", run_id, exc)
            code, message = describe_model_error(exc, self.settings)
            usage = execution.totals.usage if execution.totals else config.get("usage")
            if not await self._emit_quietly(lifecycle.fail(execution.mapper.fork(), code, message, usage), run_id):
                await self._after_preemption(execution)  # cancelled as it failed: the cancel closes it

    async def _count_takeover(self, run_id: str, config: dict) -> None:
        takeovers = config.get("takeovers", 0) + 1
        if takeovers > MAX_TAKEOVERS:
            raise RunLost(takeovers)
        log.warning("run %s: taking over from a lost execution (%d of at most %d)", run_id, takeovers, MAX_TAKEOVERS)
        async with self.pool.connection() as conn:
            await store.merge_run_config(conn, run_id, {"takeovers": takeovers})

    async def expire_overdue(self, timestamp: int | None = None) -> None:
        async with self.pool.connection() as conn:
            overdue = await store.overdue_runs(conn, now())
        await asyncio.gather(*(self.expire(run_id) for run_id in overdue))

    async def expire(self, run_id: str) -> None:
        async with self.pool.connection() as conn:
            row = await store.run_row(conn, run_id)
        if row is None or row["status"] not in ACTIVE:
            return
        if row["status"] != RunStatus.REQUIRES_ACTION and await self.queue.abort(run_id) == "doing":
            # The executor holding the run expires it itself, keeping the partial answer it
            # streamed; wait for it, and fall through only if that process is gone.
            if await self._wait_until_settled(run_id, timeout=5.0):
                return
        reason = expiry_error(self.settings, row["obj"], waiting_for_outputs=row["status"] == RunStatus.REQUIRES_ACTION)
        await lifecycle.close(self.sink, self.pool, row, RunStatus.EXPIRED, last_error=reason)

    async def _wait_until_settled(self, run_id: str, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            async with self.pool.connection() as conn:
                row = await store.run_row(conn, run_id)
            if row is None or row["status"] not in ACTIVE:
                return True
            await asyncio.sleep(0.05)
        return False

    async def prune(self, timestamp: int | None = None) -> None:
        async with self.pool.connection() as conn:
            await prune_events(conn, self.settings.event_retention)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    async def _settle(pump: EventPump | None) -> None:
        """Let already-produced events reach the database first, so closing events follow them."""
        if pump is not None:
            try:
                await pump.flush()
            except Exception:
                pass

    async def _after_preemption(self, execution: _Execution) -> None:
        """Someone else moved the run on (cancel) or its time ran out (expiry): close it from here,
        where the partial answer is known."""
        await self._settle(execution.pump)
        run_id = execution.run_id
        async with self.pool.connection() as conn:
            row = await store.run_row(conn, run_id)
        if row is None or execution.mapper is None:
            if row is not None and row["status"] == RunStatus.CANCELLING:
                await self.recovery.settle_cancel(run_id)
            return
        reason = None
        if row["status"] == RunStatus.CANCELLING:
            to = RunStatus.CANCELLED
        elif row["status"] in ACTIVE and now() >= (row["obj"].get("expires_at") or now() + 1):
            to, reason = RunStatus.EXPIRED, expiry_error(self.settings, row["obj"])
        else:
            return
        usage = execution.totals.usage if execution.totals else lifecycle.STORED_USAGE
        await lifecycle.close(self.sink, self.pool, row, to, mapper=execution.mapper, usage=usage, last_error=reason)

    async def _emit_quietly(self, events, run_id: str) -> bool:
        try:
            await self.sink.emit(events, run_id=run_id)
            return True
        except RunPreempted:
            return False


async def setup_checkpointer(pool: AsyncConnectionPool) -> None:
    # Processes starting together (serve --workers N) would race on the saver's CREATE TABLEs. Its
    # migrations include CREATE INDEX CONCURRENTLY, which cannot run in a transaction and waits for
    # every open transaction, including one blocked on a lock: so the others wait between attempts
    # to take a session lock, never inside a statement.
    async with pool.connection() as conn:
        while not (await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (CHECKPOINTER_SETUP_LOCK,))).fetchone())["ok"]:
            await asyncio.sleep(0.1)
        try:
            await AsyncPostgresSaver(conn).setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (CHECKPOINTER_SETUP_LOCK,))
