"""Per-run settings, supplied by whoever runs the graph (the API's executor, or a person in Studio)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class Context:
    model: str = field(
        default="gpt-4o-mini",
        metadata={"description": "Chat model name, passed through to the OpenAI-compatible endpoint."},
    )
    instructions: str = field(
        default="",
        metadata={"description": "System instructions: the assistant's, replaced or extended by the run's."},
    )
    tools: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={"description": "OpenAI `function` tool definitions the model may call; the client executes them."},
    )
    builtin_tools: list[str] = field(
        default_factory=list,
        metadata={
            "description": "Names of installed tools the model may call (`web_search`, or a plugin's; the "
            "API lists them at GET /v1/tools). They run inside the graph, never pausing the run."
        },
    )
    server_tools: list[Any] = field(
        default_factory=list,
        metadata={
            "description": "LangChain tool objects the host binds to this run (file_search over its vector "
            "stores, OpenAPI actions with their credentials); executed inside the graph like builtin_tools."
        },
    )
    tool_timeout: float = field(
        default=60.0, metadata={"description": "Seconds a server-side tool may take before its call fails."}
    )
    tool_timeouts: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "description": "Seconds by tool name, for tools with limits of their own that need longer than "
            "tool_timeout (code_interpreter: kernel start plus execution)."
        },
    )
    tool_call_repeats: int = field(
        default=0,
        metadata={
            "description": "Times the run may run a server-side tool call again with the same name and "
            "arguments; further repeats get the earlier result with a note instead of running again."
        },
    )
    tool_choice: str | dict[str, Any] | None = field(
        default=None,
        metadata={
            "description": "`none`, `auto`, `required` or a named tool (OpenAI's tool_choice). A forcing choice "
            "(`required` or a named tool) applies to the run's first model call only, then `auto`, as on OpenAI."
        },
    )
    parallel_tool_calls: bool = field(
        default=True, metadata={"description": "Whether the model may call several tools in one turn."}
    )
    temperature: float | None = field(default=None, metadata={"description": "Sampling temperature (0-2)."})
    top_p: float | None = field(default=None, metadata={"description": "Nucleus sampling mass (0-1)."})
    response_format: dict[str, Any] | None = field(
        default=None,
        metadata={"description": "OpenAI response_format: text, json_object or json_schema; None for the model's default."},
    )
    reasoning_effort: str | None = field(
        default=None, metadata={"description": "Reasoning effort for reasoning models, passed through."}
    )
    last_messages: int | None = field(
        default=None,
        metadata={"description": "Keep only this many most recent thread messages (truncation `last_messages`)."},
    )
    context_window: int | None = field(
        default=None,
        metadata={
            "description": "Tokens the model's context holds: the oldest thread messages that do not fit (with "
            "room for the answer's budget) are dropped before each call (truncation `auto`). None: all are sent."
        },
    )
    max_prompt_tokens: int | None = field(
        default=None, metadata={"description": "Prompt-token budget for the whole run, summed over model calls."}
    )
    max_completion_tokens: int | None = field(
        default=None, metadata={"description": "Completion-token budget for the whole run, summed over model calls."}
    )
    provider: str = field(
        default="openai",
        metadata={
            "description": "`openai`: an OpenAI-compatible endpoint, called with ChatOpenAI. Any other name is a "
            "provider of LangChain's init_chat_model (`anthropic`, `google_genai`, `ollama`, ...; its integration "
            "package must be installed), given base_url, api_key and model_options."
        },
    )
    model_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"description": "Extra keyword arguments for the chat model of a non-`openai` provider."},
    )
    base_url: str | None = field(
        default=None, metadata={"description": "OpenAI-compatible endpoint; None uses the client library's default."}
    )
    api_key: str | None = field(
        default=None, metadata={"description": "Key for the model endpoint; never stored in checkpoints."}
    )
    timeout: float = field(
        default=600.0, metadata={"description": "Seconds one model call may take in all, retries included."}
    )
    chunk_timeout: float | None = field(
        default=120.0,
        metadata={
            "description": "Seconds a streamed model response may stay silent between chunks before the call "
            "fails (as langchain-openai's stream_chunk_timeout, enforced by the model client); None or 0 waits as "
            "long as `timeout` allows."
        },
    )
    first_token_timeout: float | None = field(
        default=300.0,
        metadata={
            "description": "Seconds a model call may take to its first streamed chunk (the request, its retries and "
            "the model's reading of the prompt); the first chunk is held to this rather than to chunk_timeout. None "
            "or 0 waits as long as `timeout` allows."
        },
    )
    text_tool_calls: bool = field(
        default=False,
        metadata={
            "description": "Turn an answer that is exactly a tool call written as text (bare JSON, a ```json "
            "fence, <tool_call> tags, Llama 3.x or Mistral styles) into a real call of an offered tool, for "
            "models whose endpoint does not parse their calls (OpenAI-compatible endpoints)."
        },
    )
    empty_answer_retry: bool = field(
        default=True,
        metadata={
            "description": "Ask the model once more (with a short nudge) when it answers with an empty message "
            "after its tool calls; a second empty answer ends the run with a note saying so."
        },
    )
    max_model_calls: int = field(
        default=25,
        metadata={
            "description": "Model calls one run may make (over all its executions); the next one fails the run "
            "instead of letting a model that calls tools forever loop until the run expires."
        },
    )
    max_retries: int = field(default=1, metadata={"description": "Retries of a failed model call."})
