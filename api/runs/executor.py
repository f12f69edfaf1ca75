"""Executes queued runs: drives the checkpointed graph and turns its stream into Assistants events.

Everything it needs is read from Postgres (the run, its checkpoint, its resume values), so it can
run in `assistgraph serve` or in any number of separate `assistgraph worker` processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import Any

import openai
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command
from psycopg_pool import AsyncConnectionPool

from api.contract.ids import now
from api.contract.objects import ACTIVE_RUN_STATUSES
from api.files import retrieval
from api.observability.callbacks import run_callbacks
from api.runs import history
from api.runs.events import EventPump, EventSink, RunPreempted, prune_payloads
from api.runs.mapper import RunEventMapper
from api.security.auth import model_credentials
from api.settings import Settings
from api.storage import store
from api.storage.queue import ADVANCE_RUN, EXPIRE_RUNS, PRUNE_EVENTS, QUEUE, RunQueue
from api.tooling import actions, tool_types
from graph.context import Context
from graph.graph import builder
from graph.state import add_usage
from tools.file_search import FileSearchTool
from tools.functions import function_names, function_tool_specs
from tools.registry import ToolRegistry

log = logging.getLogger(__name__)

CHECKPOINTER_SETUP_LOCK = 0x61677370  # "agsp": any constant other processes of this database agree on



def context_for(run: dict, settings: Settings, server_tools: list | None = None) -> Context:
    tools = function_tool_specs(run["tools"])
    server_tools = server_tools or []
    truncation = run.get("truncation_strategy") or {}
    response_format = run.get("response_format")
    return Context(
        model=run["model"],
        instructions=run.get("instructions") or "",
        tools=tools,
        server_tools=server_tools,
        tool_choice=run.get("tool_choice") if tools or server_tools else None,
        tool_timeout=settings.tool_timeout,
        parallel_tool_calls=run.get("parallel_tool_calls", True),
        temperature=run.get("temperature"),
        top_p=run.get("top_p"),
        response_format=None if response_format in (None, "auto") else response_format,
        reasoning_effort=run.get("reasoning_effort"),
        last_messages=truncation.get("last_messages") if truncation.get("type") == "last_messages" else None,
        max_prompt_tokens=run.get("max_prompt_tokens"),
        max_completion_tokens=run.get("max_completion_tokens"),
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout=settings.model_timeout,
        max_retries=settings.model_max_retries,
    )


def _provider_message(exc: openai.APIError) -> str:
    """The provider's own error message, without the SDK's "Error code: N - " prefix."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    return exc.message


def _connection_cause(exc: BaseException) -> tuple[bool, str]:
    """(whether the connection was never established, the innermost cause's text)."""
    never_connected, detail = False, ""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if not isinstance(cause, openai.OpenAIError):  # skip the SDK's (and langchain's) wrappers
            if type(cause).__name__ in ("ConnectError", "ConnectTimeout") or isinstance(cause, ConnectionRefusedError):
                never_connected = True
            detail = str(cause) or type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return never_connected, detail


class KeyRevoked(Exception):
    pass


class ToolUnavailable(Exception):
    """A tool the run enables is not installed in the process executing it."""


def describe_model_error(exc: BaseException, settings: Settings) -> tuple[str, str]:
    """(last_error.code, message) a person can act on."""
    if isinstance(exc, (KeyRevoked, ToolUnavailable)):
        return "server_error", str(exc)
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit_exceeded", f"The model provider rate-limited the request: {_provider_message(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return "server_error", "The model provider did not answer in time."
    if isinstance(exc, openai.APIConnectionError):
        where = settings.openai_base_url or "the default OpenAI endpoint"
        never_connected, detail = _connection_cause(exc)
        if never_connected or not detail:
            return "server_error", f"Could not reach the model provider at {where}: {detail or exc.message}"
        # Connected, then the response broke off (a dropped stream, a reset connection).
        return "server_error", f"The connection to the model provider at {where} broke off: {detail}"
    if isinstance(exc, openai.APIStatusError):
        return "server_error", f"The model provider returned HTTP {exc.status_code}: {_provider_message(exc)}"
    return "server_error", f"The run failed: {type(exc).__name__}: {exc}"


@dataclasses.dataclass
class RunTotals:
    """Token usage and early-stop reason, summed from the graph's updates as the state's reducers do
    (reading them back from the checkpoint would cost a query and a deserialisation per run)."""

    usage: dict | None = None
    incomplete: str | None = None

    def observe(self, updates: dict) -> None:
        for update in updates.values():
            if not isinstance(update, dict):
                continue  # an interrupt
            if update.get("usage"):
                self.usage = add_usage(self.usage, update["usage"])
            if update.get("incomplete"):
                self.incomplete = update["incomplete"]


class RunExecutor:
    def __init__(self, pool: AsyncConnectionPool, queue: RunQueue, settings: Settings, tools: ToolRegistry):
        self.pool = pool
        self.tools = tools
        self.queue = queue
        self.settings = settings
        self.sink = EventSink(pool)
        self.graph = builder.compile(checkpointer=AsyncPostgresSaver(pool), name="assistant")
        app = queue.app
        app.task(name=ADVANCE_RUN, queue=QUEUE, pass_context=False)(self.advance)
        # Every second (procrastinate's cron takes seconds as a 6th field); one worker wins each tick.
        app.periodic(cron="* * * * * *", periodic_id="expiry")(
            app.task(name=EXPIRE_RUNS, queue=QUEUE, pass_context=False)(self.expire_overdue)
        )
        app.periodic(cron="*/10 * * * *", periodic_id="prune")(
            app.task(name=PRUNE_EVENTS, queue=QUEUE, pass_context=False)(self.prune)
        )

    async def run_worker(self) -> None:
        await self.queue.app.run_worker_async(
            queues=[QUEUE],
            concurrency=self.settings.executor_concurrency,
            fetch_job_polling_interval=self.settings.executor_poll_interval,
            abort_job_polling_interval=self.settings.executor_poll_interval,
            delete_jobs="successful",
            install_signal_handlers=False,
            name="assistgraph-executor",
        )

    # --- tasks --------------------------------------------------------------------------------

    async def advance(self, run_id: str, timestamp: int | None = None) -> None:
        async with self.pool.connection() as conn:
            row = await store.run_row(conn, run_id)
            if row is None:
                return
            if row["status"] == "cancelling":
                mapper = RunEventMapper(
                    row["obj"],
                    open_steps=await store.open_steps(conn, run_id),
                    open_messages=await store.open_messages(conn, run_id),
                )
        if row["status"] == "cancelling":
            await self._emit_quietly(mapper.cancel(row["config"].get("usage")), run_id)
            return
        if row["status"] != "queued":
            return
        # A queued run has nothing open: tool steps are completed when their outputs arrive.
        run, config = row["obj"], row["config"]
        mapper = RunEventMapper(run)
        graph_config = {"configurable": {"thread_id": run_id}}
        graph_config["callbacks"] = run_callbacks(run_id, row["tenant_id"])  # observability: metrics, traces
        pump: EventPump | None = None
        # Usage of earlier executions (before a requires_action pause) is kept in the run's config.
        seen = RunTotals(config.get("usage"))
        try:
            await self.sink.emit(mapper.start(), run_id=run_id)
            if "resume" in config:
                graph_input: Any = Command(resume=config["resume"])
            else:
                async with self.pool.connection() as conn:
                    messages = await store.thread_history(conn, run["thread_id"])
                graph_input = {"history": history.render(messages)}
            server_tools, kinds = await self._server_tools(run, row["tenant_id"], config)
            mapper.use_server_tools(kinds)
            context = context_for(run, self.settings, server_tools)
            # Deltas only matter to a stream; a polled run skips publishing them.
            publish_deltas = config.get("stream", True)
            if config.get("key_id"):
                context = await self._with_key_credentials(context, config["key_id"])
            pump = EventPump(self.sink, run_id)
            # A run's checkpoint is written when it pauses (requires_action) or ends; a run whose
            # tools execute on the server is also checkpointed after each step (in the background),
            # so its state is on record while a slow tool works. A crashed run is not resumed
            # mid-step but expires.
            async for mode, payload in self.graph.astream(
                graph_input,
                graph_config,
                context=context,
                stream_mode=["messages", "updates"],
                durability="async" if server_tools else "exit",
            ):
                if mode == "updates":
                    seen.observe(payload)
                events = mapper.handle(mode, payload)
                if not publish_deltas:
                    events = [e for e in events if not e.event.endswith(".delta")]
                if events:
                    pump.put(events)
            await pump.flush()
            if mapper.run["status"] == "requires_action":
                # The next execution (or a cancel or expiry while waiting) starts from this usage.
                if seen.usage:
                    async with self.pool.connection() as conn:
                        await store.merge_run_config(conn, run_id, {"usage": seen.usage})
                return
            await self.sink.emit(mapper.finish(seen.usage, seen.incomplete), run_id=run_id)
        except RunPreempted:
            await self._after_preemption(run_id, mapper, pump, seen.usage)
        except asyncio.CancelledError:
            # Procrastinate cancels the task when the run is cancelled or expires.
            await asyncio.shield(self._after_preemption(run_id, mapper, pump, seen.usage))
            raise
        except Exception as exc:  # the model, the network, a bad tool schema: the run fails, never hangs
            log.warning("run %s failed: %s", run_id, exc)
            code, message = describe_model_error(exc, self.settings)
            await self._settle(pump)
            await self._emit_quietly(mapper.fail(code, message, seen.usage), run_id)
        finally:
            if pump is not None:
                await pump.close()

    async def expire_overdue(self, timestamp: int | None = None) -> None:
        async with self.pool.connection() as conn:
            overdue = await store.overdue_runs(conn, now())
        await asyncio.gather(*(self.expire(run_id) for run_id in overdue))

    async def expire(self, run_id: str) -> None:
        async with self.pool.connection() as conn:
            row = await store.run_row(conn, run_id)
        if row is None or row["status"] not in ACTIVE_RUN_STATUSES:
            return
        if row["status"] != "requires_action" and await self.queue.abort(run_id) == "doing":
            # The executor holding the run expires it itself, keeping the partial answer it
            # streamed; wait for it, and fall through only if that process is gone.
            if await self._wait_until_settled(run_id, timeout=5.0):
                return
        async with self.pool.connection() as conn:
            mapper = RunEventMapper(
                row["obj"],
                open_steps=await store.open_steps(conn, run_id),
                open_messages=await store.open_messages(conn, run_id),
            )
        await self._emit_quietly(mapper.expire(row["config"].get("usage")), run_id)

    async def _wait_until_settled(self, run_id: str, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            async with self.pool.connection() as conn:
                row = await store.run_row(conn, run_id)
            if row is None or row["status"] not in ACTIVE_RUN_STATUSES:
                return True
            await asyncio.sleep(0.05)
        return False

    async def prune(self, timestamp: int | None = None) -> None:
        async with self.pool.connection() as conn:
            await prune_payloads(conn)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    async def _settle(pump: EventPump | None) -> None:
        """Let already-produced events reach the database first, so closing events follow them."""
        if pump is not None:
            try:
                await pump.flush()
            except Exception:
                pass

    async def _after_preemption(
        self, run_id: str, mapper: RunEventMapper, pump: EventPump | None, usage: dict | None
    ) -> None:
        """Someone else moved the run on (cancel) or its time ran out (expiry): close it from here,
        where the partial answer is known."""
        await self._settle(pump)
        async with self.pool.connection() as conn:
            row = await store.run_row(conn, run_id)
        if row is None:
            return
        if row["status"] == "cancelling":
            await self._emit_quietly(mapper.cancel(usage), run_id)
        elif row["status"] in ACTIVE_RUN_STATUSES and now() >= (row["obj"].get("expires_at") or now() + 1):
            await self._emit_quietly(mapper.expire(usage), run_id)

    async def _server_tools(self, run: dict, tenant: str, config: dict) -> tuple[list, dict[str, str]]:
        """The tools this run executes on the server, and the tool-call type clients see for each:
        installed tools and action operations show as `function` calls, file_search as itself."""
        tools: list = []
        names, action_ids = tool_types.enabled(run["tools"])
        for name in names:
            installed = self.tools.get(name)
            if installed is None:
                # Running without it would answer as if the tool had found nothing; say what to fix.
                raise ToolUnavailable(
                    f"The tool '{name}' is not installed on the server that executed this run "
                    "(every process executing runs needs the same tool plugins)."
                )
            tools.append(installed.tool)
        if action_ids:
            # Installed tools' names are unique and never `file_search` (the registry sees to it);
            # action operations get a suffix where they would clash with any other tool.
            taken = {tool.name for tool in tools} | function_names(run["tools"]) | {"file_search"}
            async with self.pool.connection() as conn:
                tools += await actions.tools_for_run(
                    conn, tenant, action_ids, self.settings, self._run_credentials(config), taken_names=taken
                )
        kinds = {tool.name: "function" for tool in tools}
        file_search = await self._file_search(run)
        if file_search is not None:
            tools.append(file_search)
            kinds[file_search.name] = "file_search"
        return tools, kinds

    def _run_credentials(self, config: dict) -> dict[str, dict] | None:
        """Credentials the client supplied with the run for its actions (sealed in the run's config)."""
        sealed = config.get("action_credentials")
        return actions.unseal(self.settings, sealed.encode()) if sealed else None

    async def _file_search(self, run: dict) -> FileSearchTool | None:
        spec = next((t for t in run["tools"] if t["type"] == "file_search"), None)
        if spec is None:
            return None
        async with self.pool.connection() as conn:
            thread_stores = await store.thread_vector_store_ids(conn, run["thread_id"])
        own_stores = ((run.get("tool_resources") or {}).get("file_search") or {}).get("vector_store_ids") or []
        store_ids = list(dict.fromkeys([*own_stores, *thread_stores]))
        if not store_ids:
            return None
        # As on OpenAI: the run waits (up to 60 s) for files still being processed in the thread's store.
        await self._wait_for_files(thread_stores, timeout=60.0)
        settings = spec.get("file_search") or {}
        ranking = settings.get("ranking_options") or {}
        return FileSearchTool(
            search=functools.partial(retrieval.search, self.pool, store_ids),
            max_num_results=settings.get("max_num_results") or 20,
            score_threshold=ranking.get("score_threshold", 0.0),
            ranker=ranking.get("ranker", "auto"),
        )

    async def _wait_for_files(self, vector_store_ids: list[str], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while vector_store_ids and asyncio.get_running_loop().time() < deadline:
            async with self.pool.connection() as conn:
                if not await store.files_in_progress(conn, vector_store_ids):
                    return
            await asyncio.sleep(0.5)

    async def _with_key_credentials(self, context: Context, key_id: str) -> Context:
        """Runs created with a key that carries its own model endpoint/key call the model with those."""
        secret = self.settings.secret_key.get_secret_value() if self.settings.secret_key else None
        async with self.pool.connection() as conn:
            creds, revoked = await model_credentials(conn, key_id, secret)
        if revoked:
            raise KeyRevoked("The API key that created this run was revoked.")
        return dataclasses.replace(context, **creds)

    async def _emit_quietly(self, events, run_id: str) -> bool:
        try:
            await self.sink.emit(events, run_id=run_id)
            return True
        except RunPreempted:
            return False


async def setup_checkpointer(pool: AsyncConnectionPool) -> None:
    # Processes starting together (serve --workers N) would race on the saver's CREATE TABLEs. Its
    # migrations include CREATE INDEX CONCURRENTLY, which cannot run in a transaction and waits for
    # every open transaction, including one blocked on a lock: so the others wait between attempts
    # to take a session lock, never inside a statement.
    async with pool.connection() as conn:
        while not (await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (CHECKPOINTER_SETUP_LOCK,))).fetchone())["ok"]:
            await asyncio.sleep(0.1)
        try:
            await AsyncPostgresSaver(conn).setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (CHECKPOINTER_SETUP_LOCK,))

