"""Crash adoption: what an execution that takes a run over finds of the lost one.

The steps and message of a model call have ids derived from the run id and the call's number, so
an execution that takes a run over after a crash re-creates the very objects the lost one had
opened: given what was stored (`Known`) and what clients were already sent (`Streamed`), the mapper
adopts them instead of creating new ones and only sends what clients have not seen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from api.runs.events import KeptEvent


@dataclass
class Streamed:
    """What clients already received of a run's open objects before its execution was lost:
    characters of each message's text, and characters of each tool call's arguments by step and
    call index (an index present means the call was announced)."""

    text: dict[str, int]
    arguments: dict[str, dict[int, int]]

    @classmethod
    def none(cls) -> "Streamed":
        return cls({}, {})

    @classmethod
    def from_deltas(cls, deltas: list[KeptEvent]) -> "Streamed":
        """From the run's kept `thread.message.delta` / `thread.run.step.delta` events, in order."""
        seen = cls.none()
        for name, data in ((event.name, event.data.value) for event in deltas):
            if name == "thread.message.delta":
                for block in data["delta"].get("content") or []:
                    value = (block.get("text") or {}).get("value") or ""
                    seen.text[data["id"]] = seen.text.get(data["id"], 0) + len(value)
            elif name == "thread.run.step.delta":
                calls = seen.arguments.setdefault(data["id"], {})
                for call in data["delta"].get("step_details", {}).get("tool_calls") or []:
                    calls[call["index"]] = calls.get(call["index"], 0) + len(streamed_input(call))
        return seen


def streamed_input(call: dict) -> str:
    """What a tool call delta (or a stored call) shows clients of the model's input: a function's
    arguments, or a code_interpreter call's code."""
    if call.get("type") == "code_interpreter":
        return (call.get("code_interpreter") or {}).get("input") or ""
    return (call.get("function") or {}).get("arguments") or ""


def public(obj: dict) -> dict:
    # store.open_steps()/run_objects() add internal columns ("_pending_usage"): never send or persist them.
    return {k: v for k, v in copy.deepcopy(obj).items() if not k.startswith("_")}


class Known:
    """Steps and messages stored by earlier executions of the run, by id."""

    def __init__(self, objects: list[dict]):
        self._objects = {obj["id"]: obj for obj in objects}

    def open(self, kind: str) -> list[dict]:
        """Those of this kind ("thread.run.step" or "thread.message") still in progress: closed with
        the run unless adopted first."""
        return [public(o) for o in self._objects.values() if o["object"] == kind and o["status"] == "in_progress"]

    def get(self, object_id: str) -> dict | None:
        return self._objects.get(object_id)

    def was_completed(self, object_id: str) -> bool:
        known = self._objects.get(object_id)
        return known is not None and known["status"] != "in_progress"
