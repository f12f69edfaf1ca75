"""Runs stay correct when the model misbehaves: forced tools are forced once, invented tool names
never pause a run, a model that calls tools forever is stopped, stalls and slow answers time out,
cancel races with submit leave nothing stuck, and a dropped stream can be re-attached by event id."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.conftest import _extra_server, _own_database, sdk, stop_process, wait_for
from tests.test_runs import WEATHER_TOOL as WEATHER
from tests.test_streaming import BETA, raw_stream, validate_stream

TERMINAL = {"completed", "incomplete", "failed", "cancelled", "expired"}


def _run(client, model_name: str, *, tools: list, text: str = "What is the weather in Paris?", **run_args):
    assistant = client.beta.assistants.create(model=model_name, tools=tools)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50, **run_args
    )
    return assistant, thread, run


def _tool_messages(request: dict) -> list[dict]:
    return [m for m in request["body"]["messages"] if m["role"] == "tool"]


# --- forced tools ---------------------------------------------------------------------------------


def test_a_forced_function_is_forced_on_the_first_model_call_only(client, scripted, model_name):
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, {"content": "It is sunny."}],
    )
    forced = {"type": "function", "function": {"name": "get_weather"}}
    _, thread, run = _run(client, model_name, tools=[WEATHER], tool_choice=forced)
    assert run.status == "requires_action"
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
        poll_interval_ms=50,
    )
    assert run.status == "completed"  # not requires_action again
    first, second = scripted.requests(model_name)
    assert first["body"]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert second["body"].get("tool_choice", "auto") == "auto"
    assert run.tool_choice.type == "function"  # the run still reports what the client asked for


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "calculator"}}])
def test_a_forced_server_tool_is_forced_once_and_the_run_completes(client, scripted, model_name, choice):
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]}, {"content": "42."}],
    )
    _, _, run = _run(client, model_name, tools=[{"type": "calculator"}], tool_choice=choice)
    assert run.status == "completed", run.last_error
    first, second = scripted.requests(model_name)
    assert first["body"]["tool_choice"] in ("required", {"type": "function", "function": {"name": "calculator"}})
    assert second["body"].get("tool_choice", "auto") == "auto"
    assert _tool_messages(second)[0]["content"] == "6 * 7 = 42"


# --- invented tool names -------------------------------------------------------------------------------


def test_an_invented_tool_name_is_answered_with_an_error_and_the_run_goes_on(client, scripted, model_name):
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "get_wether", "arguments": {"city": "Paris"}}]}, {"content": "Sorry, I slipped."}],
    )
    _, thread, run = _run(client, model_name, tools=[WEATHER])
    assert run.status == "completed", run.last_error
    _, second = scripted.requests(model_name)
    (result,) = _tool_messages(second)
    assert result["content"] == "Error: there is no tool named 'get_wether'. Available tools: get_weather."
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    (call,) = steps[0].step_details.tool_calls
    assert call.type == "function" and call.function.name == "get_wether"
    assert call.function.output.startswith("Error: there is no tool named 'get_wether'")
    assert steps[0].status == "completed"


def test_only_declared_functions_pause_a_run_that_also_invents_one(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"name": "get_weather", "arguments": {"city": "Paris"}},
                    {"name": "lookup_forecast", "arguments": {"city": "Paris"}},
                ]
            },
            {"content": "Sunny, says the real tool."},
        ],
    )
    _, thread, run = _run(client, model_name, tools=[WEATHER])
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"}],
        poll_interval_ms=50,
    )
    assert run.status == "completed", run.last_error
    results = {m["content"] for m in _tool_messages(scripted.requests(model_name)[1])}
    assert results == {"sunny", "Error: there is no tool named 'lookup_forecast'. Available tools: get_weather."}


def test_a_runs_checkpoints_keep_its_whole_history(client, scripted, model_name, database_url):
    """A fresh run's first saves (its input, LangGraph's start) go to Postgres with its first node's,
    in one transaction: every step is there, each checkpoint's parent the one before it."""
    scripted.script(
        model_name, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, {"content": "Sunny."}]
    )
    _, thread, run = _run(client, model_name, tools=[WEATHER])
    assert run.status == "requires_action"
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
        poll_interval_ms=50,
    )
    assert run.status == "completed", run.last_error
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT checkpoint_id, parent_checkpoint_id, (metadata->>'step')::int, metadata->>'source'"
            " FROM checkpoints WHERE thread_id = %s ORDER BY checkpoint_id",
            (run.id,),
        ).fetchall()
        (writes,) = conn.execute("SELECT count(*) FROM checkpoint_writes WHERE thread_id = %s", (run.id,)).fetchone()
    # input, start, model (then the pause), client_tools (resumed with the outputs), model
    assert [(step, source) for _, _, step, source in rows] == [(-1, "input"), (0, "loop"), (1, "loop"), (2, "loop"), (3, "loop")]
    assert [parent for _, parent, _, _ in rows] == [None, *[cid for cid, _, _, _ in rows[:-1]]]
    assert writes > 0


def test_a_model_calling_tools_forever_is_stopped_at_the_model_call_limit(client, scripted, model_name):
    scripted.script(
        model_name, [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1 + 1"}}], "repeat": True}]
    )
    _, thread, run = _run(client, model_name, tools=[{"type": "calculator"}])
    assert run.status == "failed"
    assert run.last_error.code == "server_error"
    assert "25 model calls" in run.last_error.message and "ASSISTGRAPH_MAX_MODEL_CALLS" in run.last_error.message
    assert len(scripted.requests(model_name)) == 25
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, limit=100).data
    assert len(steps) == 25 and all(s.status == "completed" for s in steps)


# --- stalls and slow answers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient_server(scripted, workdir, database_url):
    """Model calls time out after 4 s in all, or after 1 s without a chunk (a database of its own, so
    only its executor runs its runs)."""
    srv = _extra_server(
        scripted, workdir, "impatient", _own_database(database_url, "impatient"),
        ASSISTGRAPH_MODEL_TIMEOUT="4", ASSISTGRAPH_MODEL_CHUNK_TIMEOUT="1",
    )
    yield srv
    stop_process(srv.proc)


def test_a_model_that_goes_silent_mid_stream_fails_the_run_after_the_chunk_timeout(impatient_server, scripted, model_name):
    client = sdk(impatient_server.url)
    scripted.script(model_name, [{"content": "Let me think about that", "chunk_size": 3, "stall_after": 2, "stall": 10}])
    _, thread, run = _run(client, model_name, tools=[])
    assert run.status == "failed"
    assert run.last_error.message.startswith("The model stopped sending its response: nothing arrived for 1 seconds")
    assert "ASSISTGRAPH_MODEL_CHUNK_TIMEOUT" in run.last_error.message
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.status == "incomplete" and message.content[0].text.value == "Let me"


def test_a_model_answering_too_slowly_fails_the_run_after_the_model_timeout(impatient_server, scripted, model_name):
    client = sdk(impatient_server.url)
    scripted.script(model_name, [{"content": "slow " * 20, "chunk_size": 5, "chunk_delay": 0.5}])
    _, _, run = _run(client, model_name, tools=[])
    assert run.status == "failed"
    assert run.last_error.message == "The model call did not finish within 4 seconds (ASSISTGRAPH_MODEL_TIMEOUT)."


# --- cancel racing submit ------------------------------------------------------------------------------


def test_cancel_racing_submit_never_leaves_a_run_stuck(client, server, scripted, model_name):
    assistant = client.beta.assistants.create(model=model_name, tools=[WEATHER])
    n = 100

    def one(i: int) -> tuple[str, str]:
        model = f"{model_name}-{i}"
        scripted.script(model, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}, {"content": "ok"}])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, model=model, poll_interval_ms=50
        )
        assert run.status == "requires_action"
        call = run.required_action.submit_tool_outputs.tool_calls[0]
        barrier = threading.Barrier(2)

        def submit():
            barrier.wait()
            try:
                client.beta.threads.runs.submit_tool_outputs(
                    thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "cold"}]
                )
            except Exception:
                pass  # the cancel got there first: a 400 is the right answer

        def cancel():
            barrier.wait()
            if i % 2:
                time.sleep(0.002 * (i % 7))  # spread the interleavings
            try:
                client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
            except Exception:
                pass  # the run finished first

        racers = [threading.Thread(target=submit), threading.Thread(target=cancel)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(30)
        final = wait_for(
            lambda: (r := client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)).status in TERMINAL and r,
            timeout=30,
        )
        # The thread is free again: a new run can start on it.
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="and now?")
        return final.status, thread.id

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(n)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {"completed", "cancelled"}, statuses
    assert "cancelled" in statuses


# --- resumable streams ----------------------------------------------------------------------------------


def _ids(stream) -> list[int]:
    return [int(b.id) for b in stream.blocks if b.id is not None]


def _text(stream) -> str:
    return "".join(d["delta"]["content"][0]["text"].get("value", "") for d in stream.data("thread.message.delta"))


def test_a_dropped_stream_is_re_attached_by_last_event_id_and_loses_nothing(client, server, scripted, model_name):
    answer = "Paris is sunny and warm today, with a light breeze from the west."
    scripted.script(model_name, [{"content": answer, "chunk_size": 5, "gate": model_name, "gate_after": 4}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    path = f"/threads/{thread.id}/runs"

    # The client reads up to the first text delta (the model holds after its fourth chunk), then
    # its connection drops.
    first = raw_stream(
        server.url, path, {"assistant_id": assistant.id},
        stop_after=lambda lines: "event: thread.message.delta" in lines and lines[-1].startswith("data:"),
    )
    scripted.wait_for_gate(model_name)
    run_id = first.data("thread.run.created")[0]["id"]
    seen = _ids(first)
    assert seen == list(range(1, len(seen) + 1))  # every event numbered, from 1, no gap
    scripted.release(model_name)

    rest = raw_stream(
        server.url, f"{path}/{run_id}/events", None, headers={"Last-Event-ID": str(seen[-1])}
    )
    assert rest.status == 200
    assert _ids(rest) == list(range(seen[-1] + 1, seen[-1] + 1 + len(_ids(rest))))
    assert rest.names[-2:] == ["thread.run.completed", "done"]
    assert _text(first) + _text(rest) == answer
    validate_stream(rest, sequence=False)

    # The whole stream again, from the start (`after` as a query parameter works the same).
    whole = raw_stream(server.url, f"{path}/{run_id}/events", None)
    validate_stream(whole)
    assert _ids(whole) == list(range(1, _ids(rest)[-1] + 1))
    assert _text(whole) == answer
    middle = raw_stream(server.url, f"{path}/{run_id}/events?after={seen[-1]}", None)
    assert [b.data for b in middle.blocks] == [b.data for b in rest.blocks]


def test_re_attaching_to_a_live_run_follows_it_to_the_end(client, server, scripted, model_name):
    scripted.script(model_name, [{"content": "one two three four", "chunk_size": 4, "gate": model_name, "gate_after": 2}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "count"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, stream=False)
    scripted.wait_for_gate(model_name)
    result: dict = {}
    attached = threading.Event()

    def follow(lines: list[str]) -> bool:
        attached.set()  # the first line: the stream is open and replaying
        return False

    reader = threading.Thread(
        target=lambda: result.update(
            s=raw_stream(server.url, f"/threads/{thread.id}/runs/{run.id}/events", None, stop_after=follow)
        )
    )
    reader.start()
    assert attached.wait(30)
    scripted.release(model_name)
    reader.join(30)
    stream = result["s"]
    assert stream.names[0] == "thread.run.created" and stream.names[-2:] == ["thread.run.completed", "done"]
    (message,) = stream.data("thread.message.completed")
    assert message["content"][0]["text"]["value"] == "one two three four"


def test_event_stream_errors(client, server, scripted, model_name):
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    base = f"{server.url}/threads/{thread.id}/runs"
    r = httpx.get(f"{base}/run_doesnotexist/events", headers=BETA)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{base}/{run.id}/events", headers={**BETA, "Last-Event-ID": "abc"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Last-Event-ID"
    # Digits, but more than any event number has (and more than int() reads).
    for huge in ("9" * 5000, "9" * 19):
        r = httpx.get(f"{base}/{run.id}/events", headers={**BETA, "Last-Event-ID": huge})
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == "Last-Event-ID"
    r = httpx.get(f"{base}/{run.id}/events?after={'9' * 30}", headers=BETA)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{base}/{run.id}/events?after=-1", headers=BETA)
    assert r.status_code == 400
    # Past the last event of a finished run: nothing more to say.
    whole = raw_stream(server.url, f"/threads/{thread.id}/runs/{run.id}/events", None)
    last = _ids(whole)[-1]
    after_end = raw_stream(server.url, f"/threads/{thread.id}/runs/{run.id}/events?after={last}", None)
    assert after_end.names == ["done"] or after_end.names[-1] == "done"
    assert json.loads(whole.blocks[-2].data)["status"] == "completed"
