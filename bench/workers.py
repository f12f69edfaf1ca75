"""Benchmark: runs/s with 1, 2 and 4 `assistgraph worker` processes on one Postgres.

    .venv/bin/python bench/workers.py --out bench/results/workers.json

One API process (`assistgraph serve` with ASSISTGRAPH_EXECUTOR=false; its embedded Postgres, or the
one DATABASE_URL names), the scripted model answering every call after a fixed delay (200 ms by
default: a run mostly waits on the model, as with a real one, so a worker's runs overlap), and N
`assistgraph worker` processes, each with a data directory of its own as separate machines would
have. A fixed batch of one-call runs goes in through the openai SDK (`create_and_run_poll`, from
`--clients` tasks at once); runs/s counts the completions between the 10th and the 90th percentile
of the batch (the ramp up and the tail left out). Every (concurrency, workers) setting is measured
once per round, in an order that rotates from round to round; the tables give medians over the
rounds and ratios to one worker.

One worker already drives many runs at once: ASSISTGRAPH_EXECUTOR_CONCURRENCY (default 100) per
process. `--concurrency` sets it for the workers; each value given is a series of its own. A small
one (the default series 5) makes each worker the limit (5 runs in flight / 0.2 s ≈ 25 runs/s), so
adding workers shows how far the rest (API, queue, Postgres, the machine) lets throughput grow; the
default one (100) shows what a worker as deployed reaches alone.

Measured meanwhile: the cores kept busy by the API process, the workers, Postgres, the scripted
model, the benchmark's clients and the rest of the machine, and the CPU each spends per run: what
runs out first is what stops runs/s growing. With the embedded Postgres, also the queue's cost per
run (calls of procrastinate's SQL functions, job fetches first: track_functions is turned on for it)
and the connections all the processes hold after a batch, against Postgres' max_connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
import psycopg

from bench._harness import (
    Child,
    _machine_cpu,
    _postgres_cpu,
    _proc_cpu,
    assistgraph_env,
    environment,
    postmaster_pid,
    print_table,
    script_model,
    sdk_kwargs,
    stack,
    start_child,
    stop_child,
    summary_ms,
    tree_cpu,
    write_json,
)

MODEL = "bench-delayed"
# procrastinate registers one worker row per queue a process works on: runs and ingestion.
WORKER_ROWS_PER_PROCESS = 2
WORKER_ROWS = "SELECT id FROM procrastinate_workers"
# What the queue's functions cost (with track_functions on); a backend reports its counts when it
# goes idle or exits, so they are read once the workers have stopped.
QUEUE_FUNCTIONS = """
    SELECT funcname, calls, total_time FROM pg_stat_user_functions WHERE funcname LIKE 'procrastinate%'
"""
FETCH_JOB = "procrastinate_fetch_job_v2"
CONNECTIONS = """
    SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity WHERE backend_type = 'client backend'
"""


# --- the workers --------------------------------------------------------------------------------


def worker_rows(db: psycopg.Connection) -> set[int]:
    return {row[0] for row in db.execute(WORKER_ROWS).fetchall()}


def queue_functions(db: psycopg.Connection) -> dict[str, tuple[int, float]]:
    return {name: (calls, ms) for name, calls, ms in db.execute(QUEUE_FUNCTIONS).fetchall()}


def track_queue_functions(db: psycopg.Connection) -> None:
    """Count calls of the queue's SQL functions (the benchmark's own embedded Postgres only)."""
    db.execute("ALTER SYSTEM SET track_functions = 'pl'")
    db.execute("SELECT pg_reload_conf()")


def wait_workers_ready(db: psycopg.Connection, before: set[int], workers: list[Child], timeout: float = 180) -> None:
    """Until every worker process has registered its procrastinate workers (rows not there before)."""
    expected = WORKER_ROWS_PER_PROCESS * len(workers)
    deadline = time.monotonic() + timeout
    while True:
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"{w.name} exited (rc={w.proc.returncode}):\n{w.log_tail()}")
        new = len(worker_rows(db) - before)
        if new >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{new} new procrastinate worker rows after {timeout}s, expected {expected}")
        time.sleep(0.2)


def start_workers(n: int, concurrency: int, s, dsn: str, tag: str) -> list[Child]:
    workers = []
    for i in range(n):
        data_dir = s.workdir / f"worker-{tag}-{i}"
        env = assistgraph_env(
            s.model_url, data_dir, ASSISTGRAPH_DATABASE_URL=dsn, ASSISTGRAPH_EXECUTOR_CONCURRENCY=str(concurrency)
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        workers.append(start_child(f"worker {i}", ["-m", "api.cli", "worker"], env, data_dir / "worker.log"))
    return workers


# --- CPU ----------------------------------------------------------------------------------------


def cpu_seconds(s, workers: list[Child], embedded: bool) -> dict:
    pgdata = s.workdir / "data" / "pgdata"
    own = os.times()
    seconds = {
        "API process": tree_cpu(s.server.proc.pid, skip={postmaster_pid(pgdata) or -1}),
        "each worker": [tree_cpu(w.proc.pid) for w in workers],
        "scripted model": _proc_cpu(s.model.proc.pid),
        "bench clients": own.user + own.system,
        "machine": _machine_cpu(),
    }
    if embedded:
        seconds["postgres"] = _postgres_cpu(pgdata)
    return seconds


def busy(before: dict, after: dict, wall: float) -> dict:
    """Cores kept busy per component; "other processes" is the rest of the machine, "busiest worker"
    the one worker process that used the most (one process runs on at most one core's worth)."""
    each = [(a - b) / wall for a, b in zip(after["each worker"], before["each worker"])]
    out = {k: (after[k] - before[k]) / wall for k in after if k not in ("machine", "each worker")}
    out["workers"] = sum(each)
    out["other processes"] = max(0.0, (after["machine"] - before["machine"]) / wall - sum(out.values()))
    out["busiest worker"] = max(each)
    out["machine"] = (after["machine"] - before["machine"]) / wall
    return {k: round(v, 3) for k, v in out.items()}


# --- one batch ----------------------------------------------------------------------------------


async def run_batch(url: str, assistant_id: str, batch: int, clients: int) -> dict:
    client = openai.AsyncOpenAI(**sdk_kwargs(url))
    left = [batch]
    done: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()

    async def one_client() -> None:
        while left[0] > 0:
            left[0] -= 1
            t0 = time.perf_counter()
            try:
                run = await client.beta.threads.create_and_run_poll(
                    assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "hello"}]}
                )
                if run.status != "completed":
                    raise RuntimeError(f"run {run.id} ended {run.status}: {run.last_error}")
                t1 = time.perf_counter()
                done.append(t1 - start)
                latencies.append(t1 - t0)
            except Exception as exc:  # counted; the batch goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    done.sort()
    lo, hi = int(len(done) * 0.1), int(len(done) * 0.9) - 1
    steady = (hi - lo) / (done[hi] - done[lo]) if hi > lo and done[hi] > done[lo] else float("nan")
    return {
        "completed": len(done),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 3),
        "runs_per_s": round(steady, 2),
        "runs_per_s_whole_batch": round(len(done) / wall, 2),
        "run_latency": summary_ms(latencies),
    }


def measure(s, dsn: str, db, assistant_id: str, n: int, concurrency: int, args, tag: str, embedded: bool) -> dict:
    """`db`: the benchmark's own connection, opened before any worker (the workers may take every other one)."""
    known = worker_rows(db)
    workers = start_workers(n, concurrency, s, dsn, tag)
    try:
        t0 = time.monotonic()
        wait_workers_ready(db, known, workers)
        started_in = time.monotonic() - t0
        functions_before = queue_functions(db)
        before, t0 = cpu_seconds(s, workers, embedded), time.perf_counter()
        result = asyncio.run(run_batch(s.server_url, assistant_id, args.batch, args.clients))
        wall = time.perf_counter() - t0
        after = cpu_seconds(s, workers, embedded)
        # The pools do not shrink for minutes: what they hold now is what the batch needed.
        open_connections, max_connections = db.execute(CONNECTIONS).fetchone()
    finally:
        for w in workers:
            w.proc.terminate()  # all at once: they stop together, then are waited for
        for w in workers:
            try:
                w.proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_child(w, timeout=5)
    # A worker that had to be killed leaves its rows (procrastinate prunes them later): said here.
    killed = [f"{w.name} (rc={w.proc.returncode})" for w in workers if w.proc.returncode not in (0, None)]
    problems = [
        line
        for w in workers
        for line in w.log_path.read_text(errors="replace").splitlines()
        if any(word in line for word in ("WARNING", "ERROR", "Traceback"))
    ]
    functions_after = queue_functions(db)
    per_run = {}
    for name, (calls, ms) in functions_after.items():
        calls_before, ms_before = functions_before.get(name, (0, 0.0))
        if calls > calls_before and result["completed"]:
            per_run[name] = {
                "calls": round((calls - calls_before) / result["completed"], 2),
                "ms": round((ms - ms_before) / result["completed"], 3),
            }
    cores = busy(before, after, wall)
    result.update(
        workers=n,
        concurrency=concurrency,
        workers_ready_s=round(started_in, 1),
        cores_busy=cores,
        cpu_ms_per_run={
            k: round(v * wall / result["completed"] * 1000, 2)
            for k, v in cores.items()
            if k not in ("machine", "other processes", "busiest worker") and result["completed"]
        },
        workers_not_stopped_cleanly=killed,
        queue_functions_per_run=per_run,
        connections_after_batch=open_connections,
        max_connections=max_connections,
        worker_log_problem_lines=len(problems),
        worker_log_problem_samples=problems[:5],
    )
    return result


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    parser.add_argument("--concurrency", default="5,100",
                        help="ASSISTGRAPH_EXECUTOR_CONCURRENCY of the workers, one series each (default 5,100)")
    parser.add_argument("--model-delay-ms", type=float, default=200.0, help="the model's delay per call (default 200)")
    parser.add_argument("--batch", type=int, default=300, help="runs per measurement (default 300)")
    parser.add_argument("--clients", type=int, default=64, help="runs the clients keep going at once (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measuring every setting once (default 3)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy the server/model logs into this directory")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    series = [int(x) for x in args.concurrency.split(",")]
    settings = [(c, n) for c in series for n in counts]

    external = os.environ.get("DATABASE_URL")
    server_env = {"ASSISTGRAPH_EXECUTOR": "false", **({"ASSISTGRAPH_DATABASE_URL": external} if external else {})}
    results: dict = {"benchmark": "workers", "environment": environment(), "params": {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "postgres": "DATABASE_URL" if external else "embedded"}}
    rounds: list[list[dict]] = []
    with stack(server_env=server_env, keep_logs=args.keep_logs) as s:
        dsn = external or f"postgresql://postgres:@/postgres?host={s.workdir / 'data' / 'pgdata'}"
        db = psycopg.connect(dsn, autocommit=True)
        if not external:
            track_queue_functions(db)
        script_model(s.model_url, MODEL, [{"echo": True, "delay": args.model_delay_ms / 1000, "repeat": True}])
        client = openai.OpenAI(**sdk_kwargs(s.server_url))
        assistant = client.beta.assistants.create(model=MODEL, name="bench workers")
        client.close()
        # A warm-up batch: the first runs after a start pay for caches and connections.
        measure(s, dsn, db, assistant.id, counts[0], series[0], argparse.Namespace(batch=min(args.batch, 60),
                clients=args.clients), "warmup", not external)
        for r in range(args.rounds):
            shift = r % len(settings)
            order = settings[shift:] + settings[:shift]
            row = []
            for concurrency, n in order:
                print(f"# round {r + 1}/{args.rounds}: {n} worker(s), concurrency {concurrency} ...", flush=True)
                got = measure(s, dsn, db, assistant.id, n, concurrency, args, f"{r}-{concurrency}-{n}", not external)
                print(f"#   {got['runs_per_s']} runs/s, {got['errors']} errors, cores busy {got['cores_busy']}",
                      flush=True)
                for line in got["worker_log_problem_samples"]:
                    print(f"#   !! {line}", flush=True)
                for name in got["workers_not_stopped_cleanly"]:
                    print(f"#   !! not stopped cleanly: {name}", flush=True)
                row.append(got)
            rounds.append(row)
        db.close()
        results["server_log_problem_lines"] = len(s.server_log_problems())
        results["server_log_problem_samples"] = s.server_log_problems()[:20]
    results["environment"]["loadavg_at_end"] = os.getloadavg()
    results["rounds"] = rounds

    summary = []
    for concurrency, n in settings:
        got = [m for row in rounds for m in row if m["workers"] == n and m["concurrency"] == concurrency]
        components = got[0]["cores_busy"].keys()
        summary.append({
            "concurrency": concurrency,
            "workers": n,
            "runs_per_s": statistics.median(m["runs_per_s"] for m in got),
            "runs_per_s_rounds": [m["runs_per_s"] for m in got],
            "run_latency_p50_ms": statistics.median(m["run_latency"]["p50"] for m in got),
            "errors": sum(m["errors"] for m in got),
            "cores_busy": {k: round(statistics.median(m["cores_busy"][k] for m in got), 2) for k in components},
            "cpu_ms_per_run": {
                k: round(statistics.median(m["cpu_ms_per_run"][k] for m in got), 2) for k in got[0]["cpu_ms_per_run"]
            },
            "fetches_per_run": statistics.median(
                m["queue_functions_per_run"].get(FETCH_JOB, {}).get("calls", float("nan")) for m in got
            ),
            "queue_functions_ms_per_run": statistics.median(
                sum(f["ms"] for f in m["queue_functions_per_run"].values()) for m in got
            ),
            "connections_after_batch": max(m["connections_after_batch"] for m in got),
            "max_connections": got[0]["max_connections"],
        })
    for entry in summary:
        base = next(e for e in summary if e["concurrency"] == entry["concurrency"] and e["workers"] == counts[0])
        entry["ratio_to_one_worker"] = round(entry["runs_per_s"] / base["runs_per_s"], 2)
    results["summary"] = summary

    print_table(
        f"runs/s by workers (model delay {args.model_delay_ms:.0f} ms, batch {args.batch}, {args.clients} clients, "
        f"medians of {args.rounds} rounds)",
        [(e["concurrency"], e["workers"], e["runs_per_s"], e["ratio_to_one_worker"], e["run_latency_p50_ms"],
          e["errors"], " ".join(f"{x:.0f}" for x in e["runs_per_s_rounds"])) for e in summary],
        ("concurrency", "workers", "runs/s", "vs 1", "latency p50 ms", "errors", "rounds"),
    )
    parts = [k for k in summary[0]["cores_busy"] if k != "machine"]
    print_table(
        "cores busy (medians)",
        [(e["concurrency"], e["workers"], *(e["cores_busy"][k] for k in parts), e["cores_busy"]["machine"])
         for e in summary],
        ("concurrency", "workers", *parts, "machine"),
    )
    parts = list(summary[0]["cpu_ms_per_run"])
    print_table(
        "CPU ms per run (medians)",
        [(e["concurrency"], e["workers"], *(e["cpu_ms_per_run"][k] for k in parts)) for e in summary],
        ("concurrency", "workers", *parts),
    )
    print_table(
        "the queue and the connections",
        [(e["concurrency"], e["workers"], e["fetches_per_run"], e["queue_functions_ms_per_run"],
          f"{e['connections_after_batch']} of {e['max_connections']}") for e in summary],
        ("concurrency", "workers", "job fetches per run", "queue functions ms per run", "Postgres connections"),
    )
    print(f"cores: {os.cpu_count()}; load average at start {results['environment']['loadavg_at_start']}, "
          f"at end {results['environment']['loadavg_at_end']}")
    print(f"server log warning/error lines: {results['server_log_problem_lines']}")
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
