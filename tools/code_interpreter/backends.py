"""Which store serves the sessions: kernels in nsjail on this machine, or in a Jupyter Kernel Gateway."""

from __future__ import annotations

from .config import CodeInterpreterConfig
from .gateway import GatewaySessionStore, KernelIdMapping
from .local import LocalSessionStore
from .store import SessionStore


async def open_session_store(
    config: CodeInterpreterConfig, *, mapping: KernelIdMapping | None = None
) -> SessionStore:
    """The configured store, started; an `UnavailableStore` (logged once) if it cannot work here.

    `mapping` (gateway backend only) is where key → kernel id lives, shared by the workers; an
    in-memory one serves a single process.
    """
    if config.backend == "gateway":
        return await GatewaySessionStore.open(config, mapping=mapping)
    return await LocalSessionStore.open(config)
