"""The statuses of a run and how it moves between them: the one place they are spelled.

Here (in `contract`, not in `runs`) so that storage, which sits below the run engine, takes the
same sets for its statements. The run engine's operations on the lifecycle (closing a run) are
`api/runs/lifecycle.py`.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    # Each member is its own JSON and SQL text ("queued" == RunStatus.QUEUED).
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"



def _values(*statuses: RunStatus) -> tuple[str, ...]:
    # Plain strings: what rows and objects hold, and what drivers send as text.
    return tuple(s.value for s in statuses)


S = RunStatus

# Not over yet: a thread with one of these has an active run (no second run, no new messages).
ACTIVE = _values(S.QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION, S.CANCELLING)
TERMINAL = _values(S.COMPLETED, S.INCOMPLETE, S.FAILED, S.CANCELLED, S.EXPIRED)
# An event stream ends on these: the run is over or waits for the client.
STREAM_END = (*TERMINAL, S.REQUIRES_ACTION.value)
# Nothing but an execution moves these on (the SDK's poll helpers keep polling through them).
POLLED_WHILE = _values(S.QUEUED, S.IN_PROGRESS, S.CANCELLING)
# An execution may hold the run (requires_action waits for the client, not for an execution).
EXECUTING = POLLED_WHILE
# Statuses an execution starts from.
STARTABLE = _values(S.QUEUED, S.IN_PROGRESS)
# A client may cancel the run.
CANCELLABLE = _values(S.QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION)

# A status change is stored only from these statuses (the WHERE clause of the statement that stores
# it, `runs/sink.py`), so a late write (a finishing executor racing a cancel or an expiry) changes
# nothing.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    S.QUEUED: _values(S.QUEUED, S.REQUIRES_ACTION),
    S.IN_PROGRESS: STARTABLE,
    S.REQUIRES_ACTION: _values(S.IN_PROGRESS),
    S.COMPLETED: _values(S.IN_PROGRESS),
    S.INCOMPLETE: _values(S.IN_PROGRESS),
    S.FAILED: STARTABLE,
    S.CANCELLING: CANCELLABLE,
    S.CANCELLED: ACTIVE,
    S.EXPIRED: ACTIVE,
}

# The events that end a stream (each status is announced by `thread.run.<status>`).
STREAM_END_EVENTS = frozenset(f"thread.run.{s}" for s in STREAM_END)


def may_move(current: str, to: str) -> bool:
    """Whether a run in `current` may move to `to`."""
    return current in ALLOWED_FROM[to]


def sql_list(statuses: tuple[str, ...]) -> str:
    """The statuses as an SQL list literal, for statements whose partial index names the same list
    (a parameter would keep the planner from using the index)."""
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"
