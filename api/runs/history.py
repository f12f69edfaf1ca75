"""A thread's stored messages as the chat-model messages a run starts from.

`image_file` parts reach the model as image inputs: the file's bytes, read from the Files API's
storage (`load_images`), sent as a `data:` URL with the part's `detail`, the way OpenAI-compatible
endpoints (and LangChain's other providers) take inline images. `image_url` parts go as they are.
"""

from __future__ import annotations

import base64
from pathlib import Path

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from psycopg_pool import AsyncConnectionPool

from api.files import file_storage, files_store
from api.storage import store

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


def render(messages: list[dict], images: dict[str, str] | None = None) -> list[AnyMessage]:
    """The messages as chat messages; `images` maps the file ids of image_file parts to data URLs."""
    images = images or {}
    out: list[AnyMessage] = []
    for message in messages:
        parts = _parts(message["content"], images)
        if message["role"] == "assistant":
            out.append(AIMessage(content="".join(p["text"] for p in parts if p["type"] == "text")))
        elif all(p["type"] == "text" for p in parts):
            out.append(HumanMessage(content="\n".join(p["text"] for p in parts)))
        else:
            out.append(HumanMessage(content=parts))
    return out


async def load_images(pool: AsyncConnectionPool, messages: list[dict], tenant: str, data_dir: Path) -> dict[str, str]:
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
            data = await file_storage.read_bytes(data_dir, stored)
        except FileNotFoundError:
            continue
        urls[file_id] = f"data:{kind};base64,{base64.b64encode(data).decode()}"
    return urls


async def thread_messages(
    pool: AsyncConnectionPool, thread_id: str, tenant: str, data_dir: Path, rows: list[dict] | None = None
) -> list[AnyMessage]:
    """The thread's messages, oldest first, rendered with their images; `rows`: the thread's
    history already read (`store.run_start`)."""
    if rows is None:
        async with pool.connection() as conn:
            rows = await store.thread_history(conn, thread_id)
    return render(rows, await load_images(pool, rows, tenant, data_dir))
