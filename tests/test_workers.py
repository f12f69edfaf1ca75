"""`assistgraph serve --workers 2`: several processes on one port share the embedded Postgres; runs
created through one are executed and streamed by whichever process picks them up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port, server_env, start_process, stop_process, wait_ready


@pytest.fixture(scope="module")
def two_workers(scripted, workdir):
    port = free_port()
    log_path = workdir / "workers.log"
    proc = start_process(
        ["serve", "--port", str(port), "--workers", "2"], server_env(scripted.base_url, workdir / "workers"), log_path
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc, log_path)
        yield url, proc, workdir / "workers" / "pgdata"
    finally:
        stop_process(proc)


def test_runs_poll_and_stream_across_worker_processes(two_workers, scripted, model_name):
    url, _, _ = two_workers
    client = openai.OpenAI(base_url=url, api_key="sk-client", _strict_response_validation=True, max_retries=0)
    scripted.script(model_name, [{"content": f"answer {i}"} for i in range(6)])
    assistant = client.beta.assistants.create(model=model_name)
    threads = [client.beta.threads.create(messages=[{"role": "user", "content": "hi"}]) for _ in range(3)]
    for thread in threads:
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
        assert run.status == "completed", run.last_error
    for thread in threads:
        with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
            text = "".join(stream.text_deltas)
            run = stream.get_final_run()
        assert run.status == "completed" and text.startswith("answer ")
    answers = {
        m.content[0].text.value
        for t in threads
        for m in client.beta.threads.messages.list(t.id).data
        if m.role == "assistant"
    }
    assert answers == {f"answer {i}" for i in range(6)}


def _completed(metrics_url: str) -> float:
    text = httpx.get(metrics_url).text
    line = next((l for l in text.splitlines() if l.startswith('assistgraph_run_transitions_total{status="completed"} ')), None)
    return float(line.split()[-1]) if line else 0.0


def test_metrics_count_every_worker_process(two_workers, scripted, model_name):
    """A scrape answered by either process reports both processes' runs (prometheus-client's
    multi-process mode under `--workers N`)."""
    url, _, _ = two_workers
    metrics_url = url.removesuffix("/v1") + "/metrics"
    client = openai.OpenAI(base_url=url, api_key="sk-client", _strict_response_validation=True, max_retries=0)
    before = {_completed(metrics_url) for _ in range(6)}
    assert len(before) == 1
    scripted.script(model_name, [{"content": f"answer {i}"} for i in range(8)])
    assistant = client.beta.assistants.create(model=model_name)
    for _ in range(8):
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
        assert run.status == "completed"
    # Runs were executed by both processes (each claims jobs); every scrape sees all eight.
    after = {_completed(metrics_url) for _ in range(8)}
    assert after == {before.pop() + 8}


def test_stopping_the_server_stops_every_worker_and_the_database(two_workers):
    url, proc, pgdata = two_workers
    assert (pgdata / "postmaster.pid").exists()
    children = _children(proc.pid)
    assert len(children) >= 2  # the worker processes (the database is not a child of the server)
    stop_process(proc)
    assert proc.returncode == 0
    deadline = time.time() + 20
    while time.time() < deadline and ((pgdata / "postmaster.pid").exists() or any(_alive(c) for c in children)):
        time.sleep(0.2)
    assert not (pgdata / "postmaster.pid").exists()
    assert not any(_alive(c) for c in children)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
