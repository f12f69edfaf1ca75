"""The Files API through the real server: the official SDK in strict mode for the happy paths,
raw httpx (or a raw socket) where the exact error body, a hand-built multipart body or a lying
Content-Length matter."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import psycopg
import pytest

from tests.conftest import assert_error

MAX_FILE_BYTES = 512 * 1024 * 1024


@pytest.fixture
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer sk-client"}, timeout=60) as c:
        yield c


@pytest.fixture
def files_dir(workdir: Path) -> Path:
    """Where the main server keeps the default tenant's bytes."""
    return workdir / "data" / "files" / "default"


def stored_files(files_dir: Path) -> set[str]:
    return {p.name for p in files_dir.iterdir()} if files_dir.exists() else set()


def upload(http: httpx.Client, fields: dict[str, str], files: dict | None = None) -> httpx.Response:
    """A multipart request with exactly these parts (httpx sends a field-only form url-encoded,
    so text fields go in as file-less parts)."""
    parts = {name: (None, value.encode()) for name, value in fields.items()}
    parts.update(files or {})
    return http.post("/files", files=parts)


def peak_rss(server) -> int:
    """The server process's peak resident memory (Linux)."""
    status = Path(f"/proc/{server.proc.pid}/status")
    if not status.exists():
        pytest.skip("needs /proc")
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def unknown_file_id() -> str:
    return "file-" + uuid.uuid4().hex[:24]


# --- upload, retrieve, content -----------------------------------------------------------------


def test_upload_bytes(client, files_dir):
    data = b"hello files\n" * 10
    before = time.time()
    f = client.files.create(file=data, purpose="assistants")
    assert f.id.startswith("file-") and len(f.id) == len("file-") + 24 and f.id[5:].isalnum()
    assert f.object == "file"
    assert f.bytes == len(data)
    assert f.filename == "upload"  # what httpx names a bare-bytes upload
    assert f.purpose == "assistants"
    assert f.status == "processed"
    assert f.status_details is None
    assert f.expires_at is None
    assert int(before) <= f.created_at <= time.time() + 1
    assert (files_dir / f.id).read_bytes() == data

    got = client.files.retrieve(f.id)
    assert got.model_dump() == f.model_dump()
    assert client.files.content(f.id).read() == data


def test_upload_tuple_keeps_name_and_serves_its_type(client, http):
    data = "Café menu: crème brûlée.\n".encode()
    f = client.files.create(file=("menu notes.txt", data, "text/plain"), purpose="user_data")
    assert f.filename == "menu notes.txt"
    assert f.bytes == len(data)
    resp = http.get(f"/files/{f.id}/content")
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["content-length"] == str(len(data))
    assert "menu%20notes.txt" in resp.headers["content-disposition"]

    # Bytes uploaded without a recognisable name come back as application/octet-stream.
    g = client.files.create(file=b"\x00\x01\x02", purpose="assistants")
    resp = http.get(f"/files/{g.id}/content")
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == b"\x00\x01\x02"


def test_upload_from_path_and_non_ascii_name(client, tmp_path):
    path = tmp_path / "résumé.md"
    path.write_text("# Résumé\n", encoding="utf-8")
    f = client.files.create(file=path, purpose="assistants")
    assert f.filename == "résumé.md"
    assert client.files.content(f.id).read() == path.read_bytes()


def test_empty_file(client):
    f = client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert f.bytes == 0
    assert client.files.content(f.id).read() == b""


def test_large_file_streams_both_ways(client, tmp_path):
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(20):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            out.write(block)
    with path.open("rb") as fh:
        f = client.files.create(file=("big.bin", fh), purpose="assistants")
    assert f.bytes == 20 * 1024 * 1024

    received = hashlib.sha256()
    with client.files.with_streaming_response.content(f.id) as resp:
        assert resp.headers["content-length"] == str(20 * 1024 * 1024)
        for chunk in resp.iter_bytes():
            received.update(chunk)
    assert received.hexdigest() == digest.hexdigest()
    assert hashlib.sha256(client.files.content(f.id).read()).hexdigest() == digest.hexdigest()


def test_wait_for_processing_returns_at_once(server):
    gets = []
    http = httpx.Client(event_hooks={"request": [lambda request: request.method == "GET" and gets.append(request.url.path)]})
    client = openai.OpenAI(
        base_url=server.url, api_key="sk-client", _strict_response_validation=True, max_retries=0, http_client=http
    )
    f = client.files.create(file=b"ready", purpose="assistants")
    done = client.files.wait_for_processing(f.id)
    assert done.status == "processed" and done.id == f.id
    assert len(gets) == 1  # processed when uploaded: the helper's first look was its last


def test_every_purpose(client, http):
    for purpose in ("assistants", "batch", "fine-tune", "vision", "user_data"):
        assert client.files.create(file=b"{}", purpose=purpose).purpose == purpose
    # "evals" is accepted, though this SDK version's FileObject does not list it yet.
    resp = upload(http, {"purpose": "evals"}, {"file": ("e.jsonl", b"{}\n")})
    assert resp.status_code == 200, resp.text
    assert resp.json()["purpose"] == "evals"
    # Strict-mode SDK listings of all purposes would reject it: don't leave it behind for other tests.
    assert http.delete(f"/files/{resp.json()['id']}").json()["deleted"] is True


def test_field_order_does_not_matter(http):
    # The file part first, purpose last (the SDK sends fields first; curl -F keeps the user's order).
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="first.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        "file comes first\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        "assistants\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    resp = http.post("/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status_code == 200, resp.text
    obj = resp.json()
    assert obj["filename"] == "first.txt" and obj["bytes"] == len("file comes first")
    assert http.get(f"/files/{obj['id']}/content").content == b"file comes first"


# --- expiry ------------------------------------------------------------------------------------


def test_expires_after(client):
    f = client.files.create(
        file=b"short-lived", purpose="assistants", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert f.expires_at == f.created_at + 3600
    assert client.files.retrieve(f.id).expires_at == f.created_at + 3600
    longest = client.files.create(
        file=b"x", purpose="assistants", expires_after={"anchor": "created_at", "seconds": 2592000}
    )
    assert longest.expires_at == longest.created_at + 2592000


def test_batch_files_expire_after_30_days_by_default(client):
    f = client.files.create(file=b"{}\n", purpose="batch")
    assert f.expires_at == f.created_at + 30 * 24 * 3600


def test_expired_file_behaves_as_deleted(client, http, database_url, files_dir):
    f = client.files.create(file=b"gone soon", purpose="vision", expires_after={"anchor": "created_at", "seconds": 3600})
    g = client.files.create(file=b"also gone", purpose="vision", expires_after={"anchor": "created_at", "seconds": 3600})
    assert {f.id, g.id} <= stored_files(files_dir)
    # Let an hour pass, as far as these rows are concerned.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE files SET obj = jsonb_set(obj, '{expires_at}', to_jsonb((obj->>'created_at')::bigint - 1)) "
            "WHERE id = ANY(%s)",
            ([f.id, g.id],),
        )
    assert_error(http.get(f"/files/{f.id}"), 404, param="id", message=f"No such File object: {f.id}")
    assert f.id not in stored_files(files_dir)
    assert g.id not in [x.id for x in client.files.list(purpose="vision")]
    assert g.id not in stored_files(files_dir)
    with pytest.raises(openai.NotFoundError):
        client.files.content(g.id)


# --- list --------------------------------------------------------------------------------------


def test_list_purpose_order_limit_after(client):
    mine = [client.files.create(file=f"n{i}".encode(), purpose="fine-tune").id for i in range(3)]
    other = client.files.create(file=b"x", purpose="user_data").id

    page = client.files.list(purpose="fine-tune")
    ids = [f.id for f in page.data]
    assert other not in ids
    assert all(f.purpose == "fine-tune" for f in page.data)
    assert ids[:3] == mine[::-1]  # newest first by default
    assert page.has_more is False

    asc = client.files.list(purpose="fine-tune", order="asc", after=mine[0])
    assert [f.id for f in asc.data] == mine[1:]
    assert asc.has_more is False

    first = client.files.list(purpose="fine-tune", order="asc", after=mine[0], limit=1)
    assert [f.id for f in first.data] == [mine[1]]
    assert first.has_more is True
    assert first.first_id == first.last_id == mine[1]

    everything = [f.id for f in client.files.list()]
    assert set(mine) | {other} <= set(everything)


def test_list_auto_pagination(client):
    mine = [client.files.create(file=b"p", purpose="fine-tune").id for _ in range(5)]
    seen = [f.id for f in client.files.list(purpose="fine-tune", limit=2, order="asc", after=mine[0])]
    assert seen == mine[1:]
    page = client.files.list(purpose="fine-tune", limit=2)
    assert len(page.data) == 2 and page.has_more
    newest_first = [f.id for f in page]
    assert newest_first[:5] == mine[::-1]
    assert len(newest_first) == len(set(newest_first))


def test_list_limits(http):
    assert http.get("/files", params={"limit": 10000}).status_code == 200
    assert_error(http.get("/files", params={"limit": 0}), 400, param="limit")
    assert_error(http.get("/files", params={"limit": 10001}), 400, param="limit")
    assert_error(http.get("/files", params={"order": "sideways"}), 400, param="order")
    body = http.get("/files", params={"purpose": "no-such-purpose"}).json()
    assert body == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


# --- delete ------------------------------------------------------------------------------------


def test_delete(client, http, files_dir):
    f = client.files.create(file=b"delete me", purpose="assistants")
    assert f.id in stored_files(files_dir)
    deleted = client.files.delete(f.id)
    assert deleted.model_dump() == {"id": f.id, "object": "file", "deleted": True}
    assert f.id not in stored_files(files_dir)

    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(f.id)
    assert f.id not in [x.id for x in client.files.list()]
    message = f"No such File object: {f.id}"
    assert_error(http.get(f"/files/{f.id}"), 404, param="id", message=message)
    assert_error(http.delete(f"/files/{f.id}"), 404, param="id", message=message)
    assert_error(http.get(f"/files/{f.id}/content"), 404, param="id", message=message)


def test_unknown_and_malformed_ids(http):
    missing = unknown_file_id()
    assert_error(http.get(f"/files/{missing}"), 404, param="id", message=f"No such File object: {missing}")
    for path in ("/files/asst_abc", "/files/file_abc", "/files/asst_abc/content"):
        assert_error(http.get(path), 400, param="file_id")
    assert_error(http.delete("/files/thread_abc"), 400, param="file_id")


# --- async -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_round_trip(aclient):
    data = os.urandom(300_000)
    f = await aclient.files.create(file=("blob.bin", data, "application/octet-stream"), purpose="assistants")
    assert f.bytes == len(data) and f.status == "processed"
    assert (await aclient.files.retrieve(f.id)).filename == "blob.bin"
    assert (await aclient.files.content(f.id)).read() == data
    assert (await aclient.files.wait_for_processing(f.id)).status == "processed"
    listed = [x.id async for x in aclient.files.list(purpose="assistants", limit=3)]
    assert f.id in listed
    assert (await aclient.files.delete(f.id)).deleted is True
    with pytest.raises(openai.NotFoundError):
        await aclient.files.retrieve(f.id)


# --- bad input ---------------------------------------------------------------------------------


def test_invalid_purpose(client, http):
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=b"x", purpose="nonsense")  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert info.value.body["param"] == "purpose"
    assert_error(upload(http, {"purpose": "assistants_output"}, {"file": ("a.txt", b"x")}), 400, param="purpose")


def test_missing_parts(http, files_dir):
    before = stored_files(files_dir)
    assert_error(
        upload(http, {"purpose": "assistants"}), 400, param="file", message="Missing required parameter: 'file'."
    )
    assert_error(
        upload(http, {}, {"file": ("a.txt", b"x")}), 400, param="purpose", message="Missing required parameter: 'purpose'."
    )
    assert stored_files(files_dir) == before  # the file written before purpose was found missing is gone


def test_expires_after_validation(client, http):
    for seconds in ("3599", "2592001", "soon", ""):
        resp = upload(
            http,
            {"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": seconds},
            {"file": ("a.txt", b"x")},
        )
        assert_error(resp, 400, param="expires_after.seconds")
    resp = upload(
        http,
        {"purpose": "assistants", "expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
        {"file": ("a.txt", b"x")},
    )
    assert_error(resp, 400, param="expires_after.anchor")
    resp = upload(http, {"purpose": "assistants", "expires_after[seconds]": "3600"}, {"file": ("a.txt", b"x")})
    assert_error(resp, 400, param="expires_after.anchor")
    resp = upload(http, {"purpose": "assistants", "expires_after[anchor]": "created_at"}, {"file": ("a.txt", b"x")})
    assert_error(resp, 400, param="expires_after.seconds")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=b"x", purpose="assistants", expires_after={"anchor": "created_at", "seconds": 60})


def test_malformed_requests(http, files_dir):
    before = stored_files(files_dir)
    # Not multipart at all.
    assert_error(http.post("/files", json={"purpose": "assistants", "file": "abc"}), 400)
    assert_error(http.post("/files"), 400)
    # Unknown field.
    resp = upload(http, {"purpose": "assistants", "color": "blue"}, {"file": ("a.txt", b"x")})
    assert_error(resp, 400, param="color", message="Unrecognized request argument supplied: color")
    # Two files.
    boundary = "xyz"
    part = 'Content-Disposition: form-data; name="file"; filename="{}"\r\n\r\ndata\r\n'
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
        f"--{boundary}\r\n" + part.format("one.txt") + f"--{boundary}\r\n" + part.format("two.txt") + f"--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert_error(http.post("/files", content=body, headers=headers), 400, param="file")
    # A body cut off before its closing boundary.
    truncated = body.split(f"--{boundary}--".encode())[0][:-30]
    assert_error(http.post("/files", content=truncated, headers=headers), 400)
    # No boundary.
    assert_error(http.post("/files", content=b"x", headers={"Content-Type": "multipart/form-data"}), 400)
    assert stored_files(files_dir) == before


def _raw_request(url: str, head: str) -> tuple[int, dict]:
    """Send only a request head (no body) on a raw socket; the status and JSON body of the reply."""
    import json

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        headers_raw, _, body = data.partition(b"\r\n\r\n")
        lines = headers_raw.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
        while len(body) < length:
            body += sock.recv(65536)
    return status, json.loads(body)


def test_declared_length_over_512_mb_is_refused_before_reading(server):
    path = urlsplit(server.url).path + "/files"
    host = urlsplit(server.url).netloc
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-client\r\n"
        f"Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: {MAX_FILE_BYTES + 2 * 1024 * 1024}\r\n\r\n"
    )
    status, body = _raw_request(server.url, head)
    # Answered without waiting for the 514 MB that never come (waiting would end in a 408).
    assert status == 400
    assert body["error"]["param"] == "file"
    assert "512 MB" in body["error"]["message"]


def test_counted_size_over_512_mb_is_refused(http, files_dir, server):
    """No Content-Length (chunked): the size is counted while writing, the upload is cut off at the
    cap and its partial file removed."""
    before = stored_files(files_dir)
    peak_before = peak_rss(server)
    boundary = "cap-boundary"
    block = b"\0" * (1024 * 1024)

    def body():
        yield (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"huge.bin\"\r\n\r\n"
        ).encode()
        for _ in range(MAX_FILE_BYTES // len(block)):
            yield block
        yield b"one byte too many"
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = http.post(
        "/files",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=300,
    )
    assert_error(resp, 400, param="file")
    assert "512 MB" in resp.json()["error"]["message"]
    assert stored_files(files_dir) == before
    # Nothing held the upload in memory: the server's peak RSS grew by far less than 512 MB.
    assert peak_rss(server) - peak_before < 256 * 1024 * 1024


def test_rfc5987_filename(http):
    boundary = "b5987"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"resume.txt\"; "
        "filename*=UTF-8''r%C3%A9sum%C3%A9.txt\r\n\r\nbody\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    resp = http.post("/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["filename"] == "résumé.txt"


def test_interrupted_upload_leaves_nothing_behind(server, files_dir):
    from tests.conftest import wait_for

    before = stored_files(files_dir)
    parts = urlsplit(server.url)
    boundary = "cut"
    head = (
        f"POST {parts.path}/files HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer sk-client\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + b"\1" * (3 * 1024 * 1024))
        # The partial file exists while the upload is under way...
        wait_for(lambda: stored_files(files_dir) - before)
    # ...and is removed once the client goes away.
    wait_for(lambda: stored_files(files_dir) == before)


def test_also_served_under_api_v1(server):
    base = server.url.removesuffix("/v1") + "/api/v1"
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer sk-client"}) as c:
        resp = c.post("/files", files={"purpose": (None, b"assistants"), "file": ("a.txt", b"hi")})
        assert resp.status_code == 200, resp.text
        assert c.get(f"/files/{resp.json()['id']}/content").content == b"hi"
    schema = httpx.get(server.url.removesuffix("/v1") + "/openapi.json").json()
    assert "multipart/form-data" in schema["paths"]["/v1/files"]["post"]["requestBody"]["content"]
