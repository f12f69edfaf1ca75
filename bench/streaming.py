"""Benchmark: streaming runs — added time-to-first-token, tokens/s relayed in one stream, and 100
concurrent streams.

Issue targets (2 cores): <= 20 ms p50 added TTFT; >= 2,000 tokens/s relayed in one stream;
100 concurrent streams complete with zero errors.

    .venv/bin/python bench/streaming.py --out bench/results/streaming.json

Starts its own scripted model and `assistgraph serve` (embedded Postgres, temp data dir) and stops
both at the end. "Tokens" are `thread.message.delta` events (one per scripted model chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import openai

from bench._harness import (
    SSEDecoder,
    environment,
    print_table,
    script_model,
    sdk_kwargs,
    stack,
    summary_ms,
    verdict,
    write_json,
)

ECHO_MODEL = "bench-echo"  # nothing scripted: instant "echo: <user text>" in 4-char chunks
TARGET_ADDED_TTFT_P50_MS = 20.0
TARGET_TOKENS_PER_S = 2000.0
TARGET_CONCURRENT = 100
SERVER_HEADERS = {"OpenAI-Beta": "assistants=v2", "Authorization": "Bearer sk-bench-client"}


def long_text(chunks: int, chunk_size: int) -> str:
    """Deterministic text exactly chunks * chunk_size characters long."""
    words, n = [], 0
    while n < chunks * chunk_size:
        w = f"w{len(words)} "
        words.append(w)
        n += len(w)
    return "".join(words)[: chunks * chunk_size]


# --- SSE over raw httpx -------------------------------------------------------------------------


def iter_sse(response: httpx.Response):
    """(event, data, arrival perf_counter) for each SSE block; comments skipped."""
    decoder = SSEDecoder()
    for line in response.iter_lines():
        done = decoder.feed(line)
        if done is not None:
            yield *done, time.perf_counter()


def stream_run(http: httpx.Client, server_url: str, thread_id: str, assistant_id: str, *, keep_deltas: bool):
    """POST a streaming run; return (t_sent, t_first_delta, delta times, text, last run event)."""
    deltas, text, last_run_event, t_first = [], [], None, None
    t0 = time.perf_counter()
    with http.stream(
        "POST", f"{server_url}/threads/{thread_id}/runs",
        json={"assistant_id": assistant_id, "stream": True}, headers=SERVER_HEADERS,
    ) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        for event, data, at in iter_sse(r):
            if event == "thread.message.delta":
                if t_first is None:
                    t_first = at
                if keep_deltas:
                    deltas.append(at)
                    for part in json.loads(data)["delta"]["content"]:
                        text.append(part.get("text", {}).get("value", ""))
            elif event and event.startswith("thread.run.") and not event.startswith("thread.run.step."):
                last_run_event = event
            elif event == "error":
                raise RuntimeError(f"error event: {data[:300]}")
            if data == "[DONE]":
                break
    return t0, t_first, deltas, "".join(text), last_run_event


def model_stream(http: httpx.Client, model_url: str, model: str):
    """Stream a chat completion directly from the scripted model: (t_sent, content chunk arrival times, text)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True,
            "stream_options": {"include_usage": True}}
    times, text = [], []
    t0 = time.perf_counter()
    with http.stream("POST", f"{model_url}/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    times.append(time.perf_counter())
                    text.append(piece)
    return t0, times, "".join(text)


# --- 1. added time-to-first-token ---------------------------------------------------------------


def measure_ttft(s, assistant_id: str, samples: int, warmup: int) -> dict:
    with httpx.Client(timeout=60) as http:
        model_ttfc = []
        for i in range(warmup + samples):
            t0, times, _ = model_stream(http, s.model_url, ECHO_MODEL)
            if i >= warmup:
                model_ttfc.append(times[0] - t0)

        ttft, failures = [], []
        for i in range(warmup + samples):
            thread = http.post(f"{s.server_url}/threads", headers=SERVER_HEADERS,
                               json={"messages": [{"role": "user", "content": "hello"}]}).json()
            t0, t_first, _, _, last = stream_run(http, s.server_url, thread["id"], assistant_id, keep_deltas=False)
            if t_first is None or last != "thread.run.completed":
                failures.append(f"{thread['id']}: first delta {t_first}, last run event {last}")
                continue
            if i >= warmup:
                ttft.append(t_first - t0)
    model_p50 = statistics.median(model_ttfc)
    return {
        "model_ttfc": summary_ms(model_ttfc),
        "ttft": summary_ms(ttft),
        "model_ttfc_subtracted_ms": round(model_p50 * 1000, 3),
        "added_ttft": summary_ms([v - model_p50 for v in ttft]),
        "failures": failures,
    }


# --- 2. tokens/s relayed in one stream ----------------------------------------------------------


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")


def measure_relay(s, assistant_id: str, model: str, chunks: int, chunk_size: int, reps: int) -> dict:
    content = long_text(chunks, chunk_size)
    turn = {"content": content, "chunk_size": chunk_size, "chunk_delay": 0}
    direct, relayed = [], []
    with httpx.Client(timeout=300) as http:
        for _ in range(reps):
            direct_model = f"{model}-direct-{uuid.uuid4().hex[:6]}"
            script_model(s.model_url, direct_model, [turn])
            _, times, text = model_stream(http, s.model_url, direct_model)
            direct.append({"chunks": len(times), "chunks_per_s": rate(times), "text_ok": text == content,
                           "duration_s": times[-1] - times[0]})

        for _ in range(reps):
            script_model(s.model_url, model, [turn])
            thread = http.post(f"{s.server_url}/threads", headers=SERVER_HEADERS,
                               json={"messages": [{"role": "user", "content": "hello"}]}).json()
            cpu0 = s.cpu_seconds()["server"]
            t0, _, deltas, text, last = stream_run(http, s.server_url, thread["id"], assistant_id, keep_deltas=True)
            t_end = time.perf_counter()
            server_cpu = s.cpu_seconds()["server"] - cpu0
            relayed.append({
                "deltas": len(deltas), "deltas_per_s": rate(deltas), "chars_per_s": len(text) / (deltas[-1] - deltas[0]),
                # The server may coalesce several model chunks into one delta event: count tokens as
                # model chunks relayed (characters / chunk_size) per second as well.
                "tokens_per_s": len(text) / chunk_size / (deltas[-1] - deltas[0]),
                "text_ok": text == content, "last_run_event": last,
                "first_to_last_delta_s": deltas[-1] - deltas[0], "request_to_done_s": t_end - t0,
                "server_cores_busy": server_cpu / (t_end - t0),
                "server_cpu_us_per_delta": server_cpu / len(deltas) * 1e6,
            })
    direct_median = statistics.median(d["chunks_per_s"] for d in direct)
    relayed_median = statistics.median(r["deltas_per_s"] for r in relayed)
    tokens_median = statistics.median(r["tokens_per_s"] for r in relayed)
    return {
        "chunks": chunks, "chunk_size": chunk_size, "reps": reps,
        "model_direct": direct, "relayed": relayed,
        "model_chunks_per_s_median": direct_median,
        "relayed_deltas_per_s_median": relayed_median,
        "relayed_over_direct": relayed_median / direct_median,
        "relayed_tokens_per_s_median": tokens_median,
        "relayed_tokens_over_direct": tokens_median / direct_median,
        "server_cpu_us_per_delta_median": statistics.median(r["server_cpu_us_per_delta"] for r in relayed),
    }


# --- 3. concurrent streams ----------------------------------------------------------------------


async def measure_concurrent(s, assistant_id: str, model: str, streams: int, chunks: int, chunk_size: int,
                             chunk_delay: float, timeout: float) -> dict:
    content = long_text(chunks, chunk_size)
    script_model(s.model_url, model, [{"content": content, "chunk_size": chunk_size, "chunk_delay": chunk_delay}] * streams)
    client = openai.AsyncOpenAI(**sdk_kwargs(s.server_url))
    threads = await asyncio.gather(
        *(client.beta.threads.create(messages=[{"role": "user", "content": "hello"}]) for _ in range(streams))
    )

    async def one(thread_id: str) -> dict:
        t0 = time.perf_counter()
        text, t_first, last, deltas = [], None, None, 0
        try:
            async with asyncio.timeout(timeout):
                stream = await client.beta.threads.runs.create(thread_id, assistant_id=assistant_id, stream=True)
                async for event in stream:
                    if event.event == "thread.message.delta":
                        deltas += 1
                        if t_first is None:
                            t_first = time.perf_counter()
                        for part in event.data.delta.content or []:
                            if part.type == "text" and part.text and part.text.value:
                                text.append(part.text.value)
                    elif event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step."):
                        last = event.event
                    elif event.event == "error":
                        raise RuntimeError(f"error event: {event.data}")
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300], "last": last, "deltas": deltas}
        t1 = time.perf_counter()
        joined = "".join(text)
        ok = last == "thread.run.completed" and joined == content
        return {"ok": ok, "last": last, "deltas": deltas, "text_ok": joined == content, "chars": len(joined),
                "ttft": (t_first - t0) if t_first else None, "duration": t1 - t0,
                "error": None if ok else f"last run event {last}, text ok {joined == content}"}

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(t.id) for t in threads))
    wall = time.perf_counter() - start
    await client.close()
    completed = sum(o["last"] == "thread.run.completed" for o in outcomes)
    errors = [o["error"] for o in outcomes if not o["ok"]]
    return {
        "streams": streams, "chunks": chunks, "chunk_size": chunk_size, "chunk_delay_s": chunk_delay,
        "model_stream_time_s": chunks * chunk_delay,
        "completed": completed, "errors": len(errors), "error_samples": errors[:10],
        "text_mismatches": sum(1 for o in outcomes if o.get("text_ok") is False),
        "wall_s": wall,
        "ttft": summary_ms([o["ttft"] for o in outcomes if o.get("ttft")]),
        "stream_duration": summary_ms([o["duration"] for o in outcomes if o.get("duration")]),
        "deltas_total": sum(o["deltas"] for o in outcomes),
        "deltas_per_s_aggregate": sum(o["deltas"] for o in outcomes) / wall,
        "tokens_per_s_aggregate": sum(o.get("chars", 0) for o in outcomes) / chunk_size / wall,
    }


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft-samples", type=int, default=100, help="TTFT samples (default 100)")
    parser.add_argument("--ttft-warmup", type=int, default=10, help="TTFT warm-up runs (default 10)")
    parser.add_argument("--relay-chunks", type=int, default=5000, help="chunks in the long answer (default 5000)")
    parser.add_argument("--relay-chunk-size", type=int, default=4, help="characters per chunk (default 4)")
    parser.add_argument("--relay-reps", type=int, default=3, help="repetitions of the long stream (default 3)")
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams (default 100)")
    parser.add_argument("--stream-chunks", type=int, default=200, help="chunks per concurrent answer (default 200)")
    parser.add_argument("--stream-chunk-size", type=int, default=4, help="chars per chunk, concurrent (default 4)")
    parser.add_argument("--stream-chunk-delay", type=float, default=0.005,
                        help="model delay between chunks, concurrent (default 0.005 s, ~1 s per answer)")
    parser.add_argument("--stream-timeout", type=float, default=120, help="per-stream timeout in s (default 120)")
    parser.add_argument("--skip", action="append", default=[], choices=["ttft", "relay", "concurrent"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy the server/model logs into this directory")
    parser.add_argument("--profile-server", type=Path, help="run the server under cProfile, stats to this file "
                        "(slows it down: figures are then not comparable)")
    args = parser.parse_args(argv)

    results: dict = {"benchmark": "streaming", "environment": environment(), "params": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with stack(keep_logs=args.keep_logs, profile=args.profile_server) as s:
        client = openai.OpenAI(**sdk_kwargs(s.server_url))
        echo = client.beta.assistants.create(model=ECHO_MODEL, name="bench-echo")
        relay_model, conc_model = f"bench-long-{uuid.uuid4().hex[:6]}", f"bench-conc-{uuid.uuid4().hex[:6]}"
        relay = client.beta.assistants.create(model=relay_model, name="bench-long")
        conc = client.beta.assistants.create(model=conc_model, name="bench-concurrent")
        client.close()

        if "ttft" not in args.skip:
            print(f"# measuring TTFT ({args.ttft_warmup} warm-up + {args.ttft_samples} samples) ...", flush=True)
            cpu: dict = {}
            with s.cpu_usage(cpu):
                results["ttft"] = measure_ttft(s, echo.id, args.ttft_samples, args.ttft_warmup)
            results["ttft"]["cores_busy"] = cpu
        if "relay" not in args.skip:
            print(f"# measuring relay rate ({args.relay_reps} x {args.relay_chunks} chunks) ...", flush=True)
            cpu = {}
            with s.cpu_usage(cpu):
                results["relay"] = measure_relay(s, relay.id, relay_model, args.relay_chunks, args.relay_chunk_size,
                                                 args.relay_reps)
            results["relay"]["cores_busy"] = cpu
        if "concurrent" not in args.skip:
            print(f"# measuring {args.streams} concurrent streams ...", flush=True)
            cpu = {}
            with s.cpu_usage(cpu):
                results["concurrent"] = asyncio.run(measure_concurrent(
                    s, conc.id, conc_model, args.streams, args.stream_chunks, args.stream_chunk_size,
                    args.stream_chunk_delay, args.stream_timeout))
            results["concurrent"]["cores_busy"] = cpu
            c = results["concurrent"]
            c["server_cpu_us_per_delta"] = round(cpu["server"] * cpu["wall_s"] / max(c["deltas_total"], 1) * 1e6, 1)

        problems = s.server_log_problems()
        results["server_log_problem_lines"] = len(problems)
        results["server_log_problem_samples"] = problems[:20]
    results["environment"]["loadavg_at_end"] = environment()["loadavg_at_start"]

    checks = []
    if "ttft" in results:
        t = results["ttft"]
        rows = [(label, d["n"], d["p50"], d["p90"], d["p99"], d["mean"]) for label, d in (
            ("model direct: time to first chunk", t["model_ttfc"]),
            ("run: request -> first message.delta", t["ttft"]),
            ("added TTFT (run - model p50)", t["added_ttft"]))]
        print_table("Time to first token (ms)", rows, ("measure", "n", "p50", "p90", "p99", "mean"))
        if t["failures"]:
            print(f"!! {len(t['failures'])} TTFT runs failed: {t['failures'][:3]}")
        v = t["added_ttft"].get("p50", float("nan"))
        checks.append(("added TTFT p50 <= 20 ms", v, verdict(v, TARGET_ADDED_TTFT_P50_MS, at_most=True)))
    if "relay" in results:
        r = results["relay"]
        rows = [(f"model direct #{i + 1}", d["chunks"], d["chunks_per_s"], d["duration_s"], d["text_ok"])
                for i, d in enumerate(r["model_direct"])]
        rows = [(label, n, v, v, dur, ok) for label, n, v, dur, ok in rows]
        rows += [(f"relayed #{i + 1} ({d['last_run_event']})", d["deltas"], d["deltas_per_s"], d["tokens_per_s"],
                  d["first_to_last_delta_s"], d["text_ok"]) for i, d in enumerate(r["relayed"])]
        print_table(f"One long stream ({r['chunks']} chunks x {r['chunk_size']} chars, chunk_delay 0)", rows,
                    ("stream", "chunks/deltas", "events/s", "tokens/s", "first->last s", "text ok"))
        print(f"median relayed: {r['relayed_deltas_per_s_median']:,.0f} delta events/s, "
              f"{r['relayed_tokens_per_s_median']:,.0f} tokens (model chunks)/s; model direct "
              f"{r['model_chunks_per_s_median']:,.0f} chunks/s; ratios {r['relayed_over_direct']:.3f} (events), "
              f"{r['relayed_tokens_over_direct']:.3f} (tokens); server CPU "
              f"{r['server_cpu_us_per_delta_median']:,.0f} us/delta event")
        v = r["relayed_tokens_per_s_median"]
        checks.append(("relayed tokens/s >= 2000 (model chunks)", v, verdict(v, TARGET_TOKENS_PER_S, at_most=False)))
        # Not a check on delta events/s: the server gathers a fast model's tokens into one delta per
        # ASSISTGRAPH_DELTA_WINDOW_MS by design, so their rate says nothing of the tokens relayed.
    if "concurrent" in results:
        c = results["concurrent"]
        print_table(f"{c['streams']} concurrent streams ({c['chunks']} chunks, chunk_delay {c['chunk_delay_s']}s)", [(
            c["streams"], c["completed"], c["errors"], c["text_mismatches"], c["wall_s"], c["ttft"].get("p50"),
            c["ttft"].get("p99"), c["stream_duration"].get("p50"), c["stream_duration"].get("max"))],
            ("streams", "completed", "errors", "text bad", "wall s", "ttft p50 ms", "ttft p99 ms",
             "dur p50 ms", "dur max ms"))
        print(f"aggregate across all streams: {c['deltas_per_s_aggregate']:,.0f} delta events/s, "
              f"{c['tokens_per_s_aggregate']:,.0f} tokens (model chunks)/s; server CPU "
              f"{c['server_cpu_us_per_delta']:,.0f} us/delta (incl. run set-up)")
        for e in c["error_samples"][:3]:
            print(f"!! {e}")
        ok = c["completed"] == c["streams"] and c["errors"] == 0
        checks.append((f"{TARGET_CONCURRENT} concurrent streams, 0 errors",
                       f"{c['completed']}/{c['streams']}, {c['errors']} err",
                       ("PASS" if ok else "FAIL") if c["streams"] >= TARGET_CONCURRENT else "n/a (fewer streams)"))
    for phase in ("ttft", "relay", "concurrent"):
        if phase in results:
            cpu = results[phase]["cores_busy"]
            print(f"cores busy during {phase}: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "wall_s"))
    results["targets"] = [{"target": c[0], "value": c[1], "verdict": c[2]} for c in checks]
    print_table("Issue targets (2 cores)", checks, ("target", "value", "verdict"))
    print(f"server log warning/error lines: {results['server_log_problem_lines']}")
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
