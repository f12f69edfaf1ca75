"""Server-sent events framing, shared by every SSE stream the server sends: LF line endings, comment
pings while a stream is quiet, and the response around them."""

from __future__ import annotations

from typing import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from api.runs.events import StreamBroken, compact_json

# Line endings of every stream (sse-starlette's default is CRLF): what OpenAI sends.
SEP = "\n"


class _KeepAlive(ServerSentEvent):
    """A comment line without the blank line that would end an event. Once it has seen an `id:`,
    the openai SDK's decoder turns every blank line into an event (it keeps the last id, as the
    SSE spec says, and dispatches even with no data), then fails to parse that event's empty data;
    a lone comment line is skipped by every SSE parser and still keeps the connection busy."""

    def encode(self) -> bytes:
        return b": keep-alive\n"


def event(name: str | None, data: str, seq: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(event=name, data=data, id=None if seq is None else str(seq), sep=SEP)


def error(broken: StreamBroken) -> ServerSentEvent:
    # The SDK's stream helpers only surface an error whose JSON has a top-level "error" key.
    body = {"code": broken.code, "message": broken.message, "param": None, "type": "server_error"}
    return event("error", compact_json({**body, "error": body}))


def response(events: AsyncIterator[ServerSentEvent], keepalive: float) -> EventSourceResponse:
    # Comment pings keep proxies and clients from timing out during long tool calls.
    return EventSourceResponse(
        events,
        ping=keepalive,
        ping_message_factory=_KeepAlive,
        headers={"Cache-Control": "no-cache"},
        sep=SEP,
    )
