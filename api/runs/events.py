"""The one interface Assistants events go through: persist their effect, number them, keep them,
publish them.

Each published event gets the next number of its run (`runs.event_seq`, taken in the writing
transaction, so numbers follow commit order) and is kept in `run_events` for
`ASSISTGRAPH_EVENT_RETENTION` seconds: a stream that re-attaches from an event id, or that missed a
notification, reads the rest from there. Publication is a Postgres NOTIFY on one channel, sent in
the same statement that keeps the events, so a listener in any process sees them in order and never
before the state they describe is stored. Events too large for NOTIFY (8000 bytes) are announced
by number and read from `run_events`.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.runs.mapper import Event
from api.storage import store

CHANNEL = "assistgraph_events"
# NOTIFY's limit is 8000 bytes; leave room for the envelope.
_MAX_INLINE = 7000

NOTIFY = "SELECT pg_notify(%s, %s)"
# One statement per batch: number the events, keep them, notify. pg_notify runs after the sort
# (volatile functions in the target list are evaluated after ORDER BY), so listeners get them in order.
APPEND_EVENTS = """
    WITH numbered AS (
        UPDATE runs SET event_seq = event_seq + %(n)s WHERE id = %(run)s RETURNING event_seq - %(n)s AS base
    ), kept AS (
        INSERT INTO run_events (run_id, seq, event, data)
        SELECT %(run)s, numbered.base + e.ord, e.event, e.data
        FROM numbered, unnest(%(events)s::text[], %(datas)s::text[]) WITH ORDINALITY AS e(event, data, ord)
        RETURNING seq, event, data
    )
    SELECT seq, pg_notify(%(channel)s, concat_ws(chr(31), %(run)s, seq::text, event,
        CASE WHEN octet_length(data) > %(inline)s THEN '@' ELSE data END))
    FROM kept ORDER BY seq
"""
SELECT_EVENTS_AFTER = "SELECT seq, event, data FROM run_events WHERE run_id = %s AND seq > %s ORDER BY seq"
SELECT_EVENT_DATA = "SELECT data FROM run_events WHERE run_id = %s AND seq = %s"
SELECT_KEPT_DELTAS = """
    SELECT event, data FROM run_events
    WHERE run_id = %s AND event IN ('thread.message.delta', 'thread.run.step.delta') ORDER BY seq
"""
DELETE_OLD_EVENTS = "DELETE FROM run_events WHERE created_at < now() - make_interval(secs => %s)"

_PERSISTED_SNAPSHOTS = {"created", "completed", "failed", "cancelled", "expired", "incomplete", "snapshot"}


class RunPreempted(Exception):
    """The run was moved on by someone else (cancel, expiry) before this write."""


class EventSink:
    def __init__(self, pool: AsyncConnectionPool):
        self._pool = pool

    @asynccontextmanager
    async def _tx(self, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        if conn is not None:
            yield conn
            return
        async with self._pool.connection() as own, own.transaction():
            yield own

    async def emit(self, events: Sequence[Event], *, run_id: str, conn: AsyncConnection | None = None) -> int | None:
        """Store and publish; the number of the last event published (None when none was)."""
        if not events:
            return None
        if conn is None and not any(_persists(e) for e in events):
            # Deltas only: one statement, no transaction.
            async with self._pool.connection() as own:
                return await _append(own, run_id, events)
        async with self._tx(conn) as tx:
            for event in events:
                if _persists(event):
                    await _persist(tx, event)
            return await _append(tx, run_id, events)


def _persists(event: Event) -> bool:
    if not event.persist:
        return False
    kind = event.event.rsplit(".", 1)[-1]
    if event.event.startswith("thread.run.step.") or event.event.startswith("thread.message."):
        return kind in _PERSISTED_SNAPSHOTS
    return event.event.startswith("thread.run.")


async def _append(conn: AsyncConnection, run_id: str, events: Sequence[Event]) -> int | None:
    published = [e for e in events if e.publish]
    if not published:
        return None
    cur = await conn.execute(
        APPEND_EVENTS,
        {
            "n": len(published),
            "run": run_id,
            "events": [e.event for e in published],
            "datas": [json.dumps(e.data, separators=(",", ":")) for e in published],
            "channel": CHANNEL,
            "inline": _MAX_INLINE,
        },
    )
    rows = await cur.fetchall()
    return rows[-1]["seq"] if rows else None


# Wire format of a notification: "<run id>\x1f<seq>\x1f<event name>\x1f<data>", where data is the
# event's JSON, or "@" when it is too large (read it from run_events). Streams relay the JSON as it
# came, without parsing it.
_SEP = "\x1f"
REVOKED = "!revoked"


async def publish_revocation(conn: AsyncConnection, key_id: str) -> None:
    """Tell every API process that streams opened with this key must end."""
    await conn.execute(NOTIFY, (CHANNEL, f"{REVOKED}{_SEP}{key_id}"))


def decode_notification(payload: str) -> tuple[str, int, str, str]:
    """(run id or REVOKED, event number (0 for a revocation), event name or key id, data JSON or "@")."""
    head, _, rest = payload.partition(_SEP)
    if head == REVOKED:
        return head, 0, rest, ""
    seq, _, rest = rest.partition(_SEP)
    name, _, data = rest.partition(_SEP)
    return head, int(seq), name, data


async def events_after(conn: AsyncConnection, run_id: str, after: int) -> list[tuple[int, str, str]]:
    """The run's kept events numbered above `after`, in order: (seq, event name, data JSON)."""
    rows = await (await conn.execute(SELECT_EVENTS_AFTER, (run_id, after))).fetchall()
    return [(row["seq"], row["event"], row["data"]) for row in rows]


async def event_data(conn: AsyncConnection, run_id: str, seq: int) -> str | None:
    row = await (await conn.execute(SELECT_EVENT_DATA, (run_id, seq))).fetchone()
    return row["data"] if row else None


async def kept_deltas(conn: AsyncConnection, run_id: str) -> list[tuple[str, dict]]:
    """The run's kept delta events, in order: what its clients were sent of objects still open."""
    rows = await (await conn.execute(SELECT_KEPT_DELTAS, (run_id,))).fetchall()
    return [(row["event"], json.loads(row["data"])) for row in rows]


async def prune_events(conn: AsyncConnection, retention: float) -> None:
    await conn.execute(DELETE_OLD_EVENTS, (retention,))


async def _persist(conn: AsyncConnection, event: Event) -> None:
    name, data = event.event, event.data
    kind = name.rsplit(".", 1)[-1]
    if name.startswith("thread.run.step."):
        if kind in _PERSISTED_SNAPSHOTS:
            pending_usage = data.pop("_pending_usage", None)
            await store.upsert_step(conn, data)
            if pending_usage is not None:
                await store.set_step_pending_usage(conn, data["id"], pending_usage)
    elif name.startswith("thread.run."):
        if not await store.transition_run(conn, data):
            raise RunPreempted(data["id"])
        if kind == "requires_action":
            # Outputs consumed by this execution; the next submit brings new ones. Same
            # transaction as the status, so a submit can never race it.
            await store.clear_resume(conn, data["id"])
        if event.config:
            await store.merge_run_config(conn, data["id"], event.config)
    elif name.startswith("thread.message."):
        if kind in _PERSISTED_SNAPSHOTS:
            await store.upsert_message(conn, data)


def _coalesce(events: list[Event]) -> list[Event]:
    """Merge consecutive text deltas of one message (and argument deltas of one tool call) that
    queued up while the previous write was in flight: fewer round trips, same accumulated result."""
    out: list[Event] = []
    for event in events:
        prev = out[-1] if out else None
        if prev is not None and prev.event == event.event and prev.data.get("id") == event.data.get("id"):
            merged = _merge_delta(prev, event)
            if merged is not None:
                out[-1] = merged
                continue
        out.append(event)
    return out


def _merge_delta(prev: Event, event: Event) -> Event | None:
    if event.event == "thread.message.delta":
        (a,), (b,) = prev.data["delta"]["content"], event.data["delta"]["content"]
        if a["index"] != b["index"] or a["type"] != "text" or b["type"] != "text" or set(b["text"]) != {"value"}:
            return None
        block = {**a, "text": {**a["text"], "value": a["text"]["value"] + b["text"]["value"]}}
        return Event(prev.event, {**prev.data, "delta": {"content": [block]}})
    if event.event == "thread.run.step.delta":
        (a,) = prev.data["delta"]["step_details"]["tool_calls"]
        (b,) = event.data["delta"]["step_details"]["tool_calls"]
        # A function's arguments or the code of a code_interpreter call, written piece by piece.
        field, text = {"function": ("function", "arguments"), "code_interpreter": ("code_interpreter", "input")}.get(
            a.get("type"), (None, None)
        )
        if a["index"] != b["index"] or field is None or b.get("type") != a["type"] or set(b.get(field, ())) != {text}:
            return None
        if text not in a[field]:
            return None
        call = {**a, field: {**a[field], text: a[field][text] + b[field][text]}}
        return Event(prev.event, {**prev.data, "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}})
    return None


class EventPump:
    """Emits a run's events in order from a background task, so the graph never waits on the
    database between tokens. Events that pile up during one write go out together in the next."""

    def __init__(self, sink: EventSink, run_id: str):
        self._sink = sink
        self._run_id = run_id
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._task = asyncio.create_task(self._drain(), name=f"events {run_id}")

    def put(self, events: list[Event]) -> None:
        if self._error is not None:
            raise self._error
        self._pending.extend(events)
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything put so far is stored and published; re-raise a failed write."""
        if self._pending or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the event loop: chunks already received by the model client join this batch.
            await asyncio.sleep(0)
            while self._pending and self._error is None:
                batch, self._pending = _coalesce(self._pending), []
                try:
                    await self._sink.emit(batch, run_id=self._run_id)
                except Exception as exc:  # RunPreempted or a database error: the executor decides
                    self._error = exc
                    self._pending = []
            self._idle.set()
