"""A thread's stored messages as the chat-model messages a run starts from.

`image_file` parts reach the model as image inputs: the file's bytes, read from the Files API's
storage (`load_images`), sent as a `data:` URL with the part's `detail`, the way OpenAI-compatible
endpoints (and LangChain's other providers) take inline images. `image_url` parts go as they are.

Besides Assistants messages, a thread (a conversation, to the Conversations API) holds items the
Assistants API has no message for: system and developer messages, and function calls with their
outputs that a client gave as input, and compaction items. They are rendered as what they are: system
messages, an assistant turn calling the functions followed by the tools' answers, and a compaction's
user messages and summary (the history starts at the latest compaction the server made itself).
"""

from __future__ import annotations

import base64
import json

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from psycopg_pool import AsyncConnectionPool

from api.files import file_storage, files_store
from api.files.file_store import FileStore
from api.storage import store

# A compaction item reaches the model as the summary it holds (opened by the Responses API when the
# item was written).
COMPACTION_SUMMARY = "Summary of the earlier part of this conversation (it replaces those messages):\n\n"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def _parts(content: list[dict], images: dict[str, str]) -> list[dict]:
    parts: list[dict] = []
    for block in content:
        if block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]["value"]})
        elif block["type"] == "image_url":
            parts.append({"type": "image_url", "image_url": block["image_url"]})
        elif block["type"] == "image_file":
            file_id = block["image_file"]["file_id"]
            url = images.get(file_id)
            if url is None:
                # Deleted since, or not an image: the model is told rather than shown nothing.
                parts.append({"type": "text", "text": f"[image {file_id} is not available]"})
                continue
            image = {"url": url}
            if block["image_file"].get("detail"):
                image["detail"] = block["image_file"]["detail"]
            parts.append({"type": "image_url", "image_url": image})
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
        if kind == "compaction":
            close_turn()
            out.extend(HumanMessage(content=text) for text in item.get("user_messages") or [])
            out.append(SystemMessage(content=COMPACTION_SUMMARY + (item.get("summary") or "")))
            continue
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


def after_server_compaction(messages: list[dict]) -> list[dict]:
    """A compaction the server made (context_management) covers everything before it: the history
    starts there."""
    for position in range(len(messages) - 1, -1, -1):
        item = messages[position].get("item")
        if item is not None and item.get("type") == "compaction" and item.get("origin") == "server_side":
            return messages[position:]
    return messages


def render(messages: list[dict], images: dict[str, str] | None = None) -> list[AnyMessage]:
    """The messages as chat messages; `images` maps the file ids of image_file parts to data URLs.
    Rows that are conversation items (`item`) are rendered as such."""
    images = images or {}
    messages = after_server_compaction(messages)
    out: list[AnyMessage] = []
    items: list[dict] = []
    for message in messages:
        if message.get("item") is not None:
            items.append(message["item"])
            continue
        if items:
            out += _render_items(items)
            items = []
        parts = _parts(message["content"], images)
        if message["role"] == "assistant":
            out.append(AIMessage(content="".join(p["text"] for p in parts if p["type"] == "text")))
        elif all(p["type"] == "text" for p in parts):
            out.append(HumanMessage(content="\n".join(p["text"] for p in parts)))
        else:
            out.append(HumanMessage(content=parts))
    if items:
        out += _render_items(items)
    return out


async def load_images(pool: AsyncConnectionPool, messages: list[dict], tenant: str, files: FileStore) -> dict[str, str]:
    """Data URLs of the image files the user messages show (file id -> URL); files that are gone or
    are not images are left out."""
    wanted = list(
        dict.fromkeys(
            block["image_file"]["file_id"]
            for message in messages
            if message["role"] == "user"
            for block in message["content"]
            if block["type"] == "image_file"
        )
    )
    urls: dict[str, str] = {}
    for file_id in wanted:
        async with pool.connection() as conn:
            found = await files_store.get(conn, file_id, tenant)
        if found is None:
            continue
        obj, stored = found
        kind = file_storage.media_type(obj["filename"])
        if kind not in IMAGE_TYPES:
            continue
        try:
            data = await files.read_bytes(stored)
        except FileNotFoundError:
            continue
        urls[file_id] = f"data:{kind};base64,{base64.b64encode(data).decode()}"
    return urls


async def thread_messages(
    pool: AsyncConnectionPool, thread_id: str, tenant: str, files: FileStore, rows: list[dict] | None = None
) -> list[AnyMessage]:
    """The thread's messages, oldest first, rendered with their images; `rows`: the thread's
    history already read (`store.run_start`)."""
    if rows is None:
        async with pool.connection() as conn:
            rows = await store.thread_history(conn, thread_id)
    return render(rows, await load_images(pool, rows, tenant, files))
