"""A thread's stored messages as the chat-model messages a run starts from."""

from __future__ import annotations

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage


def _parts(content: list[dict]) -> list[dict]:
    parts: list[dict] = []
    for block in content:
        if block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]["value"]})
        elif block["type"] == "image_url":
            parts.append({"type": "image_url", "image_url": block["image_url"]})
        # image_file needs the Files API: not rendered until files exist.
    return parts


def render(messages: list[dict]) -> list[AnyMessage]:
    out: list[AnyMessage] = []
    for message in messages:
        parts = _parts(message["content"])
        if message["role"] == "assistant":
            out.append(AIMessage(content="".join(p["text"] for p in parts if p["type"] == "text")))
        elif all(p["type"] == "text" for p in parts):
            out.append(HumanMessage(content="\n".join(p["text"] for p in parts)))
        else:
            out.append(HumanMessage(content=parts))
    return out
