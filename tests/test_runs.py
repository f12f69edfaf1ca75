"""Runs, run steps and the run lifecycle through the official SDK against the real server process.

The model is the scripted one: each test scripts its own model name, then asserts both on what the
API returns and on the request bodies the server actually sent to the model.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import wait_for

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_assistant(client, model_name, **kwargs):
    kwargs.setdefault("instructions", "You are terse.")
    return client.beta.assistants.create(model=model_name, **kwargs)


def sent(scripted, model_name, index=0) -> dict:
    """The body of the `index`-th chat request the server sent for `model_name`."""
    requests = scripted.requests(model_name)
    assert len(requests) > index, f"expected more than {index} model requests, got {len(requests)}"
    return requests[index]["body"]


def texts(body: dict) -> list[tuple[str, str]]:
    """(role, text) of each message of a chat request."""
    out = []
    for m in body["messages"]:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append((m["role"], content or ""))
    return out


def retrieve(client, run):
    return client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)


def wait_status(client, run, *statuses, timeout=20):
    return wait_for(lambda: (r := retrieve(client, run)).status in statuses and r, timeout=timeout)


def all_steps(client, run):
    return list(client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id, order="asc"))


def run_messages(client, run):
    return list(client.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id, order="asc"))


# --- the happy path ---------------------------------------------------------------------------


def test_create_and_poll_run_steps_usage_and_messages(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Paris is the capital.", "usage": {"prompt_tokens": 40, "completion_tokens": 7}}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Capital of France?"}])
    before = int(time.time())

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "completed"
    assert run.id.startswith("run_") and run.object == "thread.run"
    assert run.thread_id == thread.id and run.assistant_id == assistant.id
    assert run.model == model_name and run.instructions == "You are terse."
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (40, 7, 47)
    assert run.started_at is not None and run.completed_at is not None
    assert before - 1 <= run.created_at <= run.started_at <= run.completed_at <= int(time.time()) + 1
    assert run.required_action is None and run.last_error is None and run.incomplete_details is None
    assert run.failed_at is None and run.cancelled_at is None
    assert run.expires_at is None  # only meaningful while the run can still expire

    steps = all_steps(client, run)
    assert len(steps) == 1
    step = steps[0]
    assert step.id.startswith("step_") and step.object == "thread.run.step"
    assert step.type == "message_creation" and step.status == "completed"
    assert (step.run_id, step.thread_id, step.assistant_id) == (run.id, thread.id, assistant.id)
    assert step.completed_at is not None
    assert step.usage is not None and (step.usage.prompt_tokens, step.usage.completion_tokens) == (40, 7)
    assert step.usage.total_tokens == 47
    message_id = step.step_details.message_creation.message_id
    assert client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id, run_id=run.id) == step

    message = client.beta.threads.messages.retrieve(message_id, thread_id=thread.id)
    assert message.role == "assistant" and message.status == "completed"
    assert message.run_id == run.id and message.assistant_id == assistant.id
    assert message.content[0].text.value == "Paris is the capital."
    assert message.completed_at is not None

    # run_id filters the thread's messages down to the run's own.
    assert [m.id for m in run_messages(client, run)] == [message_id]
    everything = client.beta.threads.messages.list(thread_id=thread.id)
    assert [m.role for m in everything.data] == ["assistant", "user"]

    body = sent(scripted, model_name)
    assert body["model"] == model_name
    assert texts(body) == [("system", "You are terse."), ("user", "Capital of France?")]
    assert len(scripted.requests(model_name)) == 1


@pytest.mark.asyncio
async def test_create_and_poll_async(aclient, scripted, model_name):
    scripted.script(model_name, [{"content": "async answer"}])
    assistant = await aclient.beta.assistants.create(model=model_name, instructions="Be async.")
    thread = await aclient.beta.threads.create()
    await aclient.beta.threads.messages.create(thread_id=thread.id, role="user", content="hello async")

    run = await aclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "completed"
    messages = await aclient.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)
    assert [m.content[0].text.value for m in messages.data] == ["async answer"]
    steps = await aclient.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert [s.type for s in steps.data] == ["message_creation"]
    assert steps.data[0].step_details.message_creation.message_id == messages.data[0].id
    assert texts(sent(scripted, model_name))[-1] == ("user", "hello async")


def test_threads_create_and_run_poll(client, scripted, model_name):
    scripted.script(model_name, [{"content": "new thread answer"}])
    assistant = make_assistant(client, model_name)

    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "first question"}], "metadata": {"origin": "test"}},
        metadata={"kind": "create_and_run"},
    )

    assert run.status == "completed"
    assert run.metadata == {"kind": "create_and_run"}
    thread = client.beta.threads.retrieve(run.thread_id)
    assert thread.metadata == {"origin": "test"}
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc")
    assert [(m.role, m.content[0].text.value) for m in messages.data] == [
        ("user", "first question"),
        ("assistant", "new thread answer"),
    ]
    assert messages.data[1].run_id == run.id
    assert texts(sent(scripted, model_name))[-1] == ("user", "first question")


def test_raw_create_then_poll(client, scripted, model_name):
    scripted.script(model_name, [{"content": "polled", "delay": 0.3}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "queued"
    assert run.started_at is None and run.completed_at is None and run.usage is None
    assert run.expires_at is not None and run.expires_at >= run.created_at + 60
    assert run.truncation_strategy.type == "auto" and run.truncation_strategy.last_messages is None
    assert run.tool_choice == "auto" and run.parallel_tool_calls is True
    assert run.response_format == "auto"
    assert run.max_prompt_tokens is None and run.max_completion_tokens is None

    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed"
    assert done.id == run.id and done.created_at == run.created_at
    assert done.usage is not None and done.usage.total_tokens > 0
    assert retrieve(client, run) == done


def test_metadata_set_while_a_run_is_in_progress_outlives_its_end(client, scripted, model_name):
    """Metadata is the client's: set while the run works, it is kept when the run ends (the
    execution's final write of the run does not put back the metadata it started with)."""
    gate = f"{model_name}-held"
    scripted.script(model_name, [{"content": "the answer", "gate": gate, "gate_after": 1}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, metadata={"a": "1"})
    try:
        scripted.wait_for_gate(gate)
        wait_for(lambda: retrieve(client, run).status == "in_progress")
        modified = client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"a": "1", "label": "x"})
        assert modified.status == "in_progress" and modified.metadata == {"a": "1", "label": "x"}
    finally:
        scripted.release(gate)
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert done.status == "completed" and done.metadata == {"a": "1", "label": "x"}
    assert retrieve(client, run).metadata == {"a": "1", "label": "x"}
    listed = client.beta.threads.runs.list(thread_id=thread.id)
    assert listed.data[0].metadata == {"a": "1", "label": "x"}


def test_runs_list_retrieve_modify_and_paginate(client, scripted, model_name):
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "count"}])
    runs = []
    for i in range(3):
        scripted.script(model_name, [{"content": f"answer {i}"}])
        runs.append(
            client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, metadata={"i": str(i)})
        )
    ids = [r.id for r in runs]
    assert all(r.status == "completed" for r in runs)

    listed = client.beta.threads.runs.list(thread_id=thread.id)
    assert [r.id for r in listed.data] == ids[::-1]  # newest first by default
    assert listed.first_id == ids[2] and listed.last_id == ids[0] and listed.has_more is False

    page = client.beta.threads.runs.list(thread_id=thread.id, limit=2)
    assert [r.id for r in page.data] == [ids[2], ids[1]] and page.has_more is True
    nxt = client.beta.threads.runs.list(thread_id=thread.id, limit=2, after=page.last_id)
    assert [r.id for r in nxt.data] == [ids[0]] and nxt.has_more is False
    asc = client.beta.threads.runs.list(thread_id=thread.id, order="asc", limit=1)
    assert [r.id for r in asc] == ids  # auto-pagination follows the cursors
    before = client.beta.threads.runs.list(thread_id=thread.id, order="asc", before=ids[2])
    assert [r.id for r in before.data] == ids[:2]

    got = client.beta.threads.runs.retrieve(ids[1], thread_id=thread.id)
    assert got.id == ids[1] and got.metadata == {"i": "1"} and got.status == "completed"

    modified = client.beta.threads.runs.update(ids[1], thread_id=thread.id, metadata={"i": "1", "label": "x"})
    assert modified.metadata == {"i": "1", "label": "x"} and modified.status == "completed"
    assert client.beta.threads.runs.retrieve(ids[1], thread_id=thread.id).metadata == {"i": "1", "label": "x"}

    # Each later run saw the earlier answers in its history.
    assert ("assistant", "answer 0") in texts(sent(scripted, model_name, 2))
    assert ("assistant", "answer 1") in texts(sent(scripted, model_name, 2))

    other = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve(ids[0], thread_id=other.id)
    assert client.beta.threads.runs.list(thread_id=other.id).data == []


# --- overrides reaching the model ---------------------------------------------------------------


def test_run_overrides_reach_the_model(client, scripted, model_name):
    override_model = model_name + "-override"
    scripted.script(override_model, [{"content": "from the override"}])
    assistant = make_assistant(client, model_name, instructions="Assistant instructions.", temperature=0.9, top_p=0.8)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "original question"}])

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        model=override_model,
        instructions="Run instructions.",
        additional_instructions="Also be polite.",
        additional_messages=[
            {"role": "user", "content": "added question", "metadata": {"added": "yes"}},
        ],
        temperature=0.25,
        top_p=0.5,
        metadata={"purpose": "overrides"},
    )

    assert run.status == "completed"
    assert run.model == override_model
    assert run.instructions == "Run instructions.\n\nAlso be polite."
    assert run.temperature == 0.25 and run.top_p == 0.5
    assert run.metadata == {"purpose": "overrides"}
    assert scripted.requests(model_name) == []
    body = sent(scripted, override_model)
    assert body["model"] == override_model
    assert body["temperature"] == 0.25 and body["top_p"] == 0.5
    assert texts(body) == [
        ("system", "Run instructions.\n\nAlso be polite."),
        ("user", "original question"),
        ("user", "added question"),
    ]
    # additional_messages became thread messages, before the run's answer.
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [(m.role, m.content[0].text.value) for m in messages] == [
        ("user", "original question"),
        ("user", "added question"),
        ("assistant", "from the override"),
    ]
    assert messages[1].metadata == {"added": "yes"} and messages[1].run_id is None


def test_assistant_settings_and_additional_instructions(client, scripted, model_name):
    scripted.script(model_name, [{}])
    assistant = make_assistant(client, model_name, instructions="Base.", temperature=0.7, top_p=0.9)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, additional_instructions="Extra."
    )

    assert run.status == "completed"
    assert run.instructions == "Base.\n\nExtra."
    body = sent(scripted, model_name)
    assert body["messages"][0] == {"role": "system", "content": "Base.\n\nExtra."}
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert "tools" not in body and "response_format" not in body
    # With nothing scripted the model echoes the last user message.
    assert run_messages(client, run)[0].content[0].text.value == "echo: q"


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "description": "The answer",
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                "strict": True,
            },
        },
    ],
    ids=["json_object", "json_schema"],
)
def test_response_format_reaches_the_model(client, scripted, model_name, response_format):
    scripted.script(model_name, [{"content": '{"a": 1}'}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "json please"}])

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, response_format=response_format
    )

    assert run.status == "completed"
    assert run.response_format.model_dump(exclude_none=True, by_alias=True) == response_format
    assert sent(scripted, model_name)["response_format"] == response_format
    assert json.loads(run_messages(client, run)[0].content[0].text.value) == {"a": 1}


JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "clock", "schema": {"type": "object", "properties": {"time": {"type": "string"}}}},
}


@pytest.mark.parametrize("response_format", [{"type": "json_object"}, JSON_SCHEMA_FORMAT], ids=["json_object", "json_schema"])
def test_response_format_with_tools_and_run_tools_override(client, scripted, model_name, response_format):
    # The assistant's response format applies next to function tools, which the run replaces.
    scripted.script(
        model_name,
        [{"tool_calls": [{"id": "call_t", "name": "get_time", "arguments": {"city": "Lima"}}]}, {"content": '{"time": "9"}'}],
    )
    loose_time = {"type": "function", "function": {**TIME_TOOL["function"], "strict": False}}
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL], response_format=response_format)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "time in Lima as json"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, tools=[loose_time])

    assert run.status == "requires_action", run.last_error
    assert [t.function.name for t in run.tools] == ["get_time"]
    assert run.response_format.type == response_format["type"]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_t", "output": "9"}]
    )
    assert run.status == "completed", run.last_error
    for body in (sent(scripted, model_name, 0), sent(scripted, model_name, 1)):
        assert body["response_format"] == response_format
        assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
        # Tools keep their own strictness; nothing is forced to strict mode.
        assert body["tools"][0]["function"].get("strict") in (None, False)
        assert body["tools"][0]["function"]["parameters"] == TIME_TOOL["function"]["parameters"]
    assert json.loads(run_messages(client, run)[0].content[0].text.value) == {"time": "9"}


def test_temperature_and_top_p_zero_are_sent(client, scripted, model_name):
    scripted.script(model_name, [{"content": "cold"}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, temperature=0, top_p=0)
    assert run.status == "completed" and run.temperature == 0 and run.top_p == 0
    body = sent(scripted, model_name)
    assert body["temperature"] == 0 and body["top_p"] == 0


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "function": {"name": "get_time"}}, {"type": "function", "function": {"name": "get_time"}}),
    ],
    ids=["none", "required", "named"],
)
def test_tool_choice_reaches_the_model(client, scripted, model_name, tool_choice, expected):
    scripted.script(model_name, [{"content": "no tools needed"}])
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL, TIME_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, tool_choice=tool_choice)

    assert run.status == "completed"
    if isinstance(tool_choice, str):
        assert run.tool_choice == tool_choice
    else:
        assert run.tool_choice.type == "function" and run.tool_choice.function.name == "get_time"
    body = sent(scripted, model_name)
    assert body["tool_choice"] == expected
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tools"][0]["function"]["parameters"] == WEATHER_TOOL["function"]["parameters"]


def test_parallel_tool_calls_false(client, scripted, model_name):
    # Even if the model answers with two calls, a run with parallel_tool_calls=false asks for one.
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"id": "call_first", "name": "get_weather", "arguments": {"city": "Oslo"}},
                    {"id": "call_second", "name": "get_time", "arguments": {"city": "Oslo"}},
                ]
            },
            {"content": "done"},
        ],
    )
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL, TIME_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, parallel_tool_calls=False
    )

    assert run.parallel_tool_calls is False
    assert sent(scripted, model_name)["parallel_tool_calls"] is False
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.id for c in calls] == ["call_first"]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_first", "output": "sunny"}]
    )
    assert run.status == "completed"
    tool_step = [s for s in all_steps(client, run) if s.type == "tool_calls"][0]
    assert [c.id for c in tool_step.step_details.tool_calls] == ["call_first"]


def test_truncation_last_messages_and_assistant_history(client, scripted, model_name):
    scripted.script(model_name, [{"content": "full"}, {"content": "truncated"}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
        ]
    )
    client.beta.threads.messages.create(thread_id=thread.id, role="assistant", content="a2")
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="u3")

    full = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert full.status == "completed"
    assert texts(sent(scripted, model_name, 0)) == [
        ("system", "You are terse."),
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "u2"),
        ("assistant", "a2"),
        ("user", "u3"),
    ]

    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="u4")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        truncation_strategy={"type": "last_messages", "last_messages": 3},
    )
    assert run.status == "completed"
    assert run.truncation_strategy.type == "last_messages" and run.truncation_strategy.last_messages == 3
    # The three newest thread messages: u3, the first run's answer, u4.
    assert texts(sent(scripted, model_name, 1)) == [
        ("system", "You are terse."),
        ("user", "u3"),
        ("assistant", "full"),
        ("user", "u4"),
    ]


def test_max_prompt_tokens_truncates_old_thread_messages(client, scripted, model_name):
    # ~80 tokens per message: with a 256-token budget only the newest few fit ("auto" truncation).
    scripted.script(model_name, [{"content": "fits"}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": f"m{i} " + "x" * 300} for i in range(10)]
    )

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256)

    assert run.status == "completed", (run.last_error, run.incomplete_details)
    sent_texts = [text.split(" ")[0] for role, text in texts(sent(scripted, model_name)) if role == "user"]
    assert 1 <= len(sent_texts) < 10
    assert sent_texts == [f"m{i}" for i in range(10 - len(sent_texts), 10)]  # the newest ones, in order
    assert run.usage.prompt_tokens <= 256


# --- function calling ----------------------------------------------------------------------------


def _two_calls(model_name, scripted):
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"id": "call_weather", "name": "get_weather", "arguments": {"city": "Paris"}},
                    {"id": "call_time", "name": "get_time", "arguments": {"city": "Paris"}},
                ],
                "usage": {"prompt_tokens": 30, "completion_tokens": 20},
            },
            {"content": "It is sunny and noon in Paris.", "usage": {"prompt_tokens": 60, "completion_tokens": 9}},
        ],
    )


def test_parallel_function_calls_and_submit_tool_outputs(client, scripted, model_name):
    _two_calls(model_name, scripted)
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL, TIME_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather and time in Paris?"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "requires_action"
    assert run.required_action.type == "submit_tool_outputs"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.id, c.type, c.function.name) for c in calls] == [
        ("call_weather", "function", "get_weather"),
        ("call_time", "function", "get_time"),
    ]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Paris"}]
    assert run.usage is None
    # The tool_calls step stays open while the client works.
    (step,) = all_steps(client, run)
    assert step.type == "tool_calls" and step.status == "in_progress"
    assert [c.function.output for c in step.step_details.tool_calls] == [None, None]
    # Thread is locked while waiting for outputs.
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="meanwhile")

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[
            {"tool_call_id": "call_time", "output": "12:00"},
            {"tool_call_id": "call_weather", "output": "sunny, 21C"},
        ],
    )

    assert run.status == "completed" and run.required_action is None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (90, 29, 119)
    steps = all_steps(client, run)
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    tool_step, message_step = steps
    first = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, limit=1)
    assert [s.id for s in first.data] == [message_step.id] and first.has_more is True
    rest = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, limit=1, after=first.last_id)
    assert [s.id for s in rest.data] == [tool_step.id] and rest.has_more is False
    assert {c.id: c.function.output for c in tool_step.step_details.tool_calls} == {
        "call_weather": "sunny, 21C",
        "call_time": "12:00",
    }
    assert tool_step.step_details.tool_calls[0].function.name == "get_weather"
    assert (tool_step.usage.prompt_tokens, tool_step.usage.completion_tokens) == (30, 20)
    assert (message_step.usage.prompt_tokens, message_step.usage.completion_tokens) == (60, 9)
    (answer,) = run_messages(client, run)
    assert answer.id == message_step.step_details.message_creation.message_id
    assert answer.content[0].text.value == "It is sunny and noon in Paris."

    second = sent(scripted, model_name, 1)
    assistant_turn = [m for m in second["messages"] if m["role"] == "assistant"]
    assert [c["id"] for c in assistant_turn[-1]["tool_calls"]] == ["call_weather", "call_time"]
    assert assistant_turn[-1]["tool_calls"][0]["function"]["name"] == "get_weather"
    tool_results = {m["tool_call_id"]: m["content"] for m in second["messages"] if m["role"] == "tool"}
    assert tool_results == {"call_weather": "sunny, 21C", "call_time": "12:00"}
    assert second["messages"][-2:][0]["role"] == "tool" and second["messages"][-1]["role"] == "tool"


def test_submit_tool_outputs_errors(client, scripted, model_name):
    _two_calls(model_name, scripted)
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL, TIME_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather and time?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    submit = client.beta.threads.runs.submit_tool_outputs

    with pytest.raises(openai.BadRequestError) as missing:
        submit(run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_weather", "output": "x"}])
    assert "call_time" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError) as unknown:
        submit(
            run.id,
            thread_id=thread.id,
            tool_outputs=[
                {"tool_call_id": "call_weather", "output": "x"},
                {"tool_call_id": "call_time", "output": "y"},
                {"tool_call_id": "call_bogus", "output": "z"},
            ],
        )
    assert "call_bogus" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        submit(run.id, thread_id=thread.id, tool_outputs=[])
    # Rejected submissions leave the run waiting.
    assert retrieve(client, run).status == "requires_action"

    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": "call_weather", "output": "x"}, {"tool_call_id": "call_time", "output": "y"}],
    )
    assert done.status == "completed"
    with pytest.raises(openai.BadRequestError) as late:
        submit(run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_weather", "output": "x"}])
    assert late.value.body["type"] == "invalid_request_error"
    assert "completed" in late.value.body["message"]
    assert len(scripted.requests(model_name)) == 2


@pytest.mark.asyncio
async def test_function_calling_async(aclient, scripted, model_name):
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Rome"}'}]}, {"content": "Rome is warm."}],
    )
    assistant = await aclient.beta.assistants.create(model=model_name, tools=[WEATHER_TOOL])
    thread = await aclient.beta.threads.create(messages=[{"role": "user", "content": "Rome?"}])

    run = await aclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}

    with pytest.raises(openai.BadRequestError):
        await aclient.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_nope", "output": "?"}]
        )
    run = await aclient.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "30C"}]
    )
    assert run.status == "completed"
    messages = await aclient.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)
    assert [m.content[0].text.value for m in messages.data] == ["Rome is warm."]
    second = sent(scripted, model_name, 1)
    assert {"role": "tool", "content": "30C", "tool_call_id": call.id} in second["messages"]


# --- thread lock ---------------------------------------------------------------------------------


def test_thread_is_locked_while_a_run_is_active(client, scripted, model_name):
    scripted.script(model_name, [{"content": "slow", "delay": 2}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    with pytest.raises(openai.BadRequestError) as add:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
    assert add.value.body["message"] == f"Can't add messages to {thread.id} while a run {run.id} is active."
    assert add.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as again:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert "already has an active run" in again.value.body["message"]
    assert run.id in again.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id, additional_messages=[{"role": "user", "content": "x"}]
        )

    wait_status(client, run, "in_progress")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")

    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed"
    # Unlocked again; the rejected messages were never stored.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="after")
    values = [m.content[0].text.value for m in client.beta.threads.messages.list(thread_id=thread.id, order="asc")]
    assert values == ["q", "slow", "after"]
    assert len(scripted.requests(model_name)) == 1


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_during_slow_model_call(client, scripted, model_name):
    # The model answers only when released, which it never is: the cancel cannot wait for it.
    scripted.script(model_name, [{"content": "too late", "gate": model_name}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    scripted.wait_for_gate(model_name)  # the model call is in flight
    assert retrieve(client, run).status == "in_progress"

    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status == "cancelling"
    cancelled = wait_status(client, run, "cancelled")
    assert cancelled.cancelled_at is not None and cancelled.completed_at is None
    assert cancelled.required_action is None
    assert all(s.status != "in_progress" for s in all_steps(client, run))
    assert run_messages(client, run) == []
    # The thread accepts messages and runs again.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="next")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)


def test_cancel_while_streaming_closes_open_step_and_message(client, scripted, model_name):
    words = " ".join(f"w{i}" for i in range(40))
    # The answer stops after a few pieces and goes on only when released, which it never is.
    scripted.script(model_name, [{"content": words, "chunk_size": 4, "gate": model_name, "gate_after": 5}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    step = wait_for(lambda: all_steps(client, run))[0]
    assert step.type == "message_creation" and step.status == "in_progress"
    message = client.beta.threads.messages.retrieve(step.step_details.message_creation.message_id, thread_id=thread.id)
    assert message.status == "in_progress"

    assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    cancelled = wait_status(client, run, "cancelled")
    assert cancelled.cancelled_at is not None

    (step,) = all_steps(client, run)
    assert step.status == "cancelled" and step.cancelled_at is not None
    message = client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert message.status == "incomplete"
    assert message.incomplete_details.reason == "run_cancelled" and message.incomplete_at is not None
    # What had been streamed is kept, and is a prefix of the full answer.
    assert words.startswith(message.content[0].text.value)


def test_cancel_while_requires_action(client, scripted, model_name):
    _two_calls(model_name, scripted)
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL, TIME_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"

    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    if cancelled.status == "cancelling":
        cancelled = wait_status(client, run, "cancelled", timeout=5)
    assert cancelled.status == "cancelled"
    assert cancelled.required_action is None and cancelled.cancelled_at is not None
    # The model call before the pause counts.
    assert (cancelled.usage.prompt_tokens, cancelled.usage.completion_tokens) == (30, 20)
    (step,) = all_steps(client, run)
    assert step.type == "tool_calls" and step.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_weather", "output": "x"}]
        )
    # The refused submission resumed nothing: the thread's next run is the only one the model hears from.
    after = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert after.status == "completed"
    assert retrieve(client, run).status == "cancelled"
    assert len(scripted.requests(model_name)) == 2


def test_cancel_during_the_model_call_after_tool_outputs(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"id": "call_one", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"content": "never shown", "gate": model_name},
        ],
    )
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_one", "output": "cold"}]
    )
    scripted.wait_for_gate(model_name)  # the model call after the outputs is in flight, and never answers

    assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    cancelled = wait_status(client, run, "cancelled")
    assert cancelled.cancelled_at is not None
    (step,) = all_steps(client, run)
    assert step.type == "tool_calls" and step.status == "completed"  # closed by the submission
    assert run_messages(client, run) == []


def test_cancel_completed_run_is_rejected(client, scripted, model_name):
    scripted.script(model_name, [{"content": "done"}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert exc.value.body["type"] == "invalid_request_error"
    assert "completed" in exc.value.body["message"]
    assert retrieve(client, run).status == "completed"


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ({"status": 500, "message": "model exploded"}, "server_error", "The model provider returned HTTP 500: model exploded"),
        (
            {"status": 429, "message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
            "rate_limit_exceeded",
            "The model provider rate-limited the request: slow down",
        ),
    ],
    ids=["500", "429"],
)
def test_model_error_fails_the_run(client, scripted, model_name, error, code, message):
    scripted.script(model_name, [{"error": error}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "failed"
    assert run.failed_at is not None and run.completed_at is None
    assert run.last_error.code == code
    assert run.last_error.message == message
    assert run.usage is None and run.expires_at is None
    assert all(s.status != "in_progress" for s in all_steps(client, run))
    assert all(m.status != "in_progress" for m in run_messages(client, run))
    assert len(scripted.requests(model_name)) == 1  # no retries (ASSISTGRAPH_MODEL_MAX_RETRIES=0)
    # A failed run unlocks the thread.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="retry")


def test_stream_dropped_mid_answer_fails_open_step_and_message(client, scripted, model_name):
    scripted.script(model_name, [{"content": "a partial answer that never ends", "chunk_size": 3, "stream_error_after": 3}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "failed"
    assert run.last_error.code == "server_error"
    assert "connection to the model provider" in run.last_error.message
    assert "broke off" in run.last_error.message
    (step,) = all_steps(client, run)
    assert step.status == "failed" and step.failed_at is not None
    assert step.last_error is not None and step.last_error.code == "server_error"
    (message,) = run_messages(client, run)
    assert message.status == "incomplete" and message.incomplete_details.reason == "run_failed"


def test_model_error_after_tool_outputs_fails_the_run(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"id": "call_one", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"error": {"status": 503, "message": "overloaded"}},
        ],
    )
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_one", "output": "cold"}]
    )

    assert run.status == "failed"
    assert run.last_error.code == "server_error"
    assert run.last_error.message == "The model provider returned HTTP 503: overloaded"
    # The first model call's usage is kept.
    assert run.usage is not None and run.usage.completion_tokens > 0
    (step,) = all_steps(client, run)
    assert step.type == "tool_calls" and step.status == "completed"
    assert step.step_details.tool_calls[0].function.output == "cold"
    assert run_messages(client, run) == []


# --- incomplete -----------------------------------------------------------------------------------


def test_max_completion_tokens_makes_the_run_incomplete(client, scripted, model_name):
    scripted.script(model_name, [{"content": "cut off mid", "finish_reason": "length"}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "long essay"}])

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )

    assert run.status == "incomplete"
    assert run.max_completion_tokens == 256
    assert run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage is not None and run.usage.total_tokens > 0
    body = sent(scripted, model_name)
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 256
    (message,) = run_messages(client, run)
    assert message.status == "incomplete" and message.incomplete_details.reason == "max_tokens"
    assert message.content[0].text.value == "cut off mid"
    assert all(s.status != "in_progress" for s in all_steps(client, run))
    # An incomplete run is terminal: the thread is unlocked.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="continue")


def test_max_prompt_tokens_makes_the_run_incomplete(client, scripted, model_name):
    scripted.script(model_name, [{"content": "answer", "usage": {"prompt_tokens": 300, "completion_tokens": 1}}])
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256)

    assert run.status == "incomplete"
    assert run.max_prompt_tokens == 256
    assert run.incomplete_details.reason == "max_prompt_tokens"
    assert run.usage.prompt_tokens == 300
    assert all(s.status != "in_progress" for s in all_steps(client, run))
    assert all(m.status != "in_progress" for m in run_messages(client, run))


@pytest.mark.parametrize("field", ["max_prompt_tokens", "max_completion_tokens"])
def test_token_limits_below_256_are_rejected(client, model_name, field):
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, **{field: 255})
    assert exc.value.body["param"] == field
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []


# --- validation -----------------------------------------------------------------------------------


def test_tool_choice_naming_an_unknown_function_is_rejected(client, model_name):
    assistant = make_assistant(client, model_name, tools=[WEATHER_TOOL])
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.runs.create(
            thread_id=thread.id,
            assistant_id=assistant.id,
            tool_choice={"type": "function", "function": {"name": "launch_rockets"}},
        )
    assert exc.value.body["param"] == "tool_choice"
    assert "launch_rockets" in exc.value.body["message"]
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    # ...also when the run replaces the tools.
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.create(
            thread_id=thread.id,
            assistant_id=assistant.id,
            tools=[TIME_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )


def test_unknown_assistant_and_thread(client, model_name):
    assistant = make_assistant(client, model_name)
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError) as no_assistant:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_doesnotexist")
    assert no_assistant.value.body["message"] == "No assistant found with id 'asst_doesnotexist'."
    with pytest.raises(openai.NotFoundError) as no_thread:
        client.beta.threads.runs.create(thread_id="thread_doesnotexist", assistant_id=assistant.id)
    assert no_thread.value.body["message"] == "No thread found with id 'thread_doesnotexist'."
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.list(thread_id="thread_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve("run_doesnotexist", thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.steps.list("run_doesnotexist", thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.create_and_run(assistant_id="asst_doesnotexist")


def test_poll_helper_gets_are_answered_when_the_run_settles(server, scripted, model_name):
    """The SDK's poll helpers say so in a header; their GET of an active run waits (up to
    ASSISTGRAPH_POLL_HOLD_MS) for completion or requires_action instead of answering every 25 ms.
    (How soon after the run settles a held GET answers is measured in bench/runs.py.)"""
    gets: list[str] = []

    def count(request):
        if request.method == "GET" and "/runs/" in request.url.path:
            gets.append(request.url.path)

    http = httpx.Client(event_hooks={"request": [count]})
    client = openai.OpenAI(
        base_url=server.url, api_key="sk-client", _strict_response_validation=True, max_retries=0, http_client=http
    )
    scripted.script(
        model_name,
        [{"content": "slow answer", "delay": 1.0}, {"tool_calls": [{"name": "f", "arguments": {}}], "delay": 1.0}],
    )
    assistant = client.beta.assistants.create(
        model=model_name, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    assert len(gets) <= 2  # polling every 25 ms would have taken ~40

    gets.clear()
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action" and len(gets) <= 2

    # Any other GET answers at once, whatever the run's state: held, it would have seen the run
    # complete (the model answers well within the hold).
    scripted.script(model_name, [{"content": "later", "delay": 1.5}])
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status in ("queued", "in_progress")
    # A custom poll interval bounds the wait.
    gets.clear()
    run = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=100)
    assert run.status == "completed" and len(gets) >= 5
