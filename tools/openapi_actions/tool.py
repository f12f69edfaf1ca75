"""The tool: one operation of an action, called over the guarded transport with its credentials."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote, urljoin

import httpcore
import httpx
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from tools.openapi_actions.credentials import Credentials, _Creds, parse_credentials
from tools.openapi_actions.documents import Operation, _sanitise, operations
from tools.openapi_actions.network_guard import GuardedTransport, RefusedAddress, _normal_host

MAX_REDIRECTS = 5


class _Failure(Exception):
    pass


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _path_value(value: Any) -> str:
    text = quote(_query_value(value), safe="")
    # '.' and '..' are not escaped by quote() but would be normalised away as path segments.
    return text.replace(".", "%2E") if set(text) <= {"."} else text


class ActionTool(BaseTool):
    """One operation of an action, bound to its server, credentials and limits."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str
    args_schema: dict[str, Any]  # type: ignore[assignment]
    operation: Operation = Field(repr=False)
    base_url: str
    credentials: Any = Field(default=None, repr=False, exclude=True)
    timeout: float = 30.0
    max_bytes: int = 1_000_000
    allowed_hosts: frozenset[str] = frozenset()
    _secrets: list[str] = PrivateAttr(default_factory=list)

    @field_validator("credentials", mode="before")
    @classmethod
    def _parse_credentials(cls, value: Any) -> _Creds | None:
        return parse_credentials(value)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _normal_hosts(cls, value: Any) -> frozenset[str]:
        return frozenset(_normal_host(h) for h in value or () if h.strip())

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        secrets = self.credentials.secrets() if self.credentials else []
        # Longest first, so a secret containing another is redacted whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _run(self, *args: Any, **kwargs: Any) -> str:  # pragma: no cover - the graph runs tools asynchronously
        raise NotImplementedError("action tools run asynchronously")

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    async def _arun(self, *args: Any, **kwargs: Any) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                text = await self._call(kwargs)
        except TimeoutError:
            text = f"Error: the request timed out after {self.timeout:g} seconds."
        except _Failure as exc:
            text = f"Error: {exc}"
        except RefusedAddress as exc:
            text = f"Error: {exc}."
        except (httpx.TimeoutException, httpcore.TimeoutException):
            text = f"Error: the request timed out after {self.timeout:g} seconds."
        except (httpx.HTTPError, httpcore.ConnectError, httpcore.NetworkError) as exc:
            text = f"Error: could not connect to the server ({type(exc).__name__}: {exc or 'connection failed'})."
        except (httpcore.ProtocolError, httpcore.ProxyError, httpcore.UnsupportedProtocol) as exc:
            text = f"Error: the server's response could not be read ({type(exc).__name__}: {exc})."
        except Exception as exc:  # the model gets every failure as text; a tool never raises into the run
            text = f"Error: the request failed ({type(exc).__name__})."
        return self._redact(text)

    def _request(self, args: dict[str, Any]) -> tuple[str, dict, list, dict]:
        op = self.operation
        path = op.path
        query: list[tuple[str, str]] = []
        headers: dict[str, str] = {}
        for param in op.parameters:
            if param.prop not in args or args[param.prop] is None:
                if param.required:
                    raise _Failure(f"missing required argument '{param.prop}'.")
                continue
            value = args[param.prop]
            if param.location == "path":
                path = path.replace("{" + param.name + "}", _path_value(value))
            elif param.location == "query":
                values = value if isinstance(value, list) else [value]
                query.extend((param.name, _query_value(v)) for v in values)
            else:
                text = _query_value(value)
                if any(ch in text for ch in "\r\n\0"):
                    raise _Failure(f"header argument '{param.prop}' must not contain line breaks.")
                headers[param.name] = text
        send: dict[str, Any] = {}
        if op.body_prop is not None:
            body = args.get(op.body_prop)
            if body is None and op.body_required:
                raise _Failure(f"missing required argument '{op.body_prop}'.")
            if body is not None:
                headers["Content-Type"] = op.body_media or "application/json"
                if op.body_type == "json":
                    send["content"] = json.dumps(body).encode()
                elif op.body_type == "form":
                    if not isinstance(body, dict):
                        raise _Failure(f"argument '{op.body_prop}' must be an object of form fields.")
                    send["data"] = {k: _query_value(v) for k, v in body.items()}
                else:
                    send["content"] = (body if isinstance(body, str) else json.dumps(body)).encode()
        url = self.base_url + path
        return url, headers, query, send

    async def _call(self, args: dict[str, Any]) -> str:
        url, headers, query, send = self._request(args)
        auth_headers = self.credentials.headers() if self.credentials else {}
        home = _origin(httpx.URL(self.base_url))
        method = self.operation.method
        transport = GuardedTransport(self.allowed_hosts)
        async with httpx.AsyncClient(
            transport=transport, timeout=self.timeout, follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request(method, url, params=query or None, headers=headers, **send)
            for _ in range(MAX_REDIRECTS + 1):
                if _origin(request.url) == home:
                    request.headers.update(auth_headers)
                response = await client.send(request, stream=True)
                try:
                    location = response.headers.get("location")
                    if response.status_code in (301, 302, 303, 307, 308) and location:
                        request = self._redirect(client, request, response.status_code, location)
                        continue
                    body = await self._read(response)
                finally:
                    await response.aclose()
                return self._render(response, body)
        raise _Failure(f"too many redirects (more than {MAX_REDIRECTS}).")

    def _redirect(self, client: httpx.AsyncClient, request: httpx.Request, status: int, location: str) -> httpx.Request:
        target = httpx.URL(urljoin(str(request.url), location))
        if target.scheme not in ("http", "https"):
            raise _Failure(f"the server redirected to an unsupported URL scheme '{target.scheme}'.")
        method = request.method
        keep_body = status in (307, 308)
        if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
            method = "GET"
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "authorization", "cookie", "transfer-encoding")
            and not (self.credentials and k.lower() in {h.lower() for h in self.credentials.headers()})
            and (keep_body or k.lower() != "content-type")
        }
        content = request.content if keep_body else None
        return client.build_request(method, target, headers=headers, content=content)

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise _Failure(f"the response is larger than the {self.max_bytes} bytes allowed.")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise _Failure(f"the response is larger than the {self.max_bytes} bytes allowed.")
            chunks.append(chunk)
        return b"".join(chunks)

    def _render(self, response: httpx.Response, body: bytes) -> str:
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        try:
            text = body.decode(response.encoding or "utf-8", errors="replace")
        except LookupError:
            text = body.decode("utf-8", errors="replace")
        if response.status_code >= 400:
            return f"Error: {status}\n\n{text}" if text else f"Error: {status}"
        return f"{status}\n\n{text}" if text else status


def action_tools(
    doc: dict,
    *,
    credentials: Credentials | dict | None,
    timeout: float,
    max_bytes: int,
    allowed_hosts: list[str] | frozenset[str] | tuple[str, ...],
    name_prefix: str | None = None,
) -> list[ActionTool]:
    """A tool per operation of a document from `parse_document`."""
    creds = parse_credentials(credentials)
    hosts = frozenset(allowed_hosts)
    tools = []
    for op in operations(doc):
        name = op.name
        if name_prefix:
            prefix = _sanitise(name_prefix)[:40]
            name = f"{prefix}_{name}"[:64]
        tools.append(
            ActionTool(
                name=name,
                description=op.description,
                args_schema=op.schema,
                operation=op,
                base_url=op.server_url,
                credentials=creds,
                timeout=timeout,
                max_bytes=max_bytes,
                allowed_hosts=hosts,
            )
        )
    return tools
