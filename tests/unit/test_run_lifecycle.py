"""The run lifecycle without a server: which moves are allowed, and how a run is closed."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk

from api.contract import run_status
from api.contract.run_status import RunStatus
from api.runs import lifecycle
from tests.unit.runs_fixtures import a_mapper, a_run, names

Q, P, R, C, X, F, D, I, E = (
    "queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed", "completed", "incomplete", "expired"
)
# (from, to, allowed): every pair of statuses.
MOVES = {
    (Q, Q), (R, Q),
    (Q, P), (P, P),
    (P, R),
    (P, D), (P, I),
    (Q, F), (P, F),
    (Q, C), (P, C), (R, C),
    (Q, X), (P, X), (R, X), (C, X),
    (Q, E), (P, E), (R, E), (C, E),
}
ALL = [Q, P, R, C, X, F, D, I, E]


@pytest.mark.parametrize("current,to", [(a, b) for a in ALL for b in ALL])
def test_moves(current, to):
    assert run_status.may_move(current, to) == ((current, to) in MOVES)


def test_no_move_leaves_a_terminal_status():
    for current in run_status.TERMINAL:
        assert not any(run_status.may_move(current, to) for to in ALL)


@pytest.mark.parametrize(
    "status,active,terminal,stream_end,polled",
    [
        (Q, True, False, False, True),
        (P, True, False, False, True),
        (R, True, False, True, False),
        (C, True, False, False, True),
        (X, False, True, True, False),
        (F, False, True, True, False),
        (D, False, True, True, False),
        (I, False, True, True, False),
        (E, False, True, True, False),
    ],
)
def test_sets(status, active, terminal, stream_end, polled):
    assert (status in run_status.ACTIVE, status in run_status.TERMINAL) == (active, terminal)
    assert (status in run_status.STREAM_END, status in run_status.POLLED_WHILE) == (stream_end, polled)
    assert (f"thread.run.{status}" in run_status.STREAM_END_EVENTS) == stream_end


def test_statuses_are_their_text():
    assert RunStatus("requires_action") == "requires_action" and f"{RunStatus.EXPIRED}" == "expired"
    assert run_status.sql_list(("queued", "cancelling")) == "('queued', 'cancelling')"


def _streaming_mapper():
    """A mapper in the middle of an answer: its step and message are open."""
    mapper = a_mapper(a_run(P))
    mapper.handle("messages", (AIMessageChunk(content="Half an ans", id="r1"), {"langgraph_node": "model"}))
    return mapper


@pytest.mark.parametrize(
    "to,expected,step_status,reason",
    [
        (
            X,
            ["thread.run.step.cancelled", "thread.message.incomplete", "thread.run.cancelled"],
            "cancelled",
            "run_cancelled",
        ),
        (
            E,
            ["thread.run.step.expired", "thread.message.incomplete", "thread.run.expired"],
            "expired",
            "run_expired",
        ),
    ],
)
def test_closing_a_run_closes_what_it_has_open(to, expected, step_status, reason):
    mapper = _streaming_mapper()
    events = lifecycle.close_events(mapper, to, {"prompt_tokens": 3, "completion_tokens": 2})
    assert names(events) == expected
    step, message, run = (e.data for e in events)
    assert step["status"] == step_status
    assert message["incomplete_details"] == {"reason": reason}
    assert message["content"][0]["text"]["value"] == "Half an ans"
    assert run["status"] == to and run["required_action"] is None
    assert run["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_closing_from_what_is_stored_closes_the_stored_objects():
    step = {"id": "step_1", "object": "thread.run.step", "status": "in_progress", "type": "tool_calls",
            "step_details": {"type": "tool_calls", "tool_calls": []}, "_pending_usage": {"total_tokens": 1}}
    mapper = a_mapper(a_run(R), open_steps=[step])
    events = lifecycle.cancelling(mapper) + lifecycle.close_events(mapper, X, None)
    assert names(events) == ["thread.run.cancelling", "thread.run.step.cancelled", "thread.run.cancelled"]
    assert "_pending_usage" not in events[1].data and events[2].data["usage"] is None


def test_only_cancelled_and_expired_close_a_run():
    with pytest.raises(ValueError):
        lifecycle.close_events(a_mapper(), D, None)
