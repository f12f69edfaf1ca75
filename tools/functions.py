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
        if not is_client_function(tool):
            continue
        fn = tool["function"]
        spec: dict[str, Any] = {"name": fn["name"], "parameters": fn.get("parameters") or EMPTY_PARAMETERS}
        if fn.get("description"):
            spec["description"] = fn["description"]
        if fn.get("strict"):
            spec["strict"] = True
        specs.append({"type": "function", "function": spec})
    return specs


def is_client_function(tool: dict[str, Any]) -> bool:
    # Built-in tools and actions are stored as `function` entries with a `builtin` marker: the
    # server runs those.
    return tool.get("type") == "function" and not tool.get("builtin")


def function_names(tools: list[dict[str, Any]], *, with_builtin: bool = False) -> set[str]:
    return {
        t["function"]["name"] for t in tools if is_client_function(t) or (with_builtin and t.get("type") == "function")
    }


def unique_name(name: str, taken: set[str], limit: int = 64) -> str:
    """`name`, or else `name` cut to fit a suffix `_2`, `_3`, ... that `taken` does not hold yet;
    the name chosen joins `taken`. Function names are unique within a request (and at most 64
    characters long)."""
    chosen, n = name, 2
    while chosen in taken:
        suffix = f"_{n}"
        chosen = name[: limit - len(suffix)] + suffix
        n += 1
    taken.add(chosen)
    return chosen
