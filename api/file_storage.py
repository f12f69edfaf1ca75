"""Where uploaded files' bytes live, and how an upload gets there.

Bytes live at `<data_dir>/files/<tenant>/<file id>`; the `files` row keeps that path relative to
`data_dir` (`storage_path`), so a moved data directory keeps working. Every process that reads the
bytes (API, and any worker that ingests files) must see the same `data_dir`.

Uploads are read with a small incremental multipart/form-data parser over `request.stream()`, not
Starlette's `request.form()` / `UploadFile`:
- `request.form()` needs `python-multipart`, which is not a dependency of this project;
- it spools the whole part to a temporary file before the endpoint sees anything, so the 512 MB cap
  could only be checked after a 512 MB+ upload had been written in full, and the bytes would then
  be copied a second time to their final place.
Here the file part is written straight to its final path in 1 MiB batches (each write in a worker
thread, so the event loop never blocks on disk), its size is counted while it arrives, and an upload
that crosses the cap is cut off at that point and its partial file removed. At most one batch plus
one network chunk is ever held in memory.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

import anyio
from starlette.requests import ClientDisconnect, Request

from api.errors import InvalidRequest

MAX_FILE_BYTES = 512 * 1024 * 1024
# Room a body may take beyond the file itself (boundaries, part headers, the small fields) before a
# Content-Length alone proves the file is over the cap.
FORM_OVERHEAD_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_PARTS = 32
WRITE_BATCH_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024

FILE_FIELD = "file"
_SAFE_DIR = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- where the bytes live ----------------------------------------------------------------------


def _tenant_dir(tenant: str) -> str:
    """The tenant's directory name: the tenant id itself when it is a safe path component."""
    if _SAFE_DIR.fullmatch(tenant):
        return tenant
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:32]


def storage_path(tenant: str, file_id: str) -> str:
    """The path stored in `files.storage_path` (relative to `data_dir`)."""
    return f"files/{_tenant_dir(tenant)}/{file_id}"


def local_path(data_dir: Path, stored: str) -> Path:
    """The file on disk for a `files.storage_path` value."""
    return Path(data_dir) / stored


async def remove(data_dir: Path, stored: str) -> None:
    """Delete the bytes (gone already is fine). Shielded, so a cancelled request still cleans up."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: local_path(data_dir, stored).unlink(missing_ok=True))


def media_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def open_for_reading(data_dir: Path, stored: str) -> tuple[BinaryIO, int]:
    """An open handle and the size. Holding the handle keeps the bytes readable even if the file is
    deleted meanwhile. Raises FileNotFoundError when the bytes are gone."""

    def _open() -> tuple[BinaryIO, int]:
        handle = open(local_path(data_dir, stored), "rb")  # noqa: SIM115 - closed by iter_chunks
        return handle, os.fstat(handle.fileno()).st_size

    return await anyio.to_thread.run_sync(_open)


async def iter_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    """The file's bytes in chunks, each read in a worker thread; closes the handle at the end."""
    try:
        while chunk := await anyio.to_thread.run_sync(handle.read, READ_CHUNK_BYTES):
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(handle.close)


# --- receiving an upload -----------------------------------------------------------------------


def too_large() -> InvalidRequest:
    return InvalidRequest(
        f"File is too large: the maximum size of an uploaded file is 512 MB ({MAX_FILE_BYTES} bytes).",
        param=FILE_FIELD,
    )


def _malformed(reason: str) -> InvalidRequest:
    return InvalidRequest(f"Could not parse the multipart/form-data request body: {reason}.")


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None  # None: the request had no `file` part
    bytes: int = 0


class _FileSink:
    """The file part, written to its final path in batches, each write in a worker thread."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: BinaryIO | None = None
        self.pending = bytearray()
        self.size = 0

    async def open(self) -> None:
        def _open() -> BinaryIO:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "xb")  # noqa: SIM115 - closed by finish/discard

        self.handle = await anyio.to_thread.run_sync(_open)

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_FILE_BYTES:
            raise too_large()
        self.pending += data
        if len(self.pending) >= WRITE_BATCH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self.pending and self.handle is not None:
            batch, self.pending = self.pending, bytearray()
            await anyio.to_thread.run_sync(self.handle.write, batch)

    async def finish(self) -> None:
        await self._flush()
        handle = self.handle

        def _close() -> None:
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


_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """`form-data; name="file"; filename="a.txt"` -> ("form-data", {"name": ..., "filename": ...})."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key.endswith("*"):  # RFC 5987: charset'language'percent-encoded
            charset, _, encoded = raw.partition("'")
            _, _, encoded = encoded.partition("'")
            try:
                raw = unquote(encoded, encoding=charset or "utf-8", errors="replace")
            except LookupError:
                raw = unquote(encoded, errors="replace")
        params[key] = raw
    return main.strip().lower(), params


def _part_headers(block: bytes) -> tuple[str, str | None]:
    """The part's field name and file name (None when the part has no filename parameter)."""
    lines: list[str] = []
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t") and lines:  # obsolete line folding
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    disposition = None
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise _malformed("a part header has no ':'")
        if name.strip().lower() == "content-disposition":
            disposition = value.strip()
    if disposition is None:
        raise _malformed("a part has no Content-Disposition header")
    kind, params = _header_params(disposition)
    if kind != "form-data" or "name" not in params:
        raise _malformed("a part's Content-Disposition is not form-data with a name")
    filename = params.get("filename*", params.get("filename"))
    return params["name"], filename


class _Parser:
    """Incremental multipart/form-data (RFC 7578) parser: feed it chunks, get events back.

    Events: ("part", name, filename), ("data", bytes), ("end",), and ("done",) after the closing
    delimiter. Only a delimiter's length of bytes is held back between chunks.
    """

    def __init__(self, boundary: bytes):
        self.delimiter = b"\r\n--" + boundary
        # A leading CRLF lets the first delimiter (at the very start of the body) match like the rest.
        self.buf = bytearray(b"\r\n")
        self.state = "preamble"
        self.parts = 0

    def feed(self, data: bytes) -> list[tuple]:
        self.buf += data
        events: list[tuple] = []
        delim = self.delimiter
        keep = len(delim) - 1
        buf = self.buf
        while True:
            if self.state == "preamble":
                at = buf.find(delim)
                if at < 0:
                    if len(buf) > MAX_PREAMBLE_BYTES:
                        raise _malformed("no boundary found")
                    return events
                del buf[: at + len(delim)]
                self.state = "after_delimiter"
            elif self.state == "after_delimiter":
                while buf[:1] in (b" ", b"\t"):  # transport padding
                    del buf[:1]
                if len(buf) < 2:
                    return events
                if buf[:2] == b"--":
                    self.state = "done"
                    events.append(("done",))
                    return events
                if buf[:2] != b"\r\n":
                    raise _malformed("a boundary is not followed by a line break")
                del buf[:2]
                self.state = "headers"
            elif self.state == "headers":
                if buf[:2] == b"\r\n":
                    raise _malformed("a part has no headers")
                at = buf.find(b"\r\n\r\n")
                if at < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise _malformed("part headers are too long")
                    return events
                if at > MAX_HEADER_BYTES:
                    raise _malformed("part headers are too long")
                self.parts += 1
                if self.parts > MAX_PARTS:
                    raise _malformed(f"more than {MAX_PARTS} parts")
                name, filename = _part_headers(bytes(buf[:at]))
                del buf[: at + 4]
                events.append(("part", name, filename))
                self.state = "body"
            elif self.state == "body":
                at = buf.find(delim)
                if at < 0:
                    if len(buf) > keep:
                        events.append(("data", bytes(buf[: len(buf) - keep])))
                        del buf[: len(buf) - keep]
                    return events
                if at:
                    events.append(("data", bytes(buf[:at])))
                del buf[: at + len(delim)]
                events.append(("end",))
                self.state = "after_delimiter"
            else:  # done: the epilogue is ignored
                buf.clear()
                return events


def _boundary(request: Request) -> bytes:
    kind, params = _header_params(request.headers.get("content-type", ""))
    if kind != "multipart/form-data":
        raise InvalidRequest(
            "Invalid Content-Type header: uploads must be sent as multipart/form-data "
            "with a 'file' and a 'purpose' field."
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 200:
        raise _malformed("the Content-Type header has no valid boundary")
    return boundary.encode("latin-1", "replace")


def check_content_length(request: Request) -> None:
    """Refuse, before reading any of it, a body whose declared length alone is over the cap."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FILE_BYTES + FORM_OVERHEAD_BYTES:
        raise too_large()


async def receive_upload(
    request: Request, destination: Path, on_field: Callable[[str, str], None]
) -> Upload:
    """Read a multipart/form-data upload: the `file` part goes to `destination`, the other (small)
    fields are returned, each passed to `on_field` as soon as it is complete so a bad one stops the
    upload early. On any error the partial file is removed; on success the caller owns it."""
    check_content_length(request)
    parser = _Parser(_boundary(request))
    upload = Upload()
    sink: _FileSink | None = None
    current: str | None = None  # the field being read; FILE_FIELD means the sink
    value = bytearray()
    try:
        try:
            async for chunk in request.stream():
                for event in parser.feed(chunk):
                    kind = event[0]
                    if kind == "data":
                        if current == FILE_FIELD:
                            await sink.write(event[1])
                        else:
                            value += event[1]
                            if len(value) > MAX_FIELD_BYTES:
                                raise InvalidRequest(
                                    f"Invalid value for '{current}': longer than {MAX_FIELD_BYTES} bytes.",
                                    param=current,
                                )
                    elif kind == "part":
                        _, name, filename = event
                        if name == FILE_FIELD:
                            if sink is not None:
                                raise InvalidRequest("Only one file can be uploaded per request.", param=FILE_FIELD)
                            sink = _FileSink(destination)
                            await sink.open()
                            upload.filename = filename or "upload"
                        current = name
                        value = bytearray()
                    elif kind == "end":
                        if current != FILE_FIELD:
                            try:
                                text = value.decode("utf-8")
                            except UnicodeDecodeError:
                                raise InvalidRequest(
                                    f"Invalid value for '{current}': not valid UTF-8.", param=current
                                ) from None
                            on_field(current, text)
                            upload.fields[current] = text
                        current = None
                    elif kind == "done":
                        break
                if parser.state == "done":
                    break
        except ClientDisconnect:
            raise InvalidRequest("The upload was interrupted before the request body was complete.") from None
        if parser.state != "done":
            raise _malformed("the body ended before the closing boundary")
        if sink is not None:
            await sink.finish()
            upload.bytes = sink.size
        return upload
    except BaseException:
        if sink is not None:
            await sink.discard()
        raise
