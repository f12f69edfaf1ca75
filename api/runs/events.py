"""The run engine's events as values: what the mapper and the lifecycle produce (`Event`), and what
is kept and travels from the sink through the hub to the stream readers (`KeptEvent`).

Neither knows a wire: Assistants SSE, Responses SSE (and any later transport) are encoders at the
edge (`api/http/encoders/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Event:
    """An event a run produces, before it is stored: its name and object."""

    event: str
    data: dict
    # Internal snapshots are persisted but never sent to clients (no such event exists).
    publish: bool = True
    # False when the object is already stored as the event shows it (a run's INSERT at creation).
    persist: bool = True
    # Internal settings of the run (runs.config) stored in the transaction of this run event.
    config: dict | None = None

    @property
    def is_delta(self) -> bool:
        return self.event.endswith(".delta")


_UNSET: Any = object()


class EventData:
    """An event's object and its JSON text (as `run_events` keeps it), each made at most once: the
    sink has both, a notification from another process brings the text, and an encoder takes the
    form it needs (Assistants SSE sends the text as it is; the Responses translator reads the object)."""

    __slots__ = ("_value", "_json")

    def __init__(self, value: Any = _UNSET, text: str | None = None):
        self._value = value
        self._json = text

    @classmethod
    def of_json(cls, text: str) -> "EventData":
        return cls(text=text)

    @property
    def value(self) -> Any:
        if self._value is _UNSET:
            self._value = json.loads(self._json)
        return self._value

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = compact_json(self._value)
        return self._json

    def __repr__(self) -> str:
        return f"EventData({self.json})"


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class KeptEvent(NamedTuple):
    """A published event: its number in the run (None for one that is not kept, a snapshot sent in
    place of pruned events or a stream's leading `thread.created`), its name and its data (None:
    too large for its notification, read it from `run_events` by number)."""

    seq: int | None
    name: str
    data: EventData | None

    @classmethod
    def unkept(cls, name: str, value: Any) -> "KeptEvent":
        return cls(None, name, EventData(value))


class Revoked(NamedTuple):
    """The API key a subscription was opened with was revoked: its stream ends."""

    key_id: str


class StreamBroken(NamedTuple):
    """A stream cannot go on (the events it owes are no longer kept, or its key was revoked): the
    last item a stream reader yields before it stops."""

    code: str
    message: str
