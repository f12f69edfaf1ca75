"""How the model node reaches an OpenAI-compatible endpoint: the official SDK, without its request
transformation."""

from __future__ import annotations

import json
from typing import Any

from openai import NOT_GIVEN, AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion

from graph import tokens


class DirectCompletions:
    """Stands in for `AsyncOpenAI().chat.completions` where langchain calls `create(**payload)`.

    The SDK's `create` first walks the request through its TypedDict annotations to rename aliased
    keys (chat requests have none), trying each member of the message union on each message: with a
    thread of a hundred messages that is several milliseconds of CPU per model call, the largest
    single cost of a run in bench/runs.py. This sends the body langchain built as it is, through the
    client's public `post`, so authentication, retries, timeouts and SSE parsing stay the SDK's.
    """

    def __init__(self, client: AsyncOpenAI):
        self._client = client

    async def create(
        self,
        *,
        extra_headers: dict | None = None,
        extra_query: dict | None = None,
        extra_body: dict | None = None,
        timeout: Any = NOT_GIVEN,
        **params: Any,
    ) -> ChatCompletion | AsyncStream[dict[str, Any]]:
        body = {key: value for key, value in params.items() if value is not NOT_GIVEN}
        body.update(extra_body or {})
        options: dict[str, Any] = {"headers": extra_headers or {}, "params": extra_query or {}}
        if timeout is not NOT_GIVEN:
            options["timeout"] = timeout
        response = await self._client.post(
            "/chat/completions",
            body=body,
            options=options,
            cast_to=ChatCompletion,
            stream=bool(body.get("stream")),
            # Chunks stay the JSON objects they arrive as: langchain turns a ChatCompletionChunk
            # back into a dict first thing, and building the model costs more than the rest of
            # relaying a token.
            stream_cls=AsyncStream[dict[str, Any]],
        )
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if body.get("stream") and limit:
            return CappedStream(response, limit, body)
        return response


class CappedStream:
    """A streamed completion held to the `max_tokens` it was asked for, whatever the server does
    (many local servers ignore it). Content and tool-call arguments are counted as they arrive
    (`graph.tokens`); the chunk that reaches the limit is cut to fit, the stream is closed (the
    rest is never read) and ends like one that stopped for its length: `finish_reason: "length"`
    and a usage chunk with the counted completion tokens and the prompt counted the same way
    (the provider's own usage would only have come at the end)."""

    def __init__(self, stream: AsyncStream, limit: int, body: dict):
        self._stream = stream
        self._budget = tokens.Budget(limit)
        self._body = body

    async def __aenter__(self) -> "CappedStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stream.close()

    async def close(self) -> None:
        await self._stream.close()

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        last: dict | None = None
        async for chunk in self._stream:
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
