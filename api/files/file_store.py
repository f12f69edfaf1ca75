"""Where file bytes live: one small interface, two backends.

- `LocalStore`: a directory (`<data_dir>`, bytes under `files/…`), the default. Every process that
  reads the bytes (API, and any worker that ingests files or runs code) must see that directory.
- `S3Store` (`api.files.s3_store`): S3-compatible object storage (AWS S3, MinIO, R2, GCS's S3 API…),
  chosen with `ASSISTGRAPH_FILE_STORE=s3://bucket/prefix`; then processes on other machines share
  the bytes through the bucket.

A `files` row keeps `storage_path`, the key relative to the store (`files/<tenant>/<file id>`), so
the same rows work whichever directory or prefix the store is given.

A store that cannot be reached, or refuses an operation, raises `StoreUnavailable`: nothing the
request did, answered 503 (which the SDKs retry) by api/http/errors.py. Bytes that are not there
raise `FileNotFoundError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio

from api.settings import Settings

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
LOCAL_PART_BYTES = 1024 * 1024


class StoreUnavailable(Exception):
    """The file store could not be reached or refused the operation; worth trying again."""


class PartWriter(Protocol):
    """One object being written, part by part (the caller batches the bytes into `part_bytes`)."""

    part_bytes: int

    async def write(self, part: bytes) -> None: ...

    async def finish(self, last: bytes) -> None:
        """Write the last (possibly short or empty) part and make the object visible."""

    async def discard(self) -> None:
        """Drop what was written; never raises (what it cannot drop, it logs)."""


class FileStore(Protocol):
    async def writer(self, stored: str) -> PartWriter: ...

    async def put(self, stored: str, data: bytes) -> None: ...

    async def open(self, stored: str) -> tuple[AsyncIterator[bytes], int]:
        """The bytes as chunks (the iterator releases what it holds when it ends) and their size."""

    async def read_bytes(self, stored: str) -> bytes: ...

    async def remove(self, stored: str) -> None:
        """Delete the bytes; gone already is fine."""

    def local_copy(self, stored: str, scratch: Path) -> AbstractAsyncContextManager[Path]:
        """A local file holding the bytes while the context lasts (`scratch`: where a copy may go)."""


async def remove_all(store: FileStore, keys: Iterable[str], why: str) -> None:
    """Remove the bytes of rows already gone; what could not be removed is said in one log line."""
    left: list[str] = []
    detail = ""
    for key in keys:
        try:
            await store.remove(key)
        except StoreUnavailable as exc:
            left.append(key)
            detail = str(exc)
    if left:
        log.warning("could not remove %d stored file(s) after %s (%s): %s", len(left), why, detail, " ".join(left))


# --- the local directory ------------------------------------------------------------------------


class _LocalWriter:
    part_bytes = LOCAL_PART_BYTES

    def __init__(self, path: Path, handle: BinaryIO):
        self.path = path
        self.handle: BinaryIO | None = handle

    async def write(self, part: bytes) -> None:
        await anyio.to_thread.run_sync(self.handle.write, part)

    async def finish(self, last: bytes) -> None:
        handle = self.handle

        def _close() -> None:
            handle.write(last)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()

        await anyio.to_thread.run_sync(_close)
        self.handle = None

    async def discard(self) -> None:
        handle, self.handle = self.handle, None

        def _discard() -> None:
            if handle is not None:
                handle.close()
            self.path.unlink(missing_ok=True)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_discard)


class LocalStore:
    """Bytes in a directory, every disk operation in a worker thread."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, stored: str) -> Path:
        return self.root / stored

    async def writer(self, stored: str) -> _LocalWriter:
        path = self.path(stored)

        def _open() -> BinaryIO:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "xb")  # noqa: SIM115 - closed by the writer's finish/discard

        return _LocalWriter(path, await anyio.to_thread.run_sync(_open))

    async def put(self, stored: str, data: bytes) -> None:
        writer = await self.writer(stored)
        try:
            await writer.finish(data)
        except BaseException:
            await writer.discard()
            raise

    async def open(self, stored: str) -> tuple[AsyncIterator[bytes], int]:
        # Holding the handle keeps the bytes readable even if the file is deleted meanwhile.
        def _open() -> tuple[BinaryIO, int]:
            handle = open(self.path(stored), "rb")  # noqa: SIM115 - closed by _chunks
            return handle, os.fstat(handle.fileno()).st_size

        handle, size = await anyio.to_thread.run_sync(_open)
        return _chunks(handle), size

    async def read_bytes(self, stored: str) -> bytes:
        return await anyio.to_thread.run_sync(self.path(stored).read_bytes)

    async def remove(self, stored: str) -> None:
        # Shielded, so a cancelled request still cleans up.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(lambda: self.path(stored).unlink(missing_ok=True))
            except OSError as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None

    @asynccontextmanager
    async def local_copy(self, stored: str, scratch: Path) -> AsyncIterator[Path]:
        path = self.path(stored)
        if not await anyio.to_thread.run_sync(path.is_file):
            raise FileNotFoundError(f"{path}; every server and worker process must share the same data_dir")
        yield path


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(handle.read, READ_CHUNK_BYTES):
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(handle.close)


# --- choosing one ---------------------------------------------------------------------------------


def store_for(settings: Settings) -> FileStore:
    """The store the settings name. One per configuration and process: an S3 store keeps its
    client session (and loaded service model) for every request."""
    if not settings.file_store:
        return _local(Path(settings.data_dir))
    secret = settings.aws_secret_access_key
    token = settings.aws_session_token
    return _s3(
        settings.file_store,
        settings.aws_access_key_id,
        secret.get_secret_value() if secret else None,
        token.get_secret_value() if token else None,
        settings.aws_region,
        settings.aws_endpoint_url,
    )


@lru_cache(maxsize=8)
def _local(root: Path) -> LocalStore:
    return LocalStore(root)


@lru_cache(maxsize=8)
def _s3(url: str, key_id: str | None, secret: str | None, token: str | None, region: str | None, endpoint: str | None):
    from api.files.s3_store import S3Store  # only deployments that use S3 load botocore

    return S3Store.from_url(
        url, access_key_id=key_id, secret_access_key=secret, session_token=token, region=region, endpoint_url=endpoint
    )
