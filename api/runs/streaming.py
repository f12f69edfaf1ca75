"""Server-sent events: Assistants events travel from whichever process executes the run to the
process holding the client's socket through Postgres NOTIFY.

Every API process keeps one LISTEN connection on a single channel and hands each notification to
the local streams subscribed to that run. Subscribing is a dictionary insert, so a stream is
registered before its run is created or resumed and never misses the first events.
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
from api.runs.events import CHANNEL, REVOKED, decode_notification, load_payload
from api.storage import store

log = logging.getLogger(__name__)

# A stream ends (after `done`) on any of these: the run is over or waits for the client.
STREAM_END_EVENTS = {f"thread.run.{s}" for s in (*TERMINAL_RUN_STATUSES, "requires_action")}


class Subscription:
    def __init__(self, hub: "EventHub", run_id: str, key_id: str | None):
        self.hub = hub
        self.run_id = run_id
        self.key_id = key_id
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()  # (event name, data JSON | "@ref")

    def close(self) -> None:
        self.hub._unsubscribe(self)

    async def wait_for(self, names: set[str], timeout: float) -> bool:
        """Whether one of these events (or the key's revocation) arrived within `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                name, _ = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                return False
            if name in names or name == REVOKED:
                return True
        return False


class EventHub:
    def __init__(self, database_url: str):
        self._url = database_url
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
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

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    async for note in conn.notifies():
                        self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarted: listen again; streams resync on keep-alive
                log.warning("event listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(0.5)

    def _dispatch(self, payload: str) -> None:
        head, name, data = decode_notification(payload)
        if head == REVOKED:
            # A revoked key's streams end at their next event.
            for subs in tuple(self._subs.values()):
                for sub in tuple(subs):
                    if sub.key_id == name:
                        sub.queue.put_nowait((REVOKED, ""))
            return
        for sub in tuple(self._subs.get(head, ())):
            sub.queue.put_nowait((name, data))


def _error_event(message: str) -> ServerSentEvent:
    # The SDK's stream helpers only surface an error whose JSON has a top-level "error" key.
    error = {"code": "server_error", "message": message, "param": None, "type": "server_error"}
    return ServerSentEvent(event="error", data=json.dumps({**error, "error": error}))


async def run_events(
    sub: Subscription,
    pool: AsyncConnectionPool,
    keepalive: float,
    include: list[str] | None = None,
    first: list[tuple[str, dict]] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of one run until it ends or needs the client, then `done`."""
    try:
        for name, data in first or []:
            yield ServerSentEvent(event=name, data=json.dumps(data, separators=(",", ":")))
        while True:
            try:
                message = await asyncio.wait_for(sub.queue.get(), timeout=keepalive)
            except asyncio.TimeoutError:
                # Quiet for a while: if the run ended while our listener was reconnecting, say so.
                async with pool.connection() as conn:
                    row = await store.run_row(conn, sub.run_id)
                status = row["status"] if row else None
                # Events that arrived meanwhile go out first (in order, the run's own last event included).
                if sub.queue.empty() and (status in TERMINAL_RUN_STATUSES or status == "requires_action"):
                    yield ServerSentEvent(event=f"thread.run.{status}", data=json.dumps(row["obj"]))
                    break
                continue
            name, data = message
            if name == REVOKED:
                yield _error_event("The API key used for this stream was revoked.")
                break
            if data.startswith("@"):
                async with pool.connection() as conn:
                    parked = await load_payload(conn, int(data[1:]))
                if parked is None:
                    yield _error_event("An event of this run is no longer available.")
                    break
                data = json.dumps(parked, separators=(",", ":"))
            if name.startswith("thread.run.step.") and name != "thread.run.step.delta" and '"file_search"' in data:
                data = json.dumps(present_step(json.loads(data), include), separators=(",", ":"))
            yield ServerSentEvent(event=name, data=data)
            if name in STREAM_END_EVENTS:
                break
        yield ServerSentEvent(event="done", data="[DONE]")
    finally:
        sub.close()


def sse_response(events: AsyncIterator[ServerSentEvent], keepalive: float) -> EventSourceResponse:
    # Comment pings keep proxies and clients from timing out during long tool calls.
    return EventSourceResponse(
        events,
        ping=keepalive,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
        headers={"Cache-Control": "no-cache"},
        sep="\n",
    )
