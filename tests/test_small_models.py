"""What small local models do and how runs cope: an endpoint that never answers fails the run with
a reason before it expires, errors name the endpoint the run was routed to, tool calls written as
text become real calls (where the catalogue says so), repeated calls are answered from the first,
empty answers are retried, and an answer carries each drawn image once."""

from __future__ import annotations

import json

import pytest

from graph.text_tool_calls import FORMATS
from tests.conftest import _extra_server, _own_database, free_port, sdk, stop_process, wait_for
from tests.test_responses import WEATHER as RESPONSES_WEATHER
from tests.test_responses import check_sequence
from tests.test_runs import WEATHER_TOOL as WEATHER


@pytest.fixture(scope="module")
def dead_endpoint() -> str:
    """An endpoint nobody listens at."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="module")
def small_server(scripted, workdir, database_url, dead_endpoint, fake_search):
    """A model's first token must come within 1 s; `dead-*` models are routed to a port nobody
    listens at (OPENAI_BASE_URL, the scripted model, is up); `text-*` models get their tool calls
    written as text recovered; `web_search` asks a fake SearxNG (which counts the searches)."""
    catalogue = [
        {"match": "dead-*", "base_url": dead_endpoint},
        {"match": "text-*", "text_tool_calls": True},
        {"match": "*"},
    ]
    srv = _extra_server(
        scripted, workdir, "smallmodels", _own_database(database_url, "smallmodels"),
        ASSISTGRAPH_MODEL_FIRST_TOKEN_TIMEOUT="1", ASSISTGRAPH_MODELS=json.dumps(catalogue),
        ASSISTGRAPH_WEB_SEARCH_PROVIDER="searxng", ASSISTGRAPH_SEARXNG_URL=fake_search.url,
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


def test_a_run_that_expires_waiting_for_tool_outputs_says_so(short_expiry_server, scripted, model_name):
    client = sdk(short_expiry_server.url)
    scripted.script(model_name, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}])
    thread, run = _run(client, model_name, tools=[WEATHER])
    assert run.status == "requires_action"
    expired = wait_for(
        lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "expired" and r
    )
    assert expired.last_error.message == (
        "The run expired: it had not finished 3 seconds after it was created (ASSISTGRAPH_RUN_EXPIRES_AFTER) "
        "while it waited for the outputs of its tool calls."
    )


# --- the endpoint named --------------------------------------------------------------------------------


def test_a_failure_to_connect_names_the_endpoint_the_run_was_routed_to(client, scripted, dead_endpoint, model_name):
    _, run = _run(client, f"dead-{model_name}")
    assert run.status == "failed"
    assert run.last_error.message.startswith(f"Could not reach the model provider at {dead_endpoint}: ")
    assert scripted.base_url not in run.last_error.message



def test_a_failure_to_connect_names_the_endpoint_of_the_keys_own_credentials(auth_server, scripted, dead_endpoint, model_name):
    from tests.test_tenancy import as_key, new_key

    client = as_key(auth_server, new_key(auth_server, name="own dead endpoint", model_base_url=dead_endpoint))
    _, run = _run(client, model_name)
    assert run.status == "failed"
    assert run.last_error.message.startswith(f"Could not reach the model provider at {dead_endpoint}: ")

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


def test_a_call_written_as_text_is_a_function_call_item_in_responses(client, scripted, model_name):
    model = f"text-{model_name}"
    scripted.script(model, [{"content": TEXT_CALLS["hermes"], "chunk_size": 3}])
    with client.responses.stream(model=model, input="Weather in Paris?", tools=[RESPONSES_WEATHER]) as stream:
        events = list(stream)
        response = stream.get_final_response()
    check_sequence(events)
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert not [e for e in events if e.type.startswith("response.output_text")]
    assert "response.function_call_arguments.delta" in {e.type for e in events}

def test_calls_written_as_text_stay_text_where_the_catalogue_does_not_ask(client, scripted, model_name):
    text = TEXT_CALLS["json"]
    scripted.script(model_name, [{"content": text}])
    thread, run = _run(client, model_name, tools=[WEATHER])
    assert run.status == "completed"
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.content[0].text.value == text


# --- loops -------------------------------------------------------------------------------------------


def _searches(fake_search, query: str) -> int:
    return sum(r["query"] == query for r in fake_search.requests)


def test_a_call_repeated_five_times_runs_once(client, scripted, fake_search, model_name):
    search = {"name": "web_search", "arguments": {"query": f"loop {model_name}"}}
    scripted.script(model_name, [*[{"tool_calls": [search]}] * 5, {"content": "Found it."}])
    thread, run = _run(client, model_name, tools=[{"type": "web_search"}])
    assert run.status == "completed", run.last_error
    assert _searches(fake_search, f"loop {model_name}") == 1
    requests = scripted.requests(model_name)
    results = [m["content"] for m in requests[-1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 5
    first, *repeats = results
    assert "[Note:" not in first and f"loop {model_name} result 1" in first
    for repeat in repeats:
        # The first result, with a note the model can read (once, however often it repeats).
        assert repeat.startswith(first) and repeat.count("[Note: 'web_search' was already called") == 1
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    outputs = [s.step_details.tool_calls[0].function.output for s in steps if s.type == "tool_calls"]
    assert outputs == results


def test_the_same_call_twice_in_one_turn_runs_once_and_other_arguments_run(client, scripted, fake_search, model_name):
    same = {"name": "web_search", "arguments": {"query": f"twice {model_name}"}}
    other = {"name": "web_search", "arguments": {"query": f"other {model_name}"}}
    scripted.script(model_name, [{"tool_calls": [same, same, other]}, {"content": "Done."}])
    _, run = _run(client, model_name, tools=[{"type": "web_search"}])
    assert run.status == "completed", run.last_error
    assert _searches(fake_search, f"twice {model_name}") == 1 and _searches(fake_search, f"other {model_name}") == 1
    results = [m["content"] for m in scripted.requests(model_name)[-1]["body"]["messages"] if m["role"] == "tool"]
    assert "[Note:" not in results[0] and results[1].startswith(results[0]) and "[Note:" in results[1]
    assert "[Note:" not in results[2]


def test_an_invented_tool_name_is_told_the_tools_that_exist(client, scripted, model_name):
    scripted.script(model_name, [{"tool_calls": [{"name": "error", "arguments": {}}]}, {"content": "Sorry."}])
    _, run = _run(client, model_name, tools=[WEATHER, {"type": "web_search"}])
    assert run.status == "completed", run.last_error
    (result,) = [m["content"] for m in scripted.requests(model_name)[-1]["body"]["messages"] if m["role"] == "tool"]
    assert result == "Error: there is no tool named 'error'. Available tools: get_weather, web_search."


# --- Responses: a name the request never declared ----------------------------------------------------


def _undeclared_call_items(response, events, name: str):
    call, answer, message = response.output
    assert call.type == "function_call" and call.name == name and call.status == "completed"
    assert answer.type == "function_call_output" and answer.call_id == call.call_id
    assert answer.output.startswith(f"Error: there is no tool named '{name}'. Available tools: ")
    assert message.type == "message" and response.output_text == "Sorry."
    assert not [e.type for e in events if "mcp" in e.type]
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["function_call", "function_call_output", "message"]
    return call, answer


def test_a_responses_call_of_an_undeclared_tool_is_a_function_call_with_its_error(client, scripted, model_name):
    scripted.script(model_name, [{"tool_calls": [{"name": "get_wether", "arguments": {"city": "Paris"}}]}, {"content": "Sorry."}])
    with client.responses.stream(model=model_name, input="Weather in Paris?", tools=[RESPONSES_WEATHER]) as stream:
        events = list(stream)
        response = stream.get_final_response()
    check_sequence(events)
    call, answer = _undeclared_call_items(response, events, "get_wether")
    assert answer.output == "Error: there is no tool named 'get_wether'. Available tools: get_weather."
    stored = client.responses.retrieve(response.id).output
    assert [(i.type, i.id) for i in stored] == [(i.type, i.id) for i in response.output]
    assert stored[1].output == answer.output


def test_an_undeclared_tool_next_to_an_mcp_server_is_a_function_call_too(server, scripted, model_name):
    """Names an MCP server adds are only known when the run starts: such a call's item waits for
    its answer to tell an MCP tool from a name the request never declared."""
    from tests.mcp_service import TOKEN, start_in_thread

    client = sdk(server.url)
    service = start_in_thread(token=TOKEN)
    try:
        label = f"tools-{model_name}"
        mcp = {"type": "mcp", "server_label": label, "server_url": service.url, "require_approval": "never",
               "headers": {"Authorization": f"Bearer {TOKEN}"}}
        client.post("/mcp_servers", cast_to=object, body={"url": service.url, "name": label, "headers": mcp["headers"]})
        scripted.script(model_name, [{"tool_calls": [{"name": "multiply", "arguments": {"a": 6}}]}, {"content": "Sorry."}])
        with client.responses.stream(model=model_name, input="6 * 7?", tools=[mcp]) as stream:
            events = list(stream)
            response = stream.get_final_response()
        check_sequence(events)
        _undeclared_call_items(response, events, "multiply")
        # A tool the server has is still an mcp_call.
        scripted.script(model_name, [{"tool_calls": [{"name": "add", "arguments": {"a": 19, "b": 23}}]}, {"content": "42."}])
        with client.responses.stream(model=model_name, input="19 + 23?", tools=[mcp]) as stream:
            events = list(stream)
            response = stream.get_final_response()
        check_sequence(events)
        add, message = response.output
        assert add.type == "mcp_call" and add.output == "42" and message.type == "message"
        assert "response.mcp_call_arguments.delta" in {e.type for e in events}
    finally:
        service.stop()


# --- empty answers ------------------------------------------------------------------------------------


def _search_turn(model_name: str) -> dict:
    return {"tool_calls": [{"name": "web_search", "arguments": {"query": f"empty {model_name}"}}]}


def test_an_empty_answer_after_tool_calls_is_asked_for_again(client, scripted, model_name):
    scripted.script(model_name, [_search_turn(model_name), {"content": ""}, {"content": "Sunny, says the web."}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "web_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        streamed = "".join(stream.text_deltas)
        run = stream.get_final_run()
    assert run.status == "completed", run.last_error
    assert streamed == "Sunny, says the web."
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.content[0].text.value == "Sunny, says the web."
    first, empty, nudged = scripted.requests(model_name)
    assert nudged["body"]["messages"][:-1] == empty["body"]["messages"]
    assert nudged["body"]["messages"][-1]["role"] == "user"
    assert nudged["body"]["messages"][-1]["content"].startswith("Your last reply was empty.")
    # Both calls are counted, in the run and in the step that made the answer.
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    assert run.usage.completion_tokens == sum(s.usage.completion_tokens for s in steps)
    assert len(steps) == 2


def test_an_answer_empty_twice_completes_the_run_with_a_note(client, scripted, model_name):
    scripted.script(model_name, [_search_turn(model_name), {"content": ""}, {"content": ""}])
    thread, run = _run(client, model_name, tools=[{"type": "web_search"}])
    assert run.status == "completed", run.last_error
    assert len(scripted.requests(model_name)) == 3
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.content[0].text.value == (
        "(No answer: the model replied with an empty message after its tool calls, twice.)"
    )


def test_an_empty_answer_without_tool_calls_is_not_asked_again(client, scripted, model_name):
    scripted.script(model_name, [{"content": ""}, {"content": "never asked"}])
    thread, run = _run(client, model_name)
    assert run.status == "completed"
    assert len(scripted.requests(model_name)) == 1
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert message.content[0].text.value == ""


# --- images of an answer ------------------------------------------------------------------------------


def _draw(values: list[int], attempt: int) -> dict:
    code = f"# attempt {attempt}\nimport matplotlib.pyplot as plt\nplt.plot({values})\nplt.show()"
    return {"tool_calls": [{"name": "code_interpreter", "arguments": {"code": code}}]}


def _code_run(server, scripted, model_name: str, turns: list[dict]):
    client = sdk(server.url)
    scripted.script(model_name, [*turns, {"content": "Here is the chart."}])
    thread, run = _run(client, model_name, tools=[{"type": "code_interpreter"}], text="Chart it.")
    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    drawn = [
        [o.image.file_id for o in s.step_details.tool_calls[0].code_interpreter.outputs if o.type == "image"]
        for s in steps if s.type == "tool_calls"
    ]
    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    return drawn, [p.image_file.file_id for p in message.content if p.type == "image_file"]


def test_a_chart_drawn_again_is_one_file_shown_once(server, scripted, model_name):
    drawn, shown = _code_run(server, scripted, model_name, [_draw([1, 2, 3], n) for n in range(3)])
    assert len(drawn) == 3 and all(len(images) == 1 for images in drawn)
    assert len({images[0] for images in drawn}) == 1  # the same bytes: one file
    assert shown == drawn[0]


def test_the_answer_shows_the_last_drawing_calls_images(server, scripted, model_name):
    drawn, shown = _code_run(server, scripted, model_name, [_draw([1, 2, 3], 1), _draw([3, 1, 2], 2)])
    first, last = drawn
    assert first != last
    assert shown == last

