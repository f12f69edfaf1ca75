"""OpenAPI actions at rest: the registered document, its public object and its credentials
(Fernet-encrypted under ASSISTGRAPH_SECRET_KEY, never part of any response), and the tools a run
builds from them (tools/openapi_actions does the HTTP).
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from api.contract.errors import InvalidRequest, not_found
from api.contract.ids import new_id, now
from api.security import crypto
from api.settings import Settings
from api.tooling.sources import Edits, ToolSource
from tools import openapi_actions as oa
from tools.functions import unique_name

Credentials = oa.Credentials

INSERT_ACTION = "INSERT INTO actions (id, tenant_id, document, credentials, obj) VALUES (%s, %s, %s, %s, %s)"
SELECT_ACTION_IDS = "SELECT id FROM actions WHERE id = ANY(%s) AND tenant_id = %s"
SELECT_RUN_ACTIONS = "SELECT id, document, credentials FROM actions WHERE id = ANY(%s) AND tenant_id = %s"
# Modifies of one action are serialised: two at once would each write back the object they read,
# and one change would be lost. `info` gives what a `null` name or description falls back to.
SELECT_ACTION_FOR_UPDATE = (
    "SELECT obj, document->'info' AS info FROM actions WHERE id = %s AND tenant_id = %s FOR UPDATE"
)
# Only what the request gives changes: a NULL document keeps the stored one, and the stored
# credentials stay unless `replace_credentials` (`auth` given, NULL when it was `null`).
UPDATE_ACTION = """
    UPDATE actions SET
        obj = %(obj)s,
        document = COALESCE(%(document)s, document),
        credentials = CASE WHEN %(replace_credentials)s THEN %(credentials)s ELSE credentials END
    WHERE id = %(id)s AND tenant_id = %(tenant)s
"""


def parse(source: Any) -> dict:
    """The validated document, or a 400 naming `openapi`."""
    try:
        return oa.parse_document(source)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid value for 'openapi': {exc}", param="openapi") from None


def validate_credentials(value: Any, param: str = "auth") -> Credentials | None:
    """`value` as Credentials, or a 400 naming the offending field (`auth.token`, `auth.type`, ...).

    Secrets given in `value` never appear in the error."""
    if value is None or isinstance(value, Credentials):
        return value
    try:
        return Credentials.model_validate(value)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        kind = err["type"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            raise InvalidRequest(
                f"Invalid value for '{param}.type': expected one of 'api_key', 'bearer', 'basic'.",
                param=f"{param}.type",
            ) from None
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            raise InvalidRequest(f"Invalid value for '{param}': expected an object.", param=param) from None
        # loc is (tag, field, ...): the tag is the `type` the caller gave, not a field of theirs.
        field = ".".join(str(part) for part in err["loc"][1:])
        where = f"{param}.{field}" if field else param
        if kind == "missing":
            message = f"Missing required parameter: '{where}'."
        elif kind == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {where}"
        else:
            message = f"Invalid value for '{where}': {err['msg'].removeprefix('Value error, ')}"
        raise InvalidRequest(message, param=where) from None


def seal(settings: Settings, credentials: Credentials | None) -> bytes | None:
    """Credentials encrypted for storage; a 400 on `auth` when no secret key is configured."""
    if credentials is None:
        return None
    return crypto.seal(settings, credentials.plain(), param="auth", before="an action's credentials can be stored")


def unseal(settings: Settings, sealed: bytes | None) -> dict | None:
    return crypto.unseal(settings, sealed)


SOURCE = ToolSource(
    noun="action",
    select_ids=SELECT_ACTION_IDS,
    run_param="action_credentials",
    run_secrets="action credentials",
    check_run_secret=lambda value, param: validate_credentials(value, param=param).plain(),
)


def _info_text(info: Any, key: str) -> str | None:
    value = info.get(key) if isinstance(info, dict) else None
    return value if isinstance(value, str) else None


def _name(name: str | None, info: Any) -> str:
    return name or _info_text(info, "title") or "action"


def _description(description: str | None, info: Any) -> str | None:
    return description if description is not None else _info_text(info, "description")


def _document_fields(doc: dict) -> dict:
    return {"server_url": oa.server_url(doc), "operations": [op.public() for op in oa.operations(doc)]}


def _public_auth(auth: Credentials | None) -> dict:
    return auth.public() if auth is not None else {"type": "none"}


def new_action_object(
    doc: dict,
    *,
    name: str | None,
    description: str | None,
    auth: Credentials | None,
    metadata: dict | None,
) -> dict:
    info = doc.get("info")
    return {
        "id": new_id("action"),
        "object": "action",
        "created_at": now(),
        "name": _name(name, info),
        "description": _description(description, info),
        **_document_fields(doc),
        "auth": _public_auth(auth),
        "metadata": metadata or {},
    }


async def insert_action(conn: AsyncConnection, obj: dict, tenant: str, doc: dict, sealed: bytes | None) -> None:
    await conn.execute(INSERT_ACTION, (obj["id"], tenant, Jsonb(doc), sealed, Jsonb(obj)))


async def modify_action(
    conn: AsyncConnection, action_id: str, tenant: str, edits: Edits, *,
    doc: dict | None = None, auth: Credentials | None = None, sealed: bytes | None = None,
) -> dict:
    """The action with the fields `edits` gives changed, stored in one transaction.

    `doc` and `auth`/`sealed` are validated (and sealed) by the caller, so nothing the client gave
    is refused while the row is locked. `null` means what leaving the field out means on create: the document's title or
    description, no credentials, no metadata."""
    async with conn.transaction():
        row = await (await conn.execute(SELECT_ACTION_FOR_UPDATE, (action_id, tenant))).fetchone()
        if row is None:
            raise not_found("action", action_id)
        obj = dict(row["obj"])
        info = doc.get("info") if doc is not None else row["info"]
        if doc is not None:
            obj.update(_document_fields(doc))
        edits.apply(obj, name=lambda name: _name(name, info), description=lambda text: _description(text, info))
        if "auth" in edits.given:
            obj["auth"] = _public_auth(auth)
        await conn.execute(
            UPDATE_ACTION,
            {
                "obj": Jsonb(obj),
                "document": Jsonb(doc) if doc is not None else None,
                "replace_credentials": "auth" in edits.given,
                "credentials": sealed,
                "id": action_id,
                "tenant": tenant,
            },
        )
    return obj


async def missing_actions(conn: AsyncConnection, tenant: str, ids: list[str]) -> list[str]:
    """The ids (in the order given) that name no action of the tenant."""
    return await SOURCE.missing(conn, tenant, ids)


async def tools_for_run(
    pool: AsyncConnectionPool, settings: Settings, tenant: str, action_ids: list[str], config: dict, *,
    taken_names: set[str] | frozenset[str] = frozenset(),
) -> list[BaseTool]:
    """The tools of the tenant's actions, in the order of `action_ids`.

    Credentials given with the run (by action id) replace the stored ones. Actions deleted since
    they were attached are skipped. A tool whose name is already used (by an earlier action or in
    `taken_names`, e.g. the run's function tools) gets a numeric suffix.
    """
    ids = list(dict.fromkeys(action_ids))
    if not ids:
        return []
    given = SOURCE.run_secrets_of(settings, config)
    async with pool.connection() as conn:
        rows = await (await conn.execute(SELECT_RUN_ACTIONS, (ids, tenant))).fetchall()
    by_id = {row["id"]: row for row in rows}
    names = set(taken_names)
    tools: list[BaseTool] = []
    for action_id in ids:
        row = by_id.get(action_id)
        if row is None:
            SOURCE.gone(action_id)
            continue
        credentials: Any = given.get(action_id)
        if credentials is None:
            credentials = unseal(settings, row["credentials"])
        for tool in oa.action_tools(
            row["document"],
            credentials=credentials,
            timeout=settings.action_timeout,
            max_bytes=settings.action_max_response_bytes,
            allowed_hosts=settings.actions_allowed_hosts,
        ):
            tool.name = unique_name(tool.name, names)
            tools.append(tool)
    return tools


async def seal_run_credentials(conn: AsyncConnection, settings: Settings, tenant: str, given: dict[str, Any]) -> str:
    """Credentials a client supplies with a run, checked and encrypted for the run's config."""
    return await SOURCE.seal_run_secrets(conn, settings, tenant, given)
