"""Streams of a run's events: Assistants events travel from whichever process executes the run to
the process holding the client's socket through Postgres NOTIFY, and every event is kept (numbered
per run) so a stream never loses one. What is read here are `KeptEvent`s; how they are written to a
socket is an encoder's business (`api/http/encoders/`).

Every API process keeps one LISTEN connection on a single channel and hands each notification to
the local streams subscribed to that run. Subscribing is a dictionary insert, so a stream is
registered before its run is created or resumed and never misses the first events. A stream knows
the number of the last event it sent: a gap (a notification lost while the listener reconnected)
or a re-attach from an earlier event (`Last-Event-ID`) is filled from `run_events`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import AsyncIterator, Iterable

import psycopg
from psycopg_pool import AsyncConnectionPool

from api.contract.run_status import STREAM_END, STREAM_END_EVENTS, TERMINAL
from api.runs import notify
from api.runs.events import KeptEvent, Revoked, StreamBroken
from api.runs.sink import event_data, events_after
from api.storage import store
from api.storage.database import OUTAGE, Backoff

log = logging.getLogger(__name__)

# The names other modules import.
STREAM_END_STATUSES = STREAM_END


class Subscription:
    def __init__(self, hub: "EventHub", run_id: str, key_id: str | None):
        self.hub = hub
        self.run_id = run_id
        self.key_id = key_id
        self.queue: asyncio.Queue[KeptEvent | Revoked] = asyncio.Queue()

    def close(self) -> None:
        self.hub._unsubscribe(self)

    async def wait_for(self, names: Iterable[str], timeout: float) -> bool:
        """Whether one of these events (or the key's revocation) arrived within `timeout` seconds."""
        return await self.wait_for_event(names, timeout) is not None

    async def wait_for_event(self, names: Iterable[str], timeout: float) -> KeptEvent | Revoked | None:
        """The first of these events (or the key's revocation) to arrive within `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                return None
            if isinstance(item, Revoked) or item.name in names:
                return item
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

    def relay(self, run_id: str, events: list[KeptEvent]) -> None:
        """Events this process just stored (`EventSink`): its own streams of the run get them now.
        Same numbers as their notification, which then finds nothing new for these streams."""
        subs = self._subs.get(run_id)
        if not subs:
            return
        for sub in tuple(subs):
            for event in events:
                sub.queue.put_nowait(event)
        self._relayed[run_id] = max(self._relayed.get(run_id, 0), events[-1].seq)

    async def _listen(self) -> None:
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_MAX)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {notify.CHANNEL}")
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
        run_id = notify.notification_run(payload)
        if run_id is None:
            revoked = Revoked(notify.revoked_key(payload))
            # A revoked key's streams end at their next event.
            for subs in tuple(self._subs.values()):
                for sub in tuple(subs):
                    if sub.key_id == revoked.key_id:
                        sub.queue.put_nowait(revoked)
            return
        subs = self._subs.get(run_id)
        if not subs:
            return  # nobody here streams this run: not even decoded
        _, events = notify.decode(payload)
        relayed = self._relayed.get(run_id, 0)
        if events[-1].seq <= relayed:
            return
        for sub in tuple(subs):
            for event in events:
                if event.seq > relayed:
                    sub.queue.put_nowait(event)


REVOKED_MESSAGE = "The API key used for this stream was revoked."
GONE_MESSAGE = (
    "Events of this run are no longer kept (ASSISTGRAPH_EVENT_RETENTION); read the run and its steps instead."
)


class _Gone(Exception):
    """Events the stream owes its client are no longer kept."""


async def with_data(pool: AsyncConnectionPool, run_id: str, event: KeptEvent) -> KeptEvent | None:
    """The event with its data: read from `run_events` when it was too large for its notification
    (None: no longer kept)."""
    if event.data is not None:
        return event
    async with pool.connection() as conn:
        data = await event_data(conn, run_id, event.seq)
    return None if data is None else event._replace(data=data)


async def run_events(
    sub: Subscription,
    pool: AsyncConnectionPool,
    keepalive: float,
    *,
    after: int = 0,
    replay: bool = False,
) -> AsyncIterator[KeptEvent | StreamBroken]:
    """The events of one run numbered above `after`, in order and each once, until the run ends or
    needs the client; a `StreamBroken` last when the stream cannot go on. With `replay` (a client
    re-attaching), the kept events come first, and an end event ends the stream only once it is
    the run's latest. `keepalive`: seconds of quiet after which kept events are checked for any
    whose notification was lost."""
    last = after
    backlog: list[KeptEvent] = []

    async def fill(upto: int | None = None) -> None:
        """Queue the kept events after the last one sent (and before `upto`), all of them or none."""
        async with pool.connection() as conn:
            rows = await events_after(conn, sub.run_id, last)
        if upto is not None:
            rows = [row for row in rows if row.seq < upto]
        if rows and rows[0].seq != last + 1 or upto is not None and (rows[-1].seq if rows else last) != upto - 1:
            raise _Gone()  # pruned meanwhile
        backlog.extend(rows)

    async def settled() -> dict | None:
        """The run, when it is over or waits for the client (nothing more will come unasked)."""
        async with pool.connection() as conn:
            row = await store.run_row(conn, sub.run_id)
        return row if row is not None and row["status"] in STREAM_END else None

    try:
        if replay:
            try:
                await fill()
            except _Gone:
                row = await settled()
                if last > 0 or row is None or row["status"] not in TERMINAL:
                    raise
                # A run whose events were all pruned: its final state is all there is to say.
                yield KeptEvent.unkept(f"thread.run.{row['status']}", row["obj"])
                return
            if not backlog and await settled():
                return  # asked for events after the last one
        while True:
            if backlog:
                event = backlog.pop(0)
            else:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), timeout=keepalive)
                except asyncio.TimeoutError:
                    # Quiet for a while: catch up on events whose notification was lost.
                    await fill()
                    if not backlog and sub.queue.empty() and await settled():
                        break
                    continue
                if isinstance(item, Revoked):
                    yield StreamBroken("server_error", REVOKED_MESSAGE)
                    return
                event = item
                if event.seq <= last:
                    continue  # already sent: read from run_events before its notification arrived
                if event.seq > last + 1:
                    # The notifications in between were lost (the listener reconnected): read them first.
                    await fill(upto=event.seq)
                    backlog.append(event)
                    continue
            event = await with_data(pool, sub.run_id, event)
            if event is None:
                raise _Gone()
            last = event.seq
            yield event
            if event.name in STREAM_END_EVENTS and not backlog:
                break
    except _Gone:
        yield StreamBroken("server_error", GONE_MESSAGE)
    finally:
        sub.close()
