from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from api.http.deps import App, Includes, ResponseId
from api.http.encoders import responses as responses_sse
from api.http.encoders import sse
from api.responses import compaction, items, params, service, streams

router = APIRouter(tags=["responses"])


@router.post("/responses")
async def create_response(body: params.CreateResponse, app: App):
    include = items.check_include(body.include)
    started = await service.create(app, body)
    row = started.row

    async def settle() -> None:
        if not row["stored"]:
            await service.purge(app, [row["id"]])

    if body.stream:
        return _stream(app, streams.events(app, row, started.sub, include=include, on_end=settle))
    if body.background:
        return await service.current(app, row, include)
    await service.wait_until_settled(app, started)
    shown = await service.current(app, row, include)
    await settle()
    return shown


@router.post("/responses/compact")
async def compact_response(body: params.CompactResponse, app: App) -> dict:
    """A window of items as one compaction item (`encrypted_content` sealed by the server; give the
    output back as input to go on from it)."""
    return await compaction.compact(app, body)


@router.api_route("/responses/compact", methods=["GET", "DELETE"], include_in_schema=False)
async def compact_other_methods() -> None:
    # `compact` is no response id: other methods on it are a 405, not a malformed id.
    raise HTTPException(405, headers={"Allow": "POST"})


@router.get("/responses/{response_id}")
async def retrieve_response(
    response_id: ResponseId,
    app: App,
    include: Includes,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0, description="With `stream`: send the events numbered above this one.")] = None,
    include_obfuscation: bool | None = None,
):
    """The response; with `stream=true`, its events from the first (or after `starting_after`) until it ends."""
    shown = items.check_include(include)
    if not stream:
        return await service.retrieve(app, response_id, shown)
    async with app.pool.connection() as conn:
        row = await service.stored_row(conn, app, response_id)
    sub = app.hub.subscribe(row["run_id"], app.caller.key_id)  # before reading: no missed event
    return _stream(app, streams.events(app, row, sub, include=shown, starting_after=starting_after, replay=True))


@router.delete("/responses/{response_id}")
async def delete_response(response_id: ResponseId, app: App) -> dict:
    return await service.delete(app, response_id)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: ResponseId, app: App) -> dict:
    return await service.cancel(app, response_id)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: ResponseId,
    app: App,
    include: Includes,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query("desc"),
    after: str | None = Query(None),
    before: str | None = Query(None),
) -> dict:
    return await service.input_items(
        app, response_id, limit=limit, order=order, after=after, before=before, include=items.check_include(include)
    )


def _stream(app: App, events):
    return sse.response(responses_sse.stream(events), app.settings.stream_keepalive)
