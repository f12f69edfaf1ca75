"""The OpenAPI document, made true of the errors: every operation documents the OpenAI error
bodies it can answer with (400, 401, 404; 413 and 408 where a body is read), FastAPI's 422 (never
sent: validation errors are OpenAI's 400s) is gone, and operations that stream or return raw bytes
say so."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_ERRORS = {
    "400": "Invalid request (malformed body, bad value, limit exceeded, wrong id prefix, busy thread).",
    "401": "Missing or invalid API key (when authentication is on).",
    "404": "No such object (or not the caller's tenant's).",
}
_BODY_ERRORS = {
    "408": "The request body did not arrive in time.",
    "413": "The request body is larger than the server accepts.",
}
_ADMIN_ERRORS = {"403": "The admin API is disabled."}
# Operations answering with server-sent events when the body asks for `stream: true`.
_STREAMING = {("post", "/v1/threads/runs"), ("post", "/v1/threads/{thread_id}/runs"),
              ("post", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"),
              ("post", "/v1/chat/completions"), ("post", "/v1/responses"), ("get", "/v1/responses/{response_id}")}
# Operations that always answer with server-sent events.
_SSE = {("get", "/v1/threads/{thread_id}/runs/{run_id}/events")}
_RAW = {("get", "/v1/files/{file_id}/content")}
# One server-sent event, as OpenAPI tools that read streams (schemathesis) see it: its fields.
_SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def build(app: FastAPI) -> dict:
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorResponse"] = ERROR_SCHEMA
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in _ERRORS.items():
                responses.setdefault(status, _error(description))
            if method in ("post", "put", "patch"):
                for status, description in _BODY_ERRORS.items():
                    responses.setdefault(status, _error(description))
            if path.startswith("/v1/admin/"):
                for status, description in _ADMIN_ERRORS.items():
                    responses.setdefault(status, _error(description))
            ok = responses.setdefault("200", {"description": "Successful Response"})
            if (method, path) in _STREAMING:
                ok.setdefault("content", {})["text/event-stream"] = {"schema": _SSE_EVENT}
            if (method, path) in _SSE:
                ok["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
            if (method, path) in _RAW:
                ok["content"] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return document


def document_errors(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi
