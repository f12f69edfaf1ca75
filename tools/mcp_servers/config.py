"""What describes an MCP server: its URL and transport, the headers sent to it (secrets), and the
servers an operator configures for every tenant (remote ones by URL, local ones by command).

Kept free of the `mcp` SDK so that settings can validate against it cheaply (see `client`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, field_validator

TRANSPORTS = ("streamable_http", "sse")
Transport = Literal["streamable_http", "sse"]

# A token as RFC 9110 defines header names.
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
# Headers the MCP transports (or HTTP itself) set: a stored value would break the protocol.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "expect",
        "proxy-authorization",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    }
)
MAX_HEADERS = 20
MAX_HEADER_VALUE = 8192
MAX_URL = 2048
SHARED_NAME = r"^[A-Za-z0-9_-]{1,48}$"


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL without credentials or fragment; ValueError otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("expected an absolute http(s) URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValueError(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not contain credentials; send them as headers")
    if parts.fragment:
        raise ValueError("the URL must not contain a fragment")
    if any(ch in url for ch in "\r\n\0 "):
        raise ValueError("the URL must not contain spaces or line breaks")
    return url


def header_problem(name: Any, value: Any) -> str | None:
    """Why `name: value` cannot be sent to an MCP server, or None. Never repeats the value."""
    if not isinstance(name, str) or not HEADER_NAME.match(name):
        return "is not a valid header name"
    if name.lower() in RESERVED_HEADERS:
        return f"header '{name}' is set by the MCP transport and cannot be given"
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_HEADER_VALUE:
        return f"must be at most {MAX_HEADER_VALUE} characters"
    if any(ch in value for ch in "\r\n\0"):
        return "must not contain line breaks or NUL characters"
    return None


# Shorter header values are not redacted from what the model sees: they are ids and flags more
# often than credentials ("X-User: ada"), and redacting them would mangle ordinary words.
MIN_SECRET_LENGTH = 6


def header_secrets(headers: dict[str, str]) -> list[str]:
    """What must never be shown of these headers: each value, and its credential after a scheme
    (`Bearer <token>` → the token too)."""
    found = set()
    for value in headers.values():
        found.add(value)
        found.add(value.partition(" ")[2].strip())
    return sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def public_tool(definition: dict) -> dict:
    """What the API shows of one listed tool (an MCP `Tool` as JSON)."""
    return {
        "name": definition.get("name"),
        "description": definition.get("description"),
        "input_schema": definition.get("inputSchema") or {"type": "object", "properties": {}},
    }


class _Config(BaseModel):
    # Validation errors must not echo the secrets they were given.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    description: str | None = Field(default=None, max_length=2048)
    allowed_tools: list[str] | None = Field(
        default=None, description="Names of the server's tools offered to the model (unset: all of them)."
    )


class RemoteServer(_Config):
    """A server reached over HTTP: `{"url": ..., "transport"?: "streamable_http" | "sse", "headers"?: {...}}`."""

    url: str
    transport: Transport = "streamable_http"
    headers: dict[str, SecretStr] = Field(default_factory=dict, max_length=MAX_HEADERS)

    _url = field_validator("url")(check_url)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            problem = header_problem(name, secret.get_secret_value())
            if problem:
                raise ValueError(f"headers.{name}: {problem}" if HEADER_NAME.match(name) else f"header {problem}")
        return value

    def plain_headers(self) -> dict[str, str]:
        return {name: secret.get_secret_value() for name, secret in self.headers.items()}


class StdioServer(_Config):
    """A local server the server starts for each call: `{"command": ..., "args"?: [...], "env"?: {...}, "cwd"?: ...}`."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, SecretStr] | None = Field(
        default=None, description="The process's environment (unset: the `mcp` SDK's safe default subset)."
    )
    cwd: str | None = None

    def plain_env(self) -> dict[str, str] | None:
        return None if self.env is None else {k: v.get_secret_value() for k, v in self.env.items()}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "stdio" if "command" in value else "remote"
    return "stdio" if isinstance(value, StdioServer) else "remote"


SharedServer = Annotated[
    Union[Annotated[RemoteServer, Tag("remote")], Annotated[StdioServer, Tag("stdio")]],
    Discriminator(_kind),
]
SharedServerName = Annotated[str, Field(pattern=SHARED_NAME)]
