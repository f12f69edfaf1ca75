"""OpenAPI documents: loading and validating them, checking their `$ref`s, and the operations
(with their argument schemas) and server URL they declare."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml

from tools.functions import unique_name

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_DOCUMENT_CHARS = 2_000_000
MAX_OPERATIONS = 128
MAX_SCHEMA_NODES = 20_000
MAX_DESCRIPTION = 1024
# Headers the transport owns; an operation may not set them.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "accept-encoding", "cookie"}
)
SCHEMA_NOISE = ("example", "examples", "xml", "externalDocs", "discriminator", "deprecated")


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
            out.append(dataclasses.replace(operation, name=unique_name(operation.name, taken)))
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
