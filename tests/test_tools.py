"""Installed tools through the SDK: the example plugin (installed with pip), a local tool loaded by
import path, and web_search on a fake SearxNG; listed at GET /v1/tools, enabled with
`{"type": "<name>"}`, executed inside the graph and shown as `function` tool calls."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AssistantEventHandler
from typing_extensions import override

from tests.conftest import wait_for


class StepRecorder(AssistantEventHandler):
    def __init__(self):
        super().__init__()
        self.created: list[str] = []
        self.outputs: list[str | None] = []
        self.deltas: list[dict] = []

    @override
    def on_tool_call_created(self, tool_call):
        self.created.append(tool_call.type)

    @override
    def on_tool_call_delta(self, delta, snapshot):
        self.deltas.append(delta.model_dump(exclude_none=True))

    @override
    def on_run_step_done(self, run_step):
        if run_step.type == "tool_calls":
            self.outputs += [call.function.output for call in run_step.step_details.tool_calls]


def test_installed_tools_are_listed_with_their_schemas(client):
    listed = client.get("/tools", cast_to=object)
    assert listed["object"] == "list" and listed["has_more"] is False
    tools = {t["type"]: t for t in listed["data"]}
    assert {"web_search", "calculator", "nap"} <= set(tools)
    # The example plugin came from its own pip-installed distribution, the local tool from its path.
    assert tools["calculator"]["source"] == "assistgraph-calculator"
    assert tools["nap"]["source"] == "tests.local_tools:nap"
    assert tools["web_search"]["source"] == "assistgraph"
    calc = tools["calculator"]["function"]
    assert calc["name"] == "calculator" and "exactly" in calc["description"]
    assert calc["parameters"]["required"] == ["expression"]
    assert "Python syntax" in calc["parameters"]["properties"]["expression"]["description"]
    assert "query" in tools["web_search"]["function"]["parameters"]["properties"]


def test_unknown_tool_type_is_a_400_naming_the_available_ones(client, model_name):
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model=model_name, tools=[{"type": "function", "function": {"name": "f"}}, {"type": "weather"}])
    error = caught.value.body
    assert error["param"] == "tools[1].type" and error["type"] == "invalid_request_error"
    assert "weather" in error["message"]
    for name in ("calculator", "web_search", "nap", "file_search", "function"):
        assert name in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model=model_name, tools=[{"type": "not a name"}])
    assert caught.value.body["param"] == "tools[0].type"


def test_builtin_tools_show_as_marked_functions_and_survive_a_round_trip(client, model_name):
    assistant = client.beta.assistants.create(
        model=model_name, tools=[{"type": "calculator"}, {"type": "web_search"}, {"type": "file_search"}]
    )
    calc, search, file_search = assistant.tools
    # Strict SDK parsing accepts them (the fixture's client validates strictly): function entries.
    assert calc.type == "function" and calc.function.name == "calculator"
    assert calc.function.parameters["properties"]["expression"]["type"] == "string"
    assert calc.model_extra == {"builtin": {"type": "calculator"}}
    assert search.function.name == "web_search" and file_search.type == "file_search"

    # Sending the tools back unchanged keeps them built-in; adding a client function keeps that one the client's.
    extra = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    updated = client.beta.assistants.update(assistant.id, tools=[*assistant.tools, extra])
    assert [t.model_extra.get("builtin") for t in updated.tools] == [
        {"type": "calculator"}, {"type": "web_search"}, None, None
    ]
    fetched = client.beta.assistants.retrieve(assistant.id)
    assert fetched.tools == updated.tools


def test_plugin_tool_runs_inside_the_graph_polling(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1234 * 5678"}}]},
            {"content": "It is 7006652."},
        ],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "calculator"}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "What is 1234 * 5678?"}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    assert run.required_action is None

    # The model was offered the plugin's schema and got the tool's output back.
    first, second = scripted.requests(model_name)
    offered = {t["function"]["name"]: t["function"] for t in first["body"]["tools"]}
    assert offered["calculator"]["parameters"]["properties"]["expression"]["type"] == "string"
    assert second["body"]["messages"][-1] == {
        "role": "tool", "content": "1234 * 5678 = 7006652", "tool_call_id": second["body"]["messages"][-2]["tool_calls"][0]["id"]
    }

    steps = client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert steps[0].status == "completed" and steps[0].usage is not None
    (call,) = steps[0].step_details.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "calculator"
    assert call.function.arguments == '{"expression": "1234 * 5678"}'
    assert call.function.output == "1234 * 5678 = 7006652"
    answer = client.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id).data[0]
    assert answer.content[0].text.value == "It is 7006652."


def test_plugin_tool_streams_as_function_step_deltas_and_errors_reach_the_model(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1/0"}}]},
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2 ** 10"}}]},
            {"content": "1024, and 1/0 is undefined."},
        ],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "calculator"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "1/0 and 2**10?"}])
    handler = StepRecorder()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "completed", run.last_error
    # (The SDK's handler numbers tool calls across steps, so a second step's first call counts as a delta.)
    assert handler.created[0] == "function"
    assert handler.outputs == ["Error: division by zero", "2 ** 10 = 1024"]
    # Outputs arrive as step deltas, as the arguments did.
    assert any(d.get("function", {}).get("output") == "2 ** 10 = 1024" for d in handler.deltas)
    # The failure came back to the model as the tool's output, and it went on.
    requests = scripted.requests(model_name)
    assert requests[1]["body"]["messages"][-1]["content"] == "Error: division by zero"


@pytest.mark.asyncio
async def test_plugin_tool_async_client_and_a_client_function_in_the_same_turn(aclient, scripted, model_name):
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"name": "calculator", "arguments": {"expression": "6 * 7"}},
                    {"name": "get_weather", "arguments": {"city": "Paris"}},
                ]
            },
            {"content": "42, and sunny in Paris."},
        ],
    )
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    assistant = await aclient.beta.assistants.create(model=model_name, tools=[{"type": "calculator"}, weather])
    thread = await aclient.beta.threads.create(messages=[{"role": "user", "content": "6*7 and the weather?"}])
    run = await aclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
    )
    # The server ran the calculator; only the client's function is asked for.
    assert run.status == "requires_action"
    (pending,) = run.required_action.submit_tool_outputs.tool_calls
    assert pending.function.name == "get_weather"
    step = (await aclient.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)).data[0]
    calc = next(c for c in step.step_details.tool_calls if c.function.name == "calculator")
    assert calc.function.output == "6 * 7 = 42" and step.status == "in_progress"
    run = await aclient.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": pending.id, "output": "sunny"}],
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    step = (await aclient.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id, run_id=run.id))
    assert {c.function.name: c.function.output for c in step.step_details.tool_calls} == {
        "calculator": "6 * 7 = 42", "get_weather": "sunny"
    }


def test_web_search_results_reach_the_model(client, scripted, model_name, fake_search):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "web_search", "arguments": {"query": "assistgraph release notes"}}]},
            {"content": "Found it."},
        ],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "web_search"}])
    handler = StepRecorder()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "What's new in assistgraph?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "completed", run.last_error
    assert handler.created == ["function"]
    # The provider got the model's query; the model got titles, URLs and snippets (5 = the default count).
    assert any("assistgraph release notes" in str(r) for r in fake_search.requests)
    result = scripted.requests(model_name)[1]["body"]["messages"][-1]["content"]
    assert "http" in result and "assistgraph release notes" in result
    assert result.count("http") >= 5 and "6." not in result
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    assert step.step_details.tool_calls[0].function.output == result


def test_a_hanging_tool_times_out_into_an_error_the_model_sees(client, scripted, model_name):
    # The test server's tool timeout is 5 s.
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "nap", "arguments": {"seconds": 60}}]}, {"content": "The tool timed out."}],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "nap"}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "nap"}]}, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    step = client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data[0]
    output = step.step_details.tool_calls[0].function.output
    assert output.startswith("Error:") and "did not finish within 5 seconds" in output
    assert scripted.requests(model_name)[1]["body"]["messages"][-1]["content"] == output


def test_a_run_is_cancellable_while_a_tool_executes(client, scripted, model_name, workdir):
    napping = workdir / f"{model_name}-napping"
    nap = {"seconds": 4, "started": str(napping)}
    scripted.script(model_name, [{"tool_calls": [{"name": "nap", "arguments": nap}]}, {"content": "never"}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "nap"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "nap"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    wait_for(napping.exists)  # the tool is executing
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    run = wait_for(lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status != "cancelling" and r)
    assert run.status == "cancelled"
    # The tool call was interrupted, not waited for: a finished nap would have closed the step with its output.
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data[0]
    assert step.status == "cancelled" and step.step_details.tool_calls[0].function.output is None
    assert len(scripted.requests(model_name)) == 1  # the model was not called again
    # The thread is usable again at once.
    client.beta.threads.messages.create(thread.id, role="user", content="again")


def test_named_tool_choice_can_force_a_builtin_tool(client, scripted, model_name):
    scripted.script(model_name, [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}, {"content": "2"}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "calculator"}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "1+1"}]},
        tool_choice={"type": "function", "function": {"name": "calculator"}},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    assert scripted.requests(model_name)[0]["body"]["tool_choice"] == {"type": "function", "function": {"name": "calculator"}}


def test_run_level_tools_override_enables_a_builtin_tool(client, scripted, model_name):
    scripted.script(model_name, [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "3*3"}}]}, {"content": "9"}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "3*3"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tools=[{"type": "calculator"}], poll_interval_ms=20
    )
    assert run.status == "completed", run.last_error
    assert run.tools[0].function.name == "calculator" and run.tools[0].model_extra == {"builtin": {"type": "calculator"}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, tools=[{"type": "nope"}])
    assert caught.value.body["param"] == "tools[0].type"


def test_tools_listing_is_not_reachable_without_a_key_when_auth_is_on(auth_server):
    assert httpx.get(f"{auth_server.url}/tools").status_code == 401


def test_a_worker_without_an_enabled_tool_fails_the_run_saying_so(scale_out, scripted, model_name):
    api_server, _, _ = scale_out
    client = openai.OpenAI(base_url=api_server.url, api_key="sk-client", _strict_response_validation=True, max_retries=0)
    scripted.script(model_name, [{"content": "must not be asked"}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "nap"}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "nap"}]}, poll_interval_ms=20
    )
    assert run.status == "failed"
    assert run.last_error.code == "server_error"
    assert "'nap' is not installed" in run.last_error.message
    assert scripted.requests(model_name) == []
