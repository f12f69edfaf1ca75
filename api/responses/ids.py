"""Ids of the Responses and Conversations APIs and how they map onto the Assistants API's.

A conversation and its thread share one id suffix: `conv_X` is `thread_X`. Output items that
show a run step's tool call take their id from the call's (`call_X` → `fc_X`, `fs_X`, …), so the
same call has the same item id in a response, a stream and a conversation.
"""

from __future__ import annotations

import secrets
import string

from api.contract.errors import InvalidRequest

CONVERSATION = "conv_"
THREAD = "thread_"
CALL = "call_"
RESPONSE = "resp_"

# Item id prefix by item type, for items derived from a run step's tool calls.
CALL_ITEM_PREFIXES = {
    "function_call": "fc_",
    "function_call_output": "fco_",
    "file_search_call": "fs_",
    "web_search_call": "ws_",
    "code_interpreter_call": "ci_",
    "mcp_call": "mcp_",
}

_ALPHABET = string.ascii_letters + string.digits


def _random(n: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_response_id() -> str:
    return RESPONSE + _random(32)


def new_item_id(kind: str) -> str:
    """A fresh id for a conversation item kept beside the thread's messages."""
    prefix = CALL_ITEM_PREFIXES.get(kind) or {"message": "msg_", "reasoning": "rs_", "compaction": "cmp_"}.get(kind, "item_")
    return prefix + _random()


def conversation_id(thread_id: str) -> str:
    return CONVERSATION + thread_id[len(THREAD) :]


def thread_id_of(conversation: str, param: str = "conversation_id") -> str:
    """The thread of a conversation id (a thread id is accepted as it is)."""
    if conversation.startswith(CONVERSATION):
        return THREAD + conversation[len(CONVERSATION) :]
    if conversation.startswith(THREAD):
        return conversation
    raise InvalidRequest(
        f"Invalid '{param}': '{conversation}'. Expected an ID that begins with 'conv'.", param=param
    )


def container_id(thread_id: str) -> str:
    """code_interpreter's session is the thread's: its container id."""
    return "cntr_" + thread_id[len(THREAD) :]


def call_item_id(kind: str, call_id: str) -> str:
    suffix = call_id[len(CALL) :] if call_id.startswith(CALL) else call_id
    return CALL_ITEM_PREFIXES[kind] + suffix


def call_of_item(item_id: str) -> tuple[str, str] | None:
    """(item type, call id) of an item id derived from a tool call; None for other ids."""
    for kind, prefix in sorted(CALL_ITEM_PREFIXES.items(), key=lambda kv: -len(kv[1])):
        if item_id.startswith(prefix):
            return kind, CALL + item_id[len(prefix) :]
    return None
