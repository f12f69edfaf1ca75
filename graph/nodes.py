"""The graph's nodes: plain async functions of (state, runtime)."""

from __future__ import annotations

import asyncio
import json
import re
from functools import lru_cache
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI, StreamChunkTimeoutError
from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from graph.context import Context
from graph.errors import ModelCallLimitReached, ModelCallTimedOut, ModelSilent, ModelStalled
from graph.model_client import DirectCompletions
from graph.node_names import CLIENT_TOOLS, MODEL, SERVER_TOOLS
from graph.state import State
from graph.tokens import Budget
from tools.registry import default_registry

_CALL_ID = re.compile(r"^call_[A-Za-z0-9_-]+$")


def normalize_call_id(raw: str | None, message_id: str | None, index: int) -> str:
    """OpenAI clients expect `call_` ids; other providers send other shapes, or none."""
    if raw and _CALL_ID.match(raw):
        return raw
    basis = raw or f"{message_id or 'msg'}_{index}"
    return "call_" + re.sub(r"[^A-Za-z0-9_-]", "", basis)[-40:]


def chat_model(ctx: Context, max_tokens: int | None) -> BaseChatModel:
    if ctx.provider != "openai":
        return _provider_model(
            ctx.provider,
            ctx.model,
            ctx.base_url,
            ctx.api_key,
            ctx.temperature,
            ctx.top_p,
            max_tokens,
            ctx.timeout,
            ctx.max_retries,
            json.dumps(ctx.model_options, sort_keys=True),
        )
    return _chat_model(
        ctx.model,
        ctx.base_url,
        ctx.api_key,
        ctx.temperature,
        ctx.top_p,
        max_tokens,
        ctx.timeout,
        ctx.chunk_timeout or None,
        ctx.max_retries,
        ctx.reasoning_effort,
        json.dumps(ctx.response_format, sort_keys=True) if ctx.response_format else None,
        ctx.first_token_timeout or None,
        ctx.text_tool_calls,
    )


@lru_cache(maxsize=256)
def _chat_model(
    model: str,
    base_url: str | None,
    api_key: str | None,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    timeout: float,
    chunk_timeout: float | None,
    max_retries: int,
    reasoning_effort: str | None,
    response_format: str | None,
    first_token_timeout: float | None = None,
    text_tool_calls: bool = False,
) -> ChatOpenAI:
    # Building a client costs milliseconds; runs with the same settings share one.
    extra: dict[str, Any] = {}
    if reasoning_effort:
        extra["reasoning_effort"] = reasoning_effort
    if response_format:
        # Sent as-is in the request body. Handing it to langchain instead would route the call
        # through the SDK's structured-output helpers: those reject `json_object` next to tools,
        # force every function tool to `strict`, and refuse non-strict tools.
        extra["extra_body"] = {"response_format": json.loads(response_format)}
    llm = ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key or "not-needed",
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        timeout=timeout,
        # Off (given explicitly, so langchain's own environment variable never turns it on): the
        # client below enforces it, more cheaply.
        stream_chunk_timeout=None,
        max_retries=max_retries,
        streaming=True,
        stream_usage=True,
        **extra,
    )
    llm.async_client = DirectCompletions(
        llm.root_async_client, chunk_timeout, first_token_timeout, text_tool_calls
    )
    return llm


# LangChain's standard chat model parameters (model, temperature, max_tokens, timeout, max_retries,
# api_key, base_url) under the names a provider that does not take them all uses instead.
_PROVIDER_PARAMETERS: dict[str, dict[str, str | None]] = {
    "ollama": {"max_tokens": "num_predict", "api_key": None, "timeout": None, "max_retries": None},
}


@lru_cache(maxsize=64)
def _provider_model(
    provider: str,
    model: str,
    base_url: str | None,
    api_key: str | None,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    timeout: float,
    max_retries: int,
    options: str,
) -> BaseChatModel:
    """A chat model of another provider, built by LangChain's own `init_chat_model` (which imports the
    provider's integration package)."""
    from langchain.chat_models import init_chat_model

    given = {
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "timeout": timeout,
        "max_retries": max_retries,
        "api_key": api_key,
        "base_url": base_url,
    }
    renamed = _PROVIDER_PARAMETERS.get(provider, {})
    kwargs: dict[str, Any] = {}
    for name, value in given.items():
        target = renamed.get(name, name)
        if value is not None and target is not None:
            kwargs[target] = value
    kwargs.update(json.loads(options))
    return init_chat_model(model, model_provider=provider, **kwargs)


def server_tools(ctx: Context) -> list[BaseTool]:
    """The tools this run executes itself: those the host bound, then installed ones named in
    `builtin_tools` (a name the host already bound, or nobody installed, adds nothing)."""
    tools = list(ctx.server_tools)
    bound = {tool.name for tool in tools}
    registry = default_registry() if ctx.builtin_tools else None
    for name in ctx.builtin_tools:
        installed = registry.get(name) if name not in bound else None
        if installed is not None:
            tools.append(installed.tool)
            bound.add(name)
    return tools


def _forces_a_tool(tool_choice: Any) -> bool:
    return tool_choice == "required" or isinstance(tool_choice, dict)


def _bind(model: BaseChatModel, ctx: Context, *, first_call: bool):
    own = server_tools(ctx)
    offered = [*ctx.tools, *own]
    if not offered:
        return model
    kwargs: dict[str, Any] = {}
    tool_choice = ctx.tool_choice
    if not first_call and _forces_a_tool(tool_choice):
        # As on OpenAI: a forced tool is forced once. Forcing it again after its result came back
        # would make the model call it forever.
        tool_choice = None
    if isinstance(tool_choice, dict):
        # {"type": "function", "function": {"name"}} or a built-in tool by type ({"type": "file_search"}).
        tool_choice = tool_choice.get("function", {}).get("name") or tool_choice.get("type")
        names = {t["function"]["name"] for t in ctx.tools} | {t.name for t in own}
        if tool_choice not in names:
            tool_choice = None  # a built-in tool this run does not have (e.g. no files to search)
    if not ctx.parallel_tool_calls:
        kwargs["parallel_tool_calls"] = False
    return model.bind_tools(offered, tool_choice=tool_choice, **kwargs)


def model_calls(state: State) -> int:
    """Model calls the run has made so far (each left one AI message among the run's own)."""
    return sum(isinstance(m, AIMessage) for m in state.get("messages") or [])


def _prompt(state: State, ctx: Context) -> tuple[list[AnyMessage] | None, int]:
    """System + thread history (truncated) + this run's messages; None when nothing fits the budget."""
    system = [SystemMessage(ctx.instructions)] if ctx.instructions else []
    history = list(state.get("history") or [])
    if ctx.last_messages:
        history = history[-ctx.last_messages :]
    own = list(state.get("messages") or [])
    used = state.get("usage") or {}
    limits = []
    if ctx.max_prompt_tokens is not None:
        limits.append(ctx.max_prompt_tokens - used.get("prompt_tokens", 0))
    if ctx.context_window is not None:
        answer = (ctx.max_completion_tokens - used.get("completion_tokens", 0)) if ctx.max_completion_tokens else 0
        limits.append(ctx.context_window - max(answer, 0))
    if not limits:
        prompt = system + history + own
        return prompt, count_tokens_approximately(prompt)
    remaining = min(limits)
    fixed = count_tokens_approximately(system + own)
    # "auto" truncation: keep the newest thread messages that fit what is left of the budget and the window.
    kept = trim_messages(
        history,
        max_tokens=max(remaining - fixed, 0),
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
        allow_partial=False,
    )
    if not kept and not own:
        return None, 0
    prompt = system + kept + own
    return prompt, count_tokens_approximately(prompt)


async def call_model(state: State, runtime: Runtime[Context]) -> dict:
    ctx = runtime.context or Context()
    used = state.get("usage") or {}
    max_tokens = None
    if ctx.max_completion_tokens is not None:
        max_tokens = ctx.max_completion_tokens - used.get("completion_tokens", 0)
        if max_tokens <= 0:
            return {"incomplete": "max_completion_tokens"}
    prompt, _ = _prompt(state, ctx)
    if prompt is None:
        return {"incomplete": "max_prompt_tokens"}
    calls_so_far = model_calls(state)
    if calls_so_far >= ctx.max_model_calls:
        raise ModelCallLimitReached(calls_so_far)

    model = _bind(chat_model(ctx, max_tokens), ctx, first_call=calls_so_far == 0)
    response = await _answer(model, prompt, max_tokens, ctx)
    spent = _usage_of(response)
    if ctx.empty_answer_retry and _empty_after_tools(response, state):
        # Small models often send an empty message once they have read their tools' results: asked
        # once more, most answer. The nudge is not kept in the run's messages.
        response = await _answer(model, [*prompt, HumanMessage(EMPTY_ANSWER_NUDGE)], max_tokens, ctx)
        again = _usage_of(response)
        spent = {key: spent[key] + again[key] for key in spent}
        if _empty_after_tools(response, state):
            response.content = EMPTY_ANSWER_NOTE

    calls = [
        {**call, "id": normalize_call_id(call.get("id"), response.id, i)}
        for i, call in enumerate(response.tool_calls)
    ]
    if not ctx.parallel_tool_calls:
        calls = calls[:1]
    response.tool_calls = calls
    # Keep the provider-facing copy consistent with the normalised ids.
    if response.additional_kwargs.get("tool_calls"):
        response.additional_kwargs.pop("tool_calls")

    usage = spent
    incomplete = None
    # Providers name it differently: finish_reason (OpenAI), stop_reason (Anthropic), done_reason (Ollama).
    info = response.response_metadata or {}
    finish = info.get("finish_reason") or info.get("stop_reason") or info.get("done_reason")
    if finish in ("length", "max_tokens"):
        incomplete = "max_completion_tokens"
    elif ctx.max_prompt_tokens is not None and used.get("prompt_tokens", 0) + usage["prompt_tokens"] > ctx.max_prompt_tokens:
        incomplete = "max_prompt_tokens"
    return {"messages": [response], "usage": usage, "incomplete": incomplete}


EMPTY_ANSWER_NUDGE = (
    "Your last reply was empty. Answer my question now, in words, using the results of the tools above."
)
# The answer of a run whose model said nothing after its tool calls, even when asked again.
EMPTY_ANSWER_NOTE = "(No answer: the model replied with an empty message after its tool calls, twice.)"


async def _answer(model, prompt: list[AnyMessage], max_tokens: int | None, ctx: Context) -> AIMessage:
    """One model call, held to the run's time limits."""
    try:
        async with asyncio.timeout(ctx.timeout) as deadline:
            if ctx.provider != "openai":
                return await _streamed(model, prompt, max_tokens, ctx)
            # OpenAI-compatible streams are held to max_tokens and to the first-token limit by
            # their client (GuardedStream).
            return await model.ainvoke(prompt)
    except StreamChunkTimeoutError as exc:
        raise ModelStalled(exc.timeout_s, exc.chunks_received) from exc
    except TimeoutError:
        if deadline.expired():
            raise ModelCallTimedOut(ctx.timeout) from None
        raise


def _usage_of(response: AIMessage) -> dict:
    meta = response.usage_metadata or {}
    return {"prompt_tokens": meta.get("input_tokens", 0), "completion_tokens": meta.get("output_tokens", 0)}


def _empty_after_tools(response: AIMessage, state: State) -> bool:
    """An answer with neither text nor calls, given after the run's tool calls were answered (not
    one cut short by its token budget)."""
    info = response.response_metadata or {}
    if response.tool_calls or response.text.strip() or info.get("finish_reason") == "length":
        return False
    return any(isinstance(m, ToolMessage) for m in state.get("messages") or [])


async def _streamed(model, prompt: list[AnyMessage], limit: int | None, ctx: Context) -> AIMessage:
    """The answer of another provider's model, read from its stream: its first chunk within the
    first-token limit, and only until `limit` completion tokens (counted with `graph.tokens`, as
    for OpenAI-compatible endpoints): past it the stream is closed, the text cut to the limit, and
    the answer marked as stopped for its length."""
    budget = Budget(limit) if limit is not None else None
    merged: AIMessageChunk | None = None
    stream = model.astream(prompt)
    first = ctx.first_token_timeout or None
    try:
        if first:
            try:
                async with asyncio.timeout(first):
                    merged = await anext(stream, None)
            except TimeoutError:
                raise ModelSilent(first, ctx.base_url or ctx.provider) from None
        if merged is not None and budget is not None:
            _take(budget, merged)
        if budget is None or not budget.exceeded:
            async for chunk in stream:
                merged = chunk if merged is None else merged + chunk
                if budget is not None and _take(budget, chunk):
                    break
    finally:
        await stream.aclose()
    if merged is None:
        return AIMessage(content="")
    if budget is None or not budget.exceeded:
        return message_chunk_to_message(merged)
    kept = Budget(limit)
    text = kept.take(merged.text)
    return AIMessage(
        content=text,
        id=merged.id,
        response_metadata={**(merged.response_metadata or {}), "finish_reason": "length"},
        usage_metadata={
            "input_tokens": (merged.usage_metadata or {}).get("input_tokens", 0),
            "output_tokens": limit,
            "total_tokens": (merged.usage_metadata or {}).get("input_tokens", 0) + limit,
        },
    )


def _take(budget: Budget, chunk: AIMessageChunk) -> bool:
    """Counts a chunk's text and call arguments; True once the budget is spent."""
    budget.take(chunk.text)
    for i, call in enumerate(chunk.tool_call_chunks):
        budget.take(call.get("args") or "", f"call {call.get('index', i)}")
    return budget.exceeded


def _unanswered_calls(state: State) -> list[dict]:
    """Tool calls of the last model turn that have no result yet."""
    messages = state.get("messages") or []
    turn = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    if turn is None:
        return []
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    return [c for c in turn.tool_calls if c["id"] not in answered]


async def _run_tool(tool: BaseTool, call: dict, timeout: float) -> ToolMessage:
    try:
        result = await asyncio.wait_for(tool.ainvoke({**call, "type": "tool_call"}), timeout=timeout)
    except asyncio.TimeoutError:
        return ToolMessage(
            content=f"Error: the tool '{call['name']}' did not finish within {timeout:g} seconds.",
            tool_call_id=call["id"], name=call["name"], status="error",
        )
    except Exception as exc:  # the model sees the failure and can recover; the run goes on
        return ToolMessage(
            content=f"Error: {type(exc).__name__}: {exc}", tool_call_id=call["id"], name=call["name"], status="error"
        )
    if isinstance(result, ToolMessage):
        return result
    return ToolMessage(content=str(result), tool_call_id=call["id"], name=call["name"])


# How the answer to a call of a tool the run does not have begins (views of the run recognise it).
NO_SUCH_TOOL = "Error: there is no tool named "


def _no_such_tool(call: dict, available: list[str]) -> ToolMessage:
    # Small models invent tool names; the model reads this and can correct itself, and the run goes
    # on instead of waiting for a client that never declared the function.
    offer = f"Available tools: {', '.join(available)}." if available else "This run has no tools."
    return ToolMessage(
        content=f"{NO_SUCH_TOOL}'{call['name']}'. {offer}",
        tool_call_id=call["id"], name=call["name"], status="error",
    )


def _call_key(call: dict) -> tuple[str, str]:
    return call["name"], json.dumps(call.get("args") or {}, sort_keys=True)


def _run_results(state: State) -> dict[tuple[str, str], list[ToolMessage]]:
    """The results of the run's earlier tool calls, by (name, arguments), oldest first."""
    messages = state.get("messages") or []
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    found: dict[tuple[str, str], list[ToolMessage]] = {}
    for message in messages:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                if call["id"] in results:
                    found.setdefault(_call_key(call), []).append(results[call["id"]])
    return found


def _repeated(call: dict, earlier: ToolMessage) -> ToolMessage:
    # Small models fall into loops, calling the same tool with the same arguments over and over:
    # running it again would tell them nothing new, and the note tells them why nothing changed.
    text = earlier.response_metadata.get("result", earlier.content)
    note = (
        f"[Note: '{call['name']}' was already called with these same arguments in this run; this is that "
        "call's result, not run again. Answer with it, or call a tool with different arguments.]"
    )
    if isinstance(text, list):  # content blocks (an MCP tool's)
        content: str | list = [*text, {"type": "text", "text": note}]
    else:
        content = f"{text}\n\n{note}" if text else note
    return ToolMessage(
        content=content,
        tool_call_id=call["id"], name=call["name"], status=earlier.status,
        # The result without the note, for later repeats.
        response_metadata={"repeat_of": earlier.tool_call_id, "result": text},
    )


def _client_function_names(ctx: Context) -> set[str]:
    return {t["function"]["name"] for t in ctx.tools}


async def run_server_tools(state: State, runtime: Runtime[Context]) -> dict:
    """Executes the calls of tools that live on the server, concurrently, each under a timeout, and
    answers calls of tools the run does not have with an error the model sees."""
    ctx = runtime.context or Context()
    tools = {tool.name: tool for tool in server_tools(ctx)}
    client = _client_function_names(ctx)
    available = sorted(client | set(tools))

    earlier = _run_results(state)
    calls = [c for c in _unanswered_calls(state) if c["name"] not in client]
    # A call made more often than allowed (earlier in the run, or earlier in this very turn) is
    # answered with the result of the first of its kind instead of running again.
    repeat_of: dict[str, ToolMessage | str] = {}
    this_turn: dict[tuple[str, str], list[str]] = {}
    for call in calls:
        key = _call_key(call)
        done, twins = earlier.get(key, []), this_turn.setdefault(key, [])
        if call["name"] in tools and len(done) + len(twins) > ctx.tool_call_repeats:
            repeat_of[call["id"]] = done[-1] if done else twins[0]
        twins.append(call["id"])

    async def answer(call: dict) -> ToolMessage:
        tool = tools.get(call["name"])
        if tool is None:
            return _no_such_tool(call, available)
        return await _run_tool(tool, call, ctx.tool_timeouts.get(tool.name, ctx.tool_timeout))

    run = [c for c in calls if c["id"] not in repeat_of]
    results = dict(zip((c["id"] for c in run), await asyncio.gather(*(answer(c) for c in run))))
    for call in calls:
        if call["id"] in repeat_of:
            source = repeat_of[call["id"]]
            results[call["id"]] = _repeated(call, results[source] if isinstance(source, str) else source)
    return {"messages": [results[c["id"]] for c in calls]}


async def await_client_tools(state: State) -> dict:
    """Function tools run in the client: pause the run until it submits their outputs."""
    calls = [
        {"id": call["id"], "name": call["name"], "arguments": call["args"]}
        for call in _unanswered_calls(state)
    ]
    outputs: dict[str, str] = interrupt({"tool_calls": calls})
    return {
        "messages": [ToolMessage(content=outputs.get(c["id"], ""), tool_call_id=c["id"]) for c in calls]
    }


# Routes are async although they never await: LangGraph runs a sync route in a worker thread, a
# thread hop on every edge of every run.
async def route_after_model(state: State, runtime: Runtime[Context]) -> str:
    if state.get("incomplete"):
        return END
    pending = _unanswered_calls(state)
    if not pending:
        return END
    # Only the client's own functions pause the run; server tools and invented names are answered here.
    client = _client_function_names(runtime.context or Context())
    if any(c["name"] not in client for c in pending):
        return SERVER_TOOLS
    return CLIENT_TOOLS


async def route_after_server_tools(state: State) -> str:
    return CLIENT_TOOLS if _unanswered_calls(state) else MODEL
