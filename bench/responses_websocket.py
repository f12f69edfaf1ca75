"""Benchmark: an agent loop of 20 function-call round trips on the Responses API, over WebSocket mode
against the same loop over HTTP (streamed, `previous_response_id` chains).

Each loop is 21 turns: a user message with one function tool, then 20 times the call's output with
`previous_response_id`, the model (scripted, instant) calling the tool again until its last turn
answers in text. Measured per turn: the latency from sending the request to its terminal event, and
the server's CPU (its process plus its embedded Postgres) over the whole loop divided by its turns.
Variants, interleaved round by round: HTTP with `store: true` (the only way to chain over HTTP),
WebSocket with `store: true`, WebSocket with `store: false` (the connection keeps the chain).

    .venv/bin/python bench/responses_websocket.py --out bench/results/responses_websocket.json

Starts its own scripted model and `assistgraph serve` (embedded Postgres, temp data dir) and stops
both at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai

from bench._harness import environment, print_table, script_model, sdk_kwargs, stack, summary_ms, write_json

TOOL = {"type": "function", "name": "step", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
VARIANTS = ("http, store", "websocket, store", "websocket, no store")


def script(model_url: str, model: str, round_trips: int) -> None:
    calls = [{"tool_calls": [{"name": "step", "arguments": {"n": i}, "id": f"call_{i}"}]} for i in range(round_trips)]
    script_model(model_url, model, [*calls, {"content": "done"}])


def _inputs(round_trips: int):
    yield "Run the loop."
    for i in range(round_trips):
        yield [{"type": "function_call_output", "call_id": f"call_{i}", "output": f"ok {i}"}]


def http_loop(client: openai.OpenAI, model: str, round_trips: int) -> list[float]:
    times, previous = [], None
    for given in _inputs(round_trips):
        t0 = time.perf_counter()
        with client.responses.create(
            model=model, input=given, tools=[TOOL], previous_response_id=previous, stream=True
        ) as stream:
            for event in stream:
                if event.type in TERMINAL:
                    final = event.response
        times.append(time.perf_counter() - t0)
        if final.status != "completed":
            raise RuntimeError(f"turn ended {final.status}: {final.error}")
        previous = final.id
    return times


def websocket_loop(client: openai.OpenAI, model: str, round_trips: int, *, store: bool) -> list[float]:
    times, previous = [], None
    with client.responses.connect() as connection:
        for given in _inputs(round_trips):
            t0 = time.perf_counter()
            fields = {"previous_response_id": previous} if previous else {}
            connection.response.create(model=model, input=given, tools=[TOOL], store=store, **fields)
            while True:
                event = json.loads(connection.recv_bytes())
                if event["type"] == "error":
                    raise RuntimeError(f"error event: {event['error']}")
                if event["type"] in TERMINAL:
                    break
            times.append(time.perf_counter() - t0)
            if event["response"]["status"] != "completed":
                raise RuntimeError(f"turn ended {event['response']['status']}: {event['response']['error']}")
            previous = event["response"]["id"]
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=20, help="function-call round trips per loop (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="loops per variant, interleaved (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed loops per variant first (default 1)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy the server/model logs into this directory")
    args = parser.parse_args(argv)

    results: dict = {"benchmark": "responses_websocket", "environment": environment(), "params": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu_per_turn: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with stack(keep_logs=args.keep_logs) as s:
        client = openai.OpenAI(**sdk_kwargs(s.server_url))
        loops = {
            "http, store": lambda m: http_loop(client, m, args.round_trips),
            "websocket, store": lambda m: websocket_loop(client, m, args.round_trips, store=True),
            "websocket, no store": lambda m: websocket_loop(client, m, args.round_trips, store=False),
        }
        for round_no in range(args.warmup + args.rounds):
            timed = round_no >= args.warmup
            for variant, loop in loops.items():
                model = f"bench-loop-{uuid.uuid4().hex[:8]}"
                script(s.model_url, model, args.round_trips)
                before = s.cpu_seconds()
                times = loop(model)
                after = s.cpu_seconds()
                if timed:
                    latencies[variant] += times
                    server = (after["server"] - before["server"]) + (after["postgres"] - before["postgres"])
                    cpu_per_turn[variant].append(server / len(times))
            print(f"# round {round_no + 1}/{args.warmup + args.rounds}{'' if timed else ' (warm-up)'} done", flush=True)
        client.close()
        results["server_log_problems"] = s.server_log_problems()[:20]

    http_p50 = summary_ms(latencies["http, store"])["p50"]
    http_cpu = statistics.median(cpu_per_turn["http, store"]) * 1000
    rows = []
    for variant in VARIANTS:
        latency = summary_ms(latencies[variant])
        cpu_ms = statistics.median(cpu_per_turn[variant]) * 1000
        results[variant] = {"turn_latency_ms": latency, "server_cpu_ms_per_turn": round(cpu_ms, 3),
                            "server_cpu_ms_per_turn_by_round": [round(c * 1000, 3) for c in cpu_per_turn[variant]]}
        rows.append((variant, latency["p50"], latency["p90"], round(latency["p50"] / http_p50, 2), round(cpu_ms, 2),
                     round(cpu_ms / http_cpu, 2)))
    print_table(
        f"Agent loop, {args.round_trips} function-call round trips ({args.rounds} loops per variant)",
        rows,
        ("variant", "turn p50 ms", "turn p90 ms", "p50 / http", "server CPU ms/turn", "CPU / http"),
    )
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
