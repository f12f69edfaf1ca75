"""The Responses translator without a server: a run's Assistants events (as the mapper makes them)
in, Responses stream events out, numbered from 0."""

from __future__ import annotations

import pytest

from api.responses.translator import ResponseEventTranslator
from api.runs import lifecycle
from tests.unit.runs_fixtures import a_mapper
from tests.unit.test_mapper import CALL, SCENARIOS, USAGE, chunk, drive, model_done

SKELETON = {"id": "resp_1", "object": "response", "model": "m"}


def translator(**kinds) -> ResponseEventTranslator:
    return ResponseEventTranslator(skeleton=SKELETON, kinds=kinds, container="cntr_1", include=set())


def run_events(script, *, finish: bool) -> list:
    """The published events of a run driven by this graph stream."""
    mapper = a_mapper()
    events = lifecycle.start(mapper) + drive(mapper, script) + (lifecycle.finish(mapper, USAGE, None) if finish else [])
    return [e for e in events if e.publish]


def translate(tr: ResponseEventTranslator, events) -> list[dict]:
    out = tr.start()
    for event in events:
        out += tr.handle(event.event, event.data)
    return out


CASES = {
    "text answer": (
        SCENARIOS["streamed answer"][0], True, {},
        [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.delta",
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
        ],
        "thread.run.completed",
    ),
    "the client's function call": (
        SCENARIOS["client tool call"][0], False, {"get_weather": "client"},
        [
            "response.created", "response.in_progress", "response.output_item.added",
            "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        ],
        "thread.run.requires_action",
    ),
    "an MCP server's tool call shows as an mcp call": (
        [chunk(calls=[{"index": 0, "id": "call_1", "name": "get_weather", "args": '{"city": "Oslo"}'}]),
         model_done(calls=[CALL])], False, {"get_weather": "mcp"},
        ["response.created", "response.in_progress", "response.output_item.added", "response.mcp_call.in_progress",
         "response.mcp_call_arguments.delta"],
        None,
    ),
    "a call of a tool the request never declared is a function call, never an mcp call": (
        [chunk(calls=[{"index": 0, "id": "call_1", "name": "get_weather", "args": '{"city": "Oslo"}'}]),
         model_done(calls=[CALL])], False, {},
        ["response.created", "response.in_progress", "response.output_item.added",
         "response.function_call_arguments.delta"],
        None,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_run_events_to_responses_events(name):
    script, finish, kinds, expected, ending = CASES[name]
    tr = translator(**kinds)
    out = translate(tr, run_events(script, finish=finish))
    assert [e["type"] for e in out] == expected
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert tr.ending == ending


def test_text_deltas_and_the_done_item_carry_the_answer():
    out = translate(translator(), run_events(SCENARIOS["streamed answer"][0], finish=True))
    assert [e["delta"] for e in out if e["type"] == "response.output_text.delta"] == ["Hel", "lo"]
    done = out[-1]["item"]
    assert done["status"] == "completed" and done["content"][0]["text"] == "Hello"


def test_finish_closes_what_is_open_and_ends_with_the_stored_response():
    tr = translator(get_weather="client")
    out = translate(tr, run_events(SCENARIOS["client tool call"][0], finish=False))
    call = next(e["item"] for e in out if e["type"] == "response.output_item.added")
    stored = {"status": "completed", "output": [{**call, "arguments": '{"city": "Oslo"}', "status": "completed"}]}
    ending = tr.finish(stored)
    assert [e["type"] for e in ending] == [
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"
    ]
    assert [e["sequence_number"] for e in ending] == list(range(len(out), len(out) + 3))
    assert ending[-1]["response"] is stored


def test_a_replay_through_a_fresh_translator_numbers_alike():
    """How `starting_after` resumes a stream: the same events give the same numbers."""
    events = run_events(SCENARIOS["streamed answer"][0], finish=True)
    assert translate(translator(), events) == translate(translator(), events)


def test_an_error_is_numbered_next():
    tr = translator()
    out = tr.start()
    error = tr.error("server_error", "gone")
    assert error == {"type": "error", "sequence_number": len(out), "code": "server_error", "message": "gone", "param": None}
