"""Delta coalescing without a server: deltas that queue up during a write are merged into fewer,
with the same accumulated result, and only where a client could not tell."""

from __future__ import annotations

import pytest

from api.runs.events import Event
from api.runs.pump import coalesce


def text(value: str, id: str = "msg_1", **extra) -> Event:
    block = {"index": 0, "type": "text", "text": {"value": value, **extra}}
    return Event("thread.message.delta", {"id": id, "object": "thread.message.delta", "delta": {"content": [block]}})


def args(piece: str, index: int = 0, id: str = "step_1", announce: bool = False, kind: str = "function") -> Event:
    field, key = ("function", "arguments") if kind == "function" else ("code_interpreter", "input")
    call = {"index": index, "type": kind, field: {key: piece}}
    if announce:
        call["id"] = "call_1"
    return Event(
        "thread.run.step.delta",
        {"id": id, "object": "thread.run.step.delta",
         "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}},
    )


def shown(events: list[Event]) -> list:
    out = []
    for e in events:
        if e.event == "thread.message.delta":
            out.append((e.data["id"], e.data["delta"]["content"][0]["text"]))
        elif e.event == "thread.run.step.delta":
            out.append((e.data["id"], e.data["delta"]["step_details"]["tool_calls"][0]))
        else:
            out.append(e.event)
    return out


CASES = {
    "text of one message merges": (
        [text("Hel", annotations=[]), text("lo"), text(" there")],
        [("msg_1", {"value": "Hello there", "annotations": []})],
    ),
    "text of two messages stays apart": (
        [text("a"), text("b", id="msg_2")],
        [("msg_1", {"value": "a"}), ("msg_2", {"value": "b"})],
    ),
    "a delta with annotations does not merge into the one before": (
        [text("a"), text("b", annotations=[])],
        [("msg_1", {"value": "a"}), ("msg_1", {"value": "b", "annotations": []})],
    ),
    "any other event ends a run of deltas": (
        [text("a"), Event("thread.message.completed", {"id": "msg_1"}), text("b")],
        [("msg_1", {"value": "a"}), "thread.message.completed", ("msg_1", {"value": "b"})],
    ),
    "arguments of one call merge": (
        [args('{"ci'), args('ty": '), args('"Oslo"}')],
        [("step_1", {"index": 0, "type": "function", "function": {"arguments": '{"city": "Oslo"}'}})],
    ),
    "the call's announcement stays apart": (
        [args('{"ci', announce=True), args('ty"}')],
        [
            ("step_1", {"index": 0, "type": "function", "function": {"arguments": '{"ci'}, "id": "call_1"}),
            ("step_1", {"index": 0, "type": "function", "function": {"arguments": 'ty"}'}}),
        ],
    ),
    "arguments of two calls stay apart": (
        [args("a", index=0), args("b", index=1)],
        [
            ("step_1", {"index": 0, "type": "function", "function": {"arguments": "a"}}),
            ("step_1", {"index": 1, "type": "function", "function": {"arguments": "b"}}),
        ],
    ),
    "code of a code_interpreter call merges": (
        [args("import ", kind="code_interpreter"), args("os", kind="code_interpreter")],
        [("step_1", {"index": 0, "type": "code_interpreter", "code_interpreter": {"input": "import os"}})],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_coalesce(name):
    events, expected = CASES[name]
    assert shown(coalesce(events)) == expected


def test_merging_leaves_the_queued_events_as_they_were():
    first, second = text("a"), text("b")
    coalesce([first, second])
    assert first.data["delta"]["content"][0]["text"] == {"value": "a"}
