"""What small local models do and how runs cope: an endpoint that never answers fails the run with
a reason before it expires, errors name the endpoint the run was routed to, tool calls written as
text become real calls (where the catalogue says so), repeated calls are answered from the first,
empty answers are retried, and an answer carries each drawn image once."""

from __future__ import annotations

import json

import pytest

from graph.text_tool_calls import FORMATS
from tests.conftest import _extra_server, _own_database, free_port, sdk, stop_process
from tests.test_runs import WEATHER_TOOL as WEATHER


@pytest.fixture(scope="module")
def dead_endpoint() -> str:
    """An endpoint nobody listens at."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="module")
def small_server(scripted, workdir, database_url, dead_endpoint):
    """A model's first token must come within 1 s; `dead-*` models are routed to a port nobody
    listens at (OPENAI_BASE_URL, the scripted model, is up); `text-*` models get their tool calls
    written as text recovered."""
    catalogue = [
        {"match": "dead-*", "base_url": dead_endpoint},
        {"match": "text-*", "text_tool_calls": True},
        {"match": "*"},
    ]
    srv = _extra_server(
        scripted, workdir, "smallmodels", _own_database(database_url, "smallmodels"),
        ASSISTGRAPH_MODEL_FIRST_TOKEN_TIMEOUT="1", ASSISTGRAPH_MODELS=json.dumps(catalogue),
    )
    yield srv
    stop_process(srv.proc)


@pytest.fixture
def client(small_server):
    return sdk(small_server.url)


def _run(client, model: str, *, tools: list | None = None, text: str = "What is the weather in Paris?", **run_args):
    assistant = client.beta.assistants.create(model=model, tools=tools or [])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50, **run_args
    )
    return thread, run


# --- an endpoint that never answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "silence",
    [
        {"delay": 30},  # no response at all (not even its headers)
        {"stall_after": 0, "stall": 30},  # headers, then nothing
    ],
    ids=["before-headers", "after-headers"],
)
def test_a_silent_endpoint_fails_the_run_at_the_first_token_limit(client, scripted, model_name, silence):
    scripted.script(model_name, [{"content": "too late", **silence}])
    _, run = _run(client, model_name)
    assert run.status == "failed"
    assert run.last_error.code == "server_error"
    assert run.last_error.message == (
        f"The model at {scripted.base_url} sent nothing within 1 seconds of the request "
        "(ASSISTGRAPH_MODEL_FIRST_TOKEN_TIMEOUT): it may be loading, overloaded or stuck."
    )


def test_a_run_that_expires_before_the_first_token_limit_says_why(short_expiry_server, scripted, model_name):
    """With an expiry shorter than the model's limits the expiry ends the run, and says so."""
    client = sdk(short_expiry_server.url)
    scripted.script(model_name, [{"content": "too late", "delay": 30}])
    _, run = _run(client, model_name)
    assert run.status == "expired"
    assert run.last_error.code == "server_error"
    message = run.last_error.message
    assert message.startswith("The run expired: it had not finished 3 seconds after it was created (ASSISTGRAPH_RUN_EXPIRES_AFTER)")
    assert "ASSISTGRAPH_MODEL_FIRST_TOKEN_TIMEOUT (300 s)" in message and "ASSISTGRAPH_MODEL_TIMEOUT (600 s)" in message


# --- the endpoint named --------------------------------------------------------------------------------


def test_a_failure_to_connect_names_the_endpoint_the_run_was_routed_to(client, scripted, dead_endpoint, model_name):
    _, run = _run(client, f"dead-{model_name}")
    assert run.status == "failed"
    assert run.last_error.message.startswith(f"Could not reach the model provider at {dead_endpoint}: ")
    assert scripted.base_url not in run.last_error.message


# --- tool calls written as text ------------------------------------------------------------------------

# Each form of the table, calling the client's get_weather for Paris.
TEXT_CALLS = {
    fmt.name: fmt.example.replace('"f"', '"get_weather"').replace("]f[", "]get_weather[").replace('{"x": 1}', '{"city": "Paris"}')
    for fmt in FORMATS
}


def _weather_call(run) -> dict:
    assert run.status == "requires_action", run.last_error
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_weather"
    return json.loads(call.function.arguments)


@pytest.mark.parametrize("text", TEXT_CALLS.values(), ids=TEXT_CALLS.keys())
def test_a_call_written_as_text_becomes_a_real_call(client, scripted, model_name, text):
    model = f"text-{model_name}"
    scripted.script(model, [{"content": text, "chunk_size": 3}, {"content": "Sunny in Paris."}])
    thread, run = _run(client, model, tools=[WEATHER])
    assert _weather_call(run) == {"city": "Paris"}
    (step,) = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
    assert step.type == "tool_calls" and step.step_details.tool_calls[0].function.name == "get_weather"
    assert client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data == []
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
        poll_interval_ms=50,
    )
    assert run.status == "completed", run.last_error
    # The model is shown its own call as a call, answered by the output.
    turn = scripted.requests(model)[1]["body"]["messages"]
    assert turn[-2]["tool_calls"][0]["function"]["name"] == "get_weather" and turn[-1]["content"] == "sunny"


@pytest.mark.parametrize("text", TEXT_CALLS.values(), ids=TEXT_CALLS.keys())
def test_a_call_written_as_text_streams_as_a_call(client, scripted, model_name, text):
    model = f"text-{model_name}"
    scripted.script(model, [{"content": text, "chunk_size": 3}])
    assistant = client.beta.assistants.create(model=model, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = list(stream)
    names = [e.event for e in events]
    assert "thread.message.delta" not in names and "thread.message.created" not in names
    assert names[-1] == "thread.run.requires_action"
    deltas = [e.data.delta.step_details.tool_calls[0] for e in events if e.event == "thread.run.step.delta"]
    assert deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert _weather_call(events[-1].data) == {"city": "Paris"}


@pytest.mark.parametrize(
    "text",
    [
        'Call it like this: {"name": "get_weather", "arguments": {"city": "Paris"}}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}} is how I would call it.',
        '```json\n{"city": "Paris", "temperature": 21}\n```',
    ],
    ids=["text-first", "text-after", "data"],
)
def test_an_answer_that_shows_json_stays_an_answer(client, scripted, model_name, text):
    model = f"text-{model_name}"
    scripted.script(model, [{"content": text, "chunk_size": 3}, {"content": text, "chunk_size": 3}])
    thread, run = _run(client, model, tools=[WEATHER])
    assert run.status == "completed", run.last_error
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.content[0].text.value == text
    assistant = client.beta.assistants.create(model=model, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        streamed = "".join(stream.text_deltas)
        assert stream.get_final_run().status == "completed"
    assert streamed == text


def test_calls_written_as_text_stay_text_where_the_catalogue_does_not_ask(client, scripted, model_name):
    text = TEXT_CALLS["json"]
    scripted.script(model_name, [{"content": text}])
    thread, run = _run(client, model_name, tools=[WEATHER])
    assert run.status == "completed"
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.content[0].text.value == text
