"""The run engine's operations on a run's lifecycle (the statuses and the moves between them are
`api/contract/run_status.py`, where storage can read them too).

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
from api.runs.mapper import RunEventMapper
from api.runs.sink import EventSink, RunPreempted
from api.storage import store

# `close` takes the usage its executions stored with the run (at its last pause).
STORED_USAGE: dict | None = {}


async def stored_mapper(conn: AsyncConnection, run: dict) -> RunEventMapper:
    """A mapper that holds what the run has open as stored (no execution's memory of it)."""
    return RunEventMapper(
        run, open_steps=await store.open_steps(conn, run["id"]), open_messages=await store.open_messages(conn, run["id"])
    )


def close_events(mapper: RunEventMapper, to: str, usage: dict | None) -> list[Event]:
    """The events that close the mapper's run as `to` (cancelled or expired)."""
    if to == RunStatus.CANCELLED:
        return mapper.cancel(usage)
    if to == RunStatus.EXPIRED:
        return mapper.expire(usage)
    raise ValueError(f"a run is not closed as {to}")


async def close(
    sink: EventSink,
    pool: AsyncConnectionPool,
    row: dict,
    to: str,
    *,
    mapper: RunEventMapper | None = None,
    usage: dict | None = STORED_USAGE,
) -> bool:
    """Close the run of `row` (as `store.run_row` reads it) as `to`, from `mapper` when an
    execution has one, else from what is stored.
    False when the run had moved on meanwhile (nothing is written then)."""
    if mapper is None:
        async with pool.connection() as conn:
            mapper = await stored_mapper(conn, row["obj"])
    if usage is STORED_USAGE:
        usage = row["config"].get("usage")
    try:
        await sink.emit(close_events(mapper, to, usage), run_id=row["obj"]["id"])
        return True
    except RunPreempted:
        return False
