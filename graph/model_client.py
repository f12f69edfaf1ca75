"""How the model node reaches an OpenAI-compatible endpoint: the official SDK, without its request
transformation."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from langchain_openai import StreamChunkTimeoutError
from openai import NOT_GIVEN, AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion

from graph import text_tool_calls, tokens
from graph.errors import ModelSilent


class DirectCompletions:
    """Stands in for `AsyncOpenAI().chat.completions` where langchain calls `create(**payload)`.

    The SDK's `create` first walks the request through its TypedDict annotations to rename aliased
    keys (chat requests have none), trying each member of the message union on each message: with a
    thread of a hundred messages that is several milliseconds of CPU per model call, the largest
    single cost of a run in bench/runs.py. This sends the body langchain built as it is, through the
    client's public `post`, so authentication, retries, timeouts and SSE parsing stay the SDK's.

    A streamed call's first chunk must come within `first_token_timeout` seconds of the request
    (connecting, the SDK's retries and the model's reading of the prompt included): an endpoint
    that accepts the request and never answers fails the call long before the run expires.

    Models that write their tool calls as text (`text_tool_calls`) have them turned into real calls
    as the stream is read (see `recover_text_calls`).
    """

    def __init__(
        self,
        client: AsyncOpenAI,
        chunk_timeout: float | None = None,
        first_token_timeout: float | None = None,
        text_tool_calls: bool = False,
    ):
        self._client = client
        self._chunk_timeout = chunk_timeout
        self._first_token_timeout = first_token_timeout
        self._text_tool_calls = text_tool_calls

    def endpoint(self) -> str:
        return str(self._client.base_url).rstrip("/")

    async def create(
        self,
        *,
        extra_headers: dict | None = None,
        extra_query: dict | None = None,
        extra_body: dict | None = None,
        timeout: Any = NOT_GIVEN,
        **params: Any,
    ) -> ChatCompletion | AsyncStream[object]:
        body = {key: value for key, value in params.items() if value is not NOT_GIVEN}
        body.update(extra_body or {})
        options: dict[str, Any] = {"headers": extra_headers or {}, "params": extra_query or {}}
        if timeout is not NOT_GIVEN:
            options["timeout"] = timeout
        streamed = bool(body.get("stream"))
        first = self._first_token_timeout if streamed else None
        first_deadline = asyncio.get_running_loop().time() + first if first else None
        try:
            async with asyncio.timeout_at(first_deadline):
                response = await self._client.post(
                    "/chat/completions",
                    body=body,
                    options=options,
                    cast_to=ChatCompletion,
                    stream=streamed,
                    # Chunks stay the JSON objects they arrive as: langchain turns a ChatCompletionChunk
                    # back into a dict first thing, and building the model costs more than the rest of
                    # relaying a token. `object`, not `dict[str, Any]`: the SDK hands `object` chunks over
                    # as parsed, where a dict type is walked key by key (a tenth of a stream's CPU).
                    stream_cls=AsyncStream[object],
                )
        except TimeoutError:
            raise ModelSilent(first, self.endpoint()) from None
        if not streamed:
            return response
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return GuardedStream(
            response, body, limit=limit, chunk_timeout=self._chunk_timeout,
            first_deadline=first_deadline, first_token_timeout=first, endpoint=self.endpoint(),
            tool_names=_callable_tools(body) if self._text_tool_calls else None,
        )


# Longest a stream of already-buffered chunks keeps the event loop to itself.
TURN_SECONDS = 0.002


class GuardedStream:
    """A streamed completion held to the `max_tokens` it was asked for, and to a longest silence
    between chunks, whatever the server does.

    Budget: many local servers ignore max_tokens. Content and tool-call arguments are counted as
    they arrive (`graph.tokens`); the chunk that reaches the limit is cut to fit, the stream is
    closed (the rest is never read) and ends like one that stopped for its length:
    `finish_reason: "length"` and a usage chunk with the counted completion tokens and the prompt
    counted the same way (the provider's own usage would only have come at the end).

    Silence: a chunk that does not come within `chunk_timeout` seconds raises langchain's
    StreamChunkTimeoutError, as its `stream_chunk_timeout` would. Done here because langchain's
    wraps every chunk in `asyncio.wait_for`, a task per chunk (a twentieth of a stream's CPU);
    an `asyncio.timeout` around the read costs a timer handle. The first chunk is awaited until
    the call's first-token deadline instead (a local model may read a long prompt for minutes
    before it writes anything, which is not a stall).

    Turns: reading chunks the connection has already buffered never suspends, so a model faster
    than the server would hold the event loop for its whole answer: its own events would not be
    written nor other runs' streams served until it ended. The stream lets the loop turn at least
    every `TURN_SECONDS`."""

    def __init__(
        self,
        stream: AsyncStream,
        body: dict,
        *,
        limit: int | None,
        chunk_timeout: float | None,
        first_deadline: float | None = None,
        first_token_timeout: float | None = None,
        endpoint: str | None = None,
        tool_names: set[str] | None = None,
    ):
        self._stream = stream
        self._tool_names = tool_names
        self._budget = tokens.Budget(limit) if limit else None
        self._body = body
        self._chunk_timeout = chunk_timeout
        self._first_deadline = first_deadline
        self._first_token_timeout = first_token_timeout
        self._endpoint = endpoint

    async def __aenter__(self) -> "GuardedStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stream.close()

    async def close(self) -> None:
        await self._stream.close()

    def __aiter__(self):
        chunks = self._received() if self._budget is None else self._capped()
        return recover_text_calls(chunks, self._tool_names) if self._tool_names else chunks

    async def _received(self):
        source = self._stream.__aiter__()
        received = 0
        turned = time.monotonic()
        if self._first_deadline is not None:
            try:
                async with asyncio.timeout_at(self._first_deadline):
                    chunk = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ModelSilent(self._first_token_timeout, self._endpoint) from None
            received += 1
            yield chunk
        while True:
            try:
                if self._chunk_timeout:
                    async with asyncio.timeout(self._chunk_timeout):
                        chunk = await anext(source)
                else:
                    chunk = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamChunkTimeoutError(
                    self._chunk_timeout, model_name=self._body.get("model"), chunks_received=received
                ) from None
            received += 1
            yield chunk
            if time.monotonic() - turned > TURN_SECONDS:
                await asyncio.sleep(0)
                turned = time.monotonic()

    async def _capped(self):
        last: dict | None = None
        async for chunk in self._received():
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    delta["content"] = self._budget.take(delta["content"])
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") or {}
                    if function.get("arguments"):
                        channel = f"call {call.get('index', 0)}"
                        function["arguments"] = self._budget.take(function["arguments"], channel)
                if self._budget.exceeded:
                    choice["finish_reason"] = None  # the closing chunk below says why it ended
            last = chunk
            yield chunk
            if self._budget.exceeded:
                break
        if not self._budget.exceeded:
            return
        await self._stream.close()  # stop reading: the model's further output is not wanted
        head = {k: last.get(k) for k in ("id", "object", "created", "model") if last and k in last}
        yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        completion = self._budget.used
        prompt = _prompt_tokens(self._body)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        yield {**head, "choices": [], "usage": usage}


def _callable_tools(body: dict) -> set[str] | None:
    """The functions a request lets the model call, where an answer may be one written as text
    (never for a JSON answer asked for, whose content is JSON by design)."""
    if body.get("tool_choice") == "none" or (body.get("response_format") or {}).get("type", "text") != "text":
        return None
    names = {t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"}
    return names or None


async def recover_text_calls(chunks, names: set[str]):
    """The stream with an answer that is exactly tool calls written as text turned into those calls.

    Text is held back while its first characters could still open a call (`could_be_call`), and
    let through as it came once they cannot (or once the model makes a real call). An answer held
    to its end that parses as calls of offered tools becomes one chunk announcing the calls, in
    OpenAI's format, followed by the held chunks without their text (finish reason `tool_calls`);
    anything else is let through unchanged."""
    held: list[dict] | None = []
    text = ""
    async for chunk in chunks:
        if held is None:
            yield chunk
            continue
        held.append(chunk)
        real_calls = False
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            real_calls = real_calls or bool(delta.get("tool_calls"))
            text += delta.get("content") or ""
        if real_calls or not text_tool_calls.could_be_call(text):
            for waiting in held:
                yield waiting
            held = None
    if held is None:
        return
    calls = text_tool_calls.parse(text, names) if text.strip() else None
    if calls is None:
        for waiting in held:
            yield waiting
        return
    head = {k: held[0][k] for k in ("id", "object", "created", "model") if k in held[0]}
    announced = [
        {
            "index": i,
            "id": f"call_{secrets.token_hex(12)}",
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
        for i, call in enumerate(calls)
    ]
    delta = {"role": "assistant", "content": None, "tool_calls": announced}
    yield {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    for chunk in held:
        choices = []
        for choice in chunk.get("choices") or []:
            rest = {k: v for k, v in (choice.get("delta") or {}).items() if k not in ("content", "role")}
            finish = "tool_calls" if choice.get("finish_reason") == "stop" else choice.get("finish_reason")
            if rest or finish:
                choices.append({**choice, "delta": rest, "finish_reason": finish})
        if choices or chunk.get("usage"):
            yield {**chunk, "choices": choices}


def _prompt_tokens(body: dict) -> int:
    """The request's messages and tools counted with the same tokenizer (an estimate: each provider
    adds its own framing)."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part.get("text") or "" for part in content if isinstance(part, dict)]
        for call in message.get("tool_calls") or []:
            texts.append(json.dumps(call.get("function") or {}))
    texts += [json.dumps(tool) for tool in body.get("tools") or []]
    return sum(tokens.count(text) for text in texts)
