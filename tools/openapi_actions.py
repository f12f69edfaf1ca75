"""OpenAPI actions: every operation of a registered OpenAPI 3 document becomes a tool the model can
call; the server performs the HTTP request and hands the response back to the model.

Arguments offered to the model: path, query and header parameters are top-level properties under
their own names (required ones required); a request body is the `body` property (`request_body` if
an operation also has a parameter named `body`). Bodies are sent as JSON (`application/json` and
`+json` types), form data or plain text, whichever the operation declares first in that order;
operations whose required body has none of these types, and cookie parameters, are not offered.

Local `$ref`s are resolved when operations are built; a schema that refers to itself is cut at
the second visit to the same `$ref` (that level accepts any value).

Network safety (the model chooses arguments, the document's author chooses the server):
- Every TCP connection goes through `_GuardedBackend`, which resolves the host itself, refuses the
  connection if ANY resolved address is not a public unicast address (unless the host, as written
  in the URL, is allow-listed) and then connects to one of the addresses it checked. Resolution
  and connection are one step, so DNS rebinding between a check and the connect is impossible.
  TLS still verifies the certificate against the host name.
- Redirects are followed by hand (at most `MAX_REDIRECTS`); each hop connects through the same
  guard, and credentials are sent only to the origin of the document's server.
- No proxy from the environment is used (a proxy would make the connect-time check meaningless).
- Credentials never leave the request headers: they are excluded from repr and dumps, and any
  occurrence of a secret in what the model sees (an echoed header, an error text) is redacted.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import math
import re
import socket
import ssl
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Literal, Union
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpcore
import httpx
import yaml
from langchain_core.tools import BaseTool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, RootModel, SecretStr, field_validator

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_DOCUMENT_CHARS = 2_000_000
MAX_OPERATIONS = 128
MAX_SCHEMA_NODES = 20_000
MAX_REDIRECTS = 5
MAX_DESCRIPTION = 1024
# A token as RFC 9110 defines header names.
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"
# Headers the transport owns; an operation may not set them.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "accept-encoding", "cookie"}
)
SCHEMA_NOISE = ("example", "examples", "xml", "externalDocs", "discriminator", "deprecated")


# --- credentials -------------------------------------------------------------------------------


def _single_line(value: SecretStr) -> SecretStr:
    if any(ch in value.get_secret_value() for ch in "\r\n\0"):
        raise ValueError("must not contain line breaks or NUL characters")
    return value


HeaderSecret = Annotated[SecretStr, Field(min_length=1, max_length=4096), AfterValidator(_single_line)]


class _Creds(BaseModel):
    # Validation errors must not echo the secrets they were given.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    def secrets(self) -> list[str]:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def public(self) -> dict[str, Any]:
        """What the API may show: the type and non-secret settings."""
        return {"type": self.type}  # type: ignore[attr-defined]

    def plain(self) -> dict[str, Any]:
        """The credentials with their secrets, for storage (encrypted) or a tool."""
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in self.__dict__.items()}


class ApiKeyCredentials(_Creds):
    type: Literal["api_key"]
    header: str = Field(default="X-Api-Key", pattern=HEADER_NAME)
    value: HeaderSecret

    @field_validator("header")
    @classmethod
    def _not_reserved(cls, header: str) -> str:
        if header.lower() in RESERVED_HEADERS:
            raise ValueError(f"header '{header}' cannot carry credentials")
        return header

    def secrets(self) -> list[str]:
        return [self.value.get_secret_value()]

    def headers(self) -> dict[str, str]:
        return {self.header: self.value.get_secret_value()}

    def public(self) -> dict[str, Any]:
        return {"type": "api_key", "header": self.header}


class BearerCredentials(_Creds):
    type: Literal["bearer"]
    token: HeaderSecret

    def secrets(self) -> list[str]:
        return [self.token.get_secret_value()]

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token.get_secret_value()}


def _no_colon(value: SecretStr) -> SecretStr:
    if ":" in value.get_secret_value():
        raise ValueError("a basic auth username cannot contain ':'")
    return value


class BasicCredentials(_Creds):
    type: Literal["basic"]
    username: Annotated[SecretStr, Field(max_length=1024), AfterValidator(_single_line), AfterValidator(_no_colon)]
    password: Annotated[SecretStr, Field(max_length=1024), AfterValidator(_single_line)]

    def _encoded(self) -> str:
        pair = f"{self.username.get_secret_value()}:{self.password.get_secret_value()}"
        return base64.b64encode(pair.encode()).decode()

    def secrets(self) -> list[str]:
        return [self.password.get_secret_value(), self._encoded()]

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + self._encoded()}


CredentialsUnion = Annotated[
    Union[ApiKeyCredentials, BearerCredentials, BasicCredentials], Field(discriminator="type")
]


class Credentials(RootModel[CredentialsUnion]):
    """An action's credentials, one of `{"type": "api_key", "header"?: "X-Api-Key", "value"}`,
    `{"type": "bearer", "token"}` or `{"type": "basic", "username", "password"}` (secrets as SecretStr)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    def plain(self) -> dict[str, Any]:
        return self.root.plain()

    def public(self) -> dict[str, Any]:
        return self.root.public()


def parse_credentials(value: Credentials | _Creds | dict | None) -> _Creds | None:
    if value is None:
        return None
    if isinstance(value, Credentials):
        return value.root
    if isinstance(value, _Creds):
        return value
    return Credentials.model_validate(value).root


# --- documents ---------------------------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: an alias can expand a small text into a huge document."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not supported in OpenAPI documents", event.start_mark
            )
        return super().compose_node(parent, index)


def _jsonable(node: Any) -> Any:
    # YAML yields int keys (response codes) and dates; the stored document must be plain JSON.
    if isinstance(node, dict):
        return {str(k): _jsonable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_jsonable(v) for v in node]
    if isinstance(node, (datetime, date)):
        return node.isoformat()
    if isinstance(node, (bytes, bytearray)):
        raise ValueError("binary YAML values are not supported")
    if isinstance(node, float) and not math.isfinite(node):
        raise ValueError("NaN and Infinity are not valid JSON values")
    return node


def _load(text: str) -> Any:
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValueError(f"the document is larger than {MAX_DOCUMENT_CHARS} characters")
    stripped = text.lstrip()
    if not stripped:
        raise ValueError("the document is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        json_error = exc
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        if stripped[0] in "{[":
            where = f"line {json_error.lineno}, column {json_error.colno}"
            raise ValueError(f"the document is not valid JSON: {json_error.msg} ({where})") from None
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"the document is neither valid JSON nor valid YAML: {problem}{where}") from None


def _pointer(doc: dict, ref: str) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise ValueError(f"only local $ref values ('#/...') are supported, got {ref!r}")
    node: Any = doc
    for raw in ref[2:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ValueError(f"$ref {ref!r} does not resolve to anything in the document")
    return node


def _check_refs(doc: dict) -> None:
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                _pointer(doc, ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_document(source: str | bytes | dict) -> dict:
    """A validated OpenAPI 3.x document (as plain JSON) from JSON/YAML text or an already-parsed dict.

    `$ref`s stay in the returned document (they are all checked to resolve locally); `operations`
    resolves them. Raises ValueError with a message meant for the user on anything invalid.
    """
    try:
        return _parse_document(source)
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None


def _parse_document(source: str | bytes | dict) -> dict:
    if isinstance(source, (bytes, bytearray)):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the document is not UTF-8 text") from None
    if isinstance(source, str):
        doc = _load(source)
    elif isinstance(source, dict):
        doc = source
    else:
        raise ValueError("the document must be a JSON object or a JSON/YAML string")
    if not isinstance(doc, dict):
        raise ValueError("the document must be an object at the top level")
    doc = _jsonable(doc)
    if len(json.dumps(doc)) > MAX_DOCUMENT_CHARS:
        raise ValueError(f"the document is larger than {MAX_DOCUMENT_CHARS} characters")
    version = doc.get("openapi")
    if version is None:
        if "swagger" in doc:
            raise ValueError("Swagger 2.0 documents are not supported; convert the document to OpenAPI 3")
        raise ValueError("missing 'openapi' version field: only OpenAPI 3.x documents are supported")
    if not isinstance(version, str) or not re.match(r"^3\.\d+(\.\d+)?", version):
        raise ValueError(f"unsupported OpenAPI version {version!r}: only 3.x is supported")
    if "info" in doc and not isinstance(doc["info"], dict):
        raise ValueError("'info' must be an object")
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise ValueError("the document has no 'paths'")
    _check_refs(doc)
    operations(doc)  # every problem an operation has shows up now, not during a run
    return doc


# --- operations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    prop: str  # the argument's name offered to the model
    name: str  # the parameter's name in the request
    location: Literal["path", "query", "header"]
    required: bool


@dataclass(frozen=True)
class Operation:
    name: str
    method: str  # upper case
    path: str
    description: str
    server_url: str
    parameters: tuple[Param, ...]
    schema: dict = field(hash=False, compare=False)
    body_prop: str | None = None
    body_type: str | None = None  # "json" | "form" | "text"
    body_media: str | None = None
    body_required: bool = False

    def public(self) -> dict:
        return {"name": self.name, "method": self.method, "path": self.path, "description": self.description}


def _deref(doc: dict, node: Any, seen: tuple[str, ...] = ()) -> Any:
    """Follow a chain of `$ref`s to the object they name (not into its children)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            raise ValueError(f"$ref {ref!r} refers to itself")
        seen = (*seen, ref)
        node = _pointer(doc, ref)
    return node


class _Inliner:
    def __init__(self, doc: dict):
        self.doc = doc
        self.nodes = 0

    def schema(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_SCHEMA_NODES:
            raise ValueError("the schemas of an operation are too large once their $refs are resolved")
        if isinstance(node, list):
            return [self.schema(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in stack:
                # A recursive schema: accept anything below the first repetition.
                return {}
            target = self.schema(_pointer(self.doc, ref), (*stack, ref))
            extra = {k: v for k, v in node.items() if k != "$ref"}
            if extra and isinstance(target, dict):
                return {**target, **self.schema(extra, stack)}
            return target
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in SCHEMA_NOISE or key.startswith("x-"):
                continue
            if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
                out[key] = {name: self.schema(sub, stack) for name, sub in value.items()}
            else:
                out[key] = self.schema(value, stack)
        if out.pop("nullable", False) is True:
            # OpenAPI 3.0's `nullable` is JSON Schema's null type.
            kind = out.get("type")
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            if isinstance(kind, str):
                out["type"] = [kind, "null"]
            elif "type" not in out and out:
                out = {"anyOf": [out, {"type": "null"}]}
        return out


def _sanitise(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_-]+", "_", name).strip("_")
    return re.sub(r"_+", "_", cleaned)[:64] or "operation"


def _server_url(servers: Any, where: str) -> str | None:
    if servers is None:
        return None
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        raise ValueError(f"{where}'servers' must be a non-empty list of server objects")
    server = servers[0]
    url = server.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where}servers[0].url must be a non-empty string")
    variables = server.get("variables") or {}
    if not isinstance(variables, dict):
        raise ValueError(f"{where}servers[0].variables must be an object")

    def substitute(match: re.Match) -> str:
        var = variables.get(match.group(1))
        if not isinstance(var, dict) or not isinstance(var.get("default"), str):
            raise ValueError(f"{where}servers[0].url uses variable '{match.group(1)}' without a default")
        return var["default"]

    url = re.sub(r"\{([^{}]+)\}", substitute, url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{where}servers[0].url must be an absolute http(s) URL (relative server URLs are not supported), "
            f"got {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{where}servers[0].url must not contain credentials; use the action's 'auth'")
    if parts.query or parts.fragment:
        raise ValueError(f"{where}servers[0].url must not have a query or a fragment")
    return url.rstrip("/")


def server_url(doc: dict) -> str:
    """The document's server (`servers[0].url`), else the first operation's own server."""
    return _server_url(doc.get("servers"), "") or operations(doc)[0].server_url


def _param_schema(inliner: _Inliner, param: dict) -> dict:
    if "schema" in param:
        schema = inliner.schema(param["schema"])
    elif isinstance(param.get("content"), dict) and param["content"]:
        media = next(iter(param["content"].values()))
        schema = inliner.schema((media or {}).get("schema", {})) if isinstance(media, dict) else {}
    else:
        schema = {"type": "string"}
    schema = dict(schema) if isinstance(schema, dict) else {}
    if param.get("description") and "description" not in schema:
        schema["description"] = str(param["description"])
    return schema


def _body_kind(media_type: str) -> str | None:
    base = media_type.split(";")[0].strip().lower()
    if base == "application/json" or base.endswith("+json") or base == "*/*":
        return "json"
    if base == "application/x-www-form-urlencoded":
        return "form"
    if base.startswith("text/"):
        return "text"
    return None


def _describe(op: dict, method: str, path: str) -> str:
    parts = [str(op[k]).strip() for k in ("summary", "description") if isinstance(op.get(k), str) and op[k].strip()]
    text = "\n\n".join(dict.fromkeys(parts)) or f"{method.upper()} {path}"
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def operations(doc: dict) -> list[Operation]:
    """One Operation per path and method, in document order, with unique sanitised names."""
    root_server = _server_url(doc.get("servers"), "")
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        raise ValueError("the document has no 'paths'")
    out: list[Operation] = []
    taken: set[str] = set()
    for path, item in paths.items():
        if path.startswith("x-"):
            continue
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'")
        item = _deref(doc, item)
        if not isinstance(item, dict):
            raise ValueError(f"paths[{path!r}] must be an object")
        path_server = _server_url(item.get("servers"), f"paths[{path!r}].") or root_server
        shared = item.get("parameters") or []
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            where = f"{method.upper()} {path}"
            op = _deref(doc, op)
            if not isinstance(op, dict):
                raise ValueError(f"{where}: the operation must be an object")
            server = _server_url(op.get("servers"), f"{where}: ") or path_server
            if server is None:
                raise ValueError(
                    "the document has no 'servers' entry: set servers[0].url to the absolute URL of the API"
                )
            operation = _operation(doc, _Inliner(doc), path, method, op, shared, server, where)
            if operation is None:
                continue
            name = operation.name
            n = 2
            while name in taken:
                suffix = f"_{n}"
                name = operation.name[: 64 - len(suffix)] + suffix
                n += 1
            taken.add(name)
            out.append(dataclasses.replace(operation, name=name))
            if len(out) > MAX_OPERATIONS:
                raise ValueError(f"the document has more than {MAX_OPERATIONS} operations")
    if not out:
        raise ValueError("the document has no operations the model could call")
    return out


def _operation(
    doc: dict, inliner: _Inliner, path: str, method: str, op: dict, shared: Any, server: str, where: str
) -> Operation | None:
    merged: dict[tuple[str, str], dict] = {}
    for group in (shared, op.get("parameters") or []):
        if not isinstance(group, list):
            raise ValueError(f"{where}: 'parameters' must be a list")
        for raw in group:
            param = _deref(doc, raw)
            if not isinstance(param, dict) or not isinstance(param.get("name"), str) or "in" not in param:
                raise ValueError(f"{where}: every parameter needs a 'name' and an 'in'")
            merged[(param["name"], param["in"])] = param
    properties: dict[str, Any] = {}
    required: list[str] = []
    params: list[Param] = []
    for (name, location), param in merged.items():
        if location == "cookie":
            continue
        if location not in ("path", "query", "header"):
            raise ValueError(f"{where}: parameter '{name}' has an unknown location {location!r}")
        if location == "header" and name.lower() in RESERVED_HEADERS | {"authorization"}:
            continue
        prop = name if name not in properties else f"{location}_{name}"
        is_required = location == "path" or bool(param.get("required"))
        properties[prop] = _param_schema(inliner, param)
        if is_required:
            required.append(prop)
        params.append(Param(prop, name, location, is_required))
    for placeholder in re.findall(r"\{([^{}]+)\}", path):
        if not any(p.location == "path" and p.name == placeholder for p in params):
            raise ValueError(f"{where}: path parameter '{placeholder}' is not declared")
    body_prop = body_type = body_media = None
    body_required = False
    if op.get("requestBody") is not None:
        body = _deref(doc, op["requestBody"])
        if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
            raise ValueError(f"{where}: requestBody needs a 'content' object")
        body_required = bool(body.get("required"))
        chosen = None
        for wanted in ("json", "form", "text"):
            chosen = next((m for m in body["content"] if _body_kind(m) == wanted), None)
            if chosen:
                break
        if chosen is None:
            if body_required:
                return None
        else:
            body_type = _body_kind(chosen)
            body_media = "application/json" if chosen == "*/*" else chosen.split(";")[0].strip()
            media = body["content"][chosen] or {}
            schema = inliner.schema(media.get("schema", {})) if isinstance(media, dict) else {}
            if body_type == "text":
                schema = {"type": "string"}
            schema = dict(schema) if isinstance(schema, dict) else {}
            if isinstance(body.get("description"), str) and "description" not in schema:
                schema["description"] = body["description"]
            body_prop = "body" if "body" not in properties else "request_body"
            properties[body_prop] = schema
            if body_required:
                required.append(body_prop)
    raw_name = op.get("operationId")
    name = _sanitise(raw_name) if isinstance(raw_name, str) and raw_name.strip() else _sanitise(f"{method}_{path}")
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return Operation(
        name=name,
        method=method.upper(),
        path=path,
        description=_describe(op, method, path),
        server_url=server,
        parameters=tuple(params),
        schema=schema,
        body_prop=body_prop,
        body_type=body_type,
        body_media=body_media,
        body_required=body_required,
    )


# --- the network guard -------------------------------------------------------------------------


class RefusedAddress(Exception):
    """A connection the guard will not open."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_address(address: str) -> bool:
    """True unless `address` is a public unicast address (embedded IPv4 forms are checked too)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if embedded is not None:
                candidates.append(embedded)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(
        c.is_private
        or c.is_loopback
        or c.is_link_local
        or c.is_multicast
        or c.is_reserved
        or c.is_unspecified
        or not c.is_global
        for c in candidates
    )


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


async def checked_addresses(host: str, port: int, allowed_hosts: frozenset[str]) -> list[str]:
    """The addresses of `host`, all of them public unless the host is allow-listed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedAddress(f"cannot resolve host '{host}': {getattr(exc, 'strerror', None) or exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise RefusedAddress(f"cannot resolve host '{host}'")
    if _normal_host(host) not in allowed_hosts:
        bad = [a for a in addresses if forbidden_address(a)]
        if bad:
            raise RefusedAddress(
                f"refused to connect to '{host}': it resolves to a private or otherwise non-public address ({bad[0]})"
            )
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allowed_hosts: frozenset[str]):
        self.allowed_hosts = allowed_hosts
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = await checked_addresses(host, port, self.allowed_hosts)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise RefusedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _Stream(httpx.AsyncByteStream):
    def __init__(self, stream):
        self.stream = stream

    async def __aiter__(self):
        async for part in self.stream:
            yield part

    async def aclose(self) -> None:
        if hasattr(self.stream, "aclose"):
            await self.stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection is opened by `_GuardedBackend`."""

    def __init__(self, allowed_hosts: frozenset[str]):
        try:
            context = httpx.create_ssl_context()
        except AttributeError:  # pragma: no cover - older httpx
            context = ssl.create_default_context()
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=_GuardedBackend(allowed_hosts), retries=0, max_connections=4
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = await self.pool.handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


# --- the tool ----------------------------------------------------------------------------------


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
