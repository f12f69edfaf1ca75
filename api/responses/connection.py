"""What one WebSocket connection of WebSocket mode (`/v1/responses`) remembers: its latest response,
in memory only, so that the next `response.create` can continue from it with
`previous_response_id` even when it was not stored (`store: false`) or never ran (a `generate:
false` warm-up). Nothing of it is written anywhere; closing the connection forgets it.

A stored response needs nothing from here (the service reads it from storage, from any
connection). A response that is not stored leaves nothing behind once it settled, so the
connection keeps its chain as items: every input item and output item since the last stored
response (`base`), which a continuation gets as its input, in front of its own, and `base` as its
`previous_response_id`. The response shows the id the client gave.

Only the latest response is kept (OpenAI's sequential mode), and a turn that fails evicts the one it
continued: continuing from it again is `previous_response_not_found`.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.contract.errors import APIError, InvalidRequest, NotFound
from api.responses import items as item_views
from api.responses import params


class PreviousResponseNotFound(InvalidRequest):
    def __init__(self, response_id: str):
        super().__init__(
            f"Previous response with id '{response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )


@dataclass(frozen=True)
class Latest:
    id: str
    stored: bool
    base: str | None  # the stored response the chain continues, if any
    items: list[dict]  # input and output items since `base`, oldest first


@dataclass(frozen=True)
class Turn:
    body: params.CreateResponse  # what the service is asked for
    shown_previous: str | None  # the `previous_response_id` the response shows (the client's)
    base: str | None
    items: list[dict]  # the chain up to this response's output


@dataclass
class Connection:
    latest: Latest | None = None

    def turn(self, body: params.CreateResponse) -> Turn:
        """The request as the service takes it: a continuation of a response only this connection
        knows gets that response's chain as input."""
        given = body.previous_response_id
        new_items = item_views.normalize_input(body.input)
        cached = self.latest if self.latest is not None and self.latest.id == given else None
        if cached is None or cached.stored:
            return Turn(body, given, given, new_items)
        items = [*cached.items, *new_items]
        expanded = body.model_copy(update={"input": items, "previous_response_id": cached.base})
        return Turn(expanded, given, cached.base, items)

    def settled(self, turn: Turn, response: dict, *, stored: bool) -> None:
        """The response of `turn` ended: one that completed (or stopped short) is the latest.
        `stored`: whether storage has it (a warm-up is never there, whatever its `store`)."""
        if response["status"] not in ("completed", "incomplete"):
            self.failed(turn)
            return
        items = [*turn.items, *item_views.normalize_input(response["output"], "output")]
        self.latest = Latest(response["id"], stored, turn.base, items)

    def failed(self, turn: Turn | None) -> None:
        """A turn failed: the response it continued is forgotten."""
        if turn is not None and self.latest is not None and self.latest.id == turn.shown_previous:
            self.latest = None

    @staticmethod
    def explain(exc: APIError, turn: Turn | None) -> APIError:
        """The service's "not found" for a previous response is WebSocket mode's own code."""
        if turn is not None and isinstance(exc, NotFound) and exc.param == "previous_response_id":
            return PreviousResponseNotFound(turn.shown_previous or "")
        return exc
