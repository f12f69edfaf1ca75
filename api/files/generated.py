"""Files the server makes itself: what code_interpreter's code writes or draws becomes a File of the
run's tenant (purpose `assistants_output`), downloadable like any upload."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from api.contract import objects
from api.contract.ids import new_id
from api.files import file_storage, files_store
from api.files.file_store import FileStore, remove_all

PURPOSE = "assistants_output"


async def create(pool: AsyncConnectionPool, store: FileStore, tenant: str, filename: str, data: bytes) -> dict:
    """Store the bytes and their File row; the File object."""
    file_id = new_id("file")
    stored = file_storage.storage_path(tenant, file_id)
    await store.put(stored, data)
    obj = objects.file(file_id, filename, len(data), PURPOSE)
    try:
        async with pool.connection() as conn:
            await files_store.insert(conn, obj, tenant, stored)
    except BaseException:
        await remove_all(store, [stored], "a File row that could not be written")
        raise
    return obj
