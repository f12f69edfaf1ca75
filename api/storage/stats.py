"""What operators ask of the database: readiness (reachable, schema up to date) and the figures
`/metrics` reads at scrape time (active runs, job queue depth and age, ingestion backlog)."""

from __future__ import annotations

from psycopg import AsyncConnection

from api.contract.run_status import ACTIVE, sql_list

from api.storage.database import SELECT_MIGRATION_VERSIONS
from api.storage.migrations import MIGRATIONS
from api.storage.queue import INGESTION_QUEUE, QUEUE

# Only active statuses: `runs_active` indexes them, so a scrape never scans every run ever made
# (ended runs are counted as they happen: assistgraph_run_transitions_total).
COUNT_ACTIVE_RUNS = f"""
    SELECT status, count(*) AS n FROM runs
    WHERE status IN {sql_list(ACTIVE)} GROUP BY status
"""
# Jobs that may start now: their age counts from when they were deferred (or scheduled for).
QUEUE_STATS = """
    SELECT j.queue_name AS queue,
           count(*) FILTER (WHERE j.status = 'todo') AS todo,
           count(*) FILTER (WHERE j.status = 'doing') AS doing,
           coalesce(extract(epoch FROM now() - min(greatest(coalesce(j.scheduled_at, d.at), d.at))
                    FILTER (WHERE j.status = 'todo')), 0)::float AS age
    FROM procrastinate_jobs j
    LEFT JOIN LATERAL (
        SELECT min(e.at) AS at FROM procrastinate_events e WHERE e.job_id = j.id AND e.type = 'deferred'
    ) d ON true
    WHERE j.status = 'doing' OR (j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()))
    GROUP BY j.queue_name
"""
INGESTION_BACKLOG = """
    SELECT status::text AS state, count(*) AS n FROM procrastinate_jobs
    WHERE task_name = %s AND status IN ('todo', 'doing') GROUP BY status
"""
COUNT_LIVE_WORKERS = """
    SELECT count(*) AS n FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => %s)
"""


async def collect(conn: AsyncConnection, ingest_task: str, stalled_after: float = 30.0) -> dict:
    runs = dict.fromkeys(ACTIVE, 0)
    for row in await (await conn.execute(COUNT_ACTIVE_RUNS)).fetchall():
        runs[row["status"]] = row["n"]
    queues = {name: {"todo": 0, "doing": 0, "age": 0.0} for name in (QUEUE, INGESTION_QUEUE)}
    queues.update({row["queue"]: row for row in await (await conn.execute(QUEUE_STATS)).fetchall()})
    ingestion = {row["state"]: row["n"] for row in await (await conn.execute(INGESTION_BACKLOG, (ingest_task,))).fetchall()}
    workers = (await (await conn.execute(COUNT_LIVE_WORKERS, (stalled_after,))).fetchone())["n"]
    return {"runs": runs, "queues": queues, "ingestion": ingestion, "workers": workers}


async def pending_migrations(conn: AsyncConnection) -> list[int]:
    """Versions of the schema this code needs that the database does not have."""
    done = {row["v"] for row in await (await conn.execute(SELECT_MIGRATION_VERSIONS)).fetchall()}
    return [v for v in range(len(MIGRATIONS)) if v not in done]
