"""Benchmark: the code_interpreter sandbox (nsjail + ipykernel), without the API around it.

    .venv/bin/python bench/code_interpreter.py --out bench/results/code_interpreter.json \
        --figure bench/results/code_interpreter.png

- cold start: `store.session(key)` for a new key (jail, kernel, first kernel_info answer), then the
  first `1+1`; sequential, `--cold` times;
- warm round trip: `session.execute("1+1")` on a running session, `--warm` times; what it measures
  is the server-side overhead (a /mnt/data scan before and after, the execute request, IOPub
  messages until idle, the reply), since the kernel's own work is nil;
- concurrency: `--concurrent` sessions started at once, then each runs a small pandas job at once;
- budgets: cold start and warm round trip again with cgroups off (per-process rlimits only), so the
  cost of a session's cgroup budget shows (when the host gives one); `--figure` draws both;
- CPU quota: `--quota-starts` sessions started at once with the default quota, with none and with
  half a core, interleaved over `--quota-rounds` rounds (a quota below what a kernel start uses
  throttles the start; `--quota-only` runs just this part).

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


async def open_store(args: argparse.Namespace, *, cgroups: bool, **settings) -> LocalSessionStore:
    config = CodeInterpreterConfig(max_sessions=max(args.concurrent + args.cold + 2, 50), cgroups=cgroups, **settings)
    store = await open_session_store(config)
    if not isinstance(store, LocalSessionStore):
        raise SystemExit(f"no sandbox: {getattr(store, 'reason', store)}")
    return store


async def start_and_warm(store: LocalSessionStore, args: argparse.Namespace) -> dict:
    """Cold session starts (to the first result) and warm `1+1` round trips."""
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
    return {
        "limits": store.limits,
        "cold_start_s": quantiles(cold),
        "cold_start_to_first_result_s": quantiles(first),
        "warm_1plus1_s": quantiles(warm),
    }


def draw(report: dict, path: Path) -> None:
    """Session start and warm-call overhead (p50, with p90 as the error bar), per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [report["default"], report["rlimits_only"]]
    labels = [run["limits"] for run in runs]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, key, unit, scale in (
        (axes[0], "cold_start_to_first_result_s", "s", 1),
        (axes[1], "warm_1plus1_s", "ms", 1000),
    ):
        p50 = [run[key]["p50"] * scale for run in runs]
        p90 = [run[key]["p90"] * scale for run in runs]
        axis.bar(labels, p50, yerr=[[0] * len(runs), [b - a for a, b in zip(p50, p90, strict=True)]], capsize=4)
        axis.set_ylabel(unit)
        axis.set_title({"cold_start_to_first_result_s": "session start to first result", "warm_1plus1_s": "warm 1+1 round trip"}[key])
        for x, value in enumerate(p50):
            axis.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom")
    cpus = report["environment"]["cpus"]
    fig.suptitle(f"code_interpreter sandbox, {cpus} CPUs (p50, bar to p90)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


async def quota_starts(args: argparse.Namespace) -> dict:
    """Wall time to start `--quota-starts` sessions at once (each to its first `1+1`), per CPU quota."""
    quotas = {"default": CodeInterpreterConfig().cpu_quota, "none": 0.0, "half a core": 0.5}
    walls: dict[str, list[float]] = {name: [] for name in quotas}
    limits = None
    for _ in range(args.quota_rounds):
        for name, quota in quotas.items():
            store = await open_store(args, cgroups=True, cpu_quota=quota)
            limits = store.jail.budget.describe()
            try:
                started = time.perf_counter()
                sessions = await asyncio.gather(*(store.session(f"q-{n}") for n in range(args.quota_starts)))
                results = await asyncio.gather(*(s.execute("1+1") for s in sessions))
                walls[name].append(time.perf_counter() - started)
                assert all(r.logs == "2" for r in results)
            finally:
                await store.aclose()
    return {
        "limits": limits,
        "sessions": args.quota_starts,
        "quotas": quotas,
        "start_all_wall_s": {name: quantiles(values) for name, values in walls.items()},
    }


async def main(args: argparse.Namespace) -> dict:
    if args.quota_only:
        return {"environment": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "cpu_quota": await quota_starts(args)}
    store = await open_store(args, cgroups=True)
    try:
        default = await start_and_warm(store, args)
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
        concurrent = {
            "sessions": args.concurrent,
            "start_all_wall_s": round(start_all, 3),
            "first_pandas_job_wall_s": round(jobs_wall, 3),
            "first_pandas_job_s": quantiles([t for t, _ in outcomes]),
            "second_pandas_job_s": quantiles([t for t, _ in again]),
            "errors": errors + sum(1 for _, logs in again if logs != "50 200000"),
        }
    finally:
        await store.aclose()
    store = await open_store(args, cgroups=False)
    try:
        rlimits_only = await start_and_warm(store, args)
    finally:
        await store.aclose()
    return {
        "environment": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        **{key: default[key] for key in ("cold_start_s", "cold_start_to_first_result_s", "warm_1plus1_s")},
        "concurrent": concurrent,
        "default": default,
        "rlimits_only": rlimits_only,
        "cpu_quota": await quota_starts(args),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=7)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--quota-starts", type=int, default=10)
    parser.add_argument("--quota-rounds", type=int, default=3)
    parser.add_argument("--quota-only", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path, help="a PNG of session start and warm-call overhead")
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.figure and "default" in report:
        draw(report, args.figure)
