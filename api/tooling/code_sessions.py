"""code_interpreter as the server runs it: this process's session store (local jails, or a Jupyter
Kernel Gateway whose thread → kernel mapping lives in Postgres so every worker finds a thread's
kernel), and the tool bound per run to its thread's session, with the assistant's and the thread's
files placed in /mnt/data before the code runs and whatever the code writes or draws stored as
Files of the run's tenant."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import PurePosixPath

from psycopg_pool import AsyncConnectionPool

from api.files import files_store, generated
from api.files.file_store import StoreUnavailable, store_for
from api.settings import Settings
from api.storage import store
from tools.code_interpreter import (
    CodeInterpreterConfig,
    CodeInterpreterTool,
    Session,
    SessionStore,
    open_session_store,
)

log = logging.getLogger(__name__)

GET_KERNEL = "SELECT kernel_id FROM code_interpreter_kernels WHERE key = %s"
CLAIM_KERNEL = """
    WITH claimed AS (
        INSERT INTO code_interpreter_kernels (key, kernel_id) VALUES (%s, %s)
        ON CONFLICT (key) DO NOTHING RETURNING kernel_id
    )
    SELECT kernel_id FROM claimed UNION ALL SELECT kernel_id FROM code_interpreter_kernels WHERE key = %s
    LIMIT 1
"""
RELEASE_KERNEL = "DELETE FROM code_interpreter_kernels WHERE key = %s AND kernel_id = %s"
# Sessions whose staged files are remembered; one that falls out has its files placed again.
STAGED_SESSIONS_KEPT = 1000
# What bounds this process's sessions (the store's `limits`), for /readyz; None: it runs no code.
_limits_in_force: dict | None = None


def limits_in_force() -> dict | None:
    """What bounds this process's code_interpreter sessions: the kind of budget and its figures."""
    return _limits_in_force


def config_from(settings: Settings) -> CodeInterpreterConfig:
    group = settings.code_interpreter
    token = group.gateway_token
    return CodeInterpreterConfig(
        **group.model_dump(exclude={"gateway_token"}), gateway_token=token.get_secret_value() if token else None
    )


class PostgresKernelIds:
    """Thread → gateway kernel id, shared by every process of the database."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def get(self, key: str) -> str | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(GET_KERNEL, (key,))).fetchone()
        return row["kernel_id"] if row else None

    async def claim(self, key: str, kernel_id: str) -> str:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(CLAIM_KERNEL, (key, kernel_id, key))).fetchone()
        return row["kernel_id"]

    async def release(self, key: str, kernel_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(RELEASE_KERNEL, (key, kernel_id))


class CodeSessions:
    def __init__(self, sessions: SessionStore, pool: AsyncConnectionPool, settings: Settings):
        self.sessions = sessions
        self.pool = pool
        self.settings = settings
        self.files = store_for(settings)
        # Input files already placed in each session (by session id: a replaced session starts empty),
        # for the most recently used sessions.
        self._staged: OrderedDict[str, set[str]] = OrderedDict()

    @classmethod
    async def open(cls, pool: AsyncConnectionPool, settings: Settings) -> "CodeSessions":
        global _limits_in_force
        mapping = PostgresKernelIds(pool) if settings.code_interpreter.backend == "gateway" else None
        sessions = await open_session_store(config_from(settings), mapping=mapping)
        _limits_in_force = {"limits": sessions.limits, **sessions.budgets}
        return cls(sessions, pool, settings)

    async def close(self) -> None:
        global _limits_in_force
        _limits_in_force = None
        await self.sessions.aclose()

    async def tool_for(self, run: dict, tenant: str) -> CodeInterpreterTool:
        """The tool, bound to the run's thread's session and to the files the run may use."""
        files = await self._input_files(run, tenant)
        thread_id = run["thread_id"]

        async def session() -> Session:
            current = await self.sessions.session(thread_id)
            staged = self._staged.setdefault(current.id, set())
            self._staged.move_to_end(current.id)
            while len(self._staged) > STAGED_SESSIONS_KEPT:
                self._staged.popitem(last=False)
            for file_id, (name, stored) in files.items():
                if file_id in staged:
                    continue
                try:
                    data = await self.files.read_bytes(stored)
                except FileNotFoundError:
                    log.warning("file %s of thread %s has no bytes; not placed in /mnt/data", file_id, thread_id)
                    continue
                except StoreUnavailable as exc:
                    # Not remembered as placed: the next call of the tool tries again.
                    log.warning("file %s of thread %s not placed in /mnt/data: the file store is unavailable (%s)", file_id, thread_id, exc)
                    continue
                await current.put_file(name, data)
                staged.add(file_id)
            return current

        # The same bytes are stored once per run: re-run code writes the same chart and files again.
        # Displayed images (named by the tool) by their bytes alone, files by name and bytes.
        saved: dict[tuple[str, str], str] = {}

        async def save_output(name: str, data: bytes, mime: str) -> str:
            key = (hashlib.sha256(data).hexdigest(), "" if name.startswith("image-") else name)
            if key not in saved:
                saved[key] = (await generated.create(self.pool, self.files, tenant, name, data))["id"]
            return saved[key]

        tool = CodeInterpreterTool(session=session, save_output=save_output)
        if files:
            listed = ", ".join(f"/mnt/data/{name}" for name, _ in files.values())
            tool.description += f"\n\nFiles available to the code: {listed}."
        return tool

    async def _input_files(self, run: dict, tenant: str) -> dict[str, tuple[str, str]]:
        """file id → (name in /mnt/data, storage path) for the assistant's and the thread's files."""
        own = ((run.get("tool_resources") or {}).get("code_interpreter") or {}).get("file_ids") or []
        async with self.pool.connection() as conn:
            thread = await store.get(conn, "threads", run["thread_id"], tenant)
            of_thread = (((thread or {}).get("tool_resources") or {}).get("code_interpreter") or {}).get("file_ids") or []
            files: dict[str, tuple[str, str]] = {}
            taken: set[str] = set()
            for file_id in dict.fromkeys([*own, *of_thread]):
                found = await files_store.get(conn, file_id, tenant)
                if found is None:
                    continue  # deleted since it was attached
                obj, stored = found
                name = PurePosixPath(obj["filename"]).name or file_id
                if name in taken:
                    name = f"{file_id}-{name}"  # two files of one name: both stay reachable
                taken.add(name)
                files[file_id] = (name, stored)
        return files
