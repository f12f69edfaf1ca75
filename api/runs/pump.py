"""The pump between a run's execution and the sink: events go out in order from a background task,
and token deltas that queue up meanwhile are merged (coalesced) into fewer, larger ones."""

from __future__ import annotations

import asyncio
import time

from api.runs.events import Event
from api.runs.sink import EventSink


def coalesce(events: list[Event]) -> list[Event]:
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
        if self._holding is not None and not all(e.is_delta for e in events):
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
                batch, self._pending = coalesce(self._pending), []
                # Only a write that carried deltas opens a window: the first token of a message
                # goes out as soon as it comes.
                self._last_write = time.monotonic() if any(e.is_delta for e in batch) else 0.0
                try:
                    await self._sink.emit(batch, run_id=self._run_id)
                except Exception as exc:  # RunPreempted or a database error: the executor decides
                    self._error = exc
                    self._pending = []
            self._idle.set()

    async def _hold(self) -> None:
        """While only deltas are pending, wait out the window since the previous write."""
        wait = self._last_write + self._window - time.monotonic()
        if wait <= 0 or not all(e.is_delta for e in self._pending):
            return
        self._holding = holding = asyncio.Event()
        try:
            await asyncio.wait_for(holding.wait(), wait)
        except TimeoutError:
            pass
        finally:
            self._holding = None
