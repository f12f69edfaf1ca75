"""The one place domain errors (and FastAPI's own validation and routing errors) become OpenAI
error bodies."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.contract.errors import APIError, InvalidRequest, error_body
from api.files.file_store import StoreUnavailable
from api.storage.database import DATABASE_UNAVAILABLE, OUTAGE

log = logging.getLogger(__name__)

_SOURCES = ("body", "query", "path", "header")


def _is_branch_label(part: str) -> bool:
    # pydantic names union branches in loc ("str", "list[...]", "tagged-union[...]", "function-after[...]").
    return part.startswith(("function-", "constrained-")) or "[" in part or part in ("str", "list", "dict", "literal")


def _param_from_loc(loc: tuple, body: object = None) -> str | None:
    """The dotted field path of a validation error, without union branch labels or discriminator tags.

    A discriminated union puts the tag value in `loc` right after the list index or the
    `tagged-union[...]` label (`tools[0]` of type function fails at `tools.0.function.function.name`);
    the request body tells the tag apart from a field of the same name.
    """
    parts = list(loc)
    current = body if parts and parts[0] == "body" else None
    if parts and parts[0] in _SOURCES:
        parts = parts[1:]
    out = ""
    tag_may_follow = False
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            current = current[part] if isinstance(current, list) and 0 <= part < len(current) else None
            tag_may_follow = True
            continue
        if not isinstance(part, str):
            continue
        if _is_branch_label(part):
            tag_may_follow = tag_may_follow or part.startswith("tagged-union[")
            continue
        # Installed tools share one tag, "builtin", whatever their type.
        if tag_may_follow and isinstance(current, dict) and part in (current.get("type"), "builtin"):
            tag_may_follow = False
            continue
        out += f".{part}" if out else part
        current = current.get(part) if isinstance(current, dict) else None
        tag_may_follow = False
    return out or None


def _is_type_mismatch(err: dict) -> bool:
    kind = err.get("type", "")
    return kind.endswith("_type") or kind == "literal_error"


def _pick_error(errors: list[dict], body: object) -> tuple[dict, str | None]:
    """One error to report. A union reports one error per branch: among the errors about the first
    failing field, prefer the one that got deepest into the input, then one that is not a mere
    "wrong type for this branch" (so `[]` reports "too short", not "should be a string")."""
    if not errors:
        return {}, None
    scored = [(err, _param_from_loc(tuple(err.get("loc", ())), body)) for err in errors]
    first_param = scored[0][1]
    if first_param is None:
        return scored[0]
    related = [
        (err, param)
        for err, param in scored
        if param is not None and (param == first_param or param.startswith((first_param + ".", first_param + "[")))
    ]
    return max(related, key=lambda item: (len(item[1]), not _is_type_mismatch(item[0])))


def _validation_message(err: dict, param: str | None) -> str:
    kind = err.get("type", "")
    if param is None and tuple(err.get("loc", ())) == ("body",):
        if kind == "missing":
            return "The request body is missing. The API expects a JSON object."
        if _is_type_mismatch(err):
            return "The request body must be a JSON object."
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    if kind == "json_invalid":
        return (
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )
    ctx = err.get("ctx") or {}
    if kind == "too_long" and "max_length" in ctx and param:
        return (
            f"Invalid value for '{param}': array too long. Expected an array with maximum length {ctx['max_length']}, "
            f"but got an array with length {ctx.get('actual_length', 'more')} instead."
        )
    if kind == "string_too_long" and "max_length" in ctx and param:
        got = len(err["input"]) if isinstance(err.get("input"), str) else "more"
        return (
            f"Invalid value for '{param}': string too long. Expected a string with maximum length {ctx['max_length']}, "
            f"but got a string with length {got} instead."
        )
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"Invalid value for '{param}': {msg}" if param else msg


def validation_failure(errors: list[dict], body: object) -> InvalidRequest:
    """The error a body that failed validation gets (errors located as FastAPI locates them, from
    "body")."""
    err, param = _pick_error(errors, body)
    if err.get("type") == "json_invalid":
        param = None
    return InvalidRequest(_validation_message(err, param), param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return JSONResponse(
            error_body(exc.message, exc.error_type, exc.param, exc.code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Values the database cannot take (a number out of a column's range, text it cannot store)
    # come from the request: a 400, and the connection stays usable (a handler for `Exception`
    # would answer 500 and let the server drop the connection).
    @app.exception_handler(psycopg.DataError)
    async def _data_error(_: Request, exc: psycopg.DataError):
        detail = (exc.diag.message_primary if exc.diag and exc.diag.message_primary else str(exc)).splitlines()[0]
        log.warning("a request's value was refused by the database: %s", detail)
        return JSONResponse(
            error_body(f"Invalid value in the request: {detail[:200]}", "invalid_request_error"), status_code=400
        )

    # The database went away (a restart, a failover, a network cut): nothing the request did, and
    # worth trying again; the pool replaces the broken connection meanwhile. A 503, which the
    # OpenAI SDKs retry, with a line in the log (not a traceback per request).
    async def _database_unavailable(_: Request, exc: Exception):
        if isinstance(exc, psycopg.OperationalError):
            OUTAGE.seen(exc)  # one line per outage, not one per request
        elif OUTAGE.since is None:
            # Every connection busy for the pool's whole timeout: an overloaded database, not a lost one.
            log.warning("a request waited too long for a database connection: %s", exc)
        return JSONResponse(
            error_body("The server's database is unavailable or overloaded right now. Please try again.", "server_error"),
            status_code=503,
        )

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)

    # The same for the file store (a bucket that cannot be reached or refuses the operation).
    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, exc: StoreUnavailable):
        log.warning("a request found the file store unavailable: %s", str(exc).splitlines()[0] if str(exc) else "")
        return JSONResponse(
            error_body("The server's file store is unavailable right now. Please try again.", "server_error"),
            status_code=503,
        )

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError):
        return JSONResponse(
            error_body(
                "Invalid value in the request: text must be valid Unicode (no unpaired surrogates).",
                "invalid_request_error",
            ),
            status_code=400,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        invalid = validation_failure(list(exc.errors()), exc.body)
        return JSONResponse(error_body(invalid.message, "invalid_request_error", invalid.param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = "Invalid URL: the requested path does not exist."
        elif exc.status_code == 405:
            message = "Method not allowed for this URL."
        else:
            message = str(exc.detail)
        return JSONResponse(
            error_body(message, "invalid_request_error"), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body("The server had an error while processing your request.", "server_error"),
            status_code=500,
        )
