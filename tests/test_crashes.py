"""Real processes killed at chosen points: every run in flight reaches the right end, resumed from
its checkpoint, with nothing lost or duplicated.

Each test has a database of its own on the shared cluster, an API process that executes nothing
(or a `serve` that does, where the server itself is killed) and `assistgraph worker` processes.
Executors count as dead after 3 s without a heartbeat, so a killed one's runs move on quickly.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from pathlib import Path

import openai
import psycopg
import pytest

from tests.conftest import (
    Server,
    _extra_server,
    _own_database,
    free_port,
    sdk,
    server_env,
    start_process,
    stop_process,
    wait_for,
    wait_ready,
)
from tests.test_runs import WEATHER_TOOL as WEATHER
from tests.test_streaming import raw_stream

STALL = "3"
ANSWER = "The forecast for Paris: sunny in the morning, light rain after four, and a mild evening."


class Cluster:
    """Processes serving one database of their own."""

    def __init__(self, scripted, workdir: Path, database_url: str, name: str):
        self.scripted, self.workdir, self.name = scripted, workdir, name
        self.url = _own_database(database_url, f"crash_{name}")
        self.procs: list[subprocess.Popen] = []
        self.env = dict(ASSISTGRAPH_WORKER_STALL_TIMEOUT=STALL, ASSISTGRAPH_TOOL_PLUGINS="tests.local_tools:nap")

    def api(self) -> Server:
        srv = _extra_server(self.scripted, self.workdir, f"{self.name}-api", self.url, ASSISTGRAPH_EXECUTOR="false", **self.env)
        self.procs.append(srv.proc)
        return srv

    def serve(self, port: int | None = None) -> Server:
        """`serve` with its executor; a restart passes the same port."""
        port = port or free_port()
        tag = uuid.uuid4().hex[:6]
        log = self.workdir / f"{self.name}-serve-{tag}.log"
        env = server_env(self.scripted.base_url, self.workdir / f"{self.name}-serve", DATABASE_URL=self.url, **self.env)
        proc = start_process(["serve", "--port", str(port)], env, log)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc, log)
        return Server(url, proc, log)

    def worker(self, **extra: str) -> subprocess.Popen:
        before = self._workers()
        tag = uuid.uuid4().hex[:6]
        env = server_env(self.scripted.base_url, self.workdir / f"{self.name}-w{tag}", DATABASE_URL=self.url, **self.env, **extra)
        proc = start_process(["worker"], env, self.workdir / f"{self.name}-worker-{tag}.log")
        self.procs.append(proc)
        wait_for(lambda: self._workers() > before or proc.poll() is not None, timeout=60, interval=0.1)
        assert proc.poll() is None, "worker exited at start"
        return proc

    def _workers(self) -> int:
        """The newest executor's registration number (a new worker registers a higher one)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            (newest,) = conn.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers").fetchone()
        return newest

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


@pytest.fixture
def cluster(request, scripted, workdir, database_url):
    c = Cluster(scripted, workdir, database_url, request.node.name.split("[")[0].removeprefix("test_")[:40])
    yield c
    c.stop()


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def settle(client, thread_id: str, run_id: str, statuses=("completed",), timeout: float = 30):
    """The run once it reaches one of `statuses` (within `timeout` seconds)."""
    return wait_for(
        lambda: (r := client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run_id)).status in statuses and r,
        timeout=timeout,
        interval=0.1,
    )


def assert_one_answer(client, thread_id: str, run_id: str, text: str) -> list:
    """The run left exactly one assistant message, complete, with this text; returns its steps."""
    messages = client.beta.threads.messages.list(thread_id=thread_id, run_id=run_id).data
    assert [(m.role, m.status, m.content[0].text.value) for m in messages] == [("assistant", "completed", text)]
    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run_id, order="asc").data
    assert all(s.status == "completed" for s in steps), [(s.type, s.status) for s in steps]
    return steps


def test_worker_killed_mid_stream(cluster, scripted, model_name):
    """The client's stream (held by the API process) carries on past the crash: the new executor
    makes the interrupted model call again and sends only the text the client has not seen."""
    api = cluster.api()
    worker = cluster.worker()
    gate = f"{model_name}-mid"
    scripted.script(model_name, [{"content": ANSWER, "chunk_size": 6, "gate": gate, "gate_after": 3}, {"content": ANSWER, "chunk_size": 6}])
    client = sdk(api.url)
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    result: dict = {}
    streamed = threading.Event()

    def seen(lines: list[str]) -> bool:
        if lines[-1] == "event: thread.message.delta":
            streamed.set()
        return False

    reader = threading.Thread(
        target=lambda: result.update(
            s=raw_stream(api.url, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id}, stop_after=seen, timeout=60)
        )
    )
    reader.start()
    scripted.wait_for_gate(gate)
    assert streamed.wait(30)  # the first chunks reached the stream
    kill(worker)
    cluster.worker()
    reader.join(60)
    stream = result["s"]
    ids = [int(b.id) for b in stream.blocks if b.id is not None]
    assert ids == list(range(1, len(ids) + 1))
    text = "".join(d["delta"]["content"][0]["text"].get("value", "") for d in stream.data("thread.message.delta"))
    assert text == ANSWER  # nothing twice, nothing missing
    assert stream.names[-2:] == ["thread.run.completed", "done"]
    assert len(stream.data("thread.message.created")) == 1
    run_id = stream.data("thread.run.created")[0]["id"]
    steps = assert_one_answer(client, thread.id, run_id, ANSWER)
    assert [s.type for s in steps] == ["message_creation"]
    first, again = scripted.requests(model_name)
    # The call made again is the same call: the partial answer the lost execution stored is not
    # part of the thread it is sent.
    assert again["body"]["messages"] == first["body"]["messages"]


def test_server_killed_at_requires_action(cluster, scripted, model_name):
    """Outputs submitted after the restart are used, even though the killed server's job was left
    running under the run's lock."""
    srv = cluster.serve()
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    scripted.script(model_name, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, {"content": ANSWER}])
    client = sdk(srv.url)
    assistant = client.beta.assistants.create(model=model_name, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    run = settle(client, thread.id, run.id, ("requires_action",))
    kill(srv.proc)
    srv = cluster.serve(port)
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    client.beta.threads.runs.submit_tool_outputs(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny, 21 C"}]
    )
    run = settle(client, thread.id, run.id, timeout=40)
    steps = assert_one_answer(client, thread.id, run.id, ANSWER)
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert steps[0].step_details.tool_calls[0].function.output == "sunny, 21 C"
    second = scripted.requests(model_name)[-1]
    assert [m["content"] for m in second["body"]["messages"] if m["role"] == "tool"] == ["sunny, 21 C"]


def test_server_killed_right_after_create(cluster, scripted, model_name):
    srv = cluster.serve()
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    gate = f"{model_name}-create"
    scripted.script(model_name, [{"content": ANSWER, "gate": gate}, {"content": ANSWER}])
    client = sdk(srv.url)
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    kill(srv.proc)
    scripted.release(gate)  # if the first execution reached the model, that call died with it
    srv = cluster.serve(port)
    run = settle(client, thread.id, run.id, timeout=40)
    assert_one_answer(client, thread.id, run.id, ANSWER)


def test_worker_killed_during_a_server_tool(cluster, scripted, model_name, workdir):
    api = cluster.api()
    worker = cluster.worker()
    napping = workdir / f"{model_name}-napping"
    nap = {"seconds": 2, "started": str(napping)}
    scripted.script(model_name, [{"tool_calls": [{"name": "nap", "arguments": nap}]}, {"content": ANSWER}])
    client = sdk(api.url)
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "nap"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "take a nap"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_for(napping.exists, interval=0.05)  # the nap is under way
    kill(worker)
    cluster.worker()
    run = settle(client, thread.id, run.id, timeout=40)
    steps = assert_one_answer(client, thread.id, run.id, ANSWER)
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    (call,) = steps[0].step_details.tool_calls
    assert call.function.name == "nap" and call.function.output == "slept 2 s"
    assert len(scripted.requests(model_name)) == 2  # the model call before the tool was not made again


def test_sigterm_hands_running_runs_back_to_the_queue(cluster, scripted, model_name):
    """A stopping worker lets its runs finish for the grace period, then hands them back; another
    worker continues them from their checkpoint without waiting for a stall timeout."""
    api = cluster.api()
    worker = cluster.worker(ASSISTGRAPH_SHUTDOWN_GRACE="1")
    gate = f"{model_name}-term"
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "nap", "arguments": {"seconds": 0.1}}]},
            {"content": ANSWER, "gate": gate},
            {"content": ANSWER},
        ],
    )
    client = sdk(api.url)
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "nap"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "nap, then answer"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    scripted.wait_for_gate(gate)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id).status == "in_progress"
    cluster.worker()
    run = settle(client, thread.id, run.id, timeout=20)
    steps = assert_one_answer(client, thread.id, run.id, ANSWER)
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert len(scripted.requests(model_name)) == 3  # the nap was not taken again


def test_many_runs_in_flight_survive_a_killed_worker(cluster, scripted, model_name):
    api = cluster.api()
    worker = cluster.worker()
    client = sdk(api.url)
    runs = []
    for i in range(20):
        model = f"{model_name}-{i}"
        text = f"{ANSWER} ({i})"
        scripted.script(model, [{"content": text, "chunk_size": 8, "chunk_delay": 0.1}, {"content": text}])
        assistant = client.beta.assistants.create(model=model)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
        runs.append((thread.id, client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id).id, text))
    wait_for(lambda: all(scripted.requests(f"{model_name}-{i}") for i in range(20)), timeout=30)  # all in flight
    kill(worker)
    cluster.worker()
    for thread_id, run_id, text in runs:
        settle(client, thread_id, run_id, timeout=45)
        assert_one_answer(client, thread_id, run_id, text)


def test_a_database_dropping_every_connection_stops_nothing_for_good(cluster, scripted, model_name):
    """What a database restart or failover does to a server: every connection closed at once, the
    executor's LISTEN connection included (procrastinate stops a worker that loses it). The server's
    executor comes back, the run in flight at that moment is continued, and new runs complete."""
    srv = cluster.serve()
    client = sdk(srv.url)
    gate = f"{model_name}-drop"
    scripted.script(model_name, [{"content": ANSWER, "gate": gate}, {"content": ANSWER}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    scripted.wait_for_gate(gate)
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        dropped = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert dropped >= 3  # the pools' connections and the LISTEN ones
    scripted.release(gate)
    # The OpenAI SDK retries a 503: a request may meet a connection closed under the pool.
    patient = openai.OpenAI(base_url=srv.url, api_key="sk-client", _strict_response_validation=True, max_retries=3)
    run = settle(patient, thread.id, run.id, timeout=60)
    assert_one_answer(patient, thread.id, run.id, ANSWER)
    scripted.script(model_name, [{"content": "Still here."}])
    later = patient.beta.threads.create(messages=[{"role": "user", "content": "still there?"}])
    again = patient.beta.threads.runs.create_and_poll(thread_id=later.id, assistant_id=assistant.id, poll_interval_ms=100)
    assert again.status == "completed", again.last_error
    log = srv.log_path.read_text(errors="replace")
    assert "run executor stopped" in log or "run executor failed" in log
