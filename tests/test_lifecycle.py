"""Process-level behaviour: expiry, separate workers, the embedded database's lifecycle."""

from __future__ import annotations

import psutil

from tests.conftest import free_port, sdk, server_env, start_process, stop_process, wait_for, wait_ready

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_unanswered_requires_action_expires(short_expiry_server, scripted, model_name):
    client = sdk(short_expiry_server.url)
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}], "usage": {"prompt_tokens": 11, "completion_tokens": 5}}],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Oslo?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "requires_action"
    assert run.expires_at is not None and run.expires_at - run.created_at == 3

    expired = wait_for(
        lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "expired" and r,
        timeout=15,
    )
    assert expired.required_action is None
    assert (expired.usage.prompt_tokens, expired.usage.completion_tokens) == (11, 5)
    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert step.status == "expired" and step.expired_at is not None
    # Outputs for an expired run are refused, and the thread is free again.
    try:
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_x", "output": "1"}]
        )
        raise AssertionError("expected a 400")
    except Exception as exc:  # noqa: BLE001 - asserting on the SDK's error type below
        assert type(exc).__name__ == "BadRequestError"
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="still there?")


def test_run_stuck_in_a_slow_model_call_expires(short_expiry_server, scripted, model_name):
    client = sdk(short_expiry_server.url)
    # Expiry interrupts the model call instead of waiting for it: the model never answers.
    scripted.script(model_name, [{"content": "too late", "gate": model_name}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "expired"
    messages = client.beta.threads.messages.list(thread_id=thread.id).data
    assert [m.role for m in messages] == ["user"]


def test_separate_worker_executes_runs(scale_out, scripted, model_name):
    api_server, worker, _ = scale_out
    client = sdk(api_server.url)
    scripted.script(model_name, [{"content": "done by the worker"}])
    assistant = client.beta.assistants.create(model=model_name)
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hello"}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    (message,) = client.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id).data
    assert message.content[0].text.value == "done by the worker"
    assert worker.poll() is None


def test_runs_wait_in_the_queue_until_a_worker_comes(scale_out, scripted, model_name, workdir):
    """The queue lives in Postgres: a run created while no worker is up is executed later."""
    api_server, worker, _ = scale_out
    client = sdk(api_server.url)
    scripted.script(model_name, [{"content": "late but fine"}])
    assistant = client.beta.assistants.create(model=model_name)
    worker.send_signal(19)  # SIGSTOP: the worker is alive but takes nothing
    try:
        run = client.beta.threads.create_and_run(
            assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id).status == "queued"
    finally:
        worker.send_signal(18)  # SIGCONT
    done = client.beta.threads.runs.poll(run.id, thread_id=run.thread_id, poll_interval_ms=20)
    assert done.status == "completed"


def test_serve_starts_and_stops_its_embedded_postgres(scripted, workdir):
    data = workdir / "own-embedded"
    port = free_port()
    log = workdir / "own-embedded.log"
    proc = start_process(["serve", "--port", str(port)], server_env(scripted.base_url, data), log)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1", proc, log)
        pid = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert psutil.pid_exists(pid)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=15)
