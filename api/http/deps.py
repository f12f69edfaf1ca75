"""Request dependencies, as `Annotated` aliases the routers declare."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Request
from starlette.requests import HTTPConnection

from api.contract.errors import InvalidRequest
from api.contract.objects import FILE_SEARCH_CONTENT
from api.responses.items import INCLUDABLE as RESPONSE_INCLUDABLE
from api.runs.runtime import Services
from api.security.auth import authenticate, bearer

# Dependencies are `async def` even when they never await: FastAPI runs plain `def` dependencies in
# its thread pool, a thread hop (and GIL hand-off) per dependency per request.


async def _server(request: Request) -> Services:
    return request.app.state.services


async def _authenticated(request: Request) -> Services:
    """The services, scoped to the calling key's tenant (the default tenant when auth is off)."""
    return await scoped(request)


async def scoped(connection: HTTPConnection) -> Services:
    """The services for a request or a WebSocket handshake: scoped to the key of its Authorization
    header (the default tenant when auth is off)."""
    svc: Services = connection.app.state.services
    if not svc.settings.auth:
        return svc
    async with svc.pool.connection() as conn:
        caller = await authenticate(conn, bearer(connection))
    return dataclasses.replace(svc, caller=caller)


# Every tenant-facing route takes `App`; only the admin API takes the unscoped `Server`.
App = Annotated[Services, Depends(_authenticated)]
Server = Annotated[Services, Depends(_server)]


def id_pattern(*prefixes: str) -> dict:
    """The id's prefix, said in the OpenAPI document only (the check below answers OpenAI's 400)."""
    return {"pattern": "^(" + "|".join(re.escape(p) for p in prefixes) + ")"}


def _id_checker(param: str, prefix: str):
    async def check(value: str = Path(alias=param, json_schema_extra=id_pattern(prefix))) -> str:
        if not value.startswith(prefix):
            raise InvalidRequest(
                f"Invalid '{param}': '{value}'. Expected an ID that begins with '{prefix.rstrip('_')}'.",
                param=param,
            )
        return value

    return check


_check_thread_id = _id_checker("thread_id", "thread_")


async def _thread_id(value: str = Path(alias="thread_id", json_schema_extra=id_pattern("thread_", "conv_"))) -> str:
    """A thread's id; a conversation's id (`conv_…`, the Conversations API's name of the same thread)
    works too."""
    if value.startswith("conv_"):
        return "thread_" + value[len("conv_") :]
    return await _check_thread_id(value)


AssistantId = Annotated[str, Depends(_id_checker("assistant_id", "asst_"))]
ThreadId = Annotated[str, Depends(_thread_id)]
MessageId = Annotated[str, Depends(_id_checker("message_id", "msg_"))]
RunId = Annotated[str, Depends(_id_checker("run_id", "run_"))]
StepId = Annotated[str, Depends(_id_checker("step_id", "step_"))]
ResponseId = Annotated[str, Depends(_id_checker("response_id", "resp_"))]


@dataclass
class Page:
    limit: int
    order: str
    after: str | None
    before: str | None


async def _page(
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query("desc"),
    after: str | None = Query(None),
    before: str | None = Query(None),
) -> Page:
    return Page(limit, order, after, before)


PageParams = Annotated[Page, Depends(_page)]

# The values `include[]` may take on runs and run steps (the contract's enum).
INCLUDABLE = (FILE_SEARCH_CONTENT,)


async def _include(include: Annotated[list[str] | None, Query(alias="include[]")] = None) -> list[str] | None:
    for value in include or []:
        if value not in INCLUDABLE:
            supported = ", ".join(f"'{v}'" for v in INCLUDABLE)
            raise InvalidRequest(
                f"Invalid value for 'include[]': '{value[:200]}'. Supported values are: {supported}.", param="include"
            )
    return include


Include = Annotated[list[str] | None, Depends(_include)]


# The document lists the values `check_include` takes.
_INCLUDES_SCHEMA = {
    "anyOf": [{"type": "array", "items": {"type": "string", "enum": list(RESPONSE_INCLUDABLE)}}, {"type": "null"}]
}


async def _includes(
    brackets: list[str] | None = Query(None, alias="include[]", json_schema_extra=_INCLUDES_SCHEMA),
    plain: list[str] | None = Query(None, alias="include", json_schema_extra=_INCLUDES_SCHEMA),
) -> list[str]:
    return [*(brackets or []), *(plain or [])]


# `include` of the Responses and Conversations APIs as the SDKs send it (`include[]=…`), or repeated
# plain `include=…`; `api/responses/items.check_include` checks the values.
Includes = Annotated[list[str], Depends(_includes)]
