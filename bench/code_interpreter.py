"""Benchmark: the code_interpreter sandbox (nsjail + ipykernel), without the API around it.

    .venv/bin/python bench/code_interpreter.py --out bench/results/code_interpreter.json

- cold start: `store.session(key)` for a new key (jail, kernel, first kernel_info answer), then the
  first `1+1`; sequential, `--cold` times;
- warm round trip: `session.execute("1+1")` on a running session, `--warm` times; what it measures
  is the server-side overhead (a /mnt/data scan before and after, the execute request, IOPub
  messages until idle, the reply), since the kernel's own work is nil;
- concurrency: `--concurrent` sessions started at once, then each runs a small pandas job at once.

Targets on 2 cores: warm p50 <= 50 ms, cold start <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.code_interpreter import (
    CodeInterpreterConfig,
    LocalSessionStore,
    open_session_store,
)

PANDAS_JOB = """
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
df = pd.DataFrame({"group": rng.integers(0, 50, 200_000), "value": rng.random(200_000)})
summary = df.groupby("group")["value"].agg(["mean", "std", "count"])
print(len(summary), round(float(summary["count"].sum())))
"""


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)]

    return {
        "p50": round(statistics.median(ordered), 4),
        "p90": round(at(0.9), 4),
        "p99": round(at(0.99), 4),
        "min": round(ordered[0], 4),
        "n": len(ordered),
    }


async def main(args: argparse.Namespace) -> dict:
    store = await open_session_store(CodeInterpreterConfig(max_sessions=max(args.concurrent + args.cold + 2, 50)))
    if not isinstance(store, LocalSessionStore):
        raise SystemExit(f"no sandbox: {getattr(store, 'reason', store)}")
    try:
        cold, first = [], []
        for n in range(args.cold):
            started = time.perf_counter()
            session = await store.session(f"cold-{n}")
            cold.append(time.perf_counter() - started)
            result = await session.execute("1+1")
            assert result.logs == "2", result.logs
            first.append(time.perf_counter() - started)
            await store.stop(f"cold-{n}")

        session = await store.session("warm")
        for _ in range(20):  # let the kernel settle
            await session.execute("1+1")
        warm = []
        for _ in range(args.warm):
            started = time.perf_counter()
            result = await session.execute("1+1")
            warm.append(time.perf_counter() - started)
            assert result.logs == "2"
        await store.stop("warm")

        keys = [f"many-{n}" for n in range(args.concurrent)]
        started = time.perf_counter()
        sessions = await asyncio.gather(*(store.session(key) for key in keys))
        start_all = time.perf_counter() - started

        async def job(session) -> tuple[float, str]:
            begun = time.perf_counter()
            result = await session.execute(PANDAS_JOB)
            return time.perf_counter() - begun, result.logs

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(job(s) for s in sessions))
        jobs_wall = time.perf_counter() - started
        errors = sum(1 for _, logs in outcomes if logs != "50 200000")
        again = await asyncio.gather(*(job(s) for s in sessions))
        return {
            "environment": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "cold_start_s": quantiles(cold),
            "cold_start_to_first_result_s": quantiles(first),
            "warm_1plus1_s": quantiles(warm),
            "concurrent": {
                "sessions": args.concurrent,
                "start_all_wall_s": round(start_all, 3),
                "first_pandas_job_wall_s": round(jobs_wall, 3),
                "first_pandas_job_s": quantiles([t for t, _ in outcomes]),
                "second_pandas_job_s": quantiles([t for t, _ in again]),
                "errors": errors + sum(1 for _, logs in again if logs != "50 200000"),
            },
        }
    finally:
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=7)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
