"""Responses SSE: Responses stream events (numbered by `api/responses/translator.py`) as OpenAI's
Responses API streams them (`event: <type>`, the event as `data`, no `id`: `sequence_number` is
the position), then `data: [DONE]` as Open Responses asks."""

from __future__ import annotations

from typing import AsyncIterator

from sse_starlette import ServerSentEvent

from api.http.encoders import sse
from api.runs.events import compact_json

DONE = "[DONE]"


def encode(event: dict) -> ServerSentEvent:
    return sse.event(event["type"], compact_json(event))


async def stream(events: AsyncIterator[dict]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        yield encode(event)
    yield sse.event(None, DONE)
