"""Benchmark: added latency and throughput of non-streaming runs (create run -> poll until completed).

Issue targets (2 cores): <= 30 ms p50 added latency of a one-call run; >= 50 runs/s. The SDK's poll
helpers, whose GET the server holds until the run settles: answered within 800 ms of the model's
answer, and a plain GET of an active run (never held) within 500 ms.

    .venv/bin/python bench/runs.py --out bench/results/runs.json

Starts its own scripted model and `assistgraph serve` (embedded Postgres, temp data dir) and stops
both at the end. The scripted model answers every call instantly with its default echo.
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

import httpx
import openai

from bench._harness import (
    cores_busy,
    environment,
    print_table,
    script_model,
    sdk_kwargs,
    stack,
    summary_ms,
    verdict,
    write_json,
)

MODEL = "bench-echo"  # nothing scripted for it: the scripted model answers with an instant echo
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"}
TARGET_ADDED_P50_MS = 30.0
TARGET_RUNS_PER_S = 50.0
HELD_MODEL = "bench-slow"  # scripted to answer after HELD_DELAY_S
HELD_DELAY_S = 1.0
TARGET_HELD_POLL_MS = 800.0
TARGET_PLAIN_GET_MS = 500.0


# --- the model's own time -----------------------------------------------------------------------


def measure_model(model_url: str, samples: int, warmup: int) -> dict:
    """Time direct chat completions against the scripted model, the way the server calls it
    (streaming with usage, like langchain's ChatOpenAI) and, for reference, non-streaming."""
    messages = [{"role": "user", "content": "hello"}]
    stream_body = {"model": MODEL, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    plain_body = {"model": MODEL, "messages": messages}
    streamed, plain = [], []
    with httpx.Client(timeout=30) as http:
        for i in range(warmup + samples):
            t0 = time.perf_counter()
            with http.stream("POST", f"{model_url}/chat/completions", json=stream_body) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if line.startswith("data: [DONE]"):
                        break
            t1 = time.perf_counter()
            r2 = http.post(f"{model_url}/chat/completions", json=plain_body)
            r2.raise_for_status()
            t2 = time.perf_counter()
            if i >= warmup:
                streamed.append(t1 - t0)
                plain.append(t2 - t1)
    return {"streaming": summary_ms(streamed), "non_streaming": summary_ms(plain)}


# --- one run at a time --------------------------------------------------------------------------


def poll_until_done(client: openai.OpenAI, thread_id: str, run_id: str, interval: float, timeout: float = 60):
    deadline = time.perf_counter() + timeout
    polls = 0
    while True:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        polls += 1
        if run.status in TERMINAL:
            return run, polls
        if time.perf_counter() > deadline:
            raise TimeoutError(f"run {run_id} still {run.status} after {timeout}s")
        time.sleep(interval)


def measure_latency(url: str, assistant_id: str, samples: int, warmup: int, interval: float) -> dict:
    client = openai.OpenAI(**sdk_kwargs(url))
    latencies, creates, polls, failures = [], [], [], []
    for i in range(warmup + samples):
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
        t0 = time.perf_counter()
        run = client.beta.threads.runs.create(thread.id, assistant_id=assistant_id)
        t_created = time.perf_counter()
        run, n = poll_until_done(client, thread.id, run.id, interval)
        elapsed = time.perf_counter() - t0
        if run.status != "completed":
            failures.append(f"{run.id}: {run.status} {run.last_error}")
            continue
        if i >= warmup:
            latencies.append(elapsed)
            creates.append(t_created - t0)
            polls.append(n)
    client.close()
    return {
        "run_latency": summary_ms(latencies),
        "create_call": summary_ms(creates),
        "polls_per_run_mean": statistics.fmean(polls) if polls else None,
        "failures": failures,
        "_raw": latencies,
    }


def measure_held_polls(url: str, model_url: str, samples: int) -> dict:
    """How long after the model's answer the SDK's create_and_poll returns (its GET is held until
    the run settles, not answered at the end of the hold), and how fast a plain GET of an active
    run answers (it is never held)."""
    client = openai.OpenAI(**sdk_kwargs(url))
    assistant = client.beta.assistants.create(model=HELD_MODEL, name="bench held polls")
    after_model, plain = [], []
    for _ in range(samples):
        script_model(model_url, HELD_MODEL, [{"content": "slow answer", "delay": HELD_DELAY_S}] * 2)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
        t0 = time.perf_counter()
        client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        after_model.append(time.perf_counter() - t0 - HELD_DELAY_S)
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        t0 = time.perf_counter()
        client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
        plain.append(time.perf_counter() - t0)
        client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    client.close()
    return {"poll_helper_after_model": summary_ms(after_model), "plain_get_of_active_run": summary_ms(plain)}


# --- many clients at once -----------------------------------------------------------------------


async def measure_throughput(
    s, assistant_id: str, clients: int, duration: float, warmup: float, interval: float
) -> dict:
    client = openai.AsyncOpenAI(**sdk_kwargs(s.server_url))
    threads = await asyncio.gather(
        *(client.beta.threads.create(messages=[{"role": "user", "content": "hello"}]) for _ in range(clients))
    )
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    completed: list[tuple[float, float]] = []  # (finished at, latency) of runs finished in the window
    errors: list[str] = []
    polls = [0]

    async def worker(thread_id: str) -> None:
        while time.perf_counter() < window[1]:
            t0 = time.perf_counter()
            try:
                if interval is None:
                    # What applications do: the SDK's poll helper, paced by openai-poll-after-ms.
                    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
                else:
                    run = await client.beta.threads.runs.create(thread_id, assistant_id=assistant_id)
                    while True:
                        run = await client.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
                        polls[0] += 1
                        if run.status in TERMINAL:
                            break
                        if time.perf_counter() - t0 > 60:
                            raise TimeoutError(f"run {run.id} still {run.status} after 60s")
                        await asyncio.sleep(interval)
                t1 = time.perf_counter()
                if run.status != "completed":
                    raise RuntimeError(f"run {run.id} ended {run.status}: {run.last_error}")
                if window[0] <= t1 <= window[1]:
                    completed.append((t1, t1 - t0))
            except Exception as exc:  # counted, and the client carries on
                if window[0] <= time.perf_counter() <= window[1]:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.05)

    cpu: dict = {}

    async def cpu_meter() -> None:
        await asyncio.sleep(window[0] - time.perf_counter())
        before = s.cpu_seconds()
        await asyncio.sleep(window[1] - time.perf_counter())
        after = s.cpu_seconds()
        cpu.update(cores_busy(before, after, duration))

    await asyncio.gather(cpu_meter(), *(worker(t.id) for t in threads))
    await client.close()
    latencies = [lat for _, lat in completed]
    return {
        "clients": clients,
        "duration_s": duration,
        "warmup_s": warmup,
        "completed": len(completed),
        "runs_per_s": len(completed) / duration,
        "errors": len(errors),
        "error_samples": errors[:10],
        "run_latency_under_load": summary_ms(latencies),
        "polls_per_s": polls[0] / (time.perf_counter() - start),
        "cores_busy": cpu,
        # CPU the server process spent per completed run: with the GIL it has about one core, so
        # 1000 / this is roughly its runs/s ceiling, whatever else shares the machine.
        "server_cpu_ms_per_run": round(cpu.get("server", 0) * duration / len(completed) * 1000, 2)
        if completed else None,
    }


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="latency samples (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="latency warm-up runs (default 20)")
    parser.add_argument("--model-samples", type=int, default=200, help="direct model calls timed (default 200)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="poll interval in ms (default 5)")
    parser.add_argument("--throughput-poll", choices=["sdk", "fixed"], default="sdk",
                        help="throughput clients poll with the SDK's create_and_poll (paced by the server's "
                             "openai-poll-after-ms header; default) or every --poll-ms")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients for throughput (default 32)")
    parser.add_argument("--duration", type=float, default=20.0, help="throughput window in s (default 20)")
    parser.add_argument("--throughput-warmup", type=float, default=3.0, help="throughput warm-up in s (default 3)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--poll-after-ms", type=int, default=None, help="ASSISTGRAPH_POLL_AFTER_MS of the server")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="processes of `assistgraph serve` (ASSISTGRAPH_WORKERS; default 1)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy the server/model logs into this directory")
    parser.add_argument("--profile-server", type=Path, help="run the server under cProfile, stats to this file "
                        "(slows it down: figures are then not comparable)")
    args = parser.parse_args(argv)
    interval = args.poll_ms / 1000

    results: dict = {"benchmark": "runs", "environment": environment(), "params": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    server_env = {"ASSISTGRAPH_WORKERS": str(args.server_workers), **({"ASSISTGRAPH_POLL_AFTER_MS": str(args.poll_after_ms)} if args.poll_after_ms else {})}
    with stack(server_env=server_env, keep_logs=args.keep_logs, profile=args.profile_server) as s:
        client = openai.OpenAI(**sdk_kwargs(s.server_url))
        assistant = client.beta.assistants.create(model=MODEL, name="bench")
        client.close()

        if not args.skip_latency:
            print("# measuring the scripted model directly ...", flush=True)
            model = measure_model(s.model_url, args.model_samples, warmup=20)
            print(f"# measuring single-run latency ({args.warmup} warm-up + {args.samples} samples) ...", flush=True)
            cpu: dict = {}
            with s.cpu_usage(cpu):
                lat = measure_latency(s.server_url, assistant.id, args.samples, args.warmup, interval)
            lat["cores_busy"] = cpu
            raw = lat.pop("_raw")
            model_p50_s = model["streaming"]["p50"] / 1000
            added = [v - model_p50_s for v in raw]
            lat["model_time_subtracted_ms"] = model["streaming"]["p50"]
            lat["added_latency"] = summary_ms(added)
            results["model_direct"] = model
            results["latency"] = lat
            print("# measuring the poll helpers' held GETs ...", flush=True)
            results["held_polls"] = measure_held_polls(s.server_url, s.model_url, samples=10)

        if not args.skip_throughput:
            print(f"# measuring throughput: {args.clients} clients, {args.throughput_warmup}s warm-up + "
                  f"{args.duration}s ...", flush=True)
            results["throughput"] = asyncio.run(measure_throughput(
                s, assistant.id, args.clients, args.duration, args.throughput_warmup,
                None if args.throughput_poll == "sdk" else interval))

        problems = s.server_log_problems()
        results["server_log_problem_lines"] = len(problems)
        results["server_log_problem_samples"] = problems[:20]
    results["environment"]["loadavg_at_end"] = environment()["loadavg_at_start"]

    rows = []
    if "latency" in results:
        m, lat = results["model_direct"], results["latency"]
        for label, d in (("model direct, streaming", m["streaming"]), ("model direct, non-streaming", m["non_streaming"]),
                         ("runs.create call alone", lat["create_call"]),
                         ("run latency (create -> completed seen)", lat["run_latency"]),
                         ("added latency (run - model p50)", lat["added_latency"])):
            rows.append((label, d["n"], d["p50"], d["p90"], d["p99"], d["mean"]))
        print_table("Single-run latency (ms)", rows, ("measure", "n", "p50", "p90", "p99", "mean"))
        if lat["failures"]:
            print(f"!! {len(lat['failures'])} runs did not complete: {lat['failures'][:3]}")
    if "throughput" in results:
        t = results["throughput"]
        ul = t["run_latency_under_load"]
        print_table("Throughput", [(t["clients"], t["duration_s"], t["completed"], t["runs_per_s"], t["errors"],
                                    ul.get("p50"), ul.get("p99"), t["polls_per_s"], t["server_cpu_ms_per_run"])],
                    ("clients", "window s", "completed", "runs/s", "errors", "lat p50 ms", "lat p99 ms", "polls/s",
                     "server CPU ms/run"))
        for e in t["error_samples"][:3]:
            print(f"!! {e}")
    for phase in ("latency", "throughput"):
        if phase in results:
            cpu = results[phase]["cores_busy"]
            print(f"cores busy during {phase}: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "wall_s"))
    checks = []
    if "latency" in results:
        v = results["latency"]["added_latency"].get("p50", float("nan"))
        checks.append(("added latency p50 <= 30 ms", v, verdict(v, TARGET_ADDED_P50_MS, at_most=True)))
        held = results["held_polls"]
        v = held["poll_helper_after_model"].get("max", float("nan"))
        checks.append(("held poll answered <= 800 ms after the model", v, verdict(v, TARGET_HELD_POLL_MS, at_most=True)))
        v = held["plain_get_of_active_run"].get("max", float("nan"))
        checks.append(("plain GET of an active run <= 500 ms", v, verdict(v, TARGET_PLAIN_GET_MS, at_most=True)))
    if "throughput" in results:
        v = results["throughput"]["runs_per_s"]
        checks.append(("throughput >= 50 runs/s", v, verdict(v, TARGET_RUNS_PER_S, at_most=False)))
        checks.append(("throughput errors == 0", results["throughput"]["errors"],
                       "PASS" if results["throughput"]["errors"] == 0 else "FAIL"))
    results["targets"] = [{"target": c[0], "value": c[1], "verdict": c[2]} for c in checks]
    print_table("Issue targets (2 cores)", checks, ("target", "value", "verdict"))
    print(f"server log warning/error lines: {results['server_log_problem_lines']}")
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
