"""Responses streams: a run's events, as the engine streams them (`runs/streaming.run_events`: live
from the event hub, kept events filling gaps and re-attaches), translated for one response.

The events come out as values (numbered dicts, see `translator.py`) and end after the response's
last event (`response.completed`, `.incomplete` or `.failed`) or an `error`; writing them to a
transport is an encoder's business (`api/http/encoders/responses.py`).
`GET /v1/responses/{id}?stream=true&starting_after=N` replays the response's events through a fresh
translator and keeps those numbered above N.
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

from api.responses import items as item_views
from api.responses import reads, records
from api.responses.ids import container_id
from api.responses.translator import ResponseEventTranslator
from api.runs.events import StreamBroken
from api.runs.runtime import Services
from api.runs.streaming import Subscription, run_events
from api.storage import store

# A response in one of these has not ended yet (statuses of a Response, not of a run).
_GOING_ON = ("queued", "in_progress")


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
) -> AsyncIterator[dict]:
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
        if (kept is None or kept > row["first_event"] + 1) and final["status"] not in _GOING_ON:
            # Its events are no longer kept (ASSISTGRAPH_EVENT_RETENTION): what is left to say is how it ended.
            sub.close()
            for event in [*translator.start(), *translator.finish(final)]:
                if event["sequence_number"] > floor:
                    yield event
            return
    source = run_events(
        sub,
        svc.pool,
        svc.settings.stream_keepalive,
        after=row["first_event"] if after is None else after,
        replay=replay,
    )
    try:
        pending = translator.start()
        failed = False
        async for item in source:
            if isinstance(item, StreamBroken):  # the run's events are no longer kept, or the key was revoked
                pending.append(translator.error(item.code, item.message))
                failed = True
                break
            pending += translator.handle(item.name, item.data.value)
            if translator.ending is not None:
                break
            for event in pending:
                if event["sequence_number"] > floor:
                    yield event
            pending = []
        if not failed:
            async with svc.pool.connection() as conn:
                final = await reads.response(conn, row, include)
            if translator.ending is not None or final["status"] not in _GOING_ON:
                pending += translator.finish(final)
            else:
                pending.append(translator.error("server_error", "The run's events ended before the response did."))
        for event in pending:
            if event["sequence_number"] > floor:
                yield event
    finally:
        await source.aclose()
        if on_end is not None:
            await on_end()


def without_run(response: dict) -> list[dict]:
    """The events of a response that never ran (a warm-up): created, then how it ended."""
    translator = ResponseEventTranslator(skeleton=response, kinds={}, container="", include=set())
    return [*translator.start(), *translator.finish(response)]
