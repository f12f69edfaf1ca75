"""Client-side `function` tools: the model may call them, the client executes them.

The graph offers them to the model as OpenAI tool schemas and pauses the run (requires_action)
when the model calls one; nothing here executes code on the server.
"""

from __future__ import annotations

from typing import Any

EMPTY_PARAMETERS = {"type": "object", "properties": {}}


def function_tool_specs(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's `function` tools as the chat-completions `tools` the model is offered."""
    specs = []
    for tool in tools:
        if tool.get("type") != "function":
            continue
        fn = tool["function"]
        spec: dict[str, Any] = {"name": fn["name"], "parameters": fn.get("parameters") or EMPTY_PARAMETERS}
        if fn.get("description"):
            spec["description"] = fn["description"]
        if fn.get("strict"):
            spec["strict"] = True
        specs.append({"type": "function", "function": spec})
    return specs


def function_names(tools: list[dict[str, Any]]) -> set[str]:
    return {t["function"]["name"] for t in tools if t.get("type") == "function"}
