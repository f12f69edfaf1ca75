"""The interfaces the host programs against: a `Session` per key, and a `SessionStore` that keeps them.

Two stores implement them: `LocalSessionStore` (kernels in nsjail on this machine, the default) and
`GatewaySessionStore` (kernels in a Jupyter Kernel Gateway shared by several workers); backends.py
picks one. `UnavailableStore` stands in when no sandbox works: its calls fail with a readable
`SandboxUnavailable`, so the tool can tell the model instead of running code unsandboxed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from .errors import SandboxUnavailable
from .execution import Execution, FileInfo


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
    # What bounds a session's resources: `cgroup v2`, `cgroup v1` or `rlimits` (see budget.py), `none`
    # (unsandboxed), `gateway` (the gateway's operator decides) or `unavailable`.
    limits: str
    # The figures behind `limits` (memory_mb, max_processes, cpu_quota, cpus, data_mb), where this process sets them.
    budgets: Mapping[str, float]

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

    limits = "unavailable"
    budgets: Mapping[str, float] = MappingProxyType({})

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
