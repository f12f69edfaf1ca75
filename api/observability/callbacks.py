"""The run's LangChain callbacks: metrics of every model and tool call (latency, tokens) and, when
tracing is on, OpenTelemetry spans for the run's execution, each graph node, model call and tool
call; plus LangSmith's own tracer when that is on.

The executor passes `run_callbacks(run_id, tenant)` in the graph's config; LangChain hands every
callback of the graph's runnables to them, with `run_id` / `parent_run_id` linking a call to the
node it runs in. (A handler of our own rather than an instrumentation package: it records the
metrics and the spans in one pass, with the run and tenant the executor knows, and costs nothing
beyond a clock read per call when tracing is off.)
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from api.observability import metrics, tracing

_HIDDEN = "langgraph:hidden"
# How a graph execution that pauses or is stopped ends its run: not an error.
_EXPECTED_ENDINGS = {"GraphInterrupt", "CancelledError", "RunPreempted"}


def run_callbacks(run_id: str, tenant: str) -> list[BaseCallbackHandler]:
    handlers: list[BaseCallbackHandler] = [RunObserver(run_id, tenant, tracing.tracer())]
    langsmith = tracing.langsmith_tracer(run_id, tenant)
    if langsmith is not None:
        handlers.append(langsmith)
    return handlers


class RunObserver(BaseCallbackHandler):
    # Called on the event loop, not in a thread: every method here is a few dictionary operations.
    run_inline = True
    raise_error = False

    def __init__(self, run_id: str, tenant: str, tracer=None):
        self.run_id = run_id
        self.tenant = tenant
        self.tracer = tracer
        self._started: dict[UUID, float] = {}
        self._spans: dict[UUID, Any] = {}
        self._parents: dict[UUID, UUID | None] = {}
        self._root: UUID | None = None

    # --- spans ---

    def _open(self, run_id: UUID, parent_run_id: UUID | None, name: str, attributes: dict) -> None:
        self._parents[run_id] = parent_run_id
        if self.tracer is None:
            return
        from opentelemetry import trace

        parent = self._nearest_span(parent_run_id)
        context = trace.set_span_in_context(parent) if parent is not None else None
        self._spans[run_id] = self.tracer.start_span(name, context=context, attributes=attributes)

    def _nearest_span(self, run_id: UUID | None):
        seen = 0
        while run_id is not None and seen < 1000:
            span = self._spans.get(run_id)
            if span is not None:
                return span
            run_id = self._parents.get(run_id)
            seen += 1
        return None

    def _close(self, run_id: UUID, error: BaseException | None = None, attributes: dict | None = None) -> None:
        self._parents.pop(run_id, None)
        span = self._spans.pop(run_id, None)
        if span is not None:
            if attributes:
                span.set_attributes(attributes)
            if error is not None and type(error).__name__ not in _EXPECTED_ENDINGS:
                from opentelemetry.trace import Status, StatusCode

                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
            span.end()
        if run_id == self._root:
            # The graph's execution is over: close whatever a cancellation left open.
            for left in list(self._spans.values()):
                left.end()
            self._spans.clear()
            self._parents.clear()

    # --- the graph and its nodes ---

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None, **kwargs):
        if parent_run_id is None:
            self._root = run_id
            self._open(
                run_id, None, "assistgraph.run", {"assistgraph.run_id": self.run_id, "assistgraph.tenant": self.tenant}
            )
            return
        metadata = metadata or {}
        name = kwargs.get("name") or metadata.get("langgraph_node")
        is_node = metadata.get("langgraph_node") == name and _HIDDEN not in (tags or [])
        if self.tracer is None or not is_node:
            self._parents[run_id] = parent_run_id
            return
        self._open(
            run_id,
            parent_run_id,
            f"graph.node {name}",
            {"assistgraph.run_id": self.run_id, "langgraph.node": name, "langgraph.step": metadata.get("langgraph_step", -1)},
        )

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        self._close(run_id)

    def on_chain_error(self, error, *, run_id, **kwargs):
        self._close(run_id, error)

    # --- model calls ---

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, metadata=None, **kwargs):
        self._start_model(run_id, parent_run_id, serialized, kwargs)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, metadata=None, **kwargs):
        self._start_model(run_id, parent_run_id, serialized, kwargs)

    def _start_model(self, run_id, parent_run_id, serialized, kwargs) -> None:
        self._started[run_id] = time.perf_counter()
        model = ((kwargs.get("invocation_params") or {}).get("model")) or ((serialized or {}).get("kwargs") or {}).get("model_name")
        self._open(run_id, parent_run_id, "model.call", {"assistgraph.run_id": self.run_id, "gen_ai.request.model": str(model or "")})

    def on_llm_end(self, response, *, run_id, **kwargs):
        started = self._started.pop(run_id, None)
        if started is not None:
            metrics.MODEL_CALLS.labels("ok").observe(time.perf_counter() - started)
        usage = _usage(response)
        if usage[0]:
            metrics.MODEL_TOKENS.labels("input").inc(usage[0])
        if usage[1]:
            metrics.MODEL_TOKENS.labels("output").inc(usage[1])
        self._close(run_id, attributes={"gen_ai.usage.input_tokens": usage[0], "gen_ai.usage.output_tokens": usage[1]})

    def on_llm_error(self, error, *, run_id, **kwargs):
        started = self._started.pop(run_id, None)
        if started is not None:
            outcome = "cancelled" if type(error).__name__ == "CancelledError" else "error"
            metrics.MODEL_CALLS.labels(outcome).observe(time.perf_counter() - started)
        self._close(run_id, error)

    # --- tool calls ---

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, **kwargs):
        self._started[run_id] = time.perf_counter()
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        self._open(run_id, parent_run_id, f"tool.call {name}", {"assistgraph.run_id": self.run_id, "assistgraph.tool": name})

    def on_tool_end(self, output, *, run_id, **kwargs):
        self._end_tool(run_id, "ok")
        self._close(run_id)

    def on_tool_error(self, error, *, run_id, **kwargs):
        self._end_tool(run_id, "error")
        self._close(run_id, error)

    def _end_tool(self, run_id: UUID, outcome: str) -> None:
        started = self._started.pop(run_id, None)
        if started is not None:
            metrics.TOOL_CALLS.labels(outcome).observe(time.perf_counter() - started)


def _usage(response) -> tuple[int, int]:
    """(input, output) tokens of a model call, as the provider reported them."""
    try:
        message = response.generations[0][0].message
        meta = getattr(message, "usage_metadata", None) or {}
        if meta:
            return int(meta.get("input_tokens") or 0), int(meta.get("output_tokens") or 0)
    except (AttributeError, IndexError, TypeError):
        pass
    usage = (response.llm_output or {}).get("token_usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
