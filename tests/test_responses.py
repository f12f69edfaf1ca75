"""The Responses API through the official SDK (strict parsing, as every client here): text in and
out, chains with `previous_response_id` (and branches), streaming with the SDK's helpers, function
calls round-tripped through `function_call_output`, background responses polled, resumed with
`starting_after` and cancelled, structured output and budgets, the tools the server runs, and the
errors clients get. The model is the scripted chat-completions server."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import psycopg
import pytest
from pydantic import BaseModel

from tests.conftest import assert_error, sdk, wait_for

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sent_messages(scripted, model: str) -> list[list[dict]]:
    """The chat messages of each request the server made to the model."""
    return [r["body"]["messages"] for r in scripted.requests(model)]


def check_sequence(events) -> None:
    """Events are numbered from 0 without gaps, start with response.created and end with a
    terminal lifecycle event."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete", "response.failed")


# --- text in, text out -----------------------------------------------------------------------------


def test_create_retrieve_input_items_and_delete(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Paris is the capital of France."}])
    response = client.responses.create(
        model=model_name,
        instructions="Answer in one sentence.",
        input="What is the capital of France?",
        metadata={"topic": "geography"},
        temperature=0.2,
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.error is None and response.completed_at
    assert response.output_text == "Paris is the capital of France."
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert response.instructions == "Answer in one sentence."
    assert response.metadata == {"topic": "geography"} and response.temperature == 0.2
    assert response.conversation is None and response.previous_response_id is None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    (request,) = scripted.requests(model_name)
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert request["body"]["temperature"] == 0.2

    again = client.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()
    (item,) = client.responses.input_items.list(response.id)
    assert item.type == "message" and item.role == "user"
    assert item.content[0].type == "input_text" and item.content[0].text == "What is the capital of France?"

    assert client.responses.delete(response.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_previous_response_id_chains_and_branches(client, scripted, model_name):
    scripted.script(
        model_name,
        [{"content": "Noted: your name is Ada."}, {"content": "Your name is Ada."}, {"content": "Hello, Ada."}],
    )
    first = client.responses.create(model=model_name, input=[{"role": "user", "content": "My name is Ada."}])
    second = client.responses.create(model=model_name, previous_response_id=first.id, input="What is my name?")
    assert second.previous_response_id == first.id and second.output_text == "Your name is Ada."
    # A branch from the first response: the second one's turn is not in its context.
    branch = client.responses.create(model=model_name, previous_response_id=first.id, input="Greet me.")
    assert branch.output_text == "Hello, Ada."
    _, chained, branched = sent_messages(scripted, model_name)
    assert chained == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Noted: your name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    assert branched == [*chained[:2], {"role": "user", "content": "Greet me."}]
    # Each response lists only its own input.
    assert [i.content[0].text for i in client.responses.input_items.list(branch.id)] == ["Greet me."]


@pytest.mark.asyncio
async def test_async_client_with_developer_messages_and_images(aclient, scripted, model_name):
    scripted.script(model_name, [{"content": "A red square."}, {"content": "Still a red square."}])
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    response = await aclient.responses.create(
        model=model_name,
        input=[
            {"role": "developer", "content": "Describe images plainly."},
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": image, "detail": "low"},
            ]},
        ],
    )
    assert response.output_text == "A red square."
    follow = await aclient.responses.create(model=model_name, previous_response_id=response.id, input="Sure?")
    assert follow.output_text == "Still a red square."
    first, second = sent_messages(scripted, model_name)
    assert first[0] == {"role": "system", "content": "Describe images plainly."}
    assert first[1]["content"][1] == {"type": "image_url", "image_url": {"url": image, "detail": "low"}}
    # The developer message is part of the conversation: it carries over, unlike `instructions`.
    assert second[0] == first[0] and second[-1] == {"role": "user", "content": "Sure?"}
    items = [i async for i in aclient.responses.input_items.list(response.id, order="asc")]
    assert [(i.type, i.role) for i in items] == [("message", "developer"), ("message", "user")]
    assert items[1].content[1].type == "input_image" and items[1].content[1].image_url == image


# --- streaming --------------------------------------------------------------------------------------


def test_stream_helper_events_and_final_response(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Streaming works one piece at a time.", "chunk_size": 3, "chunk_delay": 0.03}])
    with client.responses.stream(model=model_name, input="Stream, please.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_sequence(events)
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "Streaming works one piece at a time."
    assert final.output_text == "Streaming works one piece at a time."
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.status == "completed"
    last = events[-1].response
    assert (last.id, last.status, last.output_text, last.usage) == (stored.id, stored.status, stored.output_text, stored.usage)
    assert [o.id for o in last.output] == [o.id for o in stored.output]


@pytest.mark.asyncio
async def test_async_raw_stream_parses_every_event(aclient, scripted, model_name):
    scripted.script(model_name, [{"content": "Raw events."}])
    stream = await aclient.responses.create(model=model_name, input="Raw, please.", stream=True)
    events = [event async for event in stream]
    check_sequence(events)
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Raw events."


def test_the_wire_format_is_open_responses(server, scripted, model_name):
    """`event` matches the body's `type`, no SSE `id`, lines end with LF (as OpenAI's), and the
    stream ends with `data: [DONE]`."""
    scripted.script(model_name, [{"content": "Wire."}])
    with httpx.stream("POST", f"{server.url}/responses", json={"model": model_name, "input": "x", "stream": True},
                      timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read()
    assert b"\r" not in raw
    body = raw.decode()
    frames = [f for f in body.split("\n\n") if f.strip() and not f.startswith(":")]
    assert frames[-1].strip() == "data: [DONE]"
    for frame in frames[:-1]:
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if not line.startswith(":"))
        assert "id" not in fields
        assert json.loads(fields["data"])["type"] == fields["event"]


# --- function calls -----------------------------------------------------------------------------------


def test_function_call_round_trip_with_previous_response_id(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_paris1"}]},
            {"content": "It is sunny in Paris, 21 °C."},
        ],
    )
    first = client.responses.create(model=model_name, input="Weather in Paris?", tools=[WEATHER])
    assert first.status == "completed"
    (call,) = first.output
    assert call.type == "function_call" and call.call_id == "call_paris1" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.id.startswith("fc_")
    second = client.responses.create(
        model=model_name,
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 °C"}],
    )
    assert second.status == "completed" and second.output_text == "It is sunny in Paris, 21 °C."
    assert [o.type for o in second.output] == ["message"]
    _, resumed = sent_messages(scripted, model_name)
    assert resumed[-2]["tool_calls"][0]["id"] == "call_paris1"
    assert resumed[-1] == {"role": "tool", "content": "sunny, 21 °C", "tool_call_id": "call_paris1"}
    # The first response still ends at its call; the second's input is the output it was given.
    assert [o.type for o in client.responses.retrieve(first.id).output] == ["function_call"]
    (given,) = client.responses.input_items.list(second.id)
    assert given.type == "function_call_output" and given.call_id == "call_paris1"
    # Outputs for calls the response no longer waits for are refused.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=model_name, previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_paris1", "output": "again"}],
        )
    assert caught.value.body["param"] == "input"


def test_streamed_parallel_function_calls_then_outputs_streamed(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [
                {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_oslo"},
                {"name": "get_weather", "arguments": {"city": "Rome"}, "id": "call_rome"},
            ], "chunk_size": 5},
            {"content": "Oslo is cold, Rome is warm."},
        ],
    )
    with client.responses.stream(model=model_name, input="Oslo and Rome?", tools=[WEATHER]) as stream:
        events = list(stream)
        first = stream.get_final_response()
    check_sequence(events)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [c.call_id for c in calls] == ["call_oslo", "call_rome"]
    assert [c.parsed_arguments for c in calls] == [None, None]  # not strict: the SDK leaves them unparsed
    argument_deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(e.delta for e in argument_deltas if e.output_index == 0) == json.dumps({"city": "Oslo"})
    assert [e.arguments for e in events if e.type == "response.function_call_arguments.done"] == [
        c.arguments for c in calls
    ]
    with client.responses.stream(
        model=model_name,
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": "call_rome", "output": "warm"},
            {"type": "function_call_output", "call_id": "call_oslo", "output": "cold"},
        ],
    ) as stream:
        events = list(stream)
        second = stream.get_final_response()
    check_sequence(events)
    assert second.output_text == "Oslo is cold, Rome is warm."
    assert [o.type for o in second.output] == ["message"]


def test_stateless_function_calling_with_store_false(server, client, scripted, model_name):
    """The function-calling guide's loop: the client keeps the items and sends them all back."""
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lima"}, "id": "call_lima"}]},
            {"content": "Lima: cloudy."},
        ],
    )
    input_list: list = [{"role": "user", "content": "Weather in Lima?"}]
    response = client.responses.create(model=model_name, input=input_list, tools=[WEATHER], store=False)
    assert response.status == "completed" and response.output[0].type == "function_call"
    input_list += response.output
    input_list.append({"type": "function_call_output", "call_id": "call_lima", "output": "cloudy"})
    response = client.responses.create(model=model_name, input=input_list, tools=[WEATHER], store=False)
    assert response.output_text == "Lima: cloudy."
    _, second = sent_messages(scripted, model_name)
    assert second[0] == {"role": "user", "content": "Weather in Lima?"}
    assert second[1]["tool_calls"][0]["id"] == "call_lima"
    assert second[2] == {"role": "tool", "content": "cloudy", "tool_call_id": "call_lima"}
    # Not stored: not retrievable, not continuable.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model_name, previous_response_id=response.id, input="more")


# --- background -------------------------------------------------------------------------------------


def test_background_polled_and_streamed_again_from_any_point(client, scripted, model_name):
    text = "Background work finished after a while."
    scripted.script(model_name, [{"content": text, "chunk_size": 4, "chunk_delay": 0.03}])
    response = client.responses.create(model=model_name, input="Work in the background.", background=True)
    assert response.background is True and response.status in ("queued", "in_progress")
    done = wait_for(lambda: (r := client.responses.retrieve(response.id)).status == "completed" and r, timeout=30)
    assert done.output_text == text

    with client.responses.stream(response_id=response.id) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_sequence(events)
    assert events[0].response.status == "queued" and final.output_text == text
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text

    cut = len(events) // 2
    resumed = list(client.responses.retrieve(response.id, stream=True, starting_after=cut))
    assert [e.sequence_number for e in resumed] == list(range(cut + 1, len(events)))
    assert [e.type for e in resumed] == [e.type for e in events[cut + 1 :]]
    with client.responses.stream(response_id=response.id, starting_after=cut) as stream:
        helper = list(stream)
    assert [e.sequence_number for e in helper] == list(range(cut + 1, len(events)))


def test_background_stream_resumes_after_a_dropped_connection(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Part one. Part two.", "gate": f"{model_name}-mid", "gate_after": 2}])
    stream = client.responses.create(model=model_name, input="Go.", background=True, stream=True)
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta":
            break
    stream.close()  # the client goes away mid-answer; the response goes on
    scripted.wait_for_gate(f"{model_name}-mid")
    scripted.release(f"{model_name}-mid")
    response_id = seen[0].response.id
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))
    check_sequence(seen + rest)
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert text == "Part one. Part two." == rest[-1].response.output_text


def test_cancel_a_background_response(client, scripted, model_name):
    gate = f"{model_name}-hold"
    scripted.script(model_name, [{"content": "This never finishes.", "gate": gate, "gate_after": 1}])
    response = client.responses.create(model=model_name, input="Take your time.", background=True)
    scripted.wait_for_gate(gate)
    cancelled = client.responses.cancel(response.id)
    scripted.release(gate)
    assert cancelled.status == "cancelled"
    assert client.responses.cancel(response.id).status == "cancelled"  # idempotent
    assert client.responses.retrieve(response.id).status == "cancelled"
    events = list(client.responses.retrieve(response.id, stream=True))
    check_sequence(events)
    assert events[-1].type == "response.failed" and events[-1].response.status == "cancelled"

    scripted.script(model_name, [{"content": "Quick."}])
    finished = client.responses.create(model=model_name, input="Quick one.")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(finished.id)
    assert "background" in caught.value.body["message"]


# --- request settings, structured output, tools --------------------------------------------------------


class Answer(BaseModel):
    city: str
    population: int


def test_structured_output_budgets_and_tool_settings(client, scripted, model_name):
    scripted.script(model_name, [{"content": json.dumps({"city": "Lyon", "population": 522000})}])
    parsed = client.responses.parse(
        model=model_name,
        input="Biggest city after Paris and Marseille?",
        text_format=Answer,
        max_output_tokens=300,
        top_p=0.5,
        tools=[WEATHER],
        tool_choice="none",
        parallel_tool_calls=False,
        truncation="auto",
    )
    assert parsed.output_parsed == Answer(city="Lyon", population=522000)
    assert parsed.text.format.type == "json_schema" and parsed.text.format.name == "Answer"
    assert parsed.max_output_tokens == 300 and parsed.tool_choice == "none" and parsed.parallel_tool_calls is False
    body = scripted.requests(model_name)[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Answer"
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 300
    assert body["top_p"] == 0.5 and body["tool_choice"] == "none"


def test_max_output_tokens_reached_is_incomplete(client, scripted, model_name):
    scripted.script(model_name, [{"content": "A long answer cut short", "finish_reason": "length"}])
    response = client.responses.create(model=model_name, input="Talk.", max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "A long answer cut short"


def test_forced_function_and_allowed_tools(client, scripted, model_name):
    other = {**WEATHER, "name": "get_time"}
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "get_time", "arguments": {"city": "Oslo"}}]},
         {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}],
    )
    forced = client.responses.create(
        model=model_name, input="Time in Oslo?", tools=[WEATHER, other], tool_choice={"type": "function", "name": "get_time"}
    )
    assert forced.tool_choice.type == "function" and forced.tool_choice.name == "get_time"
    restricted = client.responses.create(
        model=model_name, input="Weather in Oslo?", tools=[WEATHER, other],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
    )
    assert restricted.output[0].name == "get_weather" and restricted.tool_choice.type == "allowed_tools"
    first, second = [r["body"] for r in scripted.requests(model_name)]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert [t["function"]["name"] for t in second["tools"]] == ["get_weather"] and second["tool_choice"] == "required"


def test_server_tools_show_as_their_own_items(client, scripted, model_name, fake_search):
    scripted.script(
        model_name,
        [
            {"tool_calls": [
                {"name": "web_search", "arguments": {"query": "assistgraph responses"}},
                {"name": "calculator", "arguments": {"expression": "6*7"}},
            ]},
            {"content": "Found it; and 6*7 is 42."},
        ],
    )
    with client.responses.stream(
        model=model_name, input="Search and compute.", tools=[{"type": "web_search"}, {"type": "calculator"}],
        include=["web_search_call.action.sources"],
    ) as stream:
        events = list(stream)
        response = stream.get_final_response()
    check_sequence(events)
    search, calc, answer = response.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.type == "search" and search.action.query == "assistgraph responses"
    assert search.action.sources and all(s.url.startswith("http") for s in search.action.sources)
    assert calc.type == "mcp_call" and calc.server_label == "assistgraph" and calc.name == "calculator"
    assert calc.output == "6*7 = 42" and calc.status == "completed"
    assert answer.type == "message" and response.output_text == "Found it; and 6*7 is 42."
    assert {"response.web_search_call.completed", "response.mcp_call.completed"} <= {e.type for e in events}
    shown = {t.type for t in response.tools}
    assert shown == {"web_search", "function"}  # the plugin shows as a function marked builtin
    calculator = next(t for t in response.tools if t.type == "function")
    assert calculator.model_extra == {"builtin": {"type": "calculator"}}
    # Sending the tools back as shown keeps them the server's, and the output goes back as input.
    scripted.script(model_name, [{"content": "Again."}])
    again = client.responses.create(
        model=model_name,
        input=[{"role": "user", "content": "Search and compute."}, *response.output, {"role": "user", "content": "Again."}],
        tools=[t.model_dump(exclude_none=True) for t in response.tools],
        store=False,
    )
    assert {t.type for t in again.tools} == shown and again.output_text == "Again."
    assert [m["role"] for m in scripted.requests(model_name)[-1]["body"]["messages"]] == ["user", "assistant", "user"]


def test_code_interpreter_calls(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "code_interpreter", "arguments": {"code": "print(6 * 7)"}}]},
            {"content": "The code printed 42."},
        ],
    )
    with client.responses.stream(
        model=model_name, input="Compute 6*7 with code.", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        include=["code_interpreter_call.outputs"],
    ) as stream:
        events = list(stream)
        response = stream.get_final_response()
    check_sequence(events)
    code = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert code == "print(6 * 7)"
    kinds = [e.type for e in events if e.type.startswith("response.code_interpreter_call")]
    assert kinds[0] == "response.code_interpreter_call.in_progress" and kinds[-1] == "response.code_interpreter_call.completed"
    call, answer = response.output
    assert call.type == "code_interpreter_call" and call.code == "print(6 * 7)" and call.status == "completed"
    assert call.container_id.startswith("cntr_")
    assert call.outputs[0].type == "logs" and "42" in call.outputs[0].logs
    assert response.output_text == "The code printed 42."
    assert client.responses.retrieve(response.id).output[0].outputs is None  # outputs only with include


# --- assistants as defaults --------------------------------------------------------------------------


def test_an_assistant_gives_a_response_its_defaults(client, scripted, model_name):
    assistant = client.beta.assistants.create(
        model=model_name, instructions="You are a pirate.", tools=[{"type": "function", "function": {
            "name": "get_weather", "parameters": WEATHER["parameters"]}}], temperature=0.3,
    )
    scripted.script(model_name, [{"content": "Arr."}, {"content": "Arr again."}])
    response = client.responses.create(input="Hello?", extra_body={"assistant_id": assistant.id})
    assert response.output_text == "Arr." and response.model == model_name
    assert response.instructions == "You are a pirate." and response.temperature == 0.3
    assert [t.name for t in response.tools] == ["get_weather"]
    assert response.model_extra["assistant_id"] == assistant.id
    overridden = client.responses.create(
        input="Hello?", instructions="Be formal.", tools=[], extra_body={"assistant_id": assistant.id}
    )
    assert overridden.instructions == "Be formal." and overridden.tools == []
    first, second = [r["body"] for r in scripted.requests(model_name)]
    assert first["messages"][0]["content"] == "You are a pirate." and first["temperature"] == 0.3
    assert second["messages"][0]["content"] == "Be formal." and "tools" not in second


# --- errors --------------------------------------------------------------------------------------------


def test_errors_are_openai_errors(server, client, scripted, model_name):
    url = f"{server.url}/responses"
    cases = [
        ({"model": model_name, "input": "x", "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
        ({"model": model_name, "input": "x", "conversation": "conv_nope"}, 404, "conversation"),
        ({"model": model_name, "input": "x", "conversation": "conv_a", "previous_response_id": "resp_a"}, 400,
         "previous_response_id"),
        ({"model": model_name, "input": "x", "background": True, "store": False}, 400, "background"),
        ({"model": model_name, "input": "x", "tools": [{"type": "weather"}]}, 400, "tools[0].type"),
        ({"model": model_name, "input": "x", "tools": [{"type": "computer_use_preview"}]}, 400, "tools[0].type"),
        ({"model": model_name, "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["vs_nope"]}]},
         404, "tools[0].vector_store_ids"),
        ({"model": model_name, "input": "x", "include": ["everything"]}, 400, "include"),
        ({"model": model_name, "input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
         400, "input"),
        ({"model": model_name, "input": [{"role": "robot", "content": "hi"}]}, 400, "input[0].role"),
        ({"model": model_name, "input": [{"role": "user", "content": [{"type": "input_file", "file_url": "http://x"}]}]},
         400, "input[0].content[0]"),
        ({"model": model_name, "input": "x", "temperature": 3}, 400, "temperature"),
        ({"model": model_name, "input": "x", "top_logprobs": 5}, 400, "top_logprobs"),
        ({"model": model_name, "input": "x", "tools": [{"type": "mcp", "server_label": "nowhere"}]}, 404,
         "tools[0].server_label"),
        ({"model": model_name, "input": "x", "tools": [{"type": "mcp", "server_label": "x", "require_approval": "always"}]},
         400, "tools[0].require_approval"),
        ({"model": model_name, "input": "x", "tools": [
            {"type": "file_search", "vector_store_ids": ["vs_x"], "filters": {"type": "eq", "key": "a", "value": 1}}
        ]}, 400, "tools[0].filters"),
        ({"model": model_name, "input": "x", "tool_choice": {"type": "function", "name": "nope"}}, 400, "tool_choice"),
        ({"model": model_name, "input": "x", "not_a_parameter": 1}, 400, "not_a_parameter"),
        ({"input": "x"}, 400, "model"),
        ({"model": model_name, "input": "x", "extra": None, "assistant_id": "asst_nope"}, 400, "extra"),
        ({"model": model_name, "input": "x", "assistant_id": "asst_nope"}, 404, "assistant_id"),
    ]
    for body, status, param in cases:
        assert_error(httpx.post(url, json=body, timeout=30), status, param=param)
    assert_error(httpx.get(f"{url}/resp_nope", timeout=10), 404, param="response_id")
    assert_error(httpx.get(f"{url}/nope", timeout=10), 400, param="response_id")
    assert_error(httpx.post(f"{url}/resp_nope/cancel", timeout=10), 404, param="response_id")
    assert_error(httpx.delete(f"{url}/resp_nope", timeout=10), 404, param="response_id")
    assert_error(httpx.get(f"{url}/resp_nope/input_items", timeout=10), 404, param="response_id")
    assert scripted.requests(model_name) == []  # none of them reached the model


def test_a_failing_model_fails_the_response(client, scripted, model_name):
    scripted.script(model_name, [{"error": {"status": 429, "message": "slow down", "type": "rate_limit"}}])
    response = client.responses.create(model=model_name, input="x")
    assert response.status == "failed" and response.error.code == "rate_limit_exceeded"
    assert "slow down" in response.error.message
    scripted.script(model_name, [{"error": {"status": 500, "message": "boom"}}])
    with client.responses.stream(model=model_name, input="y") as stream:
        events = list(stream)
    check_sequence(events)
    assert events[-1].type == "response.failed" and events[-1].response.error.code == "server_error"


def test_concurrent_responses_of_one_chain_do_not_mix(client, scripted, model_name):
    scripted.script(model_name, [{"content": "root"}] + [{"echo": True}] * 6)
    root = client.responses.create(model=model_name, input="root")
    results: list[str] = []

    def branch(i: int) -> None:
        results.append(client.responses.create(model=model_name, previous_response_id=root.id, input=f"b{i}").output_text)

    threads = [threading.Thread(target=branch, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"echo: b{i}" for i in range(6))
    for messages in sent_messages(scripted, model_name)[1:]:
        assert [m["content"] for m in messages][:2] == ["root", "root"] and len(messages) == 3


def test_streams_of_finished_responses_and_of_pruned_events(client, scripted, model_name, database_url):
    scripted.script(model_name, [{"content": "Kept whole."}])
    response = client.responses.create(model=model_name, input="No stream.")
    # Token deltas are kept only for streamed and background responses: the text comes in one delta.
    events = list(client.responses.retrieve(response.id, stream=True))
    check_sequence(events)
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Kept whole."]
    assert events[-1].response.output_text == "Kept whole."
    # Past ASSISTGRAPH_EVENT_RETENTION the events are gone: a stream says how the response ended.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM run_events WHERE run_id = (SELECT run_id FROM responses WHERE id = %s)", (response.id,))
    events = list(client.responses.retrieve(response.id, stream=True))
    assert [e.type for e in events] == ["response.created", "response.completed"]
    assert events[-1].response.output_text == "Kept whole."


def test_another_process_streams_it_and_an_expired_response_fails(
    server, short_expiry_server, scripted, model_name, database_url
):
    """Runs created by one process are streamed by another (they share the database), and a run that
    expires (3 s on that server) fails its response, keeping the function call it made."""
    here, there = sdk(server.url), sdk(short_expiry_server.url)
    gate = f"{model_name}-slow"
    scripted.script(model_name, [{"content": "From afar.", "gate": gate}])
    response = here.responses.create(model=model_name, input="x", background=True)
    scripted.wait_for_gate(gate)
    scripted.release(gate)
    with there.responses.stream(response_id=response.id) as stream:
        events = list(stream)
    check_sequence(events)
    assert events[-1].response.output_text == "From afar."

    scripted.script(model_name, [{"content": "Too late.", "gate": f"{gate}-2"}])
    late = there.responses.create(model=model_name, input="y", background=True)
    expired = wait_for(lambda: (r := there.responses.retrieve(late.id)).status == "failed" and r, timeout=30)
    assert expired.error.code == "server_error" and "expired" in expired.error.message
    scripted.release(f"{gate}-2")

    scripted.script(model_name, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Nuuk"}}]}])
    waiting = there.responses.create(model=model_name, input="z", tools=[WEATHER])
    assert waiting.status == "completed" and waiting.output[0].type == "function_call"

    def run_status() -> str:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT status FROM runs WHERE id = (SELECT run_id FROM responses WHERE id = %s)", (waiting.id,)
            ).fetchone()[0]

    wait_for(lambda: run_status() == "expired", timeout=30)
    # It ended at its function call, whatever became of the run; outputs come too late now.
    assert there.responses.retrieve(waiting.id).model_dump() == waiting.model_dump()
    with pytest.raises(openai.BadRequestError) as caught:
        there.responses.create(
            model=model_name, previous_response_id=waiting.id,
            input=[{"type": "function_call_output", "call_id": waiting.output[0].call_id, "output": "cold"}],
        )
    assert "expired" in caught.value.body["message"]


def test_file_search_over_vector_store_ids(client, scripted, model_name):
    from tests.test_file_search import BRKA_10K, goog_10k

    store = client.vector_stores.create(name="filings")
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[("brka-10k.txt", BRKA_10K), ("goog-10k.pdf", goog_10k())]
    )
    assert batch.file_counts.completed == 2
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "file_search", "arguments": {"query": "Google Services revenues 2023"}}]},
            {"content": "Google Services brought in 272.5 billion dollars【0:0†goog-10k.pdf】."},
        ],
    )
    tools = [{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 3,
              "ranking_options": {"score_threshold": 0.0}}]
    with client.responses.stream(
        model=model_name, input="Google Services revenue in 2023?", tools=tools, include=["file_search_call.results"]
    ) as stream:
        events = list(stream)
        response = stream.get_final_response()
    check_sequence(events)
    search, answer = response.output
    assert search.type == "file_search_call" and search.status == "completed" and search.id.startswith("fs_")
    assert search.queries == ["Google Services revenues 2023"]
    assert 0 < len(search.results) <= 3 and search.results[0].filename == "goog-10k.pdf"
    assert "272.5" in search.results[0].text
    (citation,) = answer.content[0].annotations
    assert citation.type == "file_citation" and citation.filename == "goog-10k.pdf"
    assert citation.file_id == search.results[0].file_id
    annotated = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert [(e.annotation.type, e.annotation.file_id) for e in annotated] == [("file_citation", citation.file_id)]
    (shown,) = response.tools
    assert shown.type == "file_search" and shown.vector_store_ids == [store.id] and shown.max_num_results == 3
    # The results' text only with include.
    assert client.responses.retrieve(response.id).output[0].results is None
    assert client.responses.retrieve(response.id).output[0].queries == ["Google Services revenues 2023"]
    done = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "file_search_call"]
    assert [d.queries for d in done] == [["Google Services revenues 2023"]]
    assert "Google Services" in json.dumps(scripted.requests(model_name)[1]["body"]["messages"][-1]["content"])


def test_mcp_servers_by_label_with_headers(client, scripted, model_name):
    from tests.mcp_service import HEADER_SECRET, TOKEN, start_in_thread

    service = start_in_thread(token=TOKEN)
    try:
        label = f"tools-{model_name}"
        registered = client.post("/mcp_servers", cast_to=object, body={
            "url": service.url, "name": label, "headers": {"Authorization": f"Bearer {TOKEN}"},
        })
        scripted.script(
            model_name,
            [
                {"tool_calls": [
                    {"name": "add", "arguments": {"a": 19, "b": 23}},
                    {"name": "echo_headers", "arguments": {"names": ["x-user"]}},
                ]},
                {"content": "19 + 23 = 42."},
            ],
        )
        # OpenAI's shape: the server by its label (and URL), per-request headers.
        mcp = {"type": "mcp", "server_label": label, "server_url": service.url, "require_approval": "never",
               "headers": {"X-User": HEADER_SECRET}}
        with client.responses.stream(model=model_name, input="19 + 23?", tools=[mcp]) as stream:
            events = list(stream)
            response = stream.get_final_response()
        check_sequence(events)
        add, echo, answer = response.output
        assert add.type == "mcp_call" and add.name == "add" and add.output == "42" and add.status == "completed"
        assert json.loads(add.arguments) == {"a": 19, "b": 23}
        assert echo.type == "mcp_call" and HEADER_SECRET not in (echo.output or "")
        assert service.calls_of("echo_headers")[-1]["headers"]["x-user"] == HEADER_SECRET
        assert answer.type == "message" and response.output_text == "19 + 23 = 42."
        assert "response.mcp_call_arguments.delta" in {e.type for e in events}
        # The response lists the server as assistants do: a function entry marked with the server.
        (shown,) = response.tools
        assert shown.type == "function" and shown.model_extra == {"builtin": {"type": "mcp", "id": registered["id"]}}
        assert HEADER_SECRET not in response.model_dump_json() and TOKEN not in response.model_dump_json()
        # A URL that is not the registered server's is no match.
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model=model_name, input="x", tools=[{**mcp, "server_url": "http://127.0.0.1:9/mcp"}])
    finally:
        service.stop()
