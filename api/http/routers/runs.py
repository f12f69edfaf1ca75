from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response

from api.contract import objects, schemas
from api.contract.errors import InvalidRequest, not_found
from api.files import tool_resources
from api.http.deps import App, Include, PageParams, RunId, StepId, ThreadId
from api.observability import metrics
from api.runs.control import add_messages, announce, cancel_run, create_run, launch, submit_tool_outputs
from api.contract.run_status import POLLED_WHILE, STREAM_END_EVENTS
from api.http.encoders import assistants as assistants_sse
from api.http.encoders import sse
from api.runs.events import KeptEvent
from api.runs.runtime import Services
from api.runs.streaming import run_events
from api.settings import Settings
from api.storage import store

# The largest event number a client can name (a run's events are numbered by a bigint).
MAX_EVENT = 2**63 - 1


def poll_hold(request: Request, settings: Settings) -> float:
    """Seconds a GET of an active run may wait for it to settle: only for the SDK's poll helpers,
    and no longer than the interval the caller asked the helper to poll at."""
    if request.headers.get("x-stainless-poll-helper") != "true" or settings.poll_hold_ms <= 0:
        return 0.0
    hold = settings.poll_hold_ms
    custom = request.headers.get("x-stainless-custom-poll-interval", "")
    if custom.isdigit():
        hold = min(hold, int(custom))
    return hold / 1000


router = APIRouter(tags=["runs"])


def stream(app: Services, sub, include: list[str] | None, after: int, first=(), replay: bool = False):
    keepalive = app.settings.stream_keepalive
    events = run_events(sub, app.pool, keepalive, after=after, replay=replay)
    return sse.response(_counted(assistants_sse.stream(events, include, first)), keepalive)


async def _counted(events):
    """The stream's events, counted in `assistgraph_active_streams` while it is open."""
    metrics.ACTIVE_STREAMS.inc()
    try:
        async for event in events:
            yield event
    finally:
        metrics.ACTIVE_STREAMS.dec()


@router.post("/threads/runs")
async def create_thread_and_run(body: schemas.CreateThreadAndRun, app: App, include: Include = None):
    spec = body.thread or schemas.CreateThread()
    resources = body.tool_resources if body.tool_resources is not None else spec.tool_resources
    thread = objects.thread(spec.metadata)
    jobs: list = []
    async with app.pool.connection() as conn, conn.transaction():
        thread["tool_resources"] = await tool_resources.resolve(conn, app, resources, jobs, for_thread=True)
        await store.insert_thread(conn, thread, app.tenant)
        await add_messages(conn, thread["id"], spec.messages, app, jobs)
        run, events = await create_run(app, conn, thread["id"], body, jobs=jobs)
        thread = await store.get(conn, "threads", thread["id"], app.tenant)
        sub, after = await announce(app, conn, run, events, stream=bool(body.stream))
    await launch(app, jobs)
    if sub:
        return stream(app, sub, include, after, first=[KeptEvent.unkept("thread.created", thread)])
    return run


@router.api_route("/threads/runs", methods=["GET", "DELETE"], include_in_schema=False)
async def thread_runs_other_methods() -> None:
    # `runs` is no thread id: the thread routes' other methods on it are a 405, not a malformed id.
    raise HTTPException(405, headers={"Allow": "POST"})


@router.post("/threads/{thread_id}/runs")
async def create_thread_run(thread_id: ThreadId, body: schemas.CreateRun, app: App, include: Include = None):
    jobs: list = []
    async with app.pool.connection() as conn, conn.transaction():
        run, events = await create_run(
            app,
            conn,
            thread_id,
            body,
            additional_instructions=body.additional_instructions,
            additional_messages=body.additional_messages,
            jobs=jobs,
        )
        sub, after = await announce(app, conn, run, events, stream=bool(body.stream))
    await launch(app, jobs)
    if sub:
        return stream(app, sub, include, after)
    return run


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: ThreadId, app: App, page: PageParams) -> dict:
    async with app.pool.connection() as conn:
        if await store.get(conn, "threads", thread_id, app.tenant) is None:
            raise not_found("thread", thread_id)
        items, more = await store.list_page(conn, "runs", tenant=app.tenant, filters={"thread_id": thread_id}, **vars(page))
    return objects.page(items, more)


async def _run(conn, thread_id: str, run_id: str, tenant: str, *, for_update: bool = False) -> dict:
    run = await store.get(conn, "runs", run_id, tenant, for_update=for_update)
    if run is None or run["thread_id"] != thread_id:
        raise not_found("run", run_id)
    return run


@router.get("/threads/{thread_id}/runs/{run_id}")
async def retrieve_run(thread_id: ThreadId, run_id: RunId, app: App, request: Request) -> Response:
    # The poll helpers' hot path: the stored JSON goes out as it is.
    hold = poll_hold(request, app.settings)
    sub = app.hub.subscribe(run_id, app.caller.key_id) if hold else None  # before reading: no missed event
    try:
        found = await _run_json(app, thread_id, run_id)
        if sub is not None and found[1] in POLLED_WHILE:
            # The SDK's poll helper (it says so in a header) only stops at requires_action or a
            # terminal status: answer when the run gets there, instead of after every poll interval,
            # with the run as stored (its metadata may have changed since the execution read it).
            if await sub.wait_for(STREAM_END_EVENTS, hold):
                found = await _run_json(app, thread_id, run_id)
    finally:
        if sub is not None:
            sub.close()
    return Response(found[0], media_type="application/json")


async def _run_json(app: Services, thread_id: str, run_id: str) -> tuple[str, str]:
    async with app.pool.connection() as conn:
        found = await store.run_json(conn, run_id, thread_id, app.tenant)
    if found is None:
        raise not_found("run", run_id)
    return found


@router.post("/threads/{thread_id}/runs/{run_id}")
async def modify_run(thread_id: ThreadId, run_id: RunId, body: schemas.ModifyRun, app: App) -> dict:
    async with app.pool.connection() as conn, conn.transaction():
        run = await _run(conn, thread_id, run_id, app.tenant, for_update=True)
        if "metadata" in body.model_fields_set:
            run["metadata"] = body.metadata or {}
        await store.replace(conn, "runs", run)
    return run


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel(thread_id: ThreadId, run_id: RunId, app: App) -> dict:
    return await cancel_run(app, thread_id, run_id)


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs")
async def submit(thread_id: ThreadId, run_id: RunId, body: schemas.SubmitToolOutputs, app: App):
    run, sub, after = await submit_tool_outputs(app, thread_id, run_id, body)
    if sub:
        return stream(app, sub, None, after)
    return run


@router.get("/threads/{thread_id}/runs/{run_id}/events")
async def run_event_stream(
    thread_id: ThreadId,
    run_id: RunId,
    app: App,
    include: Include = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_EVENT, description="Send the events numbered above this one.")] = None,
    last_event_id: Annotated[str | None, Header(description="The `id` of the last event received.")] = None,
):
    """Re-attach to a run's event stream (live or finished): its events after the given one (all of
    them by default), each with its number as the SSE `id`, until the run ends or needs the client.
    `Last-Event-ID` (as an EventSource sends it on reconnect) is honoured when `after` is absent."""
    if after is None and last_event_id is not None:
        # Digits only, and few enough to be an event number (int() refuses thousands of digits).
        if not last_event_id.strip().isdigit() or len(last_event_id.strip()) > len(str(MAX_EVENT)) or int(last_event_id) > MAX_EVENT:
            raise InvalidRequest(f"Invalid Last-Event-ID '{last_event_id}': expected an event number.", param="Last-Event-ID")
        after = int(last_event_id)
    sub = app.hub.subscribe(run_id, app.caller.key_id)  # before reading: no missed event
    try:
        async with app.pool.connection() as conn:
            await _run(conn, thread_id, run_id, app.tenant)
    except BaseException:
        sub.close()
        raise
    return stream(app, sub, include, after or 0, replay=True)


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_steps(thread_id: ThreadId, run_id: RunId, app: App, page: PageParams, include: Include = None) -> dict:
    async with app.pool.connection() as conn:
        await _run(conn, thread_id, run_id, app.tenant)
        items, more = await store.list_page(conn, "run_steps", tenant=app.tenant, filters={"run_id": run_id}, **vars(page))
    return objects.page([objects.present_step(step, include) for step in items], more)


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_step(thread_id: ThreadId, run_id: RunId, step_id: StepId, app: App, include: Include = None) -> dict:
    async with app.pool.connection() as conn:
        await _run(conn, thread_id, run_id, app.tenant)
        step = await store.get(conn, "run_steps", step_id, app.tenant)
    if step is None or step["run_id"] != run_id:
        raise not_found("run step", step_id)
    return objects.present_step(step, include)
