"""Benchmark: what creating a run costs, and what reading the active run after the thread lock costs.

    .venv/bin/python bench/run_create.py --out bench/results/run_create.json

Two measures, on one `assistgraph serve` (embedded Postgres) and the scripted model:
- the `POST /threads/{id}/runs` request, one at a time on fresh threads (each run finishes before the
  next create, so the create meets an idle server);
- at the database, in interleaved rounds inside transactions that are rolled back: the create path's
  read as it was (the thread lock with the active run read by a subquery of the same statement, which
  under READ COMMITTED reads the snapshot taken before a lock wait and so misses a run committed
  meanwhile) against the read it does now (the lock, then the active run in a statement of its own,
  pipelined in the same round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
import psycopg
from psycopg.rows import dict_row

from api.contract.objects import ACTIVE_RUN_STATUSES
from api.storage import store
from bench._harness import environment, print_table, sdk_kwargs, stack, summary_ms, write_json

MODEL = "bench-echo"

# The create path's read before it was split (kept here only to measure what the split costs).
ONE_STATEMENT_READ = """
    SELECT t.obj AS thread, a.obj AS assistant,
        (SELECT r.id FROM runs r WHERE r.thread_id = t.id AND r.status = ANY(%(active)s) LIMIT 1) AS active_run
    FROM threads t
    LEFT JOIN assistants a ON a.id = %(assistant)s AND a.tenant_id = %(tenant)s
    WHERE t.id = %(thread)s AND t.tenant_id = %(tenant)s
    FOR UPDATE OF t
"""


async def create_latency(url: str, samples: int, warmup: int) -> tuple[list[float], str, list[str]]:
    client = openai.AsyncOpenAI(**sdk_kwargs(url))
    assistant = await client.beta.assistants.create(model=MODEL)
    times, threads = [], []
    for i in range(warmup + samples):
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
        threads.append(thread.id)
        t0 = time.perf_counter()
        run = await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        elapsed = time.perf_counter() - t0
        await client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=5)
        if i >= warmup:
            times.append(elapsed)
    await client.close()
    return times, assistant.id, threads


async def lock_reads(dsn: str, assistant_id: str, threads: list[str], rounds: int) -> dict[str, list[float]]:
    """Each round times both reads once, in an order that alternates, each in a rolled-back transaction."""
    out: dict[str, list[float]] = {"one statement": [], "lock, then active run (pipelined)": []}
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row, prepare_threshold=0) as conn:

        async def old(thread_id: str) -> None:
            params = {
                "thread": thread_id, "tenant": "default", "assistant": assistant_id, "active": list(ACTIVE_RUN_STATUSES)
            }
            await (await conn.execute(ONE_STATEMENT_READ, params)).fetchone()

        async def new(thread_id: str) -> None:
            await store.lock_thread_for_run(conn, thread_id, "default", assistant_id)

        measures = [("one statement", old), ("lock, then active run (pipelined)", new)]
        for i in range(rounds):
            thread_id = threads[i % len(threads)]
            for name, read in measures if i % 2 else reversed(measures):
                async with conn.transaction(force_rollback=True):
                    t0 = time.perf_counter()
                    await read(thread_id)
                    elapsed = time.perf_counter() - t0
                if i >= 20:
                    out[name].append(elapsed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with stack() as s:
        times, assistant_id, threads = asyncio.run(create_latency(s.server_url, args.samples, args.warmup))
        dsn = f"postgresql://postgres:@/postgres?host={s.workdir / 'data' / 'pgdata'}"
        reads = asyncio.run(lock_reads(dsn, assistant_id, threads, args.rounds))
    results = {
        "environment": environment(),
        "create_request": summary_ms(times),
        "lock_read": {name: summary_ms(values) for name, values in reads.items()},
    }
    old, new = (statistics.median(v) for v in reads.values())
    results["lock_read_ratio_p50"] = round(new / old, 2)
    print_table(
        "creating a run",
        [
            ("POST /threads/{id}/runs, p50", f"{results['create_request']['p50']} ms"),
            *((f"lock read: {name}, p50", f"{summary['p50']} ms") for name, summary in results["lock_read"].items()),
            ("lock read: now / before", results["lock_read_ratio_p50"]),
        ],
        ("measure", "result"),
    )
    write_json(args.out, results)


if __name__ == "__main__":
    main()
