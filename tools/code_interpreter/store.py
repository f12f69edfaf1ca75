"""The interfaces the host programs against: a `Session` per key, and a `SessionStore` that keeps them.

Two stores implement them: `LocalSessionStore` (kernels in nsjail on this machine, the default) and
`GatewaySessionStore` (kernels in a Jupyter Kernel Gateway shared by several workers).
`open_session_store` picks one from the configuration and returns a store whose calls fail with a
readable `SandboxUnavailable` when no sandbox works, so the tool can tell the model instead of
running code unsandboxed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .config import CodeInterpreterConfig
from .errors import SandboxUnavailable
from .execution import Execution, FileInfo

if TYPE_CHECKING:
    from .gateway import KernelIdMapping

log = logging.getLogger(__name__)


@runtime_checkable
class Session(Protocol):
    """A stateful Python kernel with its own /mnt/data."""

    key: str
    # Unique per kernel lifetime: a session that replaced an expired one has a new id (files staged
    # for the old id are gone).
    id: str

    async def execute(self, code: str) -> Execution: ...

    async def put_file(self, name: str, data: bytes) -> str:
        """Place bytes at /mnt/data/<name> (replacing what is there); returns that path."""
        ...

    async def read_file(self, name: str) -> bytes: ...

    async def list_files(self) -> list[FileInfo]: ...


@runtime_checkable
class SessionStore(Protocol):
    async def session(self, key: str) -> Session:
        """The running session of `key`, started if there is none."""
        ...

    async def stop(self, key: str) -> None: ...

    async def reap_idle(self) -> list[str]:
        """Stop sessions unused for longer than the idle timeout; returns their keys."""
        ...

    async def aclose(self) -> None:
        """Stop every session of this store (and its background tasks)."""
        ...


class UnavailableStore:
    """Stands in when no sandbox works: every call says why, nothing runs."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def session(self, key: str) -> Session:
        raise SandboxUnavailable(f"Code execution is unavailable on this server: {self.reason}.")

    async def stop(self, key: str) -> None:
        return None

    async def reap_idle(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


async def open_session_store(
    config: CodeInterpreterConfig, *, mapping: KernelIdMapping | None = None
) -> SessionStore:
    """The configured store, started; an `UnavailableStore` (logged once) if it cannot work here.

    `mapping` (gateway backend only) is where key → kernel id lives, shared by the workers; an
    in-memory one serves a single process.
    """
    if config.backend == "gateway":
        from .gateway import GatewaySessionStore

        return await GatewaySessionStore.open(config, mapping=mapping)
    from .local import LocalSessionStore

    return await LocalSessionStore.open(config)
