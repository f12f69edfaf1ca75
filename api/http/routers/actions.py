"""OpenAPI actions (`/actions`): register an OpenAPI 3 document whose operations assistants can
call as tools. Credentials given in `auth` are stored encrypted and never returned."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import Field, field_validator

from api.contract import objects
from api.contract.errors import not_found
from api.contract.schemas import WithMetadata, refuse_null
from api.http.deps import App, PageParams, _id_checker
from api.storage import store
from api.tooling import actions
from api.tooling.sources import Edits

router = APIRouter(prefix="/actions", tags=["actions"])

ActionId = Annotated[str, Depends(_id_checker("action_id", "action_"))]


class CreateAction(WithMetadata):
    openapi: dict[str, Any] | str = Field(description="The OpenAPI 3 document: a JSON object, or JSON/YAML text.")
    name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=2048)
    # Checked by actions.validate_credentials, whose errors name `auth.<field>` without the union's tag.
    auth: dict[str, Any] | None = None


class ModifyAction(CreateAction):
    """Only the fields given change; `auth: null` removes the stored credentials."""

    openapi: dict[str, Any] | str | None = Field(  # type: ignore[assignment]
        default=None, description="A new OpenAPI 3 document; operations and server follow it."
    )

    # An action always has a document.
    _document_given = field_validator("openapi")(refuse_null("an OpenAPI 3 document"))


@router.post("")
async def create_action(body: CreateAction, app: App) -> dict:
    doc = actions.parse(body.openapi)
    auth = actions.validate_credentials(body.auth)
    sealed = actions.seal(app.settings, auth)
    obj = actions.new_action_object(
        doc, name=body.name, description=body.description, auth=auth, metadata=body.metadata
    )
    async with app.pool.connection() as conn:
        await actions.insert_action(conn, obj, app.tenant, doc, sealed)
    return obj


@router.get("")
async def list_actions(app: App, page: PageParams) -> dict:
    async with app.pool.connection() as conn:
        items, more = await store.list_page(
            conn, "actions", tenant=app.tenant, filters={}, **vars(page)
        )
    return objects.page(items, more)


@router.get("/{action_id}")
async def retrieve_action(action_id: ActionId, app: App) -> dict:
    async with app.pool.connection() as conn:
        action = await store.get(conn, "actions", action_id, app.tenant)
    if action is None:
        raise not_found("action", action_id)
    return action


@router.post("/{action_id}")
async def modify_action(action_id: ActionId, body: ModifyAction, app: App) -> dict:
    given = body.model_fields_set
    # Everything that can be refused is checked before the row is locked.
    doc = actions.parse(body.openapi) if "openapi" in given else None
    auth = actions.validate_credentials(body.auth)
    sealed = actions.seal(app.settings, auth)
    async with app.pool.connection() as conn:
        return await actions.modify_action(conn, action_id, app.tenant, Edits.of(body), doc=doc, auth=auth, sealed=sealed)


@router.delete("/{action_id}")
async def delete_action(action_id: ActionId, app: App) -> dict:
    async with app.pool.connection() as conn:
        if not await store.delete(conn, "actions", action_id, app.tenant):
            raise not_found("action", action_id)
    return objects.deleted(action_id, "action")
