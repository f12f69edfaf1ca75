"""The one interface Assistants events go through: persist their effect, then publish them.

Publication is a Postgres NOTIFY on one channel, tagged with the run id, sent in the same
transaction as the writes, so a listener in any process sees events in order and never
before the state they describe is stored. Payloads too large for NOTIFY (8000 bytes) are
parked in `run_event_payloads` and announced by reference.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api import store
from api.mapper import Event

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
        async with self._tx(conn) as tx:
            for event in events:
                await _persist(tx, event)
            for event in events:
                if event.publish:
                    await _publish(tx, run_id, event)


async def _persist(conn: AsyncConnection, event: Event) -> None:
    name, data = event.event, event.data
    kind = name.rsplit(".", 1)[-1]
    if name.startswith("thread.run.step."):
        if kind in _PERSISTED_SNAPSHOTS:
            await store.upsert_step(conn, data)
    elif name.startswith("thread.run."):
        if not await store.transition_run(conn, data):
            raise RunPreempted(data["id"])
    elif name.startswith("thread.message."):
        if kind in _PERSISTED_SNAPSHOTS:
            await store.upsert_message(conn, data)


async def _publish(conn: AsyncConnection, run_id: str, event: Event) -> None:
    body = json.dumps({"r": run_id, "e": event.event, "d": event.data}, separators=(",", ":"))
    if len(body.encode()) > _MAX_INLINE:
        cur = await conn.execute(INSERT_PAYLOAD, (run_id, Jsonb(event.data)))
        ref = (await cur.fetchone())["id"]
        body = json.dumps({"r": run_id, "e": event.event, "ref": ref})
    await conn.execute(NOTIFY, (CHANNEL, body))


async def load_payload(conn: AsyncConnection, ref: int) -> dict | None:
    row = await (await conn.execute(SELECT_PAYLOAD, (ref,))).fetchone()
    return row["payload"] if row else None


async def prune_payloads(conn: AsyncConnection) -> None:
    await conn.execute(DELETE_OLD_PAYLOADS)
