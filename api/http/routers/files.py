"""The Files API: upload (multipart/form-data), list, retrieve, delete, download.

Bytes live in the file store (`api.files.file_store`: a local directory or S3), the File object in the
`files` table (`api.files.files_store`).
Files carry no `OpenAI-Beta` header and have their own pagination (limit up to 10 000, no `before`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from api.contract import objects
from api.contract.errors import InvalidRequest, NotFound
from api.contract.ids import new_id, now
from api.files import file_storage, files_store
from api.files.file_store import StoreUnavailable, remove_all, store_for
from api.http.deps import App, _id_checker
from api.observability.logs import ResponseCutShort
from api.storage import store

log = logging.getLogger(__name__)

router = APIRouter(prefix="/files", tags=["files"])

FileId = Annotated[str, Depends(_id_checker("file_id", "file-"))]

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_EXPIRES_SECONDS = 3600
MAX_EXPIRES_SECONDS = 30 * 24 * 3600
# Like OpenAI: batch input files expire after 30 days unless told otherwise.
BATCH_DEFAULT_EXPIRES_SECONDS = 30 * 24 * 3600

ANCHOR_FIELD = "expires_after[anchor]"
SECONDS_FIELD = "expires_after[seconds]"
# Form fields arrive bracket-encoded; errors name them the way every other nested param is named.
_PARAM_NAMES = {ANCHOR_FIELD: "expires_after.anchor", SECONDS_FIELD: "expires_after.seconds"}

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                        ANCHOR_FIELD: {"type": "string", "enum": ["created_at"]},
                        SECONDS_FIELD: {
                            "type": "integer",
                            "minimum": MIN_EXPIRES_SECONDS,
                            "maximum": MAX_EXPIRES_SECONDS,
                        },
                    },
                }
            }
        },
    }
}


def no_such_file(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")


def _seconds(value: str) -> int:
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = None
    if seconds is None or not MIN_EXPIRES_SECONDS <= seconds <= MAX_EXPIRES_SECONDS:
        raise InvalidRequest(
            f"Invalid value for 'expires_after.seconds': expected an integer between "
            f"{MIN_EXPIRES_SECONDS} and {MAX_EXPIRES_SECONDS}, got '{value[:64]}'.",
            param="expires_after.seconds",
        )
    return seconds


def _check_field(name: str, value: str) -> None:
    """Called for each form field as soon as it has arrived, so a bad one ends the upload early."""
    if name == "purpose":
        if value not in PURPOSES:
            supported = ", ".join(f"'{p}'" for p in PURPOSES)
            raise InvalidRequest(
                f"Invalid value for 'purpose': '{value[:64]}'. Supported values are: {supported}.",
                param="purpose",
            )
    elif name == ANCHOR_FIELD:
        if value != "created_at":
            raise InvalidRequest(
                f"Invalid value for 'expires_after.anchor': '{value[:64]}'. Supported values are: 'created_at'.",
                param="expires_after.anchor",
            )
    elif name == SECONDS_FIELD:
        _seconds(value)
    else:
        raise InvalidRequest(f"Unrecognized request argument supplied: {name[:64]}", param=name[:64])


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)


def _file_object(file_id: str, upload: file_storage.Upload) -> dict:
    fields = upload.fields
    if upload.filename is None:
        raise _missing("file")
    if "purpose" not in fields:
        raise _missing("purpose")
    for present, absent in ((ANCHOR_FIELD, SECONDS_FIELD), (SECONDS_FIELD, ANCHOR_FIELD)):
        if present in fields and absent not in fields:
            raise _missing(_PARAM_NAMES[absent])
    if SECONDS_FIELD in fields:
        expires_at = now() + _seconds(fields[SECONDS_FIELD])
    elif fields["purpose"] == "batch":
        expires_at = now() + BATCH_DEFAULT_EXPIRES_SECONDS
    else:
        expires_at = None
    return objects.file(file_id, upload.filename, upload.bytes, fields["purpose"], expires_at=expires_at)


async def _live_file(app: App, file_id: str) -> tuple[dict, str]:
    """The File object and its storage path; an expired file is deleted on sight and is not found."""
    async with app.pool.connection() as conn:
        found = await files_store.get(conn, file_id, app.tenant)
        if found is not None and files_store.is_expired(found[0], now()):
            await files_store.delete(conn, file_id, app.tenant)
            await remove_all(store_for(app.settings), [found[1]], "its expiry")
            found = None
    if found is None:
        raise no_such_file(file_id)
    return found


@router.post("", openapi_extra=_UPLOAD_SCHEMA)
async def create_file(request: Request, app: App) -> dict:
    file_id = new_id("file")
    stored = file_storage.storage_path(app.tenant, file_id)
    files = store_for(app.settings)
    # The row goes in only once the bytes are stored, and the bytes go again if the row does not.
    upload = await file_storage.receive_upload(request, files, stored, _check_field)
    try:
        obj = _file_object(file_id, upload)
        async with app.pool.connection() as conn:
            await files_store.insert(conn, obj, app.tenant, stored)
    except BaseException:
        await remove_all(files, [stored], "a refused upload")
        raise
    return obj


@router.get("")
async def list_files(
    app: App,
    purpose: str | None = Query(None),
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = Query("desc"),
    after: str | None = Query(None),
) -> dict:
    async with app.pool.connection() as conn:
        expired = await files_store.delete_expired(conn, app.tenant, now())
        items, more = await store.list_page(
            conn,
            "files",
            tenant=app.tenant,
            filters={"purpose": purpose} if purpose else {},
            limit=limit,
            order=order,
            after=after,
            before=None,
        )
    await remove_all(store_for(app.settings), expired, "their expiry")
    return objects.page(items, more)


@router.get("/{file_id}")
async def retrieve_file(file_id: FileId, app: App) -> dict:
    obj, _ = await _live_file(app, file_id)
    return obj


@router.delete("/{file_id}")
async def delete_file(file_id: FileId, app: App) -> dict:
    # Deleting the row also removes the file from every vector store (ON DELETE CASCADE). The
    # bytes are removed before the row's deletion commits: a store that cannot remove them rolls
    # it back (a 503 to retry), so neither a row without bytes nor bytes without a row are left.
    async with app.pool.connection() as conn, conn.transaction():
        deleted = await files_store.delete(conn, file_id, app.tenant)
        if deleted is None:
            raise no_such_file(file_id)
        obj, stored = deleted
        await store_for(app.settings).remove(stored)
    if files_store.is_expired(obj, now()):
        raise no_such_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/{file_id}/content")
async def download_file(file_id: FileId, app: App) -> StreamingResponse:
    obj, stored = await _live_file(app, file_id)
    try:
        chunks, size = await store_for(app.settings).open(stored)
    except FileNotFoundError:
        # Deleted between the lookup and the open, or the bytes were lost.
        log.warning("bytes of %s are missing from %s", file_id, stored)
        raise no_such_file(file_id) from None
    filename = obj["filename"]
    quoted = quote(filename)
    if quoted == filename:
        disposition = f'attachment; filename="{filename}"'
    else:
        disposition = f"attachment; filename*=utf-8''{quoted}"
    return StreamingResponse(
        _cut_short_quietly(chunks, file_id),
        media_type=file_storage.media_type(filename),
        headers={"content-length": str(size), "content-disposition": disposition},
    )


async def _cut_short_quietly(chunks: AsyncIterator[bytes], file_id: str) -> AsyncIterator[bytes]:
    """The store's chunks; a store that fails once the headers are sent (the status and length are
    on their way) ends the response with one warning line: the connection is closed mid-body, so
    the client sees a short read and can download again."""
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                yield chunk
        except StoreUnavailable as exc:
            log.warning("download of %s cut short: file store unavailable (%s)", file_id, exc)
            raise ResponseCutShort(file_id) from None
