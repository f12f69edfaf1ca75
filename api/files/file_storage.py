"""How an upload gets to the file store (`api.files.file_store`), and what a stored file is called.

Bytes live under the key `files/<tenant>/<file id>` of the store (the local data directory, or a
bucket); the `files` row keeps that key (`storage_path`).

Uploads are parsed with python-multipart's streaming `MultipartParser`, fed chunk by chunk from
`request.stream()`, not with Starlette's `request.form()` / `UploadFile`: that spools the whole part
to a temporary file before the endpoint sees anything, so the 512 MB cap could only be checked after
a 512 MB+ upload had been written in full, and the bytes would then be copied a second time to their
final place. Here the file part goes straight to the store in batches of the store's part size
(1 MiB writes to a local file, each in a worker thread; 8 MiB parts of an S3 multipart upload), its
size is counted while it arrives, and an upload that crosses the cap is cut off at that point and
what was written is dropped. At most one batch plus one network chunk is ever held in memory.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import anyio
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from starlette.requests import ClientDisconnect, Request

from api.contract.errors import InvalidRequest
from api.contract.text import text_problem
from api.files.file_store import FileStore, PartWriter

MAX_FILE_BYTES = 512 * 1024 * 1024
# Room a body may take beyond the file itself (boundaries, part headers, the small fields) before a
# Content-Length alone proves the file is over the cap.
FORM_OVERHEAD_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_HEADER_BYTES = 16 * 1024  # all of one part's headers
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_PARTS = 32

FILE_FIELD = "file"
_SAFE_DIR = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- where the bytes live ----------------------------------------------------------------------


def _tenant_dir(tenant: str) -> str:
    """The tenant's directory name: the tenant id itself when it is a safe path component."""
    if _SAFE_DIR.fullmatch(tenant):
        return tenant
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:32]


def storage_path(tenant: str, file_id: str) -> str:
    """The key stored in `files.storage_path` (relative to the store)."""
    return f"files/{_tenant_dir(tenant)}/{file_id}"


def local_path(data_dir: Path, stored: str) -> Path:
    """The file on disk for a `files.storage_path` value of the local store."""
    return Path(data_dir) / stored


async def read_bytes(data_dir: Path, stored: str) -> bytes:
    """All of a file's bytes from the local store (FileNotFoundError when they are gone); code that
    has the settings reads through `file_store.store_for(settings)`, which also reaches S3."""
    return await anyio.to_thread.run_sync(local_path(data_dir, stored).read_bytes)


def media_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


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
    """The file part, written to the store in batches of the store's part size."""

    def __init__(self, writer: PartWriter):
        self.writer: PartWriter | None = writer
        self.pending = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_FILE_BYTES:
            raise too_large()
        self.pending += data
        if len(self.pending) >= self.writer.part_bytes:
            batch, self.pending = self.pending, bytearray()
            await self.writer.write(bytes(batch))

    async def finish(self) -> None:
        last, self.pending = self.pending, bytearray()
        await self.writer.finish(bytes(last))
        self.writer = None

    async def discard(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            await writer.discard()


_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """`form-data; name="file"; filename="a.txt"` -> ("form-data", {"name": ..., "filename": ...}).

    Not python-multipart's `parse_options_header`: that one drops RFC 5987 `filename*=` (RFC 7578
    forbids it in forms), but clients still send it, often as the only faithful non-ASCII name."""
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


def _disposition(raw: bytes | None) -> tuple[str, str | None]:
    """The part's field name and file name (None when the part has no filename parameter)."""
    if raw is None:
        raise _malformed("a part has no Content-Disposition header")
    kind, params = _header_params(raw.decode("utf-8", "replace").strip())
    if kind != "form-data" or "name" not in params:
        raise _malformed("a part's Content-Disposition is not form-data with a name")
    return params["name"], params.get("filename*", params.get("filename"))


class _Events:
    """`MultipartParser` callbacks that only record what happened. The callbacks are synchronous, so
    the awaiting (disk writes, field checks) happens in `receive_upload` between two chunks, on the
    events recorded while parsing one chunk, which therefore never hold more than that chunk.

    Events: ("part", raw Content-Disposition or None), ("data", bytes), ("end",).
    """

    def __init__(self) -> None:
        self.pending: list[tuple] = []
        self.started = False  # the first boundary has been seen
        self.done = False  # the closing boundary has been seen
        self._header = bytearray()
        self._value = bytearray()
        self._disposition: bytes | None = None
        self._headers_size = 0

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._header_bytes(self._header, data[start:end]),
                "on_header_value": lambda data, start, end: self._header_bytes(self._value, data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": lambda: self.pending.append(("part", self._disposition)),
                "on_part_data": lambda data, start, end: self.pending.append(("data", data[start:end])),
                "on_part_end": lambda: self.pending.append(("end",)),
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self.started = True
        self._disposition = None
        self._headers_size = 0

    def _header_bytes(self, into: bytearray, data: bytes) -> None:
        # Counted here rather than left to the parser: older python-multipart releases have no limit
        # on part headers, newer ones only per line.
        self._headers_size += len(data)
        if self._headers_size > MAX_HEADER_BYTES:
            raise _malformed("part headers are too long")
        into += data

    def _header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _end(self) -> None:
        self.done = True

    def drain(self) -> list[tuple]:
        events, self.pending = self.pending, []
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
    request: Request, store: FileStore, stored: str, on_field: Callable[[str, str], None]
) -> Upload:
    """Read a multipart/form-data upload: the `file` part goes to the store under `stored`, the
    other (small) fields are returned, each passed to `on_field` as soon as it is complete so a bad
    one stops the upload early. On any error what was written is dropped; on success the caller
    owns the stored bytes."""
    check_content_length(request)
    events = _Events()
    parser = events.parser(_boundary(request))
    upload = Upload()
    sink: _FileSink | None = None
    current: str | None = None  # the field being read; FILE_FIELD means the sink
    value = bytearray()
    parts = 0
    preamble = 0
    try:
        try:
            async for chunk in request.stream():
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    reason = str(exc).rstrip(".")
                    raise _malformed(reason[:1].lower() + reason[1:]) from None
                for event in events.drain():
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
                        parts += 1
                        if parts > MAX_PARTS:
                            raise _malformed(f"more than {MAX_PARTS} parts")
                        name, filename = _disposition(event[1])
                        bad = text_problem(name) or (text_problem(filename) if filename else None)
                        if bad is not None:
                            raise InvalidRequest(f"Invalid multipart part name or file name: it may not contain {bad}.")
                        if name == FILE_FIELD:
                            if sink is not None:
                                raise InvalidRequest("Only one file can be uploaded per request.", param=FILE_FIELD)
                            sink = _FileSink(await store.writer(stored))
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
                            bad = text_problem(text)
                            if bad is not None:
                                raise InvalidRequest(f"Invalid value for '{current}': it may not contain {bad}.", param=current)
                            on_field(current, text)
                            upload.fields[current] = text
                        current = None
                if events.done:
                    break  # the epilogue is not worth reading
                if not events.started:
                    # The parser drops line breaks before the first boundary without keeping them;
                    # this bounds how long a body of nothing else may keep it busy.
                    preamble += len(chunk)
                    if preamble > MAX_PREAMBLE_BYTES:
                        raise _malformed("no boundary found")
        except ClientDisconnect:
            raise InvalidRequest("The upload was interrupted before the request body was complete.") from None
        if not events.done:
            raise _malformed("the body ended before the closing boundary")
        if sink is not None:
            await sink.finish()
            upload.bytes = sink.size
        return upload
    except BaseException:
        if sink is not None:
            await sink.discard()
        raise
