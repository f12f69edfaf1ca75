"""Creating, continuing, waiting for, cancelling and deleting responses, through the run engine.

`POST /v1/responses` picks the thread (a conversation's; the thread of the previous response, or a
fork of it; or a new hidden thread), writes the input items into it and creates a run with
`runs/control.create_run`, `announce` and `launch`, in one transaction with the response's row. When
the input carries `function_call_output` items for a run waiting in requires_action (the previous
response's, or the conversation's), it submits them to that run instead (`submit_tool_outputs`):
the run goes on as the new response.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from psycopg import AsyncConnection

from api.contract import objects as assistants_objects
from api.contract import schemas
from api.contract.errors import InvalidRequest, NotFound
from api.contract.ids import now
from api.contract.objects import ACTIVE_RUN_STATUSES, TERMINAL_RUN_STATUSES
from api.files import files_store
from api.files import vector_stores as vs
from api.responses import items as item_views
from api.responses import compaction, objects, params, reads, records, writes
from api.responses.ids import container_id, conversation_id, new_response_id, thread_id_of
from api.responses.objects import with_sampling_defaults
from api.runs import control
from api.runs.runtime import Services
from api.runs.streaming import STREAM_END_EVENTS, STREAM_END_STATUSES, Subscription
from api.storage import store
from api.tooling import mcp_servers

# What a response without `assistant_id` starts from: nothing but what the request says.
NO_ASSISTANT = {
    "id": "",
    "model": None,
    "instructions": "",
    "tools": [],
    "tool_resources": {},
    "temperature": None,
    "top_p": None,
    "response_format": "auto",
    "reasoning_effort": None,
}
CANCEL_WAIT_SECONDS = 10.0


@dataclass
class Started:
    row: dict  # the responses row
    sub: Subscription | None  # the run's events, from `after` on (streams and waiting requests)
    jobs: list = field(default_factory=list)


@dataclass
class _Target:
    thread_id: str
    in_conversation: bool
    waiting: dict | None = None  # a run in requires_action the input's function outputs continue


def not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


async def stored_row(conn: AsyncConnection, svc: Services, response_id: str, *, for_update: bool = False) -> dict:
    row = await records.get_response(conn, response_id, svc.tenant, for_update=for_update)
    if row is None or not row["stored"]:
        raise not_found(response_id)
    return row


# --- create -----------------------------------------------------------------------------------------


async def create(svc: Services, body: params.CreateResponse) -> Started:
    item_views.check_include(body.include)  # applied where the response is shown
    if body.background and body.store is False:
        raise InvalidRequest("Background responses must be stored: `background` needs `store` true.", param="background")
    if body.conversation is not None and body.previous_response_id is not None:
        raise InvalidRequest(
            "Give either `previous_response_id` or `conversation`, not both.", param="previous_response_id"
        )
    input_items = item_views.normalize_input(body.input)
    choice, allowed_names = params.run_tool_choice(body.tool_choice)
    response_format = params.response_format(body.text)
    await purge(svc, [], any_of_tenant=True)  # store: false responses a cut-off request left behind
    summaries = compaction.Summaries()
    for tried in range(_SUMMARIES_OUTSIDE + 1):
        try:
            started = await _create(
                svc, body, input_items, choice, allowed_names, response_format,
                summaries if tried < _SUMMARIES_OUTSIDE else None,
            )
        except compaction.SummaryNeeded as need:
            await summaries.make(svc, need)
        else:
            break
    await control.launch(svc, started.jobs)
    return started


# A server-side compaction's summary is made between tries of the create, with no lock held; should
# the window change under it this many times, the next try summarises under the lock.
_SUMMARIES_OUTSIDE = 3


async def _create(
    svc: Services,
    body: params.CreateResponse,
    input_items: list[dict],
    choice,
    allowed_names: set[str] | None,
    response_format,
    summaries: compaction.Summaries | None,
) -> Started:
    async with svc.pool.connection() as conn, conn.transaction():
        request_tools, mcp_headers = None, dict(body.mcp_headers or {})
        if body.tools is not None:
            tools, mcp_headers = await _mcp_servers(conn, svc, body.tools, mcp_headers)
            request_tools = params.run_tools(tools)
        assistant = None
        if body.assistant_id is not None:
            assistant = await store.get(conn, "assistants", body.assistant_id, svc.tenant)
            if assistant is None:
                raise NotFound(f"No assistant found with id '{body.assistant_id}'.", param="assistant_id")
        target = await _target(conn, svc, body, input_items)
        if target.waiting is not None:
            started = await _continue(conn, svc, body, target, input_items)
        else:
            await _check_outputs_answer_calls(conn, target, input_items)
            started = await _start(
                conn, svc, body, target, input_items,
                assistant=assistant, request_tools=request_tools, choice=choice, allowed_names=allowed_names,
                response_format=response_format, mcp_headers=mcp_headers, summaries=summaries,
            )
    return started


# Fields of OpenAI's `mcp` tool this server has no counterpart for.
_MCP_UNSUPPORTED = ("connector_id", "allowed_tools", "defer_loading", "tunnel_id", "allowed_callers")


async def _mcp_servers(
    conn: AsyncConnection, svc: Services, tools: list[dict], headers: dict[str, dict]
) -> tuple[list[dict], dict[str, dict]]:
    """OpenAI's `mcp` tools name a server by `server_label` (and `server_url`): here, the server of that
    name registered at /v1/mcp_servers (or one the operator shares). Each becomes `{"type": "mcp", "id":
    …}`, as on assistants, and its `headers` (and `authorization`) the run's headers for that server.
    `{"type": "mcp", "id": …}` is taken as it is."""
    out = []
    headers = dict(headers)
    shared = {name: server_id for server_id, (name, _) in mcp_servers.shared_servers(svc.settings).items()}
    for i, tool in enumerate(tools):
        if tool.get("type") != "mcp" or "id" in tool:
            out.append(tool)
            continue
        where = f"tools[{i}]"
        label, url = tool.get("server_label"), tool.get("server_url")
        if not isinstance(label, str) or (url is not None and not isinstance(url, str)):
            raise InvalidRequest(
                "An mcp tool names its server: `server_label` (the name it was registered with at "
                "/v1/mcp_servers), or `id`.", param=f"{where}.server_label",
            )
        for name in _MCP_UNSUPPORTED:
            if tool.get(name) is not None:
                raise InvalidRequest(f"The mcp tool's '{name}' is not supported by this server.", param=f"{where}.{name}")
        if tool.get("require_approval") not in (None, "never"):
            raise InvalidRequest(
                "This server runs MCP tools without asking for approval: give `require_approval: \"never\"`.",
                param=f"{where}.require_approval",
            )
        found = [s for s in await records.mcp_servers_named(conn, svc.tenant, label) if url is None or s["url"] == url]
        if found:
            server_id = found[0]["id"]
        elif label in shared and url is None:
            server_id = shared[label]
        else:
            where_at = f" at {url}" if url else ""
            raise NotFound(
                f"No MCP server named '{label}'{where_at}: register it with POST /v1/mcp_servers first.",
                param=f"{where}.server_label",
            )
        given = tool.get("headers")
        if given is not None and not isinstance(given, dict):
            raise InvalidRequest("Invalid 'headers': expected an object.", param=f"{where}.headers")
        if given or tool.get("authorization"):
            extra = dict(given or {})
            if tool.get("authorization"):
                extra["Authorization"] = f"Bearer {tool['authorization']}"
            headers[server_id] = {**headers.get(server_id, {}), **extra}
        out.append({"type": "mcp", "id": server_id})
    return out, headers


async def _check_outputs_answer_calls(conn: AsyncConnection, target: _Target, items: list[dict]) -> None:
    """Outputs that continue no run answer function calls given as input: in this request, or
    earlier in the conversation."""
    calls = {i["call_id"] for i in items if i["type"] == "function_call"}
    for output in (i for i in items if i["type"] == "function_call_output"):
        if output["call_id"] in calls:
            continue
        if not await records.kept_call(conn, target.thread_id, output["call_id"]):
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {output['call_id']}.", param="input"
            )


async def _target(conn: AsyncConnection, svc: Services, body: params.CreateResponse, items: list[dict]) -> _Target:
    """The thread the response continues or starts, and the run its function outputs continue."""
    outputs = {i["call_id"] for i in items if i["type"] == "function_call_output"}
    if body.previous_response_id is not None:
        previous = await records.get_response(conn, body.previous_response_id, svc.tenant, for_update=True)
        if previous is None or not previous["stored"]:
            raise NotFound(
                f"Previous response with id '{body.previous_response_id}' not found.", param="previous_response_id"
            )
        run = (await store.run_row(conn, previous["run_id"]))["obj"]
        latest = await records.latest_of_run(conn, run["id"])
        calls = await _called_functions(conn, previous, run)
        if run["status"] == "requires_action" and latest["id"] == previous["id"] and calls:
            await control.lock_thread(conn, previous["thread_id"], svc.tenant)
            return _Target(previous["thread_id"], previous["in_conversation"], waiting=run)
        if outputs & calls:
            raise InvalidRequest(
                f"Response '{previous['id']}' no longer takes function outputs: its run is {run['status']}.",
                param="input",
            )
        if run["status"] in ACTIVE_RUN_STATUSES:
            raise InvalidRequest(
                f"Previous response with id '{previous['id']}' is still in progress.", param="previous_response_id"
            )
        latest_of_thread = await records.latest_of_thread(conn, previous["thread_id"])
        if body.store is not False and not previous["in_conversation"] and latest_of_thread == previous["id"]:
            await control.lock_thread(conn, previous["thread_id"], svc.tenant)
            return _Target(previous["thread_id"], False)
        # A branch (the chain went on after it), a conversation's response, or a response that is
        # not stored: the new response gets a thread of its own with the history up to `previous`.
        return _Target(await writes.fork(conn, svc, previous), False)
    if body.conversation is not None:
        ref = body.conversation if isinstance(body.conversation, str) else body.conversation.id
        thread_id = thread_id_of(ref, "conversation")
        if await store.get(conn, "threads", thread_id, svc.tenant, for_update=True) is None:
            raise NotFound(f"Conversation with id '{ref}' not found.", param="conversation")
        active = await store.active_run_id(conn, thread_id)
        if active is not None:
            run = await store.get(conn, "runs", active, svc.tenant)
            if run["status"] == "requires_action" and outputs:
                return _Target(thread_id, True, waiting=run)
            if run["status"] == "requires_action":
                waiting_for = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
                raise InvalidRequest(f"No tool output found for function call {waiting_for[0]}.", param="input")
            raise InvalidRequest(
                f"Conversation '{conversation_id(thread_id)}' has a response in progress; wait for it to finish.",
                param="conversation",
            )
        return _Target(thread_id, True)
    thread = assistants_objects.thread(None)
    await store.insert_thread(conn, thread, svc.tenant)
    return _Target(thread["id"], False)


async def _called_functions(conn: AsyncConnection, previous: dict, run: dict) -> set[str]:
    """Ids of the client's function calls that ended `previous`."""
    steps = await records.steps_after(conn, run["id"], previous["steps_after"])
    kinds = item_views.tool_kinds(run["tools"])
    for step in steps:
        calls = item_views.client_calls(step, kinds)
        if calls:
            return {c["id"] for c in calls}
    return set()


async def _continue(
    conn: AsyncConnection, svc: Services, body: params.CreateResponse, target: _Target, items: list[dict]
) -> Started:
    """Function outputs for a waiting run: submitted, and the run goes on as this response. The run
    keeps its own model, instructions and tools."""
    run = target.waiting
    expected = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
    if not any(i["type"] == "function_call_output" for i in items):
        raise InvalidRequest(f"No tool output found for function call {expected[0]}.", param="input")
    for i, item in enumerate(items):
        if item["type"] != "function_call_output":
            raise InvalidRequest(
                "Continuing a response that called functions takes only their function_call_output items.",
                param=f"input[{i}]",
            )
        if item["call_id"] not in expected:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item['call_id']}.", param=f"input[{i}]"
            )
    given = {i["call_id"] for i in items}
    missing = [c for c in expected if c not in given]
    if missing:
        raise InvalidRequest(f"No tool output found for function call {missing[0]}.", param="input")
    stream = bool(body.stream)
    outputs = [schemas.ToolOutput(tool_call_id=i["call_id"], output=item_views.output_text(i["output"])) for i in items]
    steps_after = await records.last_step_seq(conn, run["id"])
    run, sub, after = await control.submit_tool_outputs(
        svc, run["thread_id"], run["id"],
        schemas.SubmitToolOutputs(tool_outputs=outputs, stream=stream or bool(body.background)),
        conn=conn, subscribe=stream or not body.background,
    )
    written = [
        {"type": "function_call_output", "id": item_views.call_item_id("function_call_output", i["call_id"]),
         "call_id": i["call_id"], "output": i["output"], "status": "completed"}
        for i in items
    ]
    row = _row(svc, body, run, target, steps_after=steps_after, first_event=after, written=written,
               text=None, container=None, choice=None)
    await records.insert_response(conn, row)
    return Started(row, sub)


async def _start(
    conn: AsyncConnection,
    svc: Services,
    body: params.CreateResponse,
    target: _Target,
    items: list[dict],
    *,
    assistant: dict | None,
    request_tools: params.RunTools | None,
    choice,
    allowed_names: set[str] | None,
    response_format,
    mcp_headers: dict[str, dict],
    summaries: compaction.Summaries | None,
) -> Started:
    """A new run in the target thread, after the input items."""
    defaults = dict(assistant or NO_ASSISTANT)
    resources = dict(defaults.get("tool_resources") or {})
    tools = request_tools.tools if request_tools is not None else None
    container = None
    if request_tools is not None:
        if request_tools.vector_store_ids:
            for vector_store_id in request_tools.vector_store_ids:
                try:
                    await vs.get_store(conn, vector_store_id, svc.tenant)
                except NotFound as exc:
                    position = next(i for i, t in enumerate(body.tools or []) if t.get("type") == "file_search"
                                    and vector_store_id in (t.get("vector_store_ids") or []))
                    raise NotFound(exc.message, param=f"tools[{position}].vector_store_ids") from None
            resources["file_search"] = {"vector_store_ids": request_tools.vector_store_ids}
        if request_tools.code_file_ids:
            for file_id in request_tools.code_file_ids:
                if await files_store.get(conn, file_id, svc.tenant) is None:
                    raise NotFound(f"No such File object: {file_id}", param="tools")
            resources["code_interpreter"] = {"file_ids": request_tools.code_file_ids}
        if request_tools.container is not None:
            if request_tools.container != container_id(target.thread_id):
                raise NotFound(
                    f"No container found with id '{request_tools.container}': code_interpreter runs in the "
                    "conversation's own container; use {\"type\": \"auto\"}.",
                    param="tools",
                )
            container = request_tools.container
    if any(p["type"] == "input_file" for i in items if i["type"] == "message" for p in i["content"]):
        # Files given as input are searched: the run needs file_search even if the request has none.
        current = tools if tools is not None else params.validated_tools(defaults["tools"])
        if not any(t.type == "file_search" for t in current):
            tools = [*current, schemas.FileSearchTool(type="file_search")]
    if allowed_names is not None:
        current = tools if tools is not None else params.validated_tools(defaults["tools"])
        tools = params.allowed(current, allowed_names)
    defaults["tool_resources"] = resources
    model = body.model or defaults.get("model")
    if not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    jobs: list = []
    instructions = body.instructions if body.instructions is not None else defaults.get("instructions")
    limit = compaction.threshold(body, svc.settings.model_context_window)
    compacted = None
    if limit is not None:
        compacted = await compaction.compact_if_over(
            conn, svc, target.thread_id, items, model, instructions, limit, summaries
        )
    if compacted is None:
        written = await writes.write_items(conn, svc, target.thread_id, items, jobs)
    else:
        # The items before the compaction, the compaction (the history starts there), the rest.
        written = await writes.write_items(conn, svc, target.thread_id, items[: compacted.split], jobs)
        await records.insert_item(conn, target.thread_id, svc.tenant, compacted.kept)
        written += await writes.write_items(
            conn, svc, target.thread_id, items[compacted.split :], jobs, start=compacted.split
        )
    stream = bool(body.stream)
    fields = _run_fields(body, defaults["id"], model, tools, choice, response_format, mcp_headers)
    run, events = await control.create_run(
        svc, conn, target.thread_id, fields, jobs=jobs, assistant=defaults,
        config={
            "truncation": body.truncation or "disabled",
            "external_web_access": request_tools is None or request_tools.external_web_access,
        },
    )
    sub, after = await control.announce(svc, conn, run, events, stream=stream or not body.background)
    row = _row(svc, body, run, target, steps_after=0, first_event=after, written=written,
               text=body.text, container=container, choice=body.tool_choice,
               external_web_access=request_tools is None or request_tools.external_web_access)
    if compacted is not None:
        row["leading"] = [compacted.item]
    await records.insert_response(conn, row)
    return Started(row, sub, jobs)


def _run_fields(
    body: params.CreateResponse, assistant_id: str, model: str, tools, choice, response_format, mcp_headers: dict
) -> schemas.RunFields:
    return schemas.RunFields.model_construct(
        assistant_id=assistant_id,
        model=model,
        instructions=body.instructions,
        tools=tools,
        temperature=body.temperature,
        top_p=body.top_p,
        # Deltas are kept for streams, and for background responses a client may stream later.
        stream=bool(body.stream) or bool(body.background),
        max_prompt_tokens=None,
        max_completion_tokens=body.max_output_tokens,
        truncation_strategy=None,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=response_format,
        reasoning_effort=body.reasoning.effort if body.reasoning is not None else None,
        metadata=body.metadata,
        action_credentials=body.action_credentials,
        mcp_headers=mcp_headers or None,
    )


def _row(
    svc: Services,
    body: params.CreateResponse,
    run: dict,
    target: _Target,
    *,
    steps_after: int,
    first_event: int,
    written: list[dict],
    text: params.TextConfig | None,
    container: str | None,
    choice,
    external_web_access: bool = True,
) -> dict:
    """The response's row: where in the run it starts, its input, and what it shows of the request."""
    response_id = new_response_id()
    effort = run.get("reasoning_effort")
    skeleton = {
        "id": response_id,
        "object": "response",
        "created_at": now(),
        "model": run["model"],
        "instructions": run.get("instructions") or None,
        "tools": params.display_tools(run["tools"], run.get("tool_resources") or {}, container, external_web_access),
        "tool_choice": params.display_tool_choice(choice) if choice is not None else params.run_tool_choice_shown(
            run.get("tool_choice")
        ),
        "parallel_tool_calls": run["parallel_tool_calls"],
        "temperature": run.get("temperature"),
        "top_p": run.get("top_p"),
        "max_output_tokens": run.get("max_completion_tokens"),
        "max_tool_calls": None,
        "previous_response_id": body.previous_response_id,
        "conversation": {"id": conversation_id(target.thread_id)} if target.in_conversation else None,
        "text": params.text_config(text, run.get("response_format")),
        "truncation": body.truncation or "disabled",
        "metadata": body.metadata or {},
        "background": bool(body.background),
        "store": body.store is not False,
        "reasoning": {"effort": effort, "summary": None} if effort else None,
        "service_tier": body.service_tier or "default",
        "top_logprobs": body.top_logprobs,
        "presence_penalty": None,
        "frequency_penalty": None,
        "user": body.user,
        "safety_identifier": body.safety_identifier,
        "prompt_cache_key": body.prompt_cache_key,
        "prompt_cache_retention": body.prompt_cache_retention,
    }
    if run.get("assistant_id"):
        skeleton["assistant_id"] = run["assistant_id"]  # extension: the assistant whose defaults it used
    return {
        "id": response_id,
        "tenant_id": svc.tenant,
        "thread_id": target.thread_id,
        "run_id": run["id"],
        "stored": body.store is not False,
        "in_conversation": target.in_conversation,
        "steps_after": steps_after,
        "first_event": first_event,
        "input": written,
        "obj": with_sampling_defaults(skeleton),
    }


# --- waiting, reading --------------------------------------------------------------------------------


async def wait_until_settled(svc: Services, started: Started, timeout: float | None = None) -> None:
    """Until the run ends or waits for the client (a non-streaming, non-background request)."""
    sub = started.sub
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    try:
        while True:
            async with svc.pool.connection() as conn:
                row = await store.run_row(conn, started.row["run_id"])
            if row is None or row["status"] in STREAM_END_STATUSES:
                return
            left = 5.0 if deadline is None else min(5.0, deadline - asyncio.get_running_loop().time())
            if left <= 0:
                return
            await sub.wait_for(STREAM_END_EVENTS, left)
    finally:
        sub.close()


async def retrieve(svc: Services, response_id: str, include: set[str]) -> dict:
    async with svc.pool.connection() as conn:
        row = await stored_row(conn, svc, response_id)
        return await reads.response(conn, row, include)


async def current(svc: Services, row: dict, include: set[str]) -> dict:
    async with svc.pool.connection() as conn:
        return await reads.response(conn, row, include)


async def input_items(svc: Services, response_id: str, *, limit: int, order: str, after: str | None,
                      before: str | None, include: set[str]) -> dict:
    async with svc.pool.connection() as conn:
        row = await stored_row(conn, svc, response_id)
    shown = [item_views.shown_kept_item(i, include) for i in row["input"]]
    return reads.page(shown, limit=limit, order=order, after=after, before=before)


# --- cancel, delete, purge --------------------------------------------------------------------------


async def cancel(svc: Services, response_id: str) -> dict:
    async with svc.pool.connection() as conn:
        row = await stored_row(conn, svc, response_id)
        shown = await reads.response(conn, row, set())
    if not row["obj"].get("background"):
        raise InvalidRequest("Only responses created with `background: true` can be cancelled.", param="response_id")
    if shown["status"] == "cancelled":
        return shown
    if shown["status"] not in ("queued", "in_progress"):
        raise InvalidRequest(f"Cannot cancel a {shown['status']} response.", param="response_id")
    sub = svc.hub.subscribe(row["run_id"], svc.caller.key_id)
    try:
        try:
            await control.cancel_run(svc, row["thread_id"], row["run_id"])
        except InvalidRequest:
            pass  # the run moved on meanwhile: the response shows how it ended
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            async with svc.pool.connection() as conn:
                run = await store.run_row(conn, row["run_id"])
            if run is None or run["status"] in TERMINAL_RUN_STATUSES:
                break
            await sub.wait_for({f"thread.run.{s}" for s in TERMINAL_RUN_STATUSES}, min(left, 1.0))
    finally:
        sub.close()
    return await current(svc, row, set())


async def delete(svc: Services, response_id: str) -> dict:
    async with svc.pool.connection() as conn:
        row = await stored_row(conn, svc, response_id)
        shown = await reads.response(conn, row, set())
    if shown["status"] in ("queued", "in_progress"):
        try:
            await control.cancel_run(svc, row["thread_id"], row["run_id"])
        except InvalidRequest:
            pass  # it ended meanwhile
    async with svc.pool.connection() as conn, conn.transaction():
        await records.delete_response(conn, response_id, svc.tenant)
        if not row["in_conversation"] and not await records.responses_of_thread(conn, row["thread_id"]):
            await records.delete_thread(conn, row["thread_id"], svc.tenant)
    return {"id": response_id, "object": "response", "deleted": True}


async def purge(svc: Services, ids: list[str], *, any_of_tenant: bool = False) -> None:
    """Delete `store: false` responses whose run has settled (the given ones, or any of the tenant's),
    with their thread when it was theirs alone."""
    async with svc.pool.connection() as conn, conn.transaction():
        for row in await records.settled_unstored(conn, svc.tenant, ids, any_of_tenant=any_of_tenant):
            await records.delete_response(conn, row["id"], svc.tenant)
            if not row["in_conversation"] and not await records.thread_has_stored(conn, row["thread_id"]):
                await records.delete_thread(conn, row["thread_id"], svc.tenant)


# --- warm-ups (WebSocket mode) ------------------------------------------------------------------------


def warm_up(svc: Services, body: params.CreateResponse) -> dict:
    """The response of a `generate: false` request: checked and shown as a response with these
    settings would be, completed with no output, without a run (no model call, nothing written).
    The connection that asked keeps it so that its next response can continue from it."""
    if body.conversation is not None:
        raise InvalidRequest("A warm-up (`generate: false`) cannot take a `conversation`.", param="conversation")
    item_views.normalize_input(body.input)
    choice, allowed_names = params.run_tool_choice(body.tool_choice)
    request_tools = params.run_tools(body.tools) if body.tools is not None else None
    tools = request_tools.tools if request_tools is not None else None
    if allowed_names is not None and tools is not None:
        tools = params.allowed(tools, allowed_names)
    if not body.model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    fields = _run_fields(body, "", body.model, tools, choice, params.response_format(body.text), {})
    run = assistants_objects.run("", NO_ASSISTANT, fields, svc.settings.run_expires_after)
    row = _row(svc, body, run, _Target("", False), steps_after=0, first_event=0, written=[],
               text=body.text, container=None, choice=body.tool_choice)
    ended = {**run, "status": "completed", "completed_at": row["obj"]["created_at"],
             "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
    return objects.response(row["obj"], ended, [], {}, whole_run=True, include=set(), filenames={}, container="")
