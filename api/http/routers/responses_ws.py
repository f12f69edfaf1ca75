"""WebSocket mode of the Responses API (`client.responses.connect()`): a WebSocket on
`/v1/responses`, authenticated and scoped like every HTTP request (its handshake's Authorization
header), on which the client sends `response.create` events (the body of POST /v1/responses) and
gets each response's stream events, one JSON message each.

Turns run one at a time, in the order they arrived; a request that arrives while one is running
waits for it. The connection keeps its latest response in memory (`api/responses/connection.py`),
so a `store: false` chain can go on within it. It lasts `ASSISTGRAPH_WEBSOCKET_MAX_SECONDS`; then,
between two responses, it says `websocket_connection_limit_reached` and closes. Closing the socket
while a response runs cancels it (there is no cancel event) and drops the requests still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import psycopg
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.contract import text
from api.contract.errors import APIError, InvalidRequest, NotFound, ServerError, error_body
from api.files.file_store import StoreUnavailable
from api.http.deps import scoped
from api.http.encoders import responses_ws
from api.http.errors import validation_failure
from api.http.guard import off_loop
from api.responses import items, params, service, streams
from api.responses.connection import Connection, PreviousResponseNotFound, Turn
from api.runs import control
from api.runs.runtime import Services
from api.storage.database import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

router = APIRouter()

# Fields of `response.create` that are not request fields: the event's own, Codex's, and revision
# B's lanes (one lane here: every request shares the connection's).
_EVENT_ONLY = ("type", "generate", "client_metadata", "stream_id")
_LIMIT_MESSAGE = (
    "Responses websocket connection limit reached ({minutes:g} minutes). Create a new websocket connection to continue."
)


@router.websocket("/responses")
async def responses_socket(websocket: WebSocket) -> None:
    try:
        svc = await scoped(websocket)
    except APIError as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    await _Session(websocket, svc).serve()


async def _refuse(websocket: WebSocket, exc: APIError) -> None:
    """A refused handshake is answered as the HTTP request it is, with the error body."""
    response = JSONResponse(error_body(exc.message, exc.error_type, exc.param, exc.code), status_code=exc.status_code)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=exc.message[:120])


class _TooLarge(InvalidRequest):
    status_code = 413


class _Unavailable(ServerError):
    status_code = 503  # as over HTTP: worth trying again


class _Closed(Exception):
    """The client closed the connection."""


class _Session:
    def __init__(self, websocket: WebSocket, svc: Services):
        self.websocket = websocket
        self.svc = svc
        self.connection = Connection()
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.current: asyncio.Task | None = None  # the turn running
        self.closed = False

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.svc.settings.websocket_max_seconds
        reader = asyncio.create_task(self._read())
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.inbox.get(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    break
                if message is None:
                    return
                self.current = asyncio.create_task(self._handle(message))
                try:
                    await self.current
                except asyncio.CancelledError:
                    if self.closed:
                        return  # the client went away: its response was cancelled, what waited is dropped
                    raise
                finally:
                    self.current = None
                if loop.time() >= deadline:
                    break
            minutes = self.svc.settings.websocket_max_seconds / 60
            limit = InvalidRequest(_LIMIT_MESSAGE.format(minutes=minutes), code="websocket_connection_limit_reached")
            await self._send(responses_ws.error(limit))
            await self.websocket.close(code=1000, reason="websocket_connection_limit_reached")
        except _Closed:
            return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self) -> None:
        """Every message into the inbox, in order, while `serve` answers them one by one. The
        client closing cancels the turn running."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self.inbox.put_nowait(message.get("text") if message.get("text") is not None else message.get("bytes"))
        finally:
            self.closed = True
            self.inbox.put_nowait(None)
            if self.current is not None:
                self.current.cancel()

    async def _send(self, data: str) -> None:
        try:
            await self.websocket.send_text(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise _Closed from exc

    async def _handle(self, message: str | bytes) -> None:
        turn: Turn | None = None
        try:
            event = await _decode(message, self.svc.settings.max_request_bytes)
            if event["type"] == "response.steer":
                await self._send(responses_ws.steer_refused(event))
                return
            generate = True if event.get("generate") is None else event["generate"]
            if not isinstance(generate, bool):
                raise InvalidRequest("Invalid value for 'generate': expected a boolean.", param="generate")
            body = _body(event)
            turn = self.connection.turn(body)
            if generate:
                await self._respond(turn)
            else:
                await self._warm_up(turn)
        except APIError as exc:
            self.connection.failed(turn)
            await self._send(responses_ws.error(self.connection.explain(exc, turn)))
        except (_Closed, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is answered on the socket, which stays open
            self.connection.failed(turn)
            await self._send(responses_ws.error(_server_error(exc)))

    async def _respond(self, turn: Turn) -> None:
        include = items.check_include(turn.body.include)
        started = await service.create(self.svc, turn.body)
        row = started.row
        # The response shows the id the client continued from (the service got that response's items).
        row["obj"]["previous_response_id"] = turn.shown_previous

        async def settle() -> None:
            if not row["stored"]:
                await service.purge(self.svc, [row["id"]])

        final: dict | None = None
        events = streams.events(self.svc, row, started.sub, include=include, on_end=settle)
        try:
            async for event in events:
                await self._send(responses_ws.encode(event))
                if "response" in event and event["type"] in ("response.completed", "response.incomplete", "response.failed"):
                    final = event["response"]
        except (_Closed, asyncio.CancelledError):
            await asyncio.shield(self._cancel(row))
            raise
        finally:
            await events.aclose()
            if started.sub is not None:
                started.sub.close()  # the stream closes it, unless it was cut off before it began
        if final is None:
            self.connection.failed(turn)
        else:
            self.connection.settled(turn, final, stored=row["stored"])

    async def _cancel(self, row: dict) -> None:
        """The client closed the connection while its response ran: stop the run."""
        with contextlib.suppress(APIError):
            await control.cancel_run(self.svc, row["thread_id"], row["run_id"])

    async def _warm_up(self, turn: Turn) -> None:
        if turn.base is not None and turn.base == turn.shown_previous:
            try:  # a stored response to continue from
                await service.retrieve(self.svc, turn.base, set())
            except NotFound:
                raise PreviousResponseNotFound(turn.base) from None
        response = service.warm_up(self.svc, turn.body.model_copy(update={"previous_response_id": turn.shown_previous}))
        for event in streams.without_run(response):
            await self._send(responses_ws.encode(event))
        self.connection.settled(turn, response, stored=False)


async def _decode(message: str | bytes, max_bytes: int) -> dict[str, Any]:
    """The event a message holds, checked as the request guard checks an HTTP body."""
    raw = message.encode() if isinstance(message, str) else message
    if len(raw) > max_bytes:
        raise _TooLarge(f"The event is too large: at most {max_bytes} bytes are accepted.")
    problem = await off_loop(text.json_body_problem, raw)
    if problem is not None:
        param = await off_loop(text.locate, raw)
        where = f"'{param}'" if param else "the event"
        raise InvalidRequest(f"Invalid value for {where}: strings may not contain {problem}.", param=param)
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "We could not parse the JSON of your event: each message is one JSON object.", code="invalid_json"
        ) from None
    if not isinstance(event, dict):
        raise InvalidRequest("Each message is one JSON object with a `type`.", code="invalid_json")
    kind = event.get("type")
    if kind not in ("response.create", "response.steer"):
        shown = kind[:100] if isinstance(kind, str) else json.dumps(kind)[:100]
        raise InvalidRequest(
            f"Invalid value for 'type': '{shown}'. This connection takes 'response.create' events.",
            param="type",
            code="invalid_event_type",
        )
    return event


def _body(event: dict) -> params.CreateResponse:
    fields = {k: v for k, v in event.items() if k not in _EVENT_ONLY}
    if fields.get("background"):
        raise InvalidRequest("Background responses are not supported in WebSocket mode.", param="background")
    # Every response streams here; clients send `stream` or not (the Agents SDK always sends true).
    fields["stream"] = True
    try:
        return params.CreateResponse.model_validate(fields)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise validation_failure(errors, fields) from None


def _server_error(exc: Exception) -> APIError:
    if isinstance(exc, psycopg.DataError):
        return InvalidRequest("Invalid value in the request: the database refused one of its values.")
    if isinstance(exc, (*DATABASE_UNAVAILABLE, StoreUnavailable)):
        return _Unavailable("The server's storage is unavailable or overloaded right now. Please try again.")
    log.exception("unhandled error in a responses websocket", exc_info=exc)
    return ServerError("The server had an error while processing your request.")
