"""The one interface Assistants events go through: persist their effect, then publish them.

Publication is a Postgres NOTIFY on one channel, tagged with the run id, sent in the same
transaction as the writes, so a listener in any process sees events in order and never
before the state they describe is stored. Payloads too large for NOTIFY (8000 bytes) are
parked in `run_event_payloads` and announced by reference.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.runs.mapper import Event
from api.storage import store

NOTIFY = "SELECT pg_notify(%s, %s)"
INSERT_PAYLOAD = "INSERT INTO run_event_payloads (run_id, payload) VALUES (%s, %s) RETURNING id"
SELECT_PAYLOAD = "SELECT payload FROM run_event_payloads WHERE id = %s"
DELETE_OLD_PAYLOADS = "DELETE FROM run_event_payloads WHERE created_at < now() - interval '1 hour'"

# NOTIFY's limit is 8000 bytes; leave room for the envelope.
_MAX_INLINE = 7000
CHANNEL = "assistgraph_events"
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

    async def emit(self, events: Sequence[Event], *, run_id: str, conn: AsyncConnection | None = None) -> None:
        if not events:
            return
        if conn is None and not any(_persists(e) for e in events):
            # Deltas only: one statement, no transaction.
            async with self._pool.connection() as own:
                await _publish_many(own, run_id, events)
            return
        async with self._tx(conn) as tx:
            for event in events:
                if _persists(event):
                    await _persist(tx, event)
            await _publish_many(tx, run_id, events)


def _persists(event: Event) -> bool:
    if not event.persist:
        return False
    kind = event.event.rsplit(".", 1)[-1]
    if event.event.startswith("thread.run.step.") or event.event.startswith("thread.message."):
        return kind in _PERSISTED_SNAPSHOTS
    return event.event.startswith("thread.run.")


async def _publish_many(conn: AsyncConnection, run_id: str, events: Sequence[Event]) -> None:
    bodies = [_notification(run_id, e) for e in events if e.publish]
    if any(b is None for b in bodies):
        for event in events:
            if event.publish:
                await _publish(conn, run_id, event)
        return
    query = "SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(bodies))
    await conn.execute(query, [x for body in bodies for x in (CHANNEL, body)])


# Wire format of a notification: "<run id>\x1f<event name>\x1f<data>", where data is the event's
# JSON, or "@<id>" of a parked payload. Streams relay the JSON as it came, without parsing it.
_SEP = "\x1f"
REVOKED = "!revoked"


def _notification(run_id: str, event: Event) -> str | None:
    """The inline NOTIFY payload, or None when it is too large to go inline."""
    body = f"{run_id}{_SEP}{event.event}{_SEP}{json.dumps(event.data, separators=(',', ':'))}"
    return body if len(body.encode()) <= _MAX_INLINE else None


async def publish_revocation(conn: AsyncConnection, key_id: str) -> None:
    """Tell every API process that streams opened with this key must end."""
    await conn.execute(NOTIFY, (CHANNEL, f"{REVOKED}{_SEP}{key_id}"))


def decode_notification(payload: str) -> tuple[str, str, str]:
    """(run id or REVOKED, event name or key id, data JSON or "@<ref>" or "")."""
    head, _, rest = payload.partition(_SEP)
    name, _, data = rest.partition(_SEP)
    return head, name, data


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
    elif name.startswith("thread.message."):
        if kind in _PERSISTED_SNAPSHOTS:
            await store.upsert_message(conn, data)


async def _publish(conn: AsyncConnection, run_id: str, event: Event) -> None:
    body = _notification(run_id, event)
    if body is None:
        cur = await conn.execute(INSERT_PAYLOAD, (run_id, Jsonb(event.data)))
        ref = (await cur.fetchone())["id"]
        body = f"{run_id}{_SEP}{event.event}{_SEP}@{ref}"
    await conn.execute(NOTIFY, (CHANNEL, body))


async def load_payload(conn: AsyncConnection, ref: int) -> dict | None:
    row = await (await conn.execute(SELECT_PAYLOAD, (ref,))).fetchone()
    return row["payload"] if row else None


async def prune_payloads(conn: AsyncConnection) -> None:
    await conn.execute(DELETE_OLD_PAYLOADS)


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
        if a["index"] != b["index"] or set(b["function"]) != {"arguments"}:
            return None
        call = {**a, "function": {**a["function"], "arguments": a["function"]["arguments"] + b["function"]["arguments"]}}
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
