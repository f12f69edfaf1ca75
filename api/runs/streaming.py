"""Server-sent events: Assistants events travel from whichever process executes the run to the
process holding the client's socket through Postgres NOTIFY, and every event is kept (numbered per
run) so a stream never loses one.

Every API process keeps one LISTEN connection on a single channel and hands each notification to
the local streams subscribed to that run. Subscribing is a dictionary insert, so a stream is
registered before its run is created or resumed and never misses the first events. A stream knows
the number of the last event it sent: a gap (a notification lost while the listener reconnected)
or a re-attach from an earlier event (`Last-Event-ID`) is filled from `run_events`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.contract.objects import TERMINAL_RUN_STATUSES, present_step
from api.runs.events import CHANNEL, REVOKED, decode_notification, event_data, events_after, notification_run
from api.storage import store
from api.storage.database import OUTAGE, Backoff

log = logging.getLogger(__name__)

# A stream ends (after `done`) on any of these: the run is over or waits for the client.
STREAM_END_STATUSES = (*TERMINAL_RUN_STATUSES, "requires_action")
STREAM_END_EVENTS = {f"thread.run.{s}" for s in STREAM_END_STATUSES}


class Subscription:
    def __init__(self, hub: "EventHub", run_id: str, key_id: str | None):
        self.hub = hub
        self.run_id = run_id
        self.key_id = key_id
        # (event number, event name, data JSON | "@"); a revocation is (0, REVOKED, "").
        self.queue: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()

    def close(self) -> None:
        self.hub._unsubscribe(self)

    async def wait_for(self, names: set[str], timeout: float) -> bool:
        """Whether one of these events (or the key's revocation) arrived within `timeout` seconds."""
        return await self.wait_for_event(names, timeout) is not None

    async def wait_for_event(self, names: set[str], timeout: float) -> tuple[int, str, str] | None:
        """The first of these events (or the key's revocation) to arrive within `timeout` seconds:
        (number, name, data JSON or "@" when it was too large for a notification)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                event = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                return None
            if event[1] in names or event[1] == REVOKED:
                return event
        return None


# Seconds between attempts to listen again after the connection broke: doubling up to the maximum.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 5.0


class EventHub:
    def __init__(self, database_url: str):
        self._url = database_url
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        # The number of the last event this process relayed to a run's streams itself (`relay`):
        # its notification, coming back from the database, has nothing new for them.
        self._relayed: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="assistgraph-event-hub")
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def subscribe(self, run_id: str, key_id: str | None = None) -> Subscription:
        sub = Subscription(self, run_id, key_id)
        self._subs[run_id].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]
                self._relayed.pop(sub.run_id, None)

    def relay(self, run_id: str, events: list[tuple[int, str, str]]) -> None:
        """Events this process just stored (`EventSink`): its own streams of the run get them now.
        Same numbers as their notification, which then finds nothing new for these streams."""
        subs = self._subs.get(run_id)
        if not subs:
            return
        for sub in tuple(subs):
            for event in events:
                sub.queue.put_nowait(event)
        self._relayed[run_id] = max(self._relayed.get(run_id, 0), events[-1][0])

    async def _listen(self) -> None:
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_MAX)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if backoff.reset():
                        log.info("event listener connected again")
                    OUTAGE.over()
                    self._ready.set()
                    async for note in conn.notifies():
                        self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarted: listen again; streams fill the gap from run_events
                if isinstance(exc, psycopg.OperationalError):
                    OUTAGE.seen(exc)  # one warning for the whole outage
                    log.debug("event listener lost its connection (%s); trying again in %.1f s", exc, backoff.delay)
                else:
                    log.warning("event listener failed (%s); trying again in %.1f s", exc, backoff.delay)
                await backoff.wait()

    def _dispatch(self, payload: str) -> None:
        run_id = notification_run(payload)
        if run_id == REVOKED:
            _, ((_, key_id, _),) = decode_notification(payload)
            # A revoked key's streams end at their next event.
            for subs in tuple(self._subs.values()):
                for sub in tuple(subs):
                    if sub.key_id == key_id:
                        sub.queue.put_nowait((0, REVOKED, ""))
            return
        subs = self._subs.get(run_id)
        if not subs:
            return  # nobody here streams this run: not even decoded
        _, events = decode_notification(payload)
        relayed = self._relayed.get(run_id, 0)
        if events[-1][0] <= relayed:
            return
        for sub in tuple(subs):
            for event in events:
                if event[0] > relayed:
                    sub.queue.put_nowait(event)


def _error_event(message: str) -> ServerSentEvent:
    # The SDK's stream helpers only surface an error whose JSON has a top-level "error" key.
    error = {"code": "server_error", "message": message, "param": None, "type": "server_error"}
    return ServerSentEvent(event="error", data=json.dumps({**error, "error": error}))


class _Gone(Exception):
    """Events the stream owes its client are no longer kept."""


async def run_events(
    sub: Subscription,
    pool: AsyncConnectionPool,
    keepalive: float,
    include: list[str] | None = None,
    first: list[tuple[str, dict]] | None = None,
    *,
    after: int = 0,
    replay: bool = False,
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of one run numbered above `after`, until the run ends or needs the client,
    then `done`. Each carries its number as the SSE `id`. With `replay` (a client re-attaching),
    the kept events come first, and an end event ends the stream only once it is the run's latest."""
    last = after
    backlog: list[tuple[int, str, str]] = []

    async def fill(upto: int | None = None) -> None:
        """Queue the kept events after the last one sent (and before `upto`), all of them or none."""
        async with pool.connection() as conn:
            rows = await events_after(conn, sub.run_id, last)
        if upto is not None:
            rows = [row for row in rows if row[0] < upto]
        if rows and rows[0][0] != last + 1 or upto is not None and (rows[-1][0] if rows else last) != upto - 1:
            raise _Gone()  # pruned meanwhile
        backlog.extend(rows)

    async def settled() -> dict | None:
        """The run, when it is over or waits for the client (nothing more will come unasked)."""
        async with pool.connection() as conn:
            row = await store.run_row(conn, sub.run_id)
        return row if row is not None and row["status"] in STREAM_END_STATUSES else None

    try:
        for name, data in first or []:
            yield ServerSentEvent(event=name, data=json.dumps(data, separators=(",", ":")))
        if replay:
            try:
                await fill()
            except _Gone:
                row = await settled()
                if last > 0 or row is None or row["status"] not in TERMINAL_RUN_STATUSES:
                    raise
                # A run whose events were all pruned: its final state is all there is to say.
                yield ServerSentEvent(event=f"thread.run.{row['status']}", data=json.dumps(row["obj"]))
                yield ServerSentEvent(event="done", data="[DONE]")
                return
            if not backlog and await settled():
                yield ServerSentEvent(event="done", data="[DONE]")  # asked for events after the last one
                return
        while True:
            if backlog:
                seq, name, data = backlog.pop(0)
            else:
                try:
                    seq, name, data = await asyncio.wait_for(sub.queue.get(), timeout=keepalive)
                except asyncio.TimeoutError:
                    # Quiet for a while: catch up on events whose notification was lost.
                    await fill()
                    if not backlog and sub.queue.empty() and await settled():
                        break
                    continue
                if name == REVOKED:
                    yield _error_event("The API key used for this stream was revoked.")
                    break
                if seq <= last:
                    continue  # already sent: read from run_events before its notification arrived
                if seq > last + 1:
                    # The notifications in between were lost (the listener reconnected): read them first.
                    await fill(upto=seq)
                    backlog.append((seq, name, data))
                    continue
            if data == "@":  # too large for a notification
                async with pool.connection() as conn:
                    data = await event_data(conn, sub.run_id, seq)
                if data is None:
                    raise _Gone()
            if name.startswith("thread.run.step.") and name != "thread.run.step.delta" and '"file_search"' in data:
                data = json.dumps(present_step(json.loads(data), include), separators=(",", ":"))
            last = seq
            yield ServerSentEvent(event=name, data=data, id=str(seq))
            if name in STREAM_END_EVENTS and not backlog:
                break
        yield ServerSentEvent(event="done", data="[DONE]")
    except _Gone:
        yield _error_event(
            "Events of this run are no longer kept (ASSISTGRAPH_EVENT_RETENTION); read the run and its steps instead."
        )
    finally:
        sub.close()


class _KeepAlive(ServerSentEvent):
    """A comment line without the blank line that would end an event. Once it has seen an `id:`,
    the openai SDK's decoder turns every blank line into an event (it keeps the last id, as the
    SSE spec says, and dispatches even with no data), then fails to parse that event's empty data;
    a lone comment line is skipped by every SSE parser and still keeps the connection busy."""

    def encode(self) -> bytes:
        return b": keep-alive\n"


def sse_response(events: AsyncIterator[ServerSentEvent], keepalive: float) -> EventSourceResponse:
    # Comment pings keep proxies and clients from timing out during long tool calls.
    return EventSourceResponse(
        events,
        ping=keepalive,
        ping_message_factory=_KeepAlive,
        headers={"Cache-Control": "no-cache"},
        sep="\n",
    )
