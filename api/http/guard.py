"""The one gate every request passes before routing: bad text and oversized or stalled bodies are
answered here, with OpenAI's error body, before any handler or query sees them.

- Path and query string: no NUL characters or unpaired surrogates (400).
- Bodies other than uploads: at most `max_request_bytes` (413, refused from the Content-Length
  alone when it says so), read in full here with at most `request_read_timeout` seconds between two
  pieces (408), then checked for NUL / unpaired surrogates in their strings (400) and handed on.
- Uploads (multipart/form-data) stream on to the upload reader, which has its own 512 MB cap and
  checks its fields' text; only the read timeout applies here.

A refusal closes the connection when the client may still be sending (413, 408), and keeps it
open otherwise, so a keep-alive client goes on with its next request.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl

from api.contract import text
from api.contract.errors import APIError, error_body

_NO_BODY_METHODS = {"GET", "HEAD", "DELETE", "OPTIONS"}


class BodyTimeout(APIError):
    status_code = 408
    headers = {"connection": "close"}


def _body_timeout(seconds: float) -> BodyTimeout:
    return BodyTimeout(f"The request body was not received in time (nothing arrived for {seconds:g} seconds).")


class RequestGuard:
    def __init__(self, app, *, max_body: int, read_timeout: float):
        self.app = app
        self.max_body = max_body
        self.read_timeout = read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = _url_problem(scope)
        if problem is not None:
            return await _refuse(send, 400, *problem)
        headers = _headers(scope)
        declared = headers.get(b"content-length")
        if scope["method"] in _NO_BODY_METHODS and declared in (None, b"0") and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data"):
            return await self.app(scope, self._timed(receive), send)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await _refuse(send, 413, self._too_large(), None, close=True)
        try:
            body = await self._read(receive)
        except BodyTimeout as exc:
            return await _refuse(send, 408, exc.message, None, close=True)
        except _TooLarge:
            return await _refuse(send, 413, self._too_large(), None, close=True)
        except _Disconnected:
            return None  # nobody to answer
        problem = await off_loop(text.json_body_problem, body)
        if problem is not None:
            param = await off_loop(text.locate, body)
            where = f"'{param}'" if param else "the request body"
            return await _refuse(send, 400, f"Invalid value for {where}: strings may not contain {problem}.", param)
        return await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"The request body is too large: at most {self.max_body} bytes are accepted."

    async def _read(self, receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                raise _body_timeout(self.read_timeout) from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _timed(self, receive):
        timeout = self.read_timeout

        async def timed_receive():
            try:
                return await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                raise _body_timeout(timeout) from None

        return timed_receive


# Scanning a large body full of escapes takes milliseconds per megabyte: off the event loop.
_INLINE_SCAN_BYTES = 256 * 1024


async def off_loop(check, body: bytes):
    """`check(body)`, in a thread when the body is large and has escapes to look at."""
    if len(body) <= _INLINE_SCAN_BYTES or b"\\u" not in body:
        return check(body)
    return await asyncio.to_thread(check, body)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _headers(scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", ())}


def _url_problem(scope) -> tuple[str, str | None] | None:
    problem = text.text_problem(scope.get("path", ""))
    if problem is not None:
        return f"Invalid URL: the path may not contain {problem}.", None
    query = scope.get("query_string", b"")
    if query and (b"%" in query or b"\x00" in query):
        # As Starlette will read it (latin-1, then percent-decoding as UTF-8).
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            problem = text.text_problem(name) or text.text_problem(value)
            if problem is not None:
                param = name if not text.text_problem(name) else None
                where = f"'{param}'" if param else "the query string"
                return f"Invalid value for {where}: it may not contain {problem}.", param
    return None


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect, when it comes

    return replay


async def _refuse(send, status: int, message: str, param: str | None, *, close: bool = False) -> None:
    payload = json.dumps(error_body(message, "invalid_request_error", param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
