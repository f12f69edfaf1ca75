"""Domain errors: what any layer raises when a request cannot be served, carrying the OpenAI error
fields (type, param, code) and HTTP status. `api/http/errors.py` turns them into responses."""

from __future__ import annotations


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
