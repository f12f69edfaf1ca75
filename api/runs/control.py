"""Starting, resuming and cancelling runs: the API side of the run lifecycle."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from psycopg import AsyncConnection

from api.contract import objects, schemas
from api.contract.errors import InvalidRequest, NotFound, not_found
from api.contract.ids import now
from api.files import files_store
from api.files import vector_stores as vs
from api.contract.run_status import CANCELLABLE, RunStatus
from api.runs import lifecycle
from api.runs.events import Event
from api.runs.runtime import Services
from api.runs.streaming import Subscription
from api.security.auth import Caller
from api.security.models import catalog_for, unknown_model
from api.settings import Settings
from api.storage import store
from api.tooling import actions, mcp_servers, tool_types
from ingestion import ChunkingStrategy
from tools.functions import function_names

log = logging.getLogger(__name__)

async def lock_thread(conn: AsyncConnection, thread_id: str, tenant: str) -> dict:
    """Locks the thread row for the transaction: serialises 'is a run active?' decisions."""
    thread = await store.get(conn, "threads", thread_id, tenant, for_update=True)
    if thread is None:
        raise not_found("thread", thread_id)
    return thread


async def ensure_unlocked_for_messages(conn: AsyncConnection, thread_id: str) -> None:
    active = await store.active_run_id(conn, thread_id)
    if active:
        raise InvalidRequest(f"Can't add messages to {thread_id} while a run {active} is active.")


async def add_messages(
    conn: AsyncConnection,
    thread_id: str,
    messages: list[schemas.CreateMessage] | None,
    svc: Services,
    jobs: list[vs.Job],
) -> list[dict]:
    """Insert messages (in the caller's transaction). Files attached for file_search go into the
    thread's vector store; their ingestion jobs are added to `jobs`, to enqueue after commit."""
    created = []
    for body in messages or []:
        if body.attachments:
            jobs += await _attach(conn, thread_id, body.attachments, svc)
        message = objects.user_message(thread_id, body)
        await store.insert_message(conn, message, svc.tenant)
        created.append(message)
    return created


async def _attach(conn: AsyncConnection, thread_id: str, attachments: list[schemas.Attachment], svc: Services) -> list[vs.Job]:
    thread = await store.get(conn, "threads", thread_id, svc.tenant, for_update=True)
    if thread is None:
        raise not_found("thread", thread_id)
    resources = thread["tool_resources"]
    for attachment in attachments:
        if await files_store.get(conn, attachment.file_id, svc.tenant) is None:
            raise NotFound(f"No such File object: {attachment.file_id}", param="attachments")
    searchable = [a.file_id for a in attachments if any(t.type == "file_search" for t in a.tools)]
    runnable = [a.file_id for a in attachments if any(t.type == "code_interpreter" for t in a.tools)]
    jobs: list[vs.Job] = []
    if searchable:
        store_ids = (resources.get("file_search") or {}).get("vector_store_ids") or []
        if not store_ids:
            # As on OpenAI: the thread gets a store of its own, expiring 7 days after last use.
            model = await asyncio.to_thread(vs.configured_model, svc.settings)
            created = vs.new_store_object(None, None, None)
            await vs.insert_store(conn, created, svc.tenant, model, 7)
            store_ids = [created["id"]]
            resources["file_search"] = {"vector_store_ids": store_ids}
        await vs.lock_store(conn, store_ids[0], svc.tenant)
        items = [vs.Attach(file_id, ChunkingStrategy.auto(), None) for file_id in searchable]
        _, jobs = await vs.attach_files(conn, store_ids[0], svc.tenant, items, file_param="attachments")
    if runnable:
        current = (resources.get("code_interpreter") or {}).get("file_ids") or []
        file_ids = list(dict.fromkeys([*current, *runnable]))
        if len(file_ids) > 20:
            raise InvalidRequest("A thread's code_interpreter can hold at most 20 files.", param="attachments")
        resources["code_interpreter"] = {"file_ids": file_ids}
    thread["tool_resources"] = resources
    await store.replace(conn, "threads", thread)
    return jobs


def check_tools(run: dict) -> None:
    choice = run["tool_choice"]
    if isinstance(choice, dict) and choice.get("type") == "function":
        if choice["function"]["name"] not in function_names(run["tools"], with_builtin=True):
            raise InvalidRequest(
                f"tool_choice names function '{choice['function']['name']}', which is not among the run's tools.",
                param="tool_choice",
            )


def check_model_allowed(caller: Caller, model: str, settings: Settings) -> None:
    """A 404 `model_not_found` for a model the key may not use, or that the server does not serve (not
    in its model catalogue, unless the key has an endpoint of its own): here, not as a failed run later."""
    if caller.allowed_models is not None and model not in caller.allowed_models:
        raise unknown_model(model)
    if not caller.own_endpoint and not catalog_for(settings).serves(model):
        raise unknown_model(model)


async def create_run(
    svc: Services,
    conn: AsyncConnection,
    thread_id: str,
    body: schemas.RunFields,
    *,
    additional_instructions: str | None = None,
    additional_messages: list[schemas.CreateMessage] | None = None,
    jobs: list[vs.Job],
    assistant: dict | None = None,
    config: dict | None = None,
) -> tuple[dict, list[Event]]:
    """Inside the caller's transaction: validate, lock the thread, insert the run. Returns the run
    and its opening events; the caller announces them (which defers its execution), commits, then
    calls `launch`. `assistant`: the defaults the run starts from (an assistant's fields, or a
    response's own), instead of the assistant `body.assistant_id` names. `config`: execution settings
    of the Responses API with no Assistants field (`truncation`)."""
    found = await store.lock_thread_for_run(conn, thread_id, svc.tenant, None if assistant else body.assistant_id)
    if assistant is None:
        assistant = found["assistant"] if found else await store.get(conn, "assistants", body.assistant_id, svc.tenant)
        if assistant is None:
            raise not_found("assistant", body.assistant_id)
    if found is None:
        raise not_found("thread", thread_id)
    if found["active_run"]:
        raise InvalidRequest(f"Thread {thread_id} already has an active run {found['active_run']}.")
    await add_messages(conn, thread_id, additional_messages, svc, jobs)
    run = objects.run(
        thread_id, assistant, body, svc.settings.run_expires_after, additional_instructions=additional_instructions
    )
    if body.tools is not None:
        run["tools"] = await tool_types.render(conn, svc.tools, svc.tenant, run["tools"])
    check_tools(run)
    check_model_allowed(svc.caller, run["model"], svc.settings)
    # Internal execution settings: who created the run, and whether anyone streams its tokens.
    config = {**(config or {}), "key_id": svc.caller.key_id, "stream": bool(body.stream)}
    if body.action_credentials:
        config["action_credentials"] = await actions.seal_run_credentials(
            conn, svc.settings, svc.tenant, body.action_credentials
        )
    if body.mcp_headers:
        config["mcp_headers"] = await mcp_servers.seal_run_headers(conn, svc.settings, svc.tenant, body.mcp_headers)
    await store.insert_run(conn, run, config, svc.tenant)
    return run, [Event("thread.run.created", run, persist=False), Event("thread.run.queued", run, persist=False)]


async def announce(
    svc: Services, conn: AsyncConnection, run: dict, events: list[Event], *, stream: bool
) -> tuple[Subscription | None, int]:
    """Record a run's opening events in the transaction that creates or resumes it, and defer its
    execution in that same transaction. A stream subscribes first: the NOTIFYs are delivered at
    commit, so it sees every event. Returns the subscription and the number of the event before
    the first of these (where the stream starts)."""
    sub = svc.hub.subscribe(run["id"], svc.caller.key_id) if stream else None
    try:
        last = await svc.sink.emit(events, run_id=run["id"], conn=conn)
        await svc.queue.enqueue_run(run["id"], conn)
    except BaseException:
        if sub:
            sub.close()
        raise
    published = sum(1 for e in events if e.publish)
    return sub, (last or 0) - published


async def launch(svc: Services, jobs: list[vs.Job]) -> None:
    """After commit: files attached on the way go to ingestion (the run waits for them)."""
    await vs.enqueue(svc.queue, svc.pool, jobs)


async def submit_tool_outputs(
    svc: Services,
    thread_id: str,
    run_id: str,
    body: schemas.SubmitToolOutputs,
    *,
    conn: AsyncConnection | None = None,
    subscribe: bool | None = None,
) -> tuple[dict, Subscription | None, int]:
    """Resumes a run waiting in requires_action; with `stream` (or `subscribe`), also returns its
    subscription and the number of the event it starts after. With `conn`, inside that connection's
    transaction (the caller commits)."""
    async with _transaction(svc, conn) as conn:
        run = await store.get(conn, "runs", run_id, svc.tenant, for_update=True)
        if run is None or run["thread_id"] != thread_id:
            raise not_found("run", run_id)
        if run["status"] != RunStatus.REQUIRES_ACTION or not run.get("required_action"):
            raise InvalidRequest(
                f"Runs in status \"{run['status']}\" do not accept tool outputs.", param="tool_outputs"
            )
        expected = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
        given = {o.tool_call_id: o.output for o in body.tool_outputs}
        unknown = [i for i in given if i not in expected]
        if unknown:
            raise InvalidRequest(
                f"Tool call ids {unknown} are not awaiting outputs in {run_id}; expected {expected}.",
                param="tool_outputs",
            )
        missing = [i for i in expected if i not in given]
        if missing:
            raise InvalidRequest(
                f"Expected tool outputs for call_ids {expected}, got {list(given)}.", param="tool_outputs"
            )
        events: list[Event] = []
        for step in await store.open_steps(conn, run_id):
            usage = step.pop("_pending_usage", None)
            if step["type"] != "tool_calls":
                continue
            for call in step["step_details"]["tool_calls"]:
                if call["id"] in given:
                    call["function"]["output"] = given[call["id"]]
            step.update(status="completed", completed_at=now(), usage=usage)
            events.append(Event("thread.run.step.completed", step))
        run.update(status=RunStatus.QUEUED.value, required_action=None)
        events.append(Event("thread.run.queued", run))
        # Kept until the execution that uses them reaches its next pause: an execution lost before
        # that finds them again.
        await store.merge_run_config(conn, run_id, {"resume": given, "stream": bool(body.stream)})
        sub, after = await announce(svc, conn, run, events, stream=bool(body.stream) if subscribe is None else subscribe)
    return run, sub, after


@asynccontextmanager
async def _transaction(svc: Services, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
    if conn is not None:
        yield conn
        return
    async with svc.pool.connection() as own, own.transaction():
        yield own


async def cancel_run(svc: Services, thread_id: str, run_id: str) -> dict:
    async with svc.pool.connection() as conn, conn.transaction():
        run = await store.get(conn, "runs", run_id, svc.tenant, for_update=True)
        if run is None or run["thread_id"] != thread_id:
            raise not_found("run", run_id)
        if run["status"] not in CANCELLABLE:
            raise InvalidRequest(f"Cannot cancel run with status '{run['status']}'.")
        previous = run["status"]
        mapper = await lifecycle.stored_mapper(conn, run)
        events = lifecycle.cancelling(mapper)
        if previous != RunStatus.IN_PROGRESS:
            # No execution holds a queued or waiting run (one that starts later finds it cancelled,
            # and the row lock orders it after this): it is cancelled here, atomically.
            row = await store.run_row(conn, run_id)
            events += lifecycle.close_events(mapper, RunStatus.CANCELLED, row["config"].get("usage"))
        await svc.sink.emit(events, run_id=run_id, conn=conn)
    if previous == RunStatus.IN_PROGRESS:
        # The executor holding the run finishes the cancellation (it knows the partial answer); if
        # it is already gone, the recovery sweep settles the run.
        await svc.queue.abort(run_id)
    return mapper.run
