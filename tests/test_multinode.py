"""Several machines, played on one: two API processes (`ASSISTGRAPH_EXECUTOR=false assistgraph serve`,
nodes A and B) and two `assistgraph worker` processes, each with a data directory of its own (no disk is
shared), sharing only what separate machines share: an external Postgres (a cluster of Debian's own
server), the S3 file store (moto's server standing in for object storage) and a Jupyter Kernel Gateway.

A file uploaded through A is downloaded through B, ingested by a worker, found by a file_search run and
read by code in /mnt/data; then A and one worker are killed with SIGKILL while runs are held mid-answer,
and every run finishes on the processes left, a stream read from A carrying on from B.

Each worker calls the model with a key of its own, so the model's requests show which worker executed
which call. Executors count as dead after 3 s without a heartbeat, so a killed one's runs move on quickly.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import Server, sdk, server_env, start_process, stop_process, wait_for, wait_ready, free_port
from tests.debian_postgres import Cluster
from tests.shared_services import BUCKET, PREFIX, s3_store_env
from tests.test_code_interpreter import code_call
from tests.test_crashes import assert_one_answer, settle
from tests.test_streaming import BETA, RawStream, parse_sse

STALL = "3"
CONCURRENCY = 3
HELD_RUNS = 5  # more than one worker drives at once: both hold some
WORKERS = ("worker-1", "worker-2")
NODES = ("node-a", "node-b")


@dataclass
class Deployment:
    nodes: dict[str, Server]
    workers: dict[str, subprocess.Popen]
    data_dirs: list[Path]


def key_of(name: str) -> str:
    """The model key a worker calls the model with (and nobody else does)."""
    return f"sk-model-key-of-{name}"


def executed_by(request: dict) -> str:
    """Which worker made this request of the model."""
    (name,) = [w for w in WORKERS if request["headers"].get("authorization") == f"Bearer {key_of(w)}"]
    return name


def _registered_workers(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        (count,) = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    return count


@pytest.fixture(scope="module")
def deployment(scripted, workdir: Path, debian_postgres: Cluster, moto_s3, kernel_gateway):
    url = debian_postgres.database("multinode")
    # What every process needs: the database, the file store and the same secret key (server_env's).
    shared = dict(DATABASE_URL=url, ASSISTGRAPH_WORKER_STALL_TIMEOUT=STALL, **s3_store_env(moto_s3.meta.endpoint_url))
    procs: list[subprocess.Popen] = []
    nodes: dict[str, Server] = {}
    workers: dict[str, subprocess.Popen] = {}
    data_dirs = [workdir / "multinode" / name for name in (*NODES, *WORKERS)]

    def node(name: str) -> Server:
        port = free_port()
        log = workdir / f"multinode-{name}.log"
        env = server_env(scripted.base_url, workdir / "multinode" / name, ASSISTGRAPH_EXECUTOR="false", **shared)
        proc = start_process(["serve", "--port", str(port)], env, log)
        procs.append(proc)
        return Server(f"http://127.0.0.1:{port}/v1", proc, log)

    try:
        # All start together: the first to take the migration lock brings the schema up, the others wait.
        for name in NODES:
            nodes[name] = node(name)
        for name in WORKERS:
            # Workers also need the model endpoint (a key of their own here) and the kernel gateway. Each
            # drives at most CONCURRENCY runs at once, so runs held mid-answer spread over both.
            env = server_env(
                scripted.base_url, workdir / "multinode" / name,
                OPENAI_API_KEY=key_of(name), ASSISTGRAPH_EXECUTOR_CONCURRENCY=str(CONCURRENCY), **shared, **kernel_gateway,
            )
            workers[name] = start_process(["worker"], env, workdir / f"multinode-{name}.log")
            procs.append(workers[name])
        for srv in nodes.values():
            wait_ready(srv.url, srv.proc, srv.log_path)
        # Each worker process registers its run executor and its ingestion worker.
        wait_for(lambda: _registered_workers(url) >= 2 * len(WORKERS) or any(w.poll() is not None for w in workers.values()), timeout=90, interval=0.2)
        assert all(w.poll() is None for w in workers.values()), "a worker exited at start"
        yield Deployment(nodes, workers, data_dirs)
    finally:
        for proc in procs:
            stop_process(proc)


def test_a_file_travels_between_nodes_through_the_store(deployment, scripted, moto_s3, model_name):
    a, b = sdk(deployment.nodes["node-a"].url), sdk(deployment.nodes["node-b"].url)
    text = "The lighthouse keeper of Vlieland counts exactly 417 gulls every morning."
    uploaded = a.files.create(file=("lighthouse.txt", text.encode()), purpose="assistants")
    assert b.files.retrieve(uploaded.id).filename == "lighthouse.txt"
    assert b.files.content(uploaded.id).read() == text.encode()
    # The bytes are in the bucket only: no process's data directory holds them.
    key = f"{PREFIX}/files/default/{uploaded.id}"
    assert moto_s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == text.encode()
    assert [p for d in deployment.data_dirs for p in d.rglob(f"*{uploaded.id}*")] == []

    # A worker ingests it (the API nodes execute nothing), reading it from the bucket.
    store = b.vector_stores.create(name="islands", file_ids=[uploaded.id])
    done = a.vector_stores.files.poll(uploaded.id, vector_store_id=store.id, poll_interval_ms=50)
    assert done.status == "completed", done.last_error

    # A run on a worker searches the store.
    search = f"{model_name}-search"
    scripted.script(
        search,
        [{"tool_calls": [{"name": "file_search", "arguments": {"query": "gulls counted by the lighthouse keeper"}}]}, {"content": "417."}],
    )
    assistant = a.beta.assistants.create(
        model=search, tools=[{"type": "file_search"}], tool_resources={"file_search": {"vector_store_ids": [store.id]}}
    )
    run = a.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "how many gulls?"}]}, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    steps = b.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data
    (call,) = steps[0].step_details.tool_calls
    assert call.file_search.results[0].file_id == uploaded.id
    first, second = scripted.requests(search)
    assert "417 gulls" in second["body"]["messages"][-1]["content"]
    assert executed_by(first) == executed_by(second)

    # Code on a worker finds it in /mnt/data (the gateway's kernels work in their data directory), and
    # what the code writes goes to the bucket, to be downloaded through the other node.
    code = f"{model_name}-code"
    scripted.script(
        code,
        [
            code_call("print(open('lighthouse.txt').read())\n_ = open('count.txt', 'w').write('417')"),
            {"content": "Read it."},
        ],
    )
    assistant = b.beta.assistants.create(
        model=code, tools=[{"type": "code_interpreter"}], tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}}
    )
    run = b.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "read it"}]}, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    steps = a.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data
    (call,) = steps[0].step_details.tool_calls
    assert call.code_interpreter.outputs[0].logs == text
    offered = scripted.requests(code)[0]["body"]["tools"]
    assert "/mnt/data/lighthouse.txt" in next(t for t in offered if t["function"]["name"] == "code_interpreter")["function"]["description"]
    (made,) = [f for f in a.files.list(purpose="assistants_output") if f.filename == "count.txt"]
    assert a.files.content(made.id).read() == b"417"


def _stream_into(url: str, path: str, body: dict, lines: list[str]) -> None:
    """Read a run's stream into `lines` until it ends or its server goes away."""
    try:
        with httpx.stream("POST", url + path, json={**body, "stream": True}, headers=BETA, timeout=60) as r:
            for line in r.iter_lines():
                lines.append(line)
    except httpx.HTTPError:
        pass  # the node was killed


def _text(blocks) -> str:
    return "".join(
        b.json()["delta"]["content"][0]["text"].get("value", "") for b in blocks if b.event == "thread.message.delta"
    )


def test_killing_an_api_node_and_a_worker_mid_run_loses_nothing(deployment, scripted, model_name):
    """Runs created through both nodes are held mid-answer on both workers (more than a worker drives at
    once); node A and the worker holding most of them are killed; every run completes once, the killed
    worker's on the other one (from their checkpoints, the interrupted model call made again), and a
    stream read from A is re-attached on B with nothing lost or repeated."""
    node_a, node_b = deployment.nodes["node-a"], deployment.nodes["node-b"]
    b = sdk(node_b.url)
    runs: list[tuple[str, str, str, str]] = []  # (model, thread, run, answer)
    for i in range(HELD_RUNS - 1):
        node = (node_a, node_b)[i % 2]
        model, answer = f"{model_name}-{i}", f"Answer {i}: the ferry leaves on the hour and the crossing takes twenty minutes."
        turns = [{"content": answer, "chunk_size": 8, "gate": model, "gate_after": 2}, {"content": answer, "chunk_size": 8}]
        scripted.script(model, turns)
        client = sdk(node.url)
        assistant = client.beta.assistants.create(model=model)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "when?"}])
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        runs.append((model, thread.id, run.id, answer))
    # And one streamed through A.
    streamed = f"{model_name}-s"
    streamed_answer = "Streamed: the last ferry back leaves at nine in the evening."
    scripted.script(
        streamed, [{"content": streamed_answer, "chunk_size": 6, "gate": streamed, "gate_after": 3}, {"content": streamed_answer, "chunk_size": 6}]
    )
    a = sdk(node_a.url)
    assistant = a.beta.assistants.create(model=streamed)
    thread = a.beta.threads.create(messages=[{"role": "user", "content": "last ferry?"}])
    lines: list[str] = []
    reader = threading.Thread(
        target=_stream_into, args=(node_a.url, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id}, lines)
    )
    reader.start()

    models = [model for model, *_ in runs] + [streamed]
    for model in models:
        scripted.wait_for_gate(model)
    wait_for(lambda: "event: thread.message.delta" in lines, timeout=30)
    holder = {model: executed_by(scripted.requests(model)[0]) for model in models}
    assert set(holder.values()) == set(WORKERS)
    victim = max(WORKERS, key=lambda w: list(holder.values()).count(w))
    survivor = next(w for w in WORKERS if w != victim)

    for proc in (node_a.proc, deployment.workers[victim]):
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    reader.join(30)
    for model in models:
        scripted.release(model)

    for model, thread_id, run_id, answer in runs:
        settle(b, thread_id, run_id, timeout=60)
        assert_one_answer(b, thread_id, run_id, answer)
    # A run held by the killed worker made its model call again on the other one; the others finished
    # where they were.
    for model in models:
        expected = [victim, survivor] if holder[model] == victim else [survivor]
        assert [executed_by(r) for r in scripted.requests(model)] == expected, model

    # The stream from A ended with A; B carries it on from the last event the client got.
    first = RawStream(200, httpx.Headers(), parse_sse(lines)).blocks
    seen = [int(blk.id) for blk in first if blk.id is not None]
    assert seen == list(range(1, len(seen) + 1)) and "thread.run.completed" not in [blk.event for blk in first]
    run_id = next(blk.json()["id"] for blk in first if blk.event == "thread.run.created")
    with httpx.stream(
        "GET", f"{node_b.url}/threads/{thread.id}/runs/{run_id}/events", headers={**BETA, "Last-Event-ID": str(seen[-1])}, timeout=60
    ) as r:
        assert r.status_code == 200
        rest = RawStream(r.status_code, r.headers, parse_sse(list(r.iter_lines()))).blocks
    ids = [int(blk.id) for blk in rest if blk.id is not None]
    assert ids == list(range(seen[-1] + 1, seen[-1] + 1 + len(ids)))
    assert [blk.event for blk in rest][-2:] == ["thread.run.completed", "done"]
    assert _text(first) + _text(rest) == streamed_answer
    assert_one_answer(b, thread.id, run_id, streamed_answer)
