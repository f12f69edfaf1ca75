"""The `/metrics` figures read from procrastinate's tables (api/storage/stats.py). procrastinate's
public API has none of them as /metrics defines them (its `list_queues` counts jobs scheduled for later
as waiting, and nothing gives a queue's age or the live workers), so they are queries on its tables:
this checks them against its public API on the schema the installed procrastinate makes, so a release
that renames a table, a column or a status fails here, not in a scrape."""

from __future__ import annotations

import asyncio

import procrastinate
from procrastinate.psycopg_connector import PsycopgConnector

from api.files.vector_stores import INGEST_FILE
from api.storage.database import migrate, open_pool
from api.storage.queue import ADVANCE_RUN, INGESTION_QUEUE, QUEUE
from api.storage.stats import collect
from tests.conftest import _own_database

INGEST = INGEST_FILE


async def _figures(url: str) -> tuple[dict, dict, dict]:
    pool = await open_pool(url, 2)
    app = procrastinate.App(connector=PsycopgConnector(conninfo=url))
    try:
        await migrate(pool)
        async with app.open_async():
            for file_id in ("a", "b", "c"):
                await app.configure_task(name=INGEST, queue=INGESTION_QUEUE).defer_async(file_id=file_id)
            await app.configure_task(name=ADVANCE_RUN, queue=QUEUE).defer_async(run_id="now")
            await app.configure_task(name=ADVANCE_RUN, queue=QUEUE, schedule_in={"hours": 1}).defer_async(run_id="later")
            manager = app.job_manager
            worker = await manager.register_worker()
            assert await manager.fetch_job([INGESTION_QUEUE], worker) is not None
            async with pool.connection() as conn:
                figures = await collect(conn, INGEST)
            queues = {q["name"]: q for q in await manager.list_queues_async()}
            [ingestion] = await manager.list_tasks_async(task=INGEST)
            return figures, queues, ingestion
    finally:
        await pool.close()


def test_the_metrics_figures_agree_with_procrastinates_own_counts(database_url):
    figures, queues, ingestion = asyncio.run(_figures(_own_database(database_url, "queuestats")))
    assert figures["ingestion"] == {"todo": ingestion["todo"], "doing": ingestion["doing"]} == {"todo": 2, "doing": 1}
    assert (figures["queues"][INGESTION_QUEUE]["todo"], figures["queues"][INGESTION_QUEUE]["doing"]) == (
        queues[INGESTION_QUEUE]["todo"], queues[INGESTION_QUEUE]["doing"]
    )
    # The run scheduled for later is not waiting yet: procrastinate counts it, /metrics does not.
    assert (figures["queues"][QUEUE]["todo"], queues[QUEUE]["todo"]) == (1, 2)
    assert 0 <= figures["queues"][QUEUE]["age"] < 60
    assert figures["workers"] == 1
