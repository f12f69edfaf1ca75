"""Domain errors and the one place they become OpenAI error bodies."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(APIError):
    pass


class NotFound(APIError):
    status_code = 404


class ServerError(APIError):
    status_code = 500
    error_type = "server_error"


def not_found(kind: str, object_id: str) -> NotFound:
    return NotFound(f"No {kind} found with id '{object_id}'.")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _param_from_loc(loc: tuple) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith("function-") or "[" in part or part in ("str", "list", "dict", "literal")):
            # pydantic names union branches in loc ("list[...]", "function-after[...]"): not a field.
            continue
        else:
            out += f".{part}" if out else part
    return out or None


def _validation_message(err: dict, param: str | None) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    if kind == "json_invalid":
        return (
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"Invalid value for '{param}': {msg}" if param else msg


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return JSONResponse(
            error_body(exc.message, exc.error_type, exc.param, exc.code), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        # A union reports one error per branch; the first is the most specific for our models.
        err = errors[0] if errors else {}
        param = _param_from_loc(tuple(err.get("loc", ())))
        if err.get("type") == "json_invalid":
            param = None
        return JSONResponse(
            error_body(_validation_message(err, param), "invalid_request_error", param), status_code=400
        )

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
