"""Compaction: a window of items turned into one `compaction` item by the model.

The item's `encrypted_content` is the model's summary of the window, sealed with Fernet under a key
derived from ASSISTGRAPH_SECRET_KEY and the tenant: opaque to clients, and a blob made for one
tenant (or edited by a client) does not open for another. The server opens it when the item comes
back as input and gives the model the summary in its place.

`POST /v1/responses/compact` returns the window's user messages as message items, followed by the
compaction item, as OpenAI does: the client sends them back as they are, and the model reads them
verbatim before the summary. A server-side compaction keeps the newest user messages inside its
sealed item instead (its item replaces the history in place), and so did the endpoint's items
before; both are still read.

Two origins: `POST /v1/responses/compact` (the window is the request's) and `context_management`
(server side: a response whose context passes `compact_threshold` tokens first compacts the history
it continues; everything before the item is then left out of what the model sees).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately

from api.contract.errors import InvalidRequest, NotFound, ServerError
from api.contract.ids import now
from api.responses import items as item_views
from api.responses import params, records
from api.responses.ids import new_item_id, new_response_id
from api.runs import history
from api.runs.binding import RunBinder
from api.runs.control import check_model_allowed
from api.runs.runtime import Services
from api.security import crypto
from api.storage import store
from graph.nodes import chat_model

ITEM = "compaction"
FROM_ENDPOINT = "compact_endpoint"
SERVER_SIDE = "server_side"
FORMAT_VERSION = 1
_INSTRUCTIONS = (
    "You compact a conversation so that it can go on without its earlier messages. Write a summary that keeps "
    "everything needed to continue: the user's goals, requests and constraints, facts and decisions, names, "
    "numbers, code and file names, what tools were called and what they returned, what is done and what is still "
    "open. Write it for yourself, not for the user; no preamble."
)


def _key(svc: Services) -> str:
    """A key of its own per tenant (and apart from the stored credentials'): a blob sealed for one
    tenant does not open for another."""
    secret = svc.settings.secret_key.get_secret_value() if svc.settings.secret_key else None
    if not secret:
        raise ServerError("Compaction needs ASSISTGRAPH_SECRET_KEY: the server seals compaction items with it.")
    return f"{secret}\x1fcompaction\x1f{svc.tenant}"


def seal(svc: Services, summary: str, origin: str, user_messages: list[str]) -> str:
    payload = json.dumps(
        {"v": FORMAT_VERSION, "origin": origin, "summary": summary, "user_messages": user_messages},
        separators=(",", ":"),
    )
    return crypto.encrypt(_key(svc), payload).decode()


@dataclass
class Opened:
    summary: str
    origin: str
    user_messages: list[str]

    def private(self) -> dict:
        """What a kept compaction item holds for the server (api/runs/history.py renders it)."""
        return {"summary": self.summary, "origin": self.origin, "user_messages": self.user_messages}


def open_sealed(svc: Services, sealed: str, param: str) -> Opened:
    """The summary a compaction item carries; a 400 for a blob this server did not seal for this tenant."""
    key = _key(svc)
    try:
        payload = json.loads(crypto.decrypt(key, sealed.encode()))
    except (ServerError, ValueError, UnicodeEncodeError):
        payload = None
    if not isinstance(payload, dict) or payload.get("v") != FORMAT_VERSION or not isinstance(payload.get("summary"), str):
        raise InvalidRequest(
            "Invalid 'encrypted_content': this compaction item was not made by this server for this tenant.",
            param=param, code="invalid_encrypted_content",
        )
    users = payload.get("user_messages")
    users = [u for u in users if isinstance(u, str)] if isinstance(users, list) else []
    return Opened(payload["summary"], payload.get("origin") or FROM_ENDPOINT, users)


def transcript(messages: list[AnyMessage]) -> str:
    """The window as text for the summarising call (tool calls and results included)."""
    lines = []
    for message in messages:
        text = message.content if isinstance(message.content, str) else "\n".join(
            p.get("text", "[image]") if isinstance(p, dict) else str(p) for p in message.content
        )
        if isinstance(message, HumanMessage):
            lines.append(f"USER: {text}")
        elif isinstance(message, AIMessage):
            if text:
                lines.append(f"ASSISTANT: {text}")
            for call in message.tool_calls:
                lines.append(f"ASSISTANT CALLED {call['name']}({json.dumps(call['args'])})")
        elif isinstance(message, ToolMessage):
            lines.append(f"TOOL RESULT: {text}")
        else:
            lines.append(f"CONTEXT: {text}")
    return "\n\n".join(lines)


@dataclass
class Summary:
    text: str
    input_tokens: int
    output_tokens: int

    def usage(self) -> dict:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


async def summarise(svc: Services, model: str, messages: list[AnyMessage], instructions: str | None = None) -> Summary:
    """One call of the model: the window's summary."""
    context = await RunBinder(svc.pool, svc.settings, svc.tools).model_context(model, svc.caller.key_id)
    system = _INSTRUCTIONS + (f"\n\nThe conversation ran under these instructions:\n{instructions}" if instructions else "")
    prompt = [SystemMessage(system), HumanMessage(f"The conversation to compact:\n\n{transcript(messages)}")]
    try:
        answer = await chat_model(context, None).ainvoke(prompt)
    except Exception as exc:  # noqa: BLE001 - whatever the provider raised: the compaction failed
        raise ServerError(f"The model could not compact the conversation: {type(exc).__name__}: {exc}") from None
    text = answer.content if isinstance(answer.content, str) else "".join(
        p.get("text", "") for p in answer.content if isinstance(p, dict)
    )
    meta = answer.usage_metadata or {}
    return Summary(text.strip(), meta.get("input_tokens", 0), meta.get("output_tokens", 0))


# --- the window as history rows ------------------------------------------------------------------


TEXT_PARTS = ("input_text", "output_text", "refusal")


def _text_of_parts(parts: list[dict]) -> str:
    return "\n".join(p.get("text") or p.get("refusal") or "" for p in parts if p.get("type") in TEXT_PARTS)


def item_rows(svc: Services, items: list[dict], param: str = "input") -> list[dict]:
    """Input items as the rows of a thread's history (`api/runs/history.render` reads them):
    compaction items opened to their summaries."""
    rows = []
    for i, item in enumerate(items):
        if item["type"] == "message" and item["role"] in ("user", "assistant"):
            text = _text_of_parts(item["content"])
            rows.append({"role": item["role"], "content": [{"type": "text", "text": {"value": text}}], "item": None})
        elif item["type"] == "compaction":
            opened = open_sealed(svc, item["encrypted_content"], f"{param}[{i}].encrypted_content")
            rows.append({"role": None, "content": None, "item": {**item, **opened.private()}})
        else:
            rows.append({"role": None, "content": None, "item": item})
    return rows


def user_messages(rows: list[dict]) -> list[str]:
    """The texts of a window's user messages (those of compaction items in it included), oldest first."""
    out = []
    for row in history.after_server_compaction(rows):
        item = row.get("item")
        if item is None and row["role"] == "user":
            out.append("\n".join(p["text"]["value"] for p in row["content"] if p["type"] == "text"))
        elif item is not None and item.get("type") == ITEM:
            out += item.get("user_messages") or []
    return out


async def compact(svc: Services, body: params.CompactResponse) -> dict:
    """`POST /v1/responses/compact`: the window's user messages and one compaction item."""
    check_model_allowed(svc.caller, body.model, svc.settings)
    items = item_views.normalize_input(body.input)
    rows: list[dict] = []
    if body.previous_response_id is not None:
        async with svc.pool.connection() as conn:
            previous = await records.get_response(conn, body.previous_response_id, svc.tenant)
            if previous is None or not previous["stored"]:
                raise NotFound(
                    f"Previous response with id '{body.previous_response_id}' not found.", param="previous_response_id"
                )
            rows = list(await store.thread_history(conn, previous["thread_id"]))
    rows += item_rows(svc, items)
    messages = history.render(rows)
    if not messages:
        raise InvalidRequest("Nothing to compact: give `input` (or a `previous_response_id`).", param="input")
    summary = await summarise(svc, body.model, messages, body.instructions)
    retained = [
        {"id": new_item_id("message"), "type": "message", "status": "completed", "role": "user",
         "content": [{"type": "input_text", "text": text}]}
        for text in user_messages(rows)
        if text  # a message of images only: nothing of it is kept
    ]
    sealed = seal(svc, summary.text, FROM_ENDPOINT, [])
    return {
        "id": new_response_id(),
        "object": "response.compaction",
        "created_at": now(),
        "output": [*retained, {"id": new_item_id(ITEM), "type": ITEM, "encrypted_content": sealed}],
        "usage": summary.usage(),
    }


def newest_within(texts: list[str], tokens: int) -> list[str]:
    """The newest texts that fit `tokens` (4 characters a token): the user messages a server-side
    compaction keeps verbatim, so that the compacted context stays well under the threshold (the
    summary covers the others)."""
    kept: list[str] = []
    left = tokens * 4
    for text in reversed(texts):
        if len(text) > left:
            break
        kept.insert(0, text)
        left -= len(text)
    return kept


@dataclass
class Compacted:
    split: int  # the input items before this position went into the compaction too
    item: dict  # the compaction item, as the response shows it
    kept: dict  # as the conversation keeps it (with what it holds for the server)


def threshold(body: params.CreateResponse, window: int | None) -> int | None:
    """The token count at which `context_management` compacts (80% of the model's window when the
    entry gives none and the window is known)."""
    for entry in body.context_management or []:
        if entry.type == ITEM:
            if entry.compact_threshold is not None:
                return entry.compact_threshold
            return int(window * 0.8) if window else None
    return None


@dataclass
class SummaryNeeded(Exception):
    """Raised inside the create transaction when a server-side compaction needs a summary that is not
    at hand. A summary is a model call (seconds): made inside the transaction it would hold the
    thread's lock and a pooled connection all that time. The caller rolls back, makes the summary
    with nothing held, and tries again with it (`Summaries`)."""

    digest: str
    model: str
    messages: list[AnyMessage] = field(repr=False)
    instructions: str | None = None


class Summaries(dict[str, Summary]):
    """Summaries made outside the transaction, by the digest of the window they summarise: a retried
    create uses one only if the window it reads under the lock is still the same."""

    async def make(self, svc: Services, need: SummaryNeeded) -> None:
        self[need.digest] = await summarise(svc, need.model, need.messages, need.instructions)


def _digest(model: str, instructions: str | None, window: list[AnyMessage]) -> str:
    text = json.dumps([model, instructions, transcript(window)], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


async def compact_if_over(
    conn,
    svc: Services,
    thread_id: str,
    items: list[dict],
    model: str,
    instructions: str | None,
    limit: int,
    summaries: Summaries | None = None,
) -> Compacted | None:
    """Server-side compaction before a response: when the history it continues plus its input come to
    `limit` tokens or more, everything before the input's last user message becomes one compaction
    item (origin server_side: the history starts there from now on).

    With `summaries` given, a window with no summary in it raises `SummaryNeeded` instead of calling
    the model here; without, the model is called here (the last try of a create whose window kept
    changing under it)."""
    rows = list(await store.thread_history(conn, thread_id))
    new = item_rows(svc, items)
    system = [SystemMessage(instructions)] if instructions else []
    if count_tokens_approximately(system + history.render(rows + new)) < limit:
        return None
    users = [i for i, item in enumerate(items) if item["type"] == "message" and item["role"] == "user"]
    split = users[-1] if users else len(items)
    window_rows = rows + new[:split]
    window = history.render(window_rows)
    if not window:
        return None  # the input alone is over the threshold: nothing before it to compact
    digest = _digest(model, instructions, window)
    if summaries is None:
        summary = await summarise(svc, model, window, instructions)
    elif digest in summaries:
        summary = summaries[digest]
    else:
        raise SummaryNeeded(digest, model, window, instructions)
    opened = Opened(summary.text, SERVER_SIDE, newest_within(user_messages(window_rows), limit // 5))
    item = {"id": new_item_id(ITEM), "type": ITEM, "encrypted_content": seal(svc, summary.text, SERVER_SIDE, opened.user_messages)}
    return Compacted(split, item, {**item, **opened.private()})
