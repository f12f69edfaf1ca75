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

import asyncio
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.observability import runs as observed_runs
from api.runs.mapper import Event
from api.storage.store import ALLOWED_FROM

CHANNEL = "assistgraph_events"
# NOTIFY's limit is 8000 bytes; leave room for the envelope.
_MAX_INLINE = 7000

NOTIFY = "SELECT pg_notify(%s, %s)"
SELECT_EVENTS_AFTER = "SELECT seq, event, data FROM run_events WHERE run_id = %s AND seq > %s ORDER BY seq"
SELECT_EVENT_DATA = "SELECT data FROM run_events WHERE run_id = %s AND seq = %s"
SELECT_KEPT_DELTAS = """
    SELECT event, data FROM run_events
    WHERE run_id = %s AND event IN ('thread.message.delta', 'thread.run.step.delta') ORDER BY seq
"""
DELETE_OLD_EVENTS = "DELETE FROM run_events WHERE created_at < now() - make_interval(secs => %s)"

_PERSISTED_SNAPSHOTS = {"created", "completed", "failed", "cancelled", "expired", "incomplete", "snapshot"}

# (run id, [(event number, event name, data JSON)]): events a process wrote, for its own streams.
Relay = Callable[[str, list[tuple[int, str, str]]], None]


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
        writes = _plan(run_id, events)
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
        return published[-1][0] if published else None


def _persists(event: Event) -> bool:
    if not event.persist:
        return False
    kind = event.event.rsplit(".", 1)[-1]
    if event.event.startswith("thread.run.step.") or event.event.startswith("thread.message."):
        return kind in _PERSISTED_SNAPSHOTS
    return event.event.startswith("thread.run.")


def _json(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"))


@dataclass
class _Write:
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
    run_json: str | None = None

    def creates_both_before(self, table: str) -> bool:
        """Whether rows of both tables are created already and `table`'s would come after the other's."""
        return len(set(self.created)) == 2 and self.created[-1] != table

    async def execute(self, conn: AsyncConnection) -> list[tuple[int, str, str]]:
        """Runs the statement; the events it numbered, as (number, name, data JSON)."""
        transition = bool(self.transitions)
        messages_first = bool(self.created) and self.created[0] == "messages"
        sql = _statement(transition, bool(self.steps), bool(self.messages), messages_first)
        params: dict = {"run": self.run_id, "n": len(self.published), "channel": CHANNEL}
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
        params["firsts"], params["bodies"] = _notifications(self.published)
        row = await (await conn.execute(sql, params)).fetchone()
        if row is None:
            if transition:
                raise RunPreempted(self.run_id)
            return []  # the run is gone (its thread was deleted)
        for run in self.transitions:
            observed_runs.transition(run, row["tenant_id"])
        base = row["base"]
        return [(base + i, name, data) for i, (name, data) in enumerate(self.published, start=1)]


def _plan(run_id: str, events: Sequence[Event]) -> list[_Write]:
    """The statements that write these events, in order: one, unless the batch creates steps and
    messages interleaved (a step, a message, a step), whose rows must be numbered in that order."""
    writes = [_Write(run_id)]
    for event in events:
        write = writes[-1]
        name, data = event.event, event.data
        kind = name.rsplit(".", 1)[-1]
        text = None
        if _persists(event):
            if name.startswith("thread.run.step.") or name.startswith("thread.message."):
                table = "steps" if name.startswith("thread.run.step.") else "messages"
                if kind == "created" and write.creates_both_before(table):
                    write = _Write(run_id)
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
                if kind == "requires_action":
                    # Outputs consumed by this execution; the next submit brings new ones. Same
                    # statement as the status, so a submit can never race it.
                    write.clear_resume = True
                    write.config.pop("resume", None)
                if event.config:
                    write.config.update(event.config)
        if event.publish:
            write.published.append((name, text if text is not None else _json(data)))
    return writes


def _notifications(published: list[tuple[str, str]]) -> tuple[list[int], list[str]]:
    """The notification bodies of a batch: consecutive events, each `name<US>data`, separated by
    <RS>, as many as fit in one NOTIFY; data too large for one is "@" (read it from run_events).
    Returns (the position in the batch of each body's first event, the bodies)."""
    firsts: list[int] = []
    bodies: list[str] = []
    parts: list[str] = []
    size = 0
    for position, (name, data) in enumerate(published, start=1):
        length = len(data) if data.isascii() else len(data.encode())
        if length > _MAX_INLINE:
            data, length = "@", 1
        length += len(name) + 2
        if parts and size + length > _MAX_INLINE:
            bodies.append(_RS.join(parts))
            parts, size = [], 0
        if not parts:
            firsts.append(position)
        parts.append(f"{name}{_SEP}{data}")
        size += length
    if parts:
        bodies.append(_RS.join(parts))
    return firsts, bodies


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
            ", status = %(status)s, obj = %(obj)s::jsonb, updated_at = now(),"
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


# Wire format of a notification: "<run id><US><number of the first event><US><event><RS><event>...",
# each event "<event name><US><data>", where data is the event's JSON, or "@" when it is too large
# (read it from run_events); the events of one notification are numbered consecutively. JSON text
# never holds raw control characters, so neither separator can occur in it. Streams relay the JSON
# as it came, without parsing it.
_SEP = "\x1f"
_RS = "\x1e"
REVOKED = "!revoked"


async def publish_revocation(conn: AsyncConnection, key_id: str) -> None:
    """Tell every API process that streams opened with this key must end."""
    await conn.execute(NOTIFY, (CHANNEL, f"{REVOKED}{_SEP}{key_id}"))


def notification_run(payload: str) -> str:
    """The run a notification is about (REVOKED for a key's revocation), without decoding it."""
    return payload[: payload.find(_SEP)]


def decode_notification(payload: str) -> tuple[str, list[tuple[int, str, str]]]:
    """(run id, its events as (number, name, data JSON or "@")); for a revocation (REVOKED,
    [(0, key id, "")])."""
    head, _, rest = payload.partition(_SEP)
    if head == REVOKED:
        return head, [(0, rest, "")]
    first, _, rest = rest.partition(_SEP)
    seq = int(first)
    events = []
    for record in rest.split(_RS):
        name, _, data = record.partition(_SEP)
        events.append((seq, name, data))
        seq += 1
    return head, events


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


def _is_delta(event: Event) -> bool:
    return event.event.endswith(".delta")


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
        if "id" in a:
            # The delta that announces a call stays apart: the SDK's stream helpers report it as
            # the call's creation and only the deltas after it as input (on_tool_call_delta).
            return None
        if text not in a[field]:
            return None
        call = {**a, field: {**a[field], text: a[field][text] + b[field][text]}}
        return Event(prev.event, {**prev.data, "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}})
    return None


class EventPump:
    """Emits a run's events in order from a background task, so the graph never waits on the
    database between tokens. Events that pile up during one write go out together in the next.

    Token deltas also wait up to `window` seconds after the previous write, so a fast model's
    stream is written (stored, notified, sent) a few dozen times a second instead of once per
    token or two: a write's cost, not its size, is what a token paid for. A delta that follows a
    write without deltas goes out at once (time to first token), and any other event ends the wait
    (it is a state change that a client or a waiting poll should see now)."""

    def __init__(self, sink: EventSink, run_id: str, *, window: float = 0.0):
        self._sink = sink
        self._run_id = run_id
        self._window = window
        self._last_write = 0.0
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._holding: asyncio.Event | None = None  # set to end a delta window early
        self._task = asyncio.create_task(self._drain(), name=f"events {run_id}")

    def put(self, events: list[Event]) -> None:
        if self._error is not None:
            raise self._error
        self._pending.extend(events)
        self._idle.clear()
        self._wake.set()
        if self._holding is not None and not all(_is_delta(e) for e in events):
            self._holding.set()

    async def flush(self) -> None:
        """Wait until everything put so far is stored and published; re-raise a failed write."""
        if self._pending or not self._idle.is_set():
            self._wake.set()
            if self._holding is not None:
                self._holding.set()
            await self._idle.wait()
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> BaseException | None:
        """Why a write failed (RunPreempted: the run moved on without this execution), if one did."""
        return self._error

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
                await self._hold()
                batch, self._pending = _coalesce(self._pending), []
                # Only a write that carried deltas opens a window: the first token of a message
                # goes out as soon as it comes.
                self._last_write = time.monotonic() if any(_is_delta(e) for e in batch) else 0.0
                try:
                    await self._sink.emit(batch, run_id=self._run_id)
                except Exception as exc:  # RunPreempted or a database error: the executor decides
                    self._error = exc
                    self._pending = []
            self._idle.set()

    async def _hold(self) -> None:
        """While only deltas are pending, wait out the window since the previous write."""
        wait = self._last_write + self._window - time.monotonic()
        if wait <= 0 or not all(_is_delta(e) for e in self._pending):
            return
        self._holding = holding = asyncio.Event()
        try:
            await asyncio.wait_for(holding.wait(), wait)
        except TimeoutError:
            pass
        finally:
            self._holding = None
