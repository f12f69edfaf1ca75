"""What one execution of a run is bound to: the graph's per-run `Context` (model, instructions,
budgets, limits), the tools it executes on the server (installed tools, action operations with
their credentials, file_search over its vector stores) and the model endpoint of the key that
created it."""

from __future__ import annotations

import asyncio
import dataclasses
import functools

from psycopg_pool import AsyncConnectionPool

from api.files import retrieval
from api.runs.failures import KeyRevoked, ModelUnavailable, ToolUnavailable
from api.security.auth import model_credentials
from api.security.models import Credentials, catalog_for
from api.settings import Settings
from api.storage import store
from api.tooling import actions, mcp_servers, tool_types
from api.tooling.code_sessions import CodeSessions
from graph.context import Context
from tools.file_search import FileSearchTool
from tools.functions import function_names, function_tool_specs
from tools.registry import ToolRegistry

# As on OpenAI: a run waits this long for files still being processed in the thread's store.
FILES_WAIT_SECONDS = 60.0
# Time a code_interpreter call may take beyond the sandbox's own limits: interrupting a kernel that
# ran out of time, placing input files and storing what the code wrote.
CODE_SLACK_SECONDS = 30.0


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
        tool_call_repeats=settings.tool_call_repeats,
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
        chunk_timeout=settings.model_chunk_timeout or None,
        first_token_timeout=settings.model_first_token_timeout or None,
        empty_answer_retry=settings.empty_answer_retry,
        max_model_calls=settings.max_model_calls,
        max_retries=settings.model_max_retries,
    )


class RunBinder:
    def __init__(
        self, pool: AsyncConnectionPool, settings: Settings, tools: ToolRegistry, code: CodeSessions | None = None
    ):
        self.pool = pool
        self.settings = settings
        self.tools = tools
        self.code = code

    async def context(self, run: dict, tenant: str, config: dict) -> tuple[Context, dict[str, str]]:
        """The run's context, and the tool-call type clients see for each server-side tool."""
        server_tools, kinds = await self._server_tools(run, tenant, config)
        context = context_for(run, self.settings, server_tools)
        truncation = (run.get("truncation_strategy") or {}).get("type", "auto")
        if truncation == "auto" and config.get("truncation", "auto") == "auto":
            # Fit the model's context; a response asked for `truncation: "disabled"` keeps all of it.
            context = dataclasses.replace(context, context_window=self.settings.model_context_window)
        if "code_interpreter" in kinds:
            # The sandbox enforces its own limits (kernel start, execution, interrupt); the call as a
            # whole also reads the files back.
            s = self.settings
            limit = s.code_interpreter.startup_timeout + s.code_interpreter.execution_timeout + CODE_SLACK_SECONDS
            context = dataclasses.replace(context, tool_timeouts={"code_interpreter": max(limit, s.tool_timeout)})
        return await self._routed(context, config.get("key_id")), kinds

    async def _server_tools(self, run: dict, tenant: str, config: dict) -> tuple[list, dict[str, str]]:
        """Installed tools and action operations show as `function` calls, file_search and
        code_interpreter as themselves."""
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
            tool = installed.tool
            if name == "web_search" and config.get("external_web_access") is False:
                tool = tool.model_copy(update={"external_web_access": False})
            tools.append(tool)
        if action_ids:
            # Installed tools' names are unique and never `file_search` (the registry sees to it);
            # action operations get a suffix where they would clash with any other tool.
            taken = {tool.name for tool in tools} | function_names(run["tools"]) | {"file_search", "code_interpreter"}
            tools += await actions.tools_for_run(self.pool, self.settings, tenant, action_ids, config, taken_names=taken)
        if mcp_ids := tool_types.enabled_mcp(run["tools"]):
            taken = {tool.name for tool in tools} | function_names(run["tools"]) | {"file_search", "code_interpreter"}
            try:
                tools += await mcp_servers.tools_for_run(self.pool, self.settings, tenant, mcp_ids, config, taken_names=taken)
            except mcp_servers.SharedServerUnavailable as exc:
                raise ToolUnavailable(str(exc)) from None
        kinds = {tool.name: "function" for tool in tools}
        file_search = await self._file_search(run)
        if file_search is not None:
            tools.append(file_search)
            kinds[file_search.name] = "file_search"
        if self.code is not None and any(t["type"] == "code_interpreter" for t in run["tools"]):
            code = await self.code.tool_for(run, tenant)
            tools.append(code)
            kinds[code.name] = "code_interpreter"
        return tools, kinds

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
        await self._wait_for_files(thread_stores, timeout=FILES_WAIT_SECONDS)
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

    async def model_context(self, model: str, key_id: str | None) -> Context:
        """A model call outside any run (a compaction): the server's model settings, routed as a run's."""
        s = self.settings
        context = Context(
            model=model, base_url=s.openai_base_url, api_key=s.openai_api_key, timeout=s.model_timeout,
            chunk_timeout=s.model_chunk_timeout or None, max_retries=s.model_max_retries,
        )
        return await self._routed(context, key_id)

    async def _routed(self, context: Context, key_id: str | None) -> Context:
        """The run's model through the provider and endpoint the model catalogue gives it; runs created
        with a key that carries its own model endpoint/key call the model with those."""
        creds = Credentials()
        if key_id:
            secret = self.settings.secret_key.get_secret_value() if self.settings.secret_key else None
            async with self.pool.connection() as conn:
                found, revoked = await model_credentials(conn, key_id, secret)
            if revoked:
                raise KeyRevoked("The API key that created this run was revoked.")
            creds = Credentials(**found)
        route = catalog_for(self.settings).route(context.model, creds)
        if route is None:  # served when the run was created; the catalogue changed since
            raise ModelUnavailable(f"The model `{context.model}` is no longer served by this server (model catalogue).")
        return dataclasses.replace(
            context,
            model=route.model,
            provider=route.provider,
            base_url=route.base_url,
            api_key=route.api_key,
            model_options=route.options,
            text_tool_calls=route.text_tool_calls,
        )
