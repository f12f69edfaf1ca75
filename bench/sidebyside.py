"""Benchmark: assistgraph side by side with LangGraph's own server (`langgraph dev`), both serving the
assistant graph of langgraph.json against the same scripted model, with the floor under both: the
scripted model alone, and the graph run in this process (no server).

    .venv/bin/python bench/sidebyside.py --out bench/results/sidebyside.json
    .venv/bin/python bench/sidebyside.py --quick        # smoke run, small counts

Measured in interleaved rounds (each measure: assistgraph, then langgraph dev, then the in-process
graph), reported as medians over the rounds:

1. runs/s with --clients concurrent clients, each creating a one-model-call run and waiting for it;
2. added latency p50 of one run (created -> completion seen, minus the model's own time for the call);
3. added time-to-first-token p50 of a streamed run (minus the model's own time to its first chunk);
4. tokens/s relayed in one long stream (tokens = model chunks);
5. --streams concurrent streams: completed, errors, wall time, peak server RSS (once each, after the
   rounds; assistgraph's RSS leaves out its embedded Postgres);
6. server CPU per run in the throughput window (assistgraph's embedded Postgres reported apart).

Each server is driven the way its users would: assistgraph with the openai SDK (`create_and_poll`),
langgraph dev with langgraph_sdk (`runs.wait`, one request that returns when the run is done). Streams
are read as raw SSE with httpx on both, so neither side pays for an SDK building objects per event
(the openai SDK builds a pydantic model for each delta).

langgraph dev runs with its defaults except for how many runs it executes at once: `langgraph dev`
passes 1 (`--n-jobs-per-worker` says 10 but the CLI sends 1), which would queue every concurrent run
behind the previous one; --dev-jobs sets it, by default to 100 like assistgraph's executor
(ASSISTGRAPH_EXECUTOR_CONCURRENCY). Its in-memory store, and its pickling to disk every 10 s, are
left as they are, and so is its queue: idle, it looks for new runs every 0.5 s and takes only runs
created before its previous look, so a run there waits up to a second before it starts. It runs in a
temporary directory with a copy of langgraph.json pointing at this
checkout, so its `.langgraph_api/` never lands in the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import openai
from langgraph_sdk import get_client

from bench._harness import (
    ROOT,
    Child,
    SSEDecoder,
    Stack,
    cores_busy,
    environment,
    free_port,
    percentile,
    postmaster_pid,
    print_table,
    script_model,
    sdk_kwargs,
    stack,
    start_child,
    stop_child,
    summary_ms,
    tree_cpu,
    tree_rss_bytes,
    wait_http_ok,
    write_json,
)
from bench.streaming import SERVER_HEADERS, long_text, rate

ECHO_MODEL = "bench-echo"  # nothing scripted: an instant "echo: hello" in 4-character chunks
LONG_MODEL = "bench-long"  # one long answer, as fast as the model can send it
CONC_MODEL = "bench-conc"  # a paced answer for the concurrent streams
MODELS = (ECHO_MODEL, LONG_MODEL, CONC_MODEL)
MODEL_KEY = "sk-bench-model-key"
USER_TEXT = "hello"
DEV_INPUT = {"history": [{"role": "user", "content": USER_TEXT}]}
A, B, FLOOR = "assistgraph", "langgraph dev", "in-process graph"

# Variables that would point langgraph dev at someone's LangSmith, OpenAI account or deployment.
_INHERITED_PREFIXES = ("OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_", "ASSISTGRAPH_", "DATABASE_URL")


class RunFailed(Exception):
    pass


def model_context(model_url: str, model: str) -> dict:
    """What a Studio user would put in the run's context to reach the scripted model; assistgraph
    builds the same Context from the assistant and its own settings."""
    # One retry, as assistgraph's (see _harness: a keep-alive connection the model closes as it is reused).
    return {"model": model, "base_url": model_url, "api_key": MODEL_KEY, "max_retries": 1}


# --- langgraph dev as a child process -----------------------------------------------------------


@dataclass
class DevServer:
    url: str
    child: Child


def _dev_config(workdir: Path) -> Path:
    """langgraph.json, with its paths made absolute so the server can run from `workdir`."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT)]
    config["graphs"] = {name: str(ROOT / spec.removeprefix("./")) for name, spec in config["graphs"].items()}
    path = workdir / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _dev_env(model_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    env.update(
        # Nothing may need the network: CLI analytics, the version check and LangSmith are off.
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        # The runs' context names the model's URL; the environment agrees, in case a run lacks it.
        OPENAI_BASE_URL=model_url,
        OPENAI_API_KEY=MODEL_KEY,
        # Ahead of site-packages, where an editable install may point at another checkout.
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def langgraph_dev(model_url: str, jobs: int, keep_logs: Path | None) -> Iterator[DevServer]:
    workdir = Path(tempfile.mkdtemp(prefix="assistgraph-bench-dev-"))
    env = _dev_env(model_url)
    assert_imports_this_checkout(env, workdir)
    port = free_port()
    args = ["-m", "langgraph_cli", "dev", "--port", str(port), "--no-browser", "--no-reload",
            "--config", str(_dev_config(workdir))]
    if jobs:
        args += ["--n-jobs-per-worker", str(jobs)]
    child = start_child("langgraph dev", args, env, workdir / "langgraph-dev.log", cwd=workdir)
    try:
        started = time.monotonic()
        wait_http_ok(f"http://127.0.0.1:{port}/ok", child, timeout=120)
        print(f"# langgraph dev ready in {time.monotonic() - started:.1f}s at http://127.0.0.1:{port}", flush=True)
        yield DevServer(f"http://127.0.0.1:{port}", child)
    except BaseException:
        print(f"--- last lines of the langgraph dev log ---\n{child.log_tail()}", file=sys.stderr)
        raise
    finally:
        stop_child(child, timeout=20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)  # its own session: anything it started and left behind
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(child.log_path, keep_logs / child.log_path.name)
        shutil.rmtree(workdir, ignore_errors=True)


def assert_imports_this_checkout(env: dict, cwd: Path) -> None:
    """A process started with `env` in `cwd` must import the graph and API of this checkout."""
    probe = "import api, graph.graph, tools; print(api.__file__, graph.graph.__file__, tools.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=120, check=False)
    files = out.stdout.split()
    if out.returncode != 0 or not files or not all(Path(f).resolve().is_relative_to(ROOT) for f in files):
        raise RuntimeError(f"a server started from {cwd} would not import this checkout: {out.stdout}{out.stderr}")


# --- the three things measured, behind one interface ---------------------------------------------


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    decoder = SSEDecoder()
    async for line in response.aiter_lines():
        done = decoder.feed(line)
        if done is not None:
            yield done


async def _open_stream(response: httpx.Response) -> None:
    if response.status_code != 200:
        await response.aread()
        raise RunFailed(f"HTTP {response.status_code}: {response.text[:300]}")


class AssistGraph:
    name = A
    cpu_keys = ("server", "postgres")  # keys of the CPU snapshot: the API processes, its Postgres

    def __init__(self, s: Stack, http: httpx.AsyncClient):
        self.s, self.http = s, http
        self.sdk = openai.AsyncOpenAI(**sdk_kwargs(s.server_url))
        self.assistants: dict[str, str] = {}

    async def setup(self) -> None:
        for model in MODELS:
            self.assistants[model] = (await self.sdk.beta.assistants.create(model=model, name=model)).id

    async def new_thread(self) -> str:
        return (await self.sdk.beta.threads.create(messages=[{"role": "user", "content": USER_TEXT}])).id

    async def run(self, thread: str, model: str) -> None:
        run = await self.sdk.beta.threads.runs.create_and_poll(thread_id=thread, assistant_id=self.assistants[model])
        if run.status != "completed":
            raise RunFailed(f"run {run.id} ended {run.status}: {run.last_error}")

    async def deltas(self, thread: str, model: str) -> AsyncIterator[str]:
        body = {"assistant_id": self.assistants[model], "stream": True}
        last = last_error = None
        async with self.http.stream("POST", f"{self.s.server_url}/threads/{thread}/runs", json=body,
                                    headers=SERVER_HEADERS) as r:
            await _open_stream(r)
            async for event, data in sse_events(r):
                if event == "thread.message.delta":
                    for part in json.loads(data)["delta"]["content"]:
                        if part.get("text", {}).get("value"):
                            yield part["text"]["value"]
                elif event == "error":
                    raise RunFailed(f"error event: {data[:300]}")
                elif event and event.startswith("thread.run.") and not event.startswith("thread.run.step."):
                    last = event
                    last_error = json.loads(data).get("last_error")
                elif data == "[DONE]":
                    break
        if last != "thread.run.completed":
            raise RunFailed(f"stream ended with {last}: {last_error}")

    def rss(self) -> int:
        pgdata = self.s.workdir / "data" / "pgdata"
        return tree_rss_bytes(self.s.server.proc.pid, skip={postmaster_pid(pgdata) or -1})

    async def aclose(self) -> None:
        await self.sdk.close()


class LangGraphDev:
    name = B
    cpu_keys = ("langgraph dev",)

    def __init__(self, dev: DevServer, model_url: str, http: httpx.AsyncClient):
        self.dev, self.model_url, self.http = dev, model_url, http
        # api_key=None: never send a LangSmith key from the environment to the local server.
        self.sdk = get_client(url=dev.url, api_key=None, timeout=120)
        self.assistant = ""

    async def setup(self) -> None:
        found = await self.sdk.assistants.search(graph_id="assistant")
        if not found:
            raise RuntimeError("langgraph dev registered no assistant for the `assistant` graph")
        self.assistant = found[0]["assistant_id"]

    async def new_thread(self) -> str:
        return (await self.sdk.threads.create())["thread_id"]

    async def run(self, thread: str, model: str) -> None:
        values = await self.sdk.runs.wait(thread, self.assistant, input=DEV_INPUT,
                                          context=model_context(self.model_url, model), raise_error=False)
        if not isinstance(values, dict) or "__error__" in values or not values.get("messages"):
            raise RunFailed(f"run ended with {str(values)[:300]}")

    async def deltas(self, thread: str, model: str) -> AsyncIterator[str]:
        # "messages-tuple" sends each token once; "messages" would resend the whole message so far.
        body = {"assistant_id": self.assistant, "input": DEV_INPUT, "context": model_context(self.model_url, model),
                "stream_mode": ["messages-tuple"]}
        async with self.http.stream("POST", f"{self.dev.url}/threads/{thread}/runs/stream", json=body) as r:
            await _open_stream(r)
            async for event, data in sse_events(r):
                if event == "messages":
                    chunk, _ = json.loads(data)
                    if chunk.get("type") == "AIMessageChunk" and isinstance(chunk.get("content"), str) and chunk["content"]:
                        yield chunk["content"]
                elif event == "error":
                    raise RunFailed(f"error event: {data[:300]}")

    def rss(self) -> int:
        return tree_rss_bytes(self.dev.child.proc.pid)

    async def aclose(self) -> None:
        await self.sdk.aclose()


class InProcess:
    """The floor: the compiled graph run by this process, no server, no checkpointer."""

    name = FLOOR
    cpu_keys = ("bench client",)  # this process, which does nothing else meanwhile

    def __init__(self, model_url: str):
        import graph.graph as module
        from graph.context import Context

        if not Path(module.__file__).resolve().is_relative_to(ROOT):
            raise RuntimeError(f"the in-process graph is not this checkout's: {module.__file__}")
        self.graph, self.model_url, self.Context = module.graph, model_url, Context

    async def setup(self) -> None:
        pass

    async def new_thread(self) -> None:
        return None

    async def run(self, thread: None, model: str) -> None:
        values = await self.graph.ainvoke(DEV_INPUT, context=self.Context(**model_context(self.model_url, model)))
        if not values.get("messages"):
            raise RunFailed(f"run ended with {str(values)[:300]}")

    async def deltas(self, thread: None, model: str) -> AsyncIterator[str]:
        context = self.Context(**model_context(self.model_url, model))
        async for chunk, _ in self.graph.astream(DEV_INPUT, context=context, stream_mode="messages"):
            if isinstance(chunk.content, str) and chunk.content:
                yield chunk.content

    def rss(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


# --- measures -----------------------------------------------------------------------------------


@dataclass
class Streamed:
    t0: float
    times: list[float]  # arrival of each text delta
    text: str


async def timed_stream(target, thread, model: str) -> Streamed:
    times, parts = [], []
    t0 = time.perf_counter()
    async for piece in target.deltas(thread, model):
        times.append(time.perf_counter())
        parts.append(piece)
    return Streamed(t0, times, "".join(parts))


async def model_stream(http: httpx.AsyncClient, model_url: str, model: str) -> tuple[Streamed, float]:
    """A streamed chat completion straight from the scripted model (the way the graph asks for one),
    and when its last byte arrived."""
    body = {"model": model, "messages": [{"role": "user", "content": USER_TEXT}], "stream": True,
            "stream_options": {"include_usage": True}}
    times, parts = [], []
    t0 = time.perf_counter()
    async with http.stream("POST", f"{model_url}/chat/completions", json=body) as r:
        await _open_stream(r)
        async for _, data in sse_events(r):
            if data == "[DONE]":
                break
            for choice in json.loads(data).get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter())
                    parts.append(choice["delta"]["content"])
    return Streamed(t0, times, "".join(parts)), time.perf_counter()


class Errors:
    """Failures are counted and sampled, never fatal: one bad run must not lose a round."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, where: str, exc: BaseException) -> None:
        self.counts[where] = self.counts.get(where, 0) + 1
        if len(self.samples) < 30:
            self.samples.append(f"{where}: {type(exc).__name__}: {exc}"[:400])


async def measure_model(http: httpx.AsyncClient, model_url: str, samples: int, long_expected: str) -> dict:
    calls, firsts = [], []
    for _ in range(samples):
        streamed, t_end = await model_stream(http, model_url, ECHO_MODEL)
        calls.append(t_end - streamed.t0)
        firsts.append(streamed.times[0] - streamed.t0)
    long, _ = await model_stream(http, model_url, LONG_MODEL)
    return {"call_p50_ms": percentile(calls, 50) * 1000, "first_chunk_p50_ms": percentile(firsts, 50) * 1000,
            "chunks_per_s": rate(long.times), "long_text_ok": long.text == long_expected}


async def measure_latency(target, samples: int, warmup: int, timeout: float, errors: Errors) -> list[float]:
    """Seconds from creating a run to seeing it completed, one run at a time, each on a new thread."""
    out = []
    for i in range(warmup + samples):
        try:
            async with asyncio.timeout(timeout):
                thread = await target.new_thread()
                t0 = time.perf_counter()
                await target.run(thread, ECHO_MODEL)
                elapsed = time.perf_counter() - t0
        except Exception as exc:
            errors.add(f"{target.name} latency", exc)
            continue
        if i >= warmup:
            out.append(elapsed)
    return out


async def measure_ttft(target, samples: int, warmup: int, timeout: float, errors: Errors) -> list[float]:
    """Seconds from sending a streamed run to its first text delta, each on a new thread."""
    out = []
    for i in range(warmup + samples):
        try:
            async with asyncio.timeout(timeout):
                thread = await target.new_thread()
                streamed = await timed_stream(target, thread, ECHO_MODEL)
            if not streamed.times:
                raise RunFailed("no text delta")
        except Exception as exc:
            errors.add(f"{target.name} ttft", exc)
            continue
        if i >= warmup:
            out.append(streamed.times[0] - streamed.t0)
    return out


async def measure_relay(target, expected: str, chunk_size: int, timeout: float, errors: Errors) -> dict:
    try:
        async with asyncio.timeout(timeout):
            thread = await target.new_thread()
            streamed = await timed_stream(target, thread, LONG_MODEL)
    except Exception as exc:
        errors.add(f"{target.name} relay", exc)
        return {"tokens_per_s": float("nan"), "text_ok": False}
    span = streamed.times[-1] - streamed.times[0] if len(streamed.times) > 1 else float("nan")
    # Counted in model chunks (characters / chunk size): a server may merge chunks into fewer events.
    return {"tokens_per_s": len(streamed.text) / chunk_size / span, "events_per_s": rate(streamed.times),
            "events": len(streamed.times), "text_ok": streamed.text == expected}


@dataclass
class Bench:
    s: Stack
    dev: DevServer

    def cpu_seconds(self) -> dict[str, float]:
        return {**self.s.cpu_seconds(), "langgraph dev": tree_cpu(self.dev.child.proc.pid)}


async def measure_throughput(bench: Bench, target, clients: int, duration: float, warmup: float, timeout: float,
                             errors: Errors) -> dict:
    """Clients in a loop: new thread, one run, wait for it. Counted over a window after a warm-up."""
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    completed = [0]
    cpu: dict = {}

    async def client() -> None:
        while time.perf_counter() < window[1]:
            try:
                async with asyncio.timeout(timeout):
                    await target.run(await target.new_thread(), ECHO_MODEL)
                if window[0] <= time.perf_counter() <= window[1]:
                    completed[0] += 1
            except Exception as exc:
                errors.add(f"{target.name} throughput", exc)
                await asyncio.sleep(0.05)

    async def cpu_meter() -> None:
        await asyncio.sleep(window[0] - time.perf_counter())
        before = bench.cpu_seconds()
        await asyncio.sleep(window[1] - time.perf_counter())
        cpu.update(cores_busy(before, bench.cpu_seconds(), duration))

    await asyncio.gather(cpu_meter(), *(client() for _ in range(clients)))
    n = completed[0]
    per_run = {key: cpu[key] * duration / n * 1000 if n else float("nan") for key in target.cpu_keys}
    return {"completed": n, "runs_per_s": n / duration, "cpu_ms_per_run": per_run, "cores_busy": cpu}


async def gather_bounded(limit: int, factories: list[Callable[[], Awaitable]]) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(factory):
        async with gate:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories), return_exceptions=True)


async def peak_rss(target, stop: asyncio.Event, every: float = 0.25) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, target.rss() or 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return peak


async def measure_concurrent(bench: Bench, target, n: int, expected: str, timeout: float, errors: Errors) -> dict:
    threads = await gather_bounded(16, [target.new_thread] * n)
    rss_before = target.rss()
    stop = asyncio.Event()
    sampler = asyncio.create_task(peak_rss(target, stop))

    async def one(thread) -> Streamed | None:
        try:
            if isinstance(thread, BaseException):
                raise thread
            async with asyncio.timeout(timeout):
                streamed = await timed_stream(target, thread, CONC_MODEL)
            if streamed.text != expected:
                raise RunFailed(f"text differs: {len(streamed.text)} of {len(expected)} characters")
            return streamed
        except Exception as exc:
            errors.add(f"{target.name} {n} streams", exc)
            return None

    before, t0 = bench.cpu_seconds(), time.perf_counter()
    outcomes = await asyncio.gather(*(one(t) for t in threads))
    wall = time.perf_counter() - t0
    cpu = cores_busy(before, bench.cpu_seconds(), wall)
    stop.set()
    peak = await sampler
    done = [o for o in outcomes if o is not None]
    return {
        "streams": n, "completed": len(done), "errors": n - len(done), "wall_s": wall,
        "ttft": summary_ms([o.times[0] - o.t0 for o in done if o.times]),
        "rss_before_mb": rss_before / 2**20 if rss_before else None,
        "rss_peak_mb": peak / 2**20 if peak else None,
        "cores_busy": cpu,
    }


# --- rounds -------------------------------------------------------------------------------------


async def one_round(bench: Bench, targets: list, http: httpx.AsyncClient, args, texts: dict, errors: Errors) -> dict:
    """Every measure once, each taken from all targets back to back, so drift on a shared machine
    touches them alike."""
    model = await measure_model(http, bench.s.model_url, args.samples, texts["long"])
    out: dict = {"model": model, "targets": {t.name: {} for t in targets}}
    for t in targets:
        lat = await measure_latency(t, args.samples, args.warmup, args.run_timeout, errors)
        out["targets"][t.name]["added_latency_ms"] = percentile(lat, 50) * 1000 - model["call_p50_ms"]
    for t in targets:
        ttft = await measure_ttft(t, args.samples, args.warmup, args.run_timeout, errors)
        out["targets"][t.name]["added_ttft_ms"] = percentile(ttft, 50) * 1000 - model["first_chunk_p50_ms"]
    for t in targets:
        out["targets"][t.name]["relay"] = await measure_relay(t, texts["long"], args.chunk_size, args.stream_timeout,
                                                              errors)
    for t in targets:
        out["targets"][t.name]["throughput"] = await measure_throughput(
            bench, t, args.clients, args.duration, args.throughput_warmup, args.run_timeout, errors)
    return out


async def run_all(bench: Bench, args, texts: dict) -> dict:
    errors = Errors()
    # Enough connections for every concurrent stream at once; a long read timeout for paced answers.
    limits = httpx.Limits(max_connections=max(args.streams) + 64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(args.stream_timeout, connect=60)) as http:
        servers = [AssistGraph(bench.s, http), LangGraphDev(bench.dev, bench.s.model_url, http)]
        targets = [*servers, InProcess(bench.s.model_url)]
        try:
            for t in targets:
                await t.setup()
            rounds = []
            for r in range(args.rounds):
                print(f"# round {r + 1}/{args.rounds} ...", flush=True)
                rounds.append(await one_round(bench, targets, http, args, texts, errors))
                print_round(rounds[-1])
            concurrent = {}
            for n in args.streams:
                for t in servers:
                    print(f"# {n} concurrent streams, {t.name} ...", flush=True)
                    concurrent.setdefault(str(n), {})[t.name] = await measure_concurrent(
                        bench, t, n, texts["conc"], args.stream_timeout, errors)
        finally:
            for t in targets:
                await t.aclose()
    return {"rounds": rounds, "concurrent": concurrent, "errors": errors.counts, "error_samples": errors.samples}


# --- summary and report -------------------------------------------------------------------------


def median(values) -> float:
    values = [v for v in values if not math.isnan(v)]  # a failed measure's NaN left out
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[dict]) -> dict:
    """Median over rounds of each figure, by target; the scripted model's own under "model"."""
    def over_rounds(name: str, pick) -> float:
        return median(pick(r["targets"][name]) for r in rounds)

    figures: dict = {"model": {key: median(r["model"][key] for r in rounds)
                               for key in ("call_p50_ms", "first_chunk_p50_ms", "chunks_per_s")}}
    for name in rounds[0]["targets"]:
        figures[name] = {
            "runs_per_s": over_rounds(name, lambda t: t["throughput"]["runs_per_s"]),
            "added_latency_p50_ms": over_rounds(name, lambda t: t["added_latency_ms"]),
            "added_ttft_p50_ms": over_rounds(name, lambda t: t["added_ttft_ms"]),
            "relay_tokens_per_s": over_rounds(name, lambda t: t["relay"]["tokens_per_s"]),
            **{f"cpu_ms_per_run[{key}]": over_rounds(name, lambda t, key=key: t["throughput"]["cpu_ms_per_run"][key])
               for key in rounds[0]["targets"][name]["throughput"]["cpu_ms_per_run"]},
        }
    return figures


def ratio(a, b) -> float:
    try:
        return a / b
    except (TypeError, ZeroDivisionError):
        return float("nan")


def print_round(r: dict) -> None:
    parts = [f"model {r['model']['call_p50_ms']:.1f} ms/call"]
    for name, t in r["targets"].items():
        parts.append(f"{name}: {t['throughput']['runs_per_s']:.1f} runs/s, +{t['added_latency_ms']:.1f} ms, "
                     f"ttft +{t['added_ttft_ms']:.1f} ms, {t['relay']['tokens_per_s']:,.0f} tok/s")
    print("#   " + " | ".join(parts), flush=True)


def main_rows(f: dict, clients: int) -> list[tuple]:
    a, b, floor, model = f[A], f[B], f[FLOOR], f["model"]
    rows = []
    for label, key in ((f"runs/s, {clients} clients", "runs_per_s"),
                       ("added latency p50, ms", "added_latency_p50_ms"),
                       ("added TTFT p50, ms", "added_ttft_p50_ms"),
                       ("tokens/s, one long stream", "relay_tokens_per_s")):
        rows.append((label, a[key], b[key], floor[key], ratio(a[key], b[key]), ratio(a[key], floor[key])))
    cpu_a, cpu_b, cpu_f = a["cpu_ms_per_run[server]"], b["cpu_ms_per_run[langgraph dev]"], floor["cpu_ms_per_run[bench client]"]
    rows.append(("server CPU ms/run (assistgraph: API only)", cpu_a, cpu_b, cpu_f, ratio(cpu_a, cpu_b), ratio(cpu_a, cpu_f)))
    pg = a["cpu_ms_per_run[postgres]"]
    rows.append(("  + its Postgres, CPU ms/run", pg, None, None, None, None))
    rows.append(("  = assistgraph all in, CPU ms/run", cpu_a + pg, cpu_b, cpu_f, ratio(cpu_a + pg, cpu_b),
                 ratio(cpu_a + pg, cpu_f)))
    rows.append(("scripted model alone: one call p50, ms", None, None, model["call_p50_ms"], None, None))
    rows.append(("scripted model alone: first chunk p50, ms", None, None, model["first_chunk_p50_ms"], None, None))
    rows.append(("scripted model alone: chunks/s", None, None, model["chunks_per_s"], None, None))
    return rows


def concurrent_rows(concurrent: dict) -> list[tuple]:
    rows = []
    for n, by in concurrent.items():
        a, b = by[A], by[B]
        for label, key in (("completed", "completed"), ("errors", "errors"), ("wall s", "wall_s"),
                           ("peak RSS MB", "rss_peak_mb")):
            rows.append((f"{n} streams: {label}", a[key], b[key], None if key == "errors" else ratio(a[key], b[key])))
    return rows


def report(results: dict, args) -> None:
    f = results["summary"]
    print_table(f"Side by side, medians of {args.rounds} rounds (floor: the graph in this process, no server)",
                main_rows(f, args.clients), ("measure", A, B, "floor", "A / B", "A / floor"))
    print_table(f"Concurrent streams ({args.stream_chunks} chunks, {args.stream_chunk_delay}s apart; RSS: server "
                "process tree, assistgraph without its Postgres)", concurrent_rows(results["concurrent"]),
                ("measure", A, B, "A / B"))
    # Cores the rest of the machine kept busy while runs/s were counted: the figures are only as
    # good as this is small.
    others = [t["throughput"]["cores_busy"]["other processes"] for r in results["rounds"] for t in r["targets"].values()]
    print(f"other processes on the machine during the throughput windows: {median(others):.2f} cores busy (median), "
          f"{max(others):.2f} at most")
    if results["errors"]:
        print(f"errors: {results['errors']}")
        for sample in results["error_samples"][:5]:
            print(f"!! {sample}")


# --- main ---------------------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> int:
    """Every concurrent stream holds a socket in this process, in the server, and the server's to the
    model; the children inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(f"!! open-file limit {target} may be too low for {needed} sockets", file=sys.stderr)
    return target


QUICK = {"rounds": 2, "clients": 8, "duration": 3.0, "throughput_warmup": 1.0, "samples": 5, "warmup": 2,
         "relay_chunks": 500, "streams": "20,50", "stream_chunks": 20}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients for runs/s (default 32)")
    parser.add_argument("--duration", type=float, default=15.0, help="throughput window per round, s (default 15)")
    parser.add_argument("--throughput-warmup", type=float, default=3.0, help="throughput warm-up, s (default 3)")
    parser.add_argument("--samples", type=int, default=20, help="latency and TTFT samples per round (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="unrecorded runs before them (default 3)")
    parser.add_argument("--relay-chunks", type=int, default=3000, help="chunks in the long stream (default 3000)")
    parser.add_argument("--chunk-size", type=int, default=4, help="characters per model chunk (default 4)")
    parser.add_argument("--streams", default="100,300,1000", help="concurrent stream counts (default 100,300,1000)")
    parser.add_argument("--stream-chunks", type=int, default=100, help="chunks per concurrent answer (default 100)")
    parser.add_argument("--stream-chunk-delay", type=float, default=0.01,
                        help="model delay between chunks of a concurrent answer, s (default 0.01: 1 s an answer)")
    parser.add_argument("--run-timeout", type=float, default=60, help="per-run timeout, s (default 60)")
    parser.add_argument("--stream-timeout", type=float, default=600, help="per-stream timeout, s (default 600)")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="processes of `assistgraph serve` (its --workers; default 1, like langgraph dev's one)")
    parser.add_argument("--dev-jobs", type=int, default=100,
                        help="langgraph dev's --n-jobs-per-worker (default 100, as assistgraph's executor; "
                             "0: the CLI's own, 1 run at a time)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' and model's logs into this directory")
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # as defaults, so options given with --quick still count
    args = parser.parse_args(argv)
    args.streams = [int(n) for n in str(args.streams).split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit(max(args.streams) * 4 + 256)
    texts = {"long": long_text(args.relay_chunks, args.chunk_size),
             "conc": long_text(args.stream_chunks, args.chunk_size)}
    # Where the logs were copied says nothing about the figures, and is a path on someone's machine.
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "keep_logs"}
    results: dict = {"benchmark": "sidebyside", "environment": environment(), "params": params}
    results["environment"].update(open_files_limit=fd_limit, **_versions())
    server_env = {"ASSISTGRAPH_WORKERS": str(args.server_workers), "PYTHONPATH": str(ROOT)}
    assert_imports_this_checkout({**os.environ, **server_env}, ROOT)
    with stack(server_env=server_env, keep_logs=args.keep_logs) as s, \
            langgraph_dev(s.model_url, args.dev_jobs, args.keep_logs) as dev:
        for model, text, delay in ((LONG_MODEL, texts["long"], 0), (CONC_MODEL, texts["conc"], args.stream_chunk_delay)):
            script_model(s.model_url, model, [{"content": text, "chunk_size": args.chunk_size, "chunk_delay": delay,
                                               "repeat": True}])
        results.update(asyncio.run(run_all(Bench(s, dev), args, texts)))
        problems = s.server_log_problems()
        results["assistgraph_log_problem_lines"] = len(problems)
        results["assistgraph_log_problem_samples"] = problems[:20]
    results["environment"]["loadavg_at_end"] = os.getloadavg()
    results["summary"] = summarise(results["rounds"])
    report(results, args)
    write_json(args.out, results)
    return 0


def _versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("langgraph", "langgraph-api", "langgraph-cli", "langgraph-sdk",
                                             "langgraph-runtime-inmem")}


if __name__ == "__main__":
    sys.exit(main())
