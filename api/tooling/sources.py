"""What OpenAPI actions and MCP servers have in common as sources of a run's tools: a tenant
registers them (their secrets, an action's credentials or a server's headers, sealed at rest and
never shown), an assistant or run enables them by id, and a run may bring secrets of its own for
them, sealed into the run's config (the executor that runs it may be another process) and used
over the stored ones. `actions.SOURCE` and `mcp_servers.SOURCE` describe the two."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from api.contract.errors import InvalidRequest
from api.security import crypto
from api.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Edits:
    """What a modify request gives for the fields every tool source's object has. Only the fields
    in `given` change; `null` means what leaving the field out means on create."""

    given: frozenset[str]
    name: str | None = None
    description: str | None = None
    metadata: dict | None = None

    @classmethod
    def of(cls, body: Any) -> Edits:
        """The edits of a request body (a pydantic model: the fields it was given)."""
        return cls(frozenset(body.model_fields_set), body.name, body.description, body.metadata)

    def apply(
        self,
        obj: dict,
        *,
        name: Callable[[str | None], str],
        description: Callable[[str | None], str | None] = lambda given: given,
    ) -> None:
        """Changes `obj`; `name` and `description` give what a value (or `null`) stands for."""
        if "name" in self.given:
            obj["name"] = name(self.name)
        if "description" in self.given:
            obj["description"] = description(self.description)
        if "metadata" in self.given:
            obj["metadata"] = self.metadata or {}


@dataclass(frozen=True)
class ToolSource:
    noun: str
    """What errors and logs call one ("action", "MCP server")."""
    select_ids: str
    """SQL: the ids among ANY(%s) that the tenant (%s) registered."""
    run_param: str
    """The run's parameter (and key of its config) holding its own secrets by id."""
    run_secrets: str
    """What those are called in errors ("action credentials")."""
    check_run_secret: Callable[[Any, str], dict]
    """One id's run secrets validated (a 400 naming the parameter given), as stored."""

    async def missing(self, conn: AsyncConnection, tenant: str, ids: list[str], *, shared: Collection[str] = ()) -> list[str]:
        """The ids (in the order given, once each) that name neither one of the tenant's nor one of `shared`."""
        if not ids:
            return []
        found = set(shared)
        registered = [i for i in ids if i not in found]
        if registered:
            rows = await (await conn.execute(self.select_ids, (registered, tenant))).fetchall()
            found |= {row["id"] for row in rows}
        return [i for i in dict.fromkeys(ids) if i not in found]

    async def seal_run_secrets(
        self,
        conn: AsyncConnection,
        settings: Settings,
        tenant: str,
        given: dict[str, Any],
        *,
        shared: Collection[str] = (),
        refuse: Callable[[str], None] | None = None,
    ) -> str:
        """The secrets a client supplies with a run, by id: checked (`refuse` may turn down an id
        that exists), and sealed for the run's config."""
        plain = {i: self.check_run_secret(value, f"{self.run_param}.{i}") for i, value in given.items()}
        missing = await self.missing(conn, tenant, list(given), shared=shared)
        if missing:
            raise InvalidRequest(f"No {self.noun} with id '{missing[0]}'.", param=self.run_param)
        for source_id in given:
            if refuse is not None:
                refuse(source_id)
        before = f"a run's {self.run_secrets} can be accepted"
        return crypto.seal(settings, plain, param=self.run_param, before=before).decode()

    def run_secrets_of(self, settings: Settings, config: dict) -> dict[str, dict]:
        """The secrets the client supplied with the run, by id (none: empty)."""
        return crypto.unseal(settings, config.get(self.run_param), default={})

    def gone(self, source_id: str) -> None:
        log.info("%s %s no longer exists; its tools are not offered", self.noun, source_id)
