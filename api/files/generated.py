"""Files the server makes itself: what code_interpreter's code writes or draws becomes a File of the
run's tenant (purpose `assistants_output`), downloadable like any upload."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
from psycopg_pool import AsyncConnectionPool

from api.contract import objects
from api.contract.ids import new_id
from api.files import file_storage, files_store

PURPOSE = "assistants_output"


async def create(pool: AsyncConnectionPool, data_dir: Path, tenant: str, filename: str, data: bytes) -> dict:
    """Store the bytes and their File row; the File object."""
    file_id = new_id("file")
    stored = file_storage.storage_path(tenant, file_id)
    path = file_storage.local_path(data_dir, stored)

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    await anyio.to_thread.run_sync(write)
    obj = objects.file(file_id, filename, len(data), PURPOSE)
    try:
        async with pool.connection() as conn:
            await files_store.insert(conn, obj, tenant, stored)
    except BaseException:
        await file_storage.remove(data_dir, stored)
        raise
    return obj

