"""Assistants SSE: a run's events as OpenAI's Assistants API streams them (`event: thread.run...`,
the object as `data`, the event's number as `id`, `done` last)."""

from __future__ import annotations

from typing import AsyncIterator, Iterable

from sse_starlette import ServerSentEvent

from api.contract.objects import present_step
from api.http.encoders import sse
from api.runs.events import KeptEvent, StreamBroken, compact_json

DONE = "[DONE]"


def encode(event: KeptEvent, include: list[str] | None = None) -> ServerSentEvent:
    """One event. Steps show file_search results' text only when asked (`include[]`): the text is
    sent as stored unless it has file_search calls to present."""
    data = event.data
    if event.name.startswith("thread.run.step.") and event.name != "thread.run.step.delta" and '"file_search"' in data.json:
        text = compact_json(present_step(data.value, include))
    else:
        text = data.json
    return sse.event(event.name, text, event.seq)


async def stream(
    events: AsyncIterator[KeptEvent | StreamBroken],
    include: list[str] | None = None,
    first: Iterable[KeptEvent] = (),
) -> AsyncIterator[ServerSentEvent]:
    """The stream: `first` (events that are not the run's, as `thread.created`), the run's events,
    then `done`, or an `error` when the stream broke off."""
    for event in first:
        yield encode(event, include)
    async for item in events:
        if isinstance(item, StreamBroken):
            yield sse.error(item)
            return
        yield encode(item, include)
    yield sse.event("done", DONE)
