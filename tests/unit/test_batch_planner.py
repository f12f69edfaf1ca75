"""The batch planner without a database: which statements a batch of events becomes, and what each
writes (the run's transition, the last snapshot of each step and message, the kept events)."""

from __future__ import annotations

import json

import pytest

from api.runs.events import Event
from api.runs.sink import RunPreempted, plan
from tests.unit.runs_fixtures import a_run


def step(status: str = "in_progress", id: str = "step_1", **extra) -> dict:
    return {"id": id, "object": "thread.run.step", "status": status, **extra}


def message(status: str = "in_progress", id: str = "msg_1") -> dict:
    return {"id": id, "object": "thread.message", "status": status}


def delta(id: str = "msg_1") -> dict:
    return {"id": id, "object": "thread.message.delta", "delta": {"content": []}}


CASES = {
    "deltas only: events, nothing else": (
        [Event("thread.message.delta", delta()), Event("thread.message.delta", delta())],
        [{"transitions": [], "steps": [], "messages": [], "published": 2}],
    ),
    "a step and its message open in one statement": (
        [
            Event("thread.run.step.created", step()), Event("thread.run.step.in_progress", step()),
            Event("thread.message.created", message()), Event("thread.message.in_progress", message()),
        ],
        [{"transitions": [], "steps": ["step_1"], "messages": ["msg_1"], "published": 4}],
    ),
    "step, message, step: the second step waits for a statement of its own": (
        [
            Event("thread.run.step.created", step()),
            Event("thread.message.created", message()),
            Event("thread.run.step.created", step(id="step_2")),
        ],
        [
            {"transitions": [], "steps": ["step_1"], "messages": ["msg_1"], "published": 2},
            {"transitions": [], "steps": ["step_2"], "messages": [], "published": 1},
        ],
    ),
    "the run's end: its answer, its step and its status together": (
        [
            Event("thread.message.completed", message("completed")),
            Event("thread.run.step.completed", step("completed")),
            Event("thread.run.completed", a_run("completed")),
        ],
        [{"transitions": ["completed"], "steps": ["step_1"], "messages": ["msg_1"], "published": 3}],
    ),
    "opening events of a created run are not stored again": (
        [Event("thread.run.created", a_run(), persist=False), Event("thread.run.queued", a_run(), persist=False)],
        [{"transitions": [], "steps": [], "messages": [], "published": 2}],
    ),
    "cancelling then cancelled: one transition under the first's condition": (
        [Event("thread.run.cancelling", a_run("cancelling")), Event("thread.run.cancelled", a_run("cancelled"))],
        [{"transitions": ["cancelling", "cancelled"], "steps": [], "messages": [], "published": 2}],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_plan(name):
    events, expected = CASES[name]
    writes = plan("run_1", events)
    assert [
        {
            "transitions": [t["status"] for t in w.transitions],
            "steps": list(w.steps),
            "messages": list(w.messages),
            "published": len(w.published),
        }
        for w in writes
    ] == expected


def test_the_last_snapshot_of_a_step_is_written_and_its_pending_usage_kept_apart():
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    (write,) = plan("run_1", [
        Event("thread.run.step.snapshot", step(_pending_usage=usage), publish=False),
        Event("thread.run.step.completed", step("completed")),
    ])
    text, pending = write.steps["step_1"]
    assert json.loads(text)["status"] == "completed" and json.loads(pending) == usage
    assert [name for name, _ in write.published] == ["thread.run.step.completed"]


def test_requires_action_clears_the_consumed_outputs_and_stores_the_run_config():
    (write,) = plan("run_1", [Event("thread.run.requires_action", a_run("requires_action"), config={"usage": {"x": 1}})])
    assert write.clear_resume and write.config == {"usage": {"x": 1}}


def test_a_move_the_lifecycle_forbids_within_a_batch_is_preempted():
    with pytest.raises(RunPreempted):
        plan("run_1", [Event("thread.run.completed", a_run("completed")), Event("thread.run.in_progress", a_run("in_progress"))])


def test_published_data_is_the_stored_json():
    (write,) = plan("run_1", [Event("thread.message.completed", message("completed"))])
    ((name, text),) = write.published
    assert name == "thread.message.completed" and text == write.messages["msg_1"]
    assert write.objects == [message("completed")]
