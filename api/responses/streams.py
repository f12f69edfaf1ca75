"""Responses streams: a run's events, as the engine streams them (`runs/streaming.run_events`: live
from the event hub, kept events filling gaps and re-attaches), translated for one response.

A stream ends after the response's last event (`response.completed`, `.incomplete` or `.failed`)
with `data: [DONE]`, as Open Responses asks. Events carry no SSE `id`: `sequence_number` is the
position, and `GET /v1/responses/{id}?stream=true&starting_after=N` replays the response's events
through a fresh translator and sends those numbered above N.
"""

from __future__ import annotations

import json
from typing import AsyncIterator, Awaitable, Callable

from sse_starlette import ServerSentEvent

from api.contract.objects import FILE_SEARCH_CONTENT, FILE_SEARCH_QUERIES
from api.responses import items as item_views
from api.responses import reads, records
from api.responses.ids import container_id
from api.responses.translator import ResponseEventTranslator
from api.runs.runtime import Services
from api.runs.streaming import Subscription, run_events, sse_response
from api.storage import store


def _sse(event: dict) -> ServerSentEvent:
    return ServerSentEvent(event=event["type"], data=json.dumps(event, separators=(",", ":")))


async def events(
    svc: Services,
    row: dict,
    sub: Subscription,
    *,
    include: set[str],
    starting_after: int | None = None,
    replay: bool = False,
    after: int | None = None,
    on_end: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    async with svc.pool.connection() as conn:
        run = await store.run_row(conn, row["run_id"])
        filenames = await reads.stream_filenames(conn, row)
    translator = ResponseEventTranslator(
        skeleton=row["obj"],
        kinds=item_views.tool_kinds(run["obj"]["tools"] if run else []),
        container=container_id(row["thread_id"]),
        include=include,
        filenames=filenames,
        background=bool(row["obj"].get("background")),
        leading=row.get("leading") or [],
    )
    floor = -1 if starting_after is None else starting_after
    if replay:
        async with svc.pool.connection() as conn:
            kept = await records.first_kept_event(conn, row["run_id"])
            final = await reads.response(conn, row, include)
        if (kept is None or kept > row["first_event"] + 1) and final["status"] not in ("queued", "in_progress"):
            # Its events are no longer kept (ASSISTGRAPH_EVENT_RETENTION): what is left to say is how it ended.
            sub.close()
            for event in [*translator.start(), *translator.finish(final)]:
                if event["sequence_number"] > floor:
                    yield _sse(event)
            yield ServerSentEvent(data="[DONE]")
            return
    source = run_events(
        sub,
        svc.pool,
        svc.settings.stream_keepalive,
        include=[FILE_SEARCH_CONTENT, FILE_SEARCH_QUERIES],
        after=row["first_event"] if after is None else after,
        replay=replay,
    )
    try:
        pending = translator.start()
        failed = False
        async for sse in source:
            if sse.event == "done":
                break
            if sse.event == "error":  # the run's events are no longer kept, or the key was revoked
                error = json.loads(sse.data).get("error") or {}
                pending.append(translator.error(error.get("code"), error.get("message") or "The stream broke off."))
                failed = True
                break
            pending += translator.handle(sse.event, json.loads(sse.data))
            if translator.ending is not None:
                break
            for event in pending:
                if event["sequence_number"] > floor:
                    yield _sse(event)
            pending = []
        if not failed:
            async with svc.pool.connection() as conn:
                final = await reads.response(conn, row, include)
            if translator.ending is not None or final["status"] not in ("queued", "in_progress"):
                pending += translator.finish(final)
            else:
                pending.append(translator.error("server_error", "The run's events ended before the response did."))
        for event in pending:
            if event["sequence_number"] > floor:
                yield _sse(event)
        yield ServerSentEvent(data="[DONE]")
    finally:
        await source.aclose()
        if on_end is not None:
            await on_end()


def response(svc: Services, generator: AsyncIterator[ServerSentEvent]):
    return sse_response(generator, svc.settings.stream_keepalive)
