"""A thread's stored messages as the chat-model messages a run starts from.

Besides Assistants messages, a thread (a conversation, to the Conversations API) holds items the
Assistants API has no message for: system and developer messages, and function calls with their
outputs that a client gave as input. They are rendered as what they are: system messages, and an
assistant turn calling the functions followed by the tools' answers.
"""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage


def _parts(content: list[dict]) -> list[dict]:
    parts: list[dict] = []
    for block in content:
        if block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]["value"]})
        elif block["type"] == "image_url":
            parts.append({"type": "image_url", "image_url": block["image_url"]})
        # image_file needs the Files API: not rendered until files exist.
    return parts


def _item_text(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text") or "" for part in content or [] if isinstance(part, dict) and "text" in part)


def _arguments(raw: str) -> dict:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _render_items(items: list[dict]) -> list[AnyMessage]:
    """A run of consecutive items: function calls become one assistant turn, each answered by its
    output right after it (calls nobody answered, and outputs of calls never made, are left out:
    the model endpoint would refuse either)."""
    outputs = {i["call_id"]: i for i in items if i.get("type") == "function_call_output"}
    calls = {i["call_id"] for i in items if i.get("type") == "function_call"}
    out: list[AnyMessage] = []
    turn: list[dict] = []

    def close_turn() -> None:
        if turn:
            out.append(AIMessage(content="", tool_calls=[
                {"id": c["call_id"], "name": c["name"], "args": _arguments(c.get("arguments", "")), "type": "tool_call"}
                for c in turn
            ]))
            out.extend(
                ToolMessage(content=_item_text(outputs[c["call_id"]].get("output")), tool_call_id=c["call_id"])
                for c in turn
            )
            turn.clear()

    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            if item["call_id"] in outputs:
                turn.append(item)
            continue
        if kind == "function_call_output" and item["call_id"] in calls:
            continue  # rendered after its call
        close_turn()
        if kind == "message":
            out.append(SystemMessage(content=_item_text(item.get("content"))))
    close_turn()
    return out


def render(messages: list[dict]) -> list[AnyMessage]:
    out: list[AnyMessage] = []
    items: list[dict] = []
    for message in messages:
        if message.get("item") is not None:
            items.append(message["item"])
            continue
        if items:
            out += _render_items(items)
            items = []
        parts = _parts(message["content"])
        if message["role"] == "assistant":
            out.append(AIMessage(content="".join(p["text"] for p in parts if p["type"] == "text")))
        elif all(p["type"] == "text" for p in parts):
            out.append(HumanMessage(content="\n".join(p["text"] for p in parts)))
        else:
            out.append(HumanMessage(content=parts))
    if items:
        out += _render_items(items)
    return out
