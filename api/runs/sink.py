"""The one interface Assistants events go through: persist their effect, number them, keep them,
publish them.

Each published event gets the next number of its run (`runs.event_seq`, taken in the writing
statement, so numbers follow commit order) and is kept in `run_events` for
`ASSISTGRAPH_EVENT_RETENTION` seconds: a stream that re-attaches from an event id, or that missed a
notification, reads the rest from there. Publication is a Postgres NOTIFY on one channel, sent in
the same statement that keeps the events, so a listener in any process sees them in order and never
before the state they describe is stored. One notification carries a batch of consecutive events
(as many as fit in NOTIFY's 8000 bytes); an event too large for one is announced by number and read
from `run_events`.

A batch is written by one statement: the run's status change (conditional: the lifecycle's state
machine is its WHERE clause), the steps and messages the events complete, the kept events and their
notifications. One round trip and no BEGIN/COMMIT, and the batch is atomic: when the run was moved
on by someone else (a cancel, an expiry), nothing of it is written. Streams served by the process
that wrote the batch get its events as soon as the statement returns (`relay`), without waiting for
the notification to come back from the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.contract.run_status import ALLOWED_FROM, STREAM_END, TERMINAL, RunStatus
from api.observability import runs as observed_runs
from api.runs import notify
from api.runs.events import Event, EventData, KeptEvent, compact_json
SELECT_EVENTS_AFTER = "SELECT seq, event, data FROM run_events WHERE run_id = %s AND seq > %s ORDER BY seq"
SELECT_EVENT_DATA = "SELECT data FROM run_events WHERE run_id = %s AND seq = %s"
SELECT_KEPT_DELTAS = """
    SELECT seq, event, data FROM run_events
    WHERE run_id = %s AND event IN ('thread.message.delta', 'thread.run.step.delta') ORDER BY seq
"""
DELETE_OLD_EVENTS = "DELETE FROM run_events WHERE created_at < now() - make_interval(secs => %s)"

_PERSISTED_SNAPSHOTS = {"created", "completed", "failed", "cancelled", "expired", "incomplete", "snapshot"}

# (run id, the events it numbered): events a process wrote, for its own streams.
Relay = Callable[[str, list[KeptEvent]], None]


class RunPreempted(Exception):
    """The run was moved on by someone else (cancel, expiry) before this write."""


class EventSink:
    def __init__(self, pool: AsyncConnectionPool, relay: Relay | None = None):
        self._pool = pool
        self._relay = relay

    async def emit(self, events: Sequence[Event], *, run_id: str, conn: AsyncConnection | None = None) -> int | None:
        """Store and publish; the number of the last event published (None when none was). With
        `conn`, inside that connection's transaction (its notifications go out at commit)."""
        if not events:
            return None
        writes = plan(run_id, events)
        if conn is not None:
            numbered = [await write.execute(conn) for write in writes]
        elif len(writes) == 1:
            async with self._pool.connection() as own:
                numbered = [await writes[0].execute(own)]
        else:
            async with self._pool.connection() as own, own.transaction():
                numbered = [await write.execute(own) for write in writes]
        published = [event for events in numbered for event in events]
        if conn is None and self._relay is not None and published:
            self._relay(run_id, published)
        return published[-1].seq if published else None


def _persists(event: Event) -> bool:
    if not event.persist:
        return False
    kind = event.event.rsplit(".", 1)[-1]
    if event.event.startswith("thread.run.step.") or event.event.startswith("thread.message."):
        return kind in _PERSISTED_SNAPSHOTS
    return event.event.startswith("thread.run.")


_json = compact_json


@dataclass
class Write:
    """What one statement writes: a run transition (several in a row collapse into the last, under
    the first one's condition), steps and messages (the last snapshot of each), and the events."""

    run_id: str
    transitions: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    clear_resume: bool = False
    steps: dict[str, list] = field(default_factory=dict)  # id -> [obj JSON, pending usage JSON | None]
    messages: dict[str, str] = field(default_factory=dict)  # id -> obj JSON
    # Where steps and messages this batch creates come in: their rows are numbered in insertion order.
    created: list[str] = field(default_factory=list)
    published: list[tuple[str, str]] = field(default_factory=list)  # (event name, data JSON)
    objects: list[dict] = field(default_factory=list)  # the data of each published event
    run_json: str | None = None

    def creates_both_before(self, table: str) -> bool:
        """Whether rows of both tables are created already and `table`'s would come after the other's."""
        return len(set(self.created)) == 2 and self.created[-1] != table

    async def execute(self, conn: AsyncConnection) -> list[KeptEvent]:
        """Runs the statement; the events it numbered."""
        transition = bool(self.transitions)
        messages_first = bool(self.created) and self.created[0] == "messages"
        sql = _statement(transition, bool(self.steps), bool(self.messages), messages_first)
        params: dict = {"run": self.run_id, "n": len(self.published), "channel": notify.CHANNEL}
        if transition:
            first, last = self.transitions[0], self.transitions[-1]
            params.update(
                status=last["status"],
                obj=self.run_json,
                allowed=list(ALLOWED_FROM[first["status"]]),
                config=_json(self.config),
                drop=["resume"] if self.clear_resume else [],
            )
        if self.steps:
            params.update(
                step_ids=list(self.steps),
                step_objs=[obj for obj, _ in self.steps.values()],
                step_usages=[usage for _, usage in self.steps.values()],
            )
        if self.messages:
            params.update(message_ids=list(self.messages), message_objs=list(self.messages.values()))
        params["names"] = [name for name, _ in self.published]
        params["datas"] = [data for _, data in self.published]
        params["firsts"], params["bodies"] = notify.bodies(self.published)
        row = await (await conn.execute(sql, params)).fetchone()
        if row is None:
            if transition:
                raise RunPreempted(self.run_id)
            return []  # the run is gone (its thread was deleted)
        for run in self.transitions:
            status = run["status"]
            observed_runs.transition(run, row["tenant_id"], settled=status in STREAM_END, terminal=status in TERMINAL)
        base = row["base"]
        return [
            KeptEvent(base + i, name, EventData(value, text))
            for i, ((name, text), value) in enumerate(zip(self.published, self.objects), start=1)
        ]


def plan(run_id: str, events: Sequence[Event]) -> list[Write]:
    """The statements that write these events, in order: one, unless the batch creates steps and
    messages interleaved (a step, a message, a step), whose rows must be numbered in that order."""
    writes = [Write(run_id)]
    for event in events:
        write = writes[-1]
        name, data = event.event, event.data
        kind = name.rsplit(".", 1)[-1]
        text = None
        if _persists(event):
            if name.startswith("thread.run.step.") or name.startswith("thread.message."):
                table = "steps" if name.startswith("thread.run.step.") else "messages"
                if kind == "created" and write.creates_both_before(table):
                    write = Write(run_id)
                    writes.append(write)
                if kind == "created":
                    write.created.append(table)
                if table == "steps":
                    pending_usage = data.pop("_pending_usage", None)
                    text = _json(data)
                    known = write.steps.get(data["id"])
                    usage = _json(pending_usage) if pending_usage is not None else (known[1] if known else None)
                    write.steps[data["id"]] = [text, usage]
                else:
                    text = _json(data)
                    write.messages[data["id"]] = text
            else:  # a run event: its status change
                if write.transitions and write.transitions[-1]["status"] not in ALLOWED_FROM[data["status"]]:
                    # What the second of two transitions in one transaction would have found.
                    raise RunPreempted(run_id)
                text = write.run_json = _json(data)
                write.transitions.append(data)
                if kind == RunStatus.REQUIRES_ACTION:
                    # Outputs consumed by this execution; the next submit brings new ones. Same
                    # statement as the status, so a submit can never race it.
                    write.clear_resume = True
                    write.config.pop("resume", None)
                if event.config:
                    write.config.update(event.config)
        if event.publish:
            write.published.append((name, text if text is not None else _json(data)))
            write.objects.append(data)
    return writes


@lru_cache(maxsize=None)
def _statement(transition: bool, steps: bool, messages: bool, messages_first: bool) -> str:
    """The one statement of a batch (a handful of shapes, each prepared once per connection).

    Every part reads the run's row from `run`: when the conditional transition matches nothing (the
    run was moved on), no part writes anything. Rows of steps and messages are numbered in the
    order they are created: the later of the two inserts waits for the other (its subquery counts
    the other's rows first)."""
    sql = ["WITH run AS (\n    UPDATE runs SET event_seq = event_seq + %(n)s"]
    if transition:
        sql.append(
            # The run's metadata is the client's (POST .../runs/{id} changes it while the run
            # goes on): the stored one stands, whatever the execution's copy of the run says.
            ", status = %(status)s, updated_at = now(),"
            " obj = coalesce(jsonb_set(%(obj)s::jsonb, '{metadata}', runs.obj->'metadata'), %(obj)s::jsonb),"
            " config = (config - %(drop)b::text[]) || %(config)s::jsonb"
        )
    sql.append("\n    WHERE id = %(run)s")
    if transition:
        sql.append(" AND status = ANY(%(allowed)b)")
    sql.append("\n    RETURNING tenant_id, thread_id, event_seq - %(n)s AS base\n)")
    parts = []
    if steps:
        after = "\n    WHERE (SELECT count(*) FROM new_messages) >= 0" if messages and messages_first else ""
        parts.append(
            ", new_steps AS (\n    INSERT INTO run_steps (id, run_id, tenant_id, obj, pending_usage)"
            "\n    SELECT s.id, %(run)s, run.tenant_id, s.obj::jsonb, s.usage::jsonb"
            "\n    FROM run, unnest(%(step_ids)b::text[], %(step_objs)b::text[], %(step_usages)b::text[])"
            " WITH ORDINALITY AS s(id, obj, usage, ord)" + after + "\n    ORDER BY s.ord"
            "\n    ON CONFLICT (id) DO UPDATE"
            " SET obj = EXCLUDED.obj, pending_usage = coalesce(EXCLUDED.pending_usage, run_steps.pending_usage)"
            "\n    RETURNING 1\n)"
        )
    if messages:
        after = "\n    WHERE (SELECT count(*) FROM new_steps) >= 0" if steps and not messages_first else ""
        parts.append(
            ", new_messages AS (\n    INSERT INTO messages (id, thread_id, run_id, tenant_id, obj)"
            "\n    SELECT m.id, run.thread_id, %(run)s, run.tenant_id, m.obj::jsonb"
            "\n    FROM run, unnest(%(message_ids)b::text[], %(message_objs)b::text[]) WITH ORDINALITY AS m(id, obj, ord)"
            + after + "\n    ORDER BY m.ord"
            "\n    ON CONFLICT (id) DO UPDATE SET obj = EXCLUDED.obj"
            "\n    RETURNING 1\n)"
        )
    # A CTE can only read the ones before it: the insert that waits comes second.
    sql += reversed(parts) if messages_first else parts
    sql.append(
        ", kept AS (\n    INSERT INTO run_events (run_id, seq, event, data)"
        "\n    SELECT %(run)s, run.base + e.ord, e.event, e.data"
        "\n    FROM run, unnest(%(names)b::text[], %(datas)b::text[]) WITH ORDINALITY AS e(event, data, ord)\n)"
        # pg_notify runs after the sort (volatile functions in the target list are evaluated after
        # ORDER BY), so listeners get the batches in order.
        ", notified AS (\n    SELECT pg_notify(%(channel)s, concat_ws(chr(31), %(run)s, (run.base + c.first)::text, c.body))"
        "\n    FROM run, unnest(%(firsts)b::int[], %(bodies)b::text[]) WITH ORDINALITY AS c(first, body, ord)"
        "\n    ORDER BY c.ord\n)"
        "\nSELECT tenant_id, base, (SELECT count(*) FROM notified) AS notes FROM run"
    )
    return "".join(sql)


async def events_after(conn: AsyncConnection, run_id: str, after: int) -> list[KeptEvent]:
    """The run's kept events numbered above `after`, in order."""
    rows = await (await conn.execute(SELECT_EVENTS_AFTER, (run_id, after))).fetchall()
    return [KeptEvent(row["seq"], row["event"], EventData.of_json(row["data"])) for row in rows]


async def event_data(conn: AsyncConnection, run_id: str, seq: int) -> EventData | None:
    row = await (await conn.execute(SELECT_EVENT_DATA, (run_id, seq))).fetchone()
    return EventData.of_json(row["data"]) if row else None


async def kept_deltas(conn: AsyncConnection, run_id: str) -> list[KeptEvent]:
    """The run's kept delta events, in order: what its clients were sent of objects still open."""
    rows = await (await conn.execute(SELECT_KEPT_DELTAS, (run_id,))).fetchall()
    return [KeptEvent(row["seq"], row["event"], EventData.of_json(row["data"])) for row in rows]


async def prune_events(conn: AsyncConnection, retention: float) -> None:
    await conn.execute(DELETE_OLD_EVENTS, (retention,))


