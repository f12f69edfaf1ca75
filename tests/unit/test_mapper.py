"""The mapper without a server: graph chunks and updates in, Assistants steps, messages and deltas out."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage

from api.runs import lifecycle
from api.runs.adoption import Streamed
from api.runs.events import EventData, KeptEvent
from tests.unit.runs_fixtures import a_mapper, names

MODEL = {"langgraph_node": "model"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 3}
OPEN_MESSAGE = ["thread.run.step.created", "thread.run.step.in_progress", "thread.message.created", "thread.message.in_progress"]
OPEN_TOOLS = ["thread.run.step.created", "thread.run.step.in_progress"]
CALL = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1", "type": "tool_call"}


def chunk(text: str = "", calls: list | None = None) -> tuple:
    return ("messages", (AIMessageChunk(content=text, id="r1", tool_call_chunks=calls or []), MODEL))


def model_done(text: str = "", calls: list | None = None) -> tuple:
    return ("updates", {"model": {"messages": [AIMessage(content=text, id="r1", tool_calls=calls or [])], "usage": USAGE}})


def drive(mapper, script) -> list:
    events = []
    for mode, payload in script:
        events += mapper.handle(mode, payload)
    return events


SCENARIOS = {
    "streamed answer": (
        [chunk("Hel"), chunk("lo"), model_done("Hello")],
        [*OPEN_MESSAGE, "thread.message.delta", "thread.message.delta"],
        ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"],
    ),
    "answer of a provider that does not stream": (
        [model_done("Hello")],
        [*OPEN_MESSAGE, "thread.message.delta"],
        ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"],
    ),
    "empty answer": (
        [model_done("")],
        OPEN_MESSAGE,
        ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"],
    ),
    "client tool call": (
        [
            chunk(calls=[{"index": 0, "id": "call_1", "name": "get_weather", "args": '{"ci'}]),
            chunk(calls=[{"index": 0, "args": 'ty": "Oslo"}'}]),
            model_done(calls=[CALL]),
            ("updates", {"__interrupt__": ()}),
        ],
        [*OPEN_TOOLS, "thread.run.step.delta", "thread.run.step.delta", "thread.run.step.snapshot", "thread.run.requires_action"],
        None,
    ),
    "text then a server tool, then the answer": (
        [
            chunk("Let me look."),
            chunk(calls=[{"index": 0, "id": "call_1", "name": "get_weather", "args": '{"city": "Oslo"}'}]),
            model_done("Let me look.", [CALL]),
            ("updates", {"server_tools": {"messages": [ToolMessage(content="12 C", tool_call_id="call_1")]}}),
            ("messages", (AIMessageChunk(content="12 C.", id="r2"), MODEL)),
            ("updates", {"model": {"messages": [AIMessage(content="12 C.", id="r2")], "usage": USAGE}}),
        ],
        [
            *OPEN_MESSAGE, "thread.message.delta",
            "thread.message.completed", "thread.run.step.completed",
            *OPEN_TOOLS, "thread.run.step.delta",
            "thread.run.step.delta", "thread.run.step.completed",
            *OPEN_MESSAGE, "thread.message.delta",
        ],
        ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"],
    ),
}


# Tools the graph runs itself (their calls are not the client's), by scenario.
SERVER_TOOLS = {"text then a server tool, then the answer": {"get_weather": "function"}}


@pytest.mark.parametrize("name", SCENARIOS)
def test_graph_stream_to_events(name):
    script, during, ending = SCENARIOS[name]
    mapper = a_mapper(server_tools=SERVER_TOOLS.get(name))
    assert names(lifecycle.start(mapper)) == ["thread.run.in_progress"]
    assert names(drive(mapper, script)) == during
    if ending is not None:
        assert names(lifecycle.finish(mapper, USAGE, None)) == ending


def test_deltas_carry_the_text_and_the_answer_closes_with_it():
    mapper = a_mapper()
    events = drive(mapper, [chunk("Hel"), chunk("lo"), model_done("Hello")])
    deltas = [e.data["delta"]["content"][0]["text"] for e in events if e.event == "thread.message.delta"]
    # The first delta carries annotations: [] (the SDK's snapshot needs it), later ones do not.
    assert deltas == [{"value": "Hel", "annotations": []}, {"value": "lo"}]
    message, step, run = (e.data for e in lifecycle.finish(mapper, USAGE, None))
    assert message["content"] == [{"type": "text", "text": {"value": "Hello", "annotations": []}}]
    assert step["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert run["status"] == "completed" and run["usage"]["total_tokens"] == 8


def test_a_call_is_announced_once_then_its_arguments_follow():
    mapper = a_mapper()
    events = drive(mapper, [
        chunk(calls=[{"index": 0, "id": "call_1", "name": "get_weather", "args": '{"ci'}]),
        chunk(calls=[{"index": 0, "args": 'ty": "Oslo"}'}]),
    ])
    first, second = (e.data["delta"]["step_details"]["tool_calls"][0] for e in events if e.event == "thread.run.step.delta")
    assert first == {"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"ci', "output": None}}
    assert second == {"index": 0, "type": "function", "function": {"arguments": 'ty": "Oslo"}'}}


def test_max_tokens_leaves_the_answer_incomplete():
    mapper = a_mapper()
    drive(mapper, [chunk("Trunc"), model_done("Trunc")])
    events = lifecycle.finish(mapper, USAGE, "max_output_tokens")
    assert names(events) == ["thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete"]
    assert events[0].data["incomplete_details"] == {"reason": "max_tokens"}


def test_a_failure_closes_open_objects_as_failed():
    mapper = a_mapper()
    drive(mapper, [chunk("Half")])
    events = lifecycle.fail(mapper, "server_error", "boom")
    assert names(events) == ["thread.run.step.failed", "thread.message.incomplete", "thread.run.failed"]
    assert events[-1].data["last_error"] == {"code": "server_error", "message": "boom"}


def test_a_taken_over_run_sends_only_what_clients_have_not_seen():
    """Adoption: the lost execution stored the open message and streamed "Hel"; the model call made
    again streams "Hello" from the start: clients get "lo" only, no second message."""
    first = a_mapper()
    opened = drive(first, [chunk("Hel")])
    stored = [e.data for e in opened if e.event in ("thread.run.step.created", "thread.message.created")]
    seen = Streamed.from_deltas([KeptEvent(n, e.event, EventData(e.data)) for n, e in enumerate(opened, 1) if e.is_delta])
    again = a_mapper(known=stored, streamed=seen)
    events = drive(again, [chunk("Hello"), model_done("Hello")])
    assert names(events) == ["thread.message.delta"]
    assert events[0].data["delta"]["content"][0]["text"] == {"value": "lo"}
