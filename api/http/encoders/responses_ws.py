"""Responses WebSocket mode: the Responses stream events of `api/responses/streams.py` as OpenAI sends
them over a WebSocket, one JSON text message per event, exactly the payloads of the SSE stream's
`data:` lines (no `[DONE]`); and the mode's own `error` event, whose status and error object differ
from the HTTP error body."""

from __future__ import annotations

from api.contract.errors import APIError
from api.runs.events import compact_json


def encode(event: dict) -> str:
    if event["type"] == "error" and "error" not in event:
        # The stream could not go on (its events are gone, or its key was revoked): the SSE
        # stream's error event, in this mode's shape.
        return compact_json(
            _error(500, "server_error", event.get("code") or "server_error", event["message"], event.get("param"),
                   sequence_number=event["sequence_number"])
        )
    return compact_json(event)


def error(exc: APIError) -> str:
    """A request that got no response: its error, as an `error` event. Open Responses asks for a
    string `code`; errors without one of their own give their type."""
    return compact_json(_error(exc.status_code, exc.error_type, exc.code or exc.error_type, exc.message, exc.param))


def steer_refused(event: dict) -> str:
    """`response.steer` (mid-turn steering, for the models that take it): not supported here; the
    input comes back, for the client's next `response.create`."""
    steer = {"previous_response_id": str(event.get("previous_response_id") or ""), "input": event.get("input") or ""}
    error = {
        "type": "invalid_request_error",
        "code": "steering_not_supported",
        "message": "Steering is not supported by this server: send the input with the next response.create.",
    }
    return compact_json({"type": "response.steer.failed", "sequence_number": 0, "steer": steer, "error": error})


def _error(status: int, kind: str, code: str, message: str, param: str | None, **extra) -> dict:
    return {
        "type": "error",
        "status": status,
        "error": {"type": kind, "code": code, "message": message, "param": param},
        **extra,
    }
