"""How the model node reaches an OpenAI-compatible endpoint: the official SDK, without its request
transformation."""

from __future__ import annotations

from typing import Any

from openai import NOT_GIVEN, AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion


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
        return await self._client.post(
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
