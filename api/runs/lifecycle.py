"""The run engine's operations on a run's lifecycle: the events that move a run (start, finish,
fail, cancel, expire), with what it has open closed as the move asks. The statuses and the moves
allowed between them are `api/contract/run_status.py` (where storage reads them too); the objects a
run has open are the mapper's (`mapper.py`), which only follows the graph's stream.

Closing a run that is cut short (cancelled, expired) is one operation whoever does it: the request
that cancels a run nobody executes, the executor that was preempted (it knows the partial answer),
the expiry sweep and the recovery sweep. The run's open steps end with it and its open message is
left incomplete, in the statement that stores the run's end.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.contract.run_status import RunStatus
from api.runs.events import Event
from api.runs.mapper import RunEventMapper, usage_json
from api.runs.sink import EventSink, RunPreempted
from api.storage import store

class _StoredUsage:
    """`close` takes the usage the run's executions stored with it (at its last pause)."""


STORED_USAGE = _StoredUsage()


async def stored_mapper(conn: AsyncConnection, run: dict) -> RunEventMapper:
    """A mapper that holds what the run has open as stored (no execution's memory of it)."""
    return RunEventMapper(
        run, open_steps=await store.open_steps(conn, run["id"]), open_messages=await store.open_messages(conn, run["id"])
    )


def start(mapper: RunEventMapper) -> list[Event]:
    return [mapper.transition(RunStatus.IN_PROGRESS, started_at=mapper.run.get("started_at") or mapper.now())]


def finish(mapper: RunEventMapper, usage: dict | None, incomplete: str | None) -> list[Event]:
    """The run's last events when the graph is done: its answer, its step and its status, stored in
    one batch. `incomplete`: why a budget stopped it early."""
    events = mapper.close_answer(incomplete)
    common = {"usage": usage_json(usage), "required_action": None, "expires_at": None}
    if incomplete:
        events.append(mapper.transition(RunStatus.INCOMPLETE, incomplete_details={"reason": incomplete}, **common))
    else:
        events.append(mapper.transition(RunStatus.COMPLETED, completed_at=mapper.now(), **common))
    return events


def fail(mapper: RunEventMapper, code: str, message: str, usage: dict | None = None) -> list[Event]:
    error = {"code": code, "message": message}
    events = mapper.close_open("failed", "run_failed", last_error=error)
    events.append(
        mapper.transition(
            RunStatus.FAILED, failed_at=mapper.now(), last_error=error, required_action=None,
            expires_at=None, usage=usage_json(usage) if usage else None,
        )
    )
    return events


def cancelling(mapper: RunEventMapper) -> list[Event]:
    return [mapper.transition(RunStatus.CANCELLING)]


def close_events(mapper: RunEventMapper, to: str, usage: dict | None, last_error: dict | None = None) -> list[Event]:
    """The events that close the mapper's run as `to` (cancelled or expired): its open steps end
    with that status, its open message is incomplete. `last_error`: why an expired run's time ran
    out before the model's own limits ended it."""
    summed = usage_json(usage) if usage else None
    if to == RunStatus.CANCELLED:
        events = mapper.close_open("cancelled", "run_cancelled")
        fields = {"cancelled_at": mapper.now(), "required_action": None, "expires_at": None, "usage": summed}
    elif to == RunStatus.EXPIRED:
        events = mapper.close_open("expired", "run_expired")
        fields = {"required_action": None, "usage": summed, **({"last_error": last_error} if last_error else {})}
    else:
        raise ValueError(f"a run is not closed as {to}")
    return [*events, mapper.transition(to, **fields)]


async def close(
    sink: EventSink,
    pool: AsyncConnectionPool,
    row: dict,
    to: str,
    *,
    mapper: RunEventMapper | None = None,
    usage: dict | None | _StoredUsage = STORED_USAGE,
    last_error: dict | None = None,
) -> bool:
    """Close the run of `row` (as `store.run_row` reads it) as `to`, from `mapper` when an
    execution has one, else from what is stored.
    False when the run had moved on meanwhile (nothing is written then)."""
    if mapper is None:
        async with pool.connection() as conn:
            mapper = await stored_mapper(conn, row["obj"])
    else:
        # An execution's mapper is closed on a copy: a close may be tried again (an abort that lands
        # while it is written), and must then close the same open message and steps.
        mapper = mapper.fork()
    if isinstance(usage, _StoredUsage):
        usage = row["config"].get("usage")
    try:
        await sink.emit(close_events(mapper, to, usage, last_error), run_id=row["obj"]["id"])
        return True
    except RunPreempted:
        return False
