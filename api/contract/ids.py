"""OpenAI-style object ids."""

from __future__ import annotations

import hashlib
import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits

PREFIXES = {
    "assistant": "asst_",
    "thread": "thread_",
    "message": "msg_",
    "run": "run_",
    "step": "step_",
    "call": "call_",
    "vector_store": "vs_",
    "file_batch": "vsfb_",
    "file": "file-",
    "action": "action_",
    "mcp_server": "mcp_",
}


def new_id(kind: str) -> str:
    return PREFIXES[kind] + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def now() -> int:
    return int(time.time())


def derived_id(kind: str, seed: str) -> str:
    """An id shaped like `new_id`'s, always the same for the same seed: objects a run re-creates
    after a crash (the message of its third model call, say) get the id they had, so they are
    taken over instead of duplicated. Seeds start with a random id, so they never collide."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    chars = []
    for _ in range(24):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return PREFIXES[kind] + "".join(chars)
