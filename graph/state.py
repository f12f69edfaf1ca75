"""What a run's checkpoints hold."""

from __future__ import annotations

from typing import Annotated

from typing_extensions import TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class Usage(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int


def add_usage(left: Usage | None, right: Usage | None) -> Usage:
    left, right = left or {}, right or {}
    return {
        "prompt_tokens": left.get("prompt_tokens", 0) + right.get("prompt_tokens", 0),
        "completion_tokens": left.get("completion_tokens", 0) + right.get("completion_tokens", 0),
    }


class InputState(TypedDict):
    # The thread's messages as they stood when the run started. Kept apart from `messages`
    # so a checkpoint stores it once and each step only adds the run's own messages.
    history: list[AnyMessage]


class State(InputState, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    usage: Annotated[Usage, add_usage]
    # Why the run stopped early: "max_prompt_tokens" or "max_completion_tokens".
    incomplete: str | None
