"""Objects the unit tests of the run engine start from: a run as the API stores it, and a mapper
with a fixed clock."""

from __future__ import annotations

from api.runs.mapper import RunEventMapper

CLOCK = 1_700_000_000


def a_run(status: str = "queued", **fields) -> dict:
    run = {
        "id": "run_1",
        "object": "thread.run",
        "created_at": CLOCK,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": status,
        "required_action": None,
        "last_error": None,
        "expires_at": CLOCK + 600,
        "started_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "incomplete_details": None,
        "model": "m",
        "instructions": "",
        "tools": [],
        "metadata": {},
        "usage": None,
    }
    return {**run, **fields}


def a_mapper(run: dict | None = None, **kwargs) -> RunEventMapper:
    return RunEventMapper(run or a_run(), clock=lambda: CLOCK, **kwargs)


def names(events) -> list[str]:
    return [e.event for e in events]
