"""File bytes in S3-compatible object storage, through aiobotocore (botocore's async client).

Objects are `<prefix>/<storage_path>` in one bucket. Uploads of more than one part go up as an S3
multipart upload, one part at a time as the request body arrives (so a process holds one part,
not the file); a smaller one is a single PUT. A failed or refused upload is aborted, so no parts
are left behind. Downloads stream the GET's body.

A client is opened per operation (per upload for a multipart one) from one long-lived session:
no connection outlives the event loop that opened it, and nothing needs closing at shutdown.
Any failure other than a missing key becomes `StoreUnavailable` (a 503 for the request).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from api.files.file_store import READ_CHUNK_BYTES, StoreUnavailable

log = logging.getLogger(__name__)

# S3's smallest part but the last is 5 MiB; a little more means fewer requests for large files.
PART_BYTES = 8 * 1024 * 1024
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
_MISSING = ("NoSuchKey", "404", "NotFound")


def _translate(exc: BaseException, key: str) -> BaseException | None:
    """The exception a store failure becomes (None: not a store failure, let it through)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _MISSING:
            return FileNotFoundError(key)
        return StoreUnavailable(f"{code or 'error'}: {error.get('Message') or exc}")
    if isinstance(exc, (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)) and not isinstance(
        exc, FileNotFoundError
    ):
        return StoreUnavailable(str(exc) or type(exc).__name__)
    return None


class _MultipartWriter:
    part_bytes = PART_BYTES

    def __init__(self, store: S3Store, key: str):
        self.store = store
        self.key = key
        self.stack: AsyncExitStack | None = None
        self.s3 = None
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    async def write(self, part: bytes) -> None:
        try:
            if self.upload_id is None:
                self.stack = AsyncExitStack()
                self.s3 = await self.stack.enter_async_context(self.store.client(self.key))
                created = await self.s3.create_multipart_upload(Bucket=self.store.bucket, Key=self.key)
                self.upload_id = created["UploadId"]
            await self._part(part)
        except Exception as exc:
            raise _translate(exc, self.key) or exc from None

    async def _part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        sent = await self.s3.upload_part(
            Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def finish(self, last: bytes) -> None:
        if self.upload_id is None:
            await self.store.put_key(self.key, last)
            return
        try:
            if last:
                await self._part(last)
            await self.s3.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
            self.upload_id = None
        except Exception as exc:
            raise _translate(exc, self.key) or exc from None
        finally:
            await self._close()

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            if self.upload_id is not None:
                try:
                    await self.s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
                except Exception as exc:  # noqa: BLE001 - said in the log; the caller's own error matters more
                    log.warning(
                        "could not abort the multipart upload of %s (%s); the bucket's lifecycle rule for "
                        "incomplete uploads removes its parts",
                        self.key,
                        _translate(exc, self.key) or exc,
                    )
                self.upload_id = None
            await self._close()

    async def _close(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await stack.aclose()
                except Exception:  # noqa: BLE001 - closing a client whose connection already failed
                    pass


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._session = get_session()
        # Credentials left unset fall to botocore's own chain (instance profile, web identity…),
        # which is how a deployment on a cloud host usually gets them.
        self._client_args = dict(
            region_name=region or "us-east-1",
            endpoint_url=endpoint_url or None,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            config=AioConfig(
                # Loads the service model in a worker thread, not on the event loop.
                warm_up_loader_caches=True,
                connect_timeout=5,
                read_timeout=60,
                # A few quick retries: an unreachable store answers the request 503 within seconds,
                # and the SDK's own retries take it from there.
                retries={"max_attempts": 3, "mode": "standard"},
                # Self-hosted S3 servers (MinIO and the like) are addressed by path, not virtual host.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            ),
        )

    @classmethod
    def from_url(cls, url: str, **options) -> S3Store:
        parts = urlsplit(url)
        return cls(parts.netloc, parts.path, **options)

    def key(self, stored: str) -> str:
        return f"{self.prefix}/{stored}" if self.prefix else stored

    @asynccontextmanager
    async def client(self, key: str):
        try:
            async with self._session.create_client("s3", **self._client_args) as s3:
                yield s3
        except Exception as exc:
            raise _translate(exc, key) or exc from None

    async def writer(self, stored: str) -> _MultipartWriter:
        return _MultipartWriter(self, self.key(stored))

    async def put(self, stored: str, data: bytes) -> None:
        await self.put_key(self.key(stored), data)

    async def put_key(self, key: str, data: bytes) -> None:
        async with self.client(key) as s3:
            await s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def open(self, stored: str) -> tuple[AsyncIterator[bytes], int]:
        key = self.key(stored)
        stack = AsyncExitStack()
        try:
            s3 = await stack.enter_async_context(self.client(key))
            got = await s3.get_object(Bucket=self.bucket, Key=key)
        except BaseException as exc:
            await stack.aclose()
            raise _translate(exc, key) or exc from None
        return self._chunks(got["Body"], stack, key), got["ContentLength"]

    async def _chunks(self, body, stack: AsyncExitStack, key: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
                yield chunk
        except Exception as exc:
            raise _translate(exc, key) or exc from None
        finally:
            body.close()
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    async def read_bytes(self, stored: str) -> bytes:
        key = self.key(stored)
        async with self.client(key) as s3:
            got = await s3.get_object(Bucket=self.bucket, Key=key)
            async with got["Body"] as body:
                return await body.read()

    async def remove(self, stored: str) -> None:
        key = self.key(stored)
        with anyio.CancelScope(shield=True):
            async with self.client(key) as s3:
                await s3.delete_object(Bucket=self.bucket, Key=key)

    @asynccontextmanager
    async def local_copy(self, stored: str, scratch: Path) -> AsyncIterator[Path]:
        key = self.key(stored)
        path = scratch / f"download-{uuid.uuid4().hex}"
        await anyio.to_thread.run_sync(lambda: scratch.mkdir(parents=True, exist_ok=True))
        try:
            async with self.client(key) as s3:
                got = await s3.get_object(Bucket=self.bucket, Key=key)
                handle = await anyio.to_thread.run_sync(open, path, "wb")
                try:
                    async with got["Body"] as body:
                        async for chunk in body.iter_chunks(DOWNLOAD_CHUNK_BYTES):
                            await anyio.to_thread.run_sync(handle.write, chunk)
                finally:
                    await anyio.to_thread.run_sync(handle.close)
            yield path
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
