"""The S3 file store: the file tests of the local store, against moto's S3-compatible server (which
stands in for a real object store) and a server with ASSISTGRAPH_FILE_STORE=s3://…: upload,
download, delete, ingestion and search, code_interpreter staging and outputs, a large upload with
flat memory, and a store that cannot be reached."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

import openai
import httpx
import psutil
import pytest
from botocore.exceptions import ClientError

from tests.conftest import _extra_server, _own_database, assert_error, sdk, stop_process
from tests.shared_services import BUCKET, PREFIX, s3_store_env, start_moto
from tests.test_code_interpreter import code_call

# The figure: 64 S3 parts, several times the server's memory growth limit below.
LARGE_UPLOAD_MB = 512
RSS_GROWTH_LIMIT = 150 * 1024 * 1024
# Larger than the socket and client buffers between the store, the server and a client that pauses.
CUT_SHORT_DOWNLOAD_MB = 48


def _s3_server(scripted, workdir: Path, database_url: str, name: str, endpoint: str, **env: str):
    """A server whose file store is the bucket at `endpoint`, with a data directory and database of its own."""
    return _extra_server(
        scripted,
        workdir,
        name.replace("_", "-"),
        _own_database(database_url, name),
        **s3_store_env(endpoint),
        **env,
    )


@pytest.fixture(scope="session")
def s3_server(scripted, workdir: Path, database_url: str, moto_s3):
    """A server whose file store is the bucket, with a data directory and database of its own."""
    srv = _s3_server(scripted, workdir, database_url, "s3_store", moto_s3.meta.endpoint_url)
    yield srv
    stop_process(srv.proc)


@pytest.fixture
def s3_client(s3_server):
    return sdk(s3_server.url)


def object_key(file_id: str) -> str:
    return f"{PREFIX}/files/default/{file_id}"


def stored_keys(s3) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def object_bytes(s3, file_id: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=object_key(file_id))["Body"].read()


def test_upload_download_delete(s3_client, s3_server, moto_s3):
    small = b"hello from the bucket\n"
    f = s3_client.files.create(file=("hello.txt", small), purpose="assistants")
    assert f.bytes == len(small)
    assert object_bytes(moto_s3, f.id) == small
    # More than one part: a multipart upload, put together in order.
    data = bytes(range(256)) * (20 * 4096 + 3)
    g = s3_client.files.create(file=("parts.bin", data), purpose="assistants")
    assert object_bytes(moto_s3, g.id) == data
    assert s3_client.files.content(g.id).read() == data
    assert s3_client.files.content(f.id).read() == small
    assert {f.id, g.id} <= {x.id for x in s3_client.files.list()}
    # No multipart upload is left open.
    assert moto_s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    assert s3_client.files.delete(f.id).deleted is True
    with pytest.raises(ClientError):
        moto_s3.head_object(Bucket=BUCKET, Key=object_key(f.id))
    assert object_key(g.id) in stored_keys(moto_s3)
    http = httpx.Client(base_url=s3_server.url)
    assert_error(http.get(f"/files/{f.id}/content"), 404, param="id", message=f"No such File object: {f.id}")


def test_a_refused_upload_leaves_no_object(s3_server, moto_s3):
    before = stored_keys(moto_s3)
    http = httpx.Client(base_url=s3_server.url)
    # The file part comes before a bad purpose: its bytes were already on their way to the store.
    resp = http.post("/files", files={"file": ("a.bin", b"x" * (10 * 1024 * 1024))}, data={"purpose": "nonsense"})
    assert_error(resp, 400, param="purpose")
    assert stored_keys(moto_s3) == before
    assert moto_s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_ingestion_reads_from_the_bucket(s3_client):
    text = "The lighthouse keeper of Vlieland counts exactly 417 gulls every morning."
    f = s3_client.files.create(file=("notes.txt", text.encode()), purpose="assistants")
    store = s3_client.vector_stores.create(name="bucket notes")
    done = s3_client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=f.id, poll_interval_ms=50)
    assert done.status == "completed", done.last_error
    found = s3_client.vector_stores.search(store.id, query="how many gulls does the lighthouse keeper count")
    assert found.data and "417 gulls" in found.data[0].content[0].text


def test_code_interpreter_stages_from_and_stores_into_the_bucket(s3_client, moto_s3, scripted, model_name):
    code = (
        "import os\n"
        "print(open('/mnt/data/input.csv').read().strip())\n"
        "_ = open('/mnt/data/out.txt', 'w').write('made in the sandbox')\n"
    )
    scripted.script(model_name, [code_call(code), {"content": "done"}])
    uploaded = s3_client.files.create(file=("input.csv", b"a,b\n1,2\n"), purpose="assistants")
    assistant = s3_client.beta.assistants.create(
        model=model_name,
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    run = s3_client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "go"}]}, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    steps = s3_client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data
    outputs = steps[0].step_details.tool_calls[0].code_interpreter.outputs
    assert outputs[0].logs == "a,b\n1,2"
    (made,) = [f for f in s3_client.files.list(purpose="assistants_output") if f.filename == "out.txt"]
    assert object_bytes(moto_s3, made.id) == b"made in the sandbox"
    assert s3_client.files.content(made.id).read() == b"made in the sandbox"


def _multipart(boundary: str, size: int):
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="large.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * 4096
    for _ in range(size // len(block)):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_large_upload_streams_with_flat_memory(s3_server, moto_s3):
    size = int(os.environ.get("S3_LARGE_UPLOAD_MB") or LARGE_UPLOAD_MB) * 1024 * 1024
    server = psutil.Process(s3_server.proc.pid)

    def rss() -> int:
        procs = [server, *server.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())

    baseline = rss()
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    boundary = uuid.uuid4().hex
    try:
        resp = httpx.post(
            f"{s3_server.url}/files",
            content=_multipart(boundary, size),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            timeout=600,
        )
    finally:
        stop.set()
        sampler.join()
    assert resp.status_code == 200, resp.text
    file_id = resp.json()["id"]
    assert resp.json()["bytes"] == size
    assert moto_s3.head_object(Bucket=BUCKET, Key=object_key(file_id))["ContentLength"] == size
    growth = peak[0] - baseline
    print(f"upload of {size >> 20} MB: server RSS grew by {growth / 2**20:.1f} MB")
    assert growth < min(RSS_GROWTH_LIMIT, size), growth

    # The download streams back the same bytes.
    got = 0
    with httpx.stream("GET", f"{s3_server.url}/files/{file_id}/content", timeout=600) as download:
        assert download.status_code == 200
        expected = bytes(range(256)) * 4096
        for chunk in download.iter_bytes(len(expected)):
            assert chunk == expected[: len(chunk)]
            got += len(chunk)
    assert got == size


@pytest.fixture(scope="module")
def store_that_goes_away(scripted, workdir: Path, database_url: str):
    """A server on a bucket of a moto server of its own, which the test stops."""
    moto, s3 = start_moto(workdir, "moto-stopped")
    srv = _s3_server(scripted, workdir, database_url, "s3_unreachable", s3.meta.endpoint_url, ASSISTGRAPH_EXECUTOR="false")
    yield srv, moto, s3
    stop_process(srv.proc)
    stop_process(moto)


def test_an_unreachable_store_answers_503_and_loses_nothing(store_that_goes_away):
    server, moto, s3 = store_that_goes_away
    client = sdk(server.url)
    kept = client.files.create(file=("kept.txt", b"still here"), purpose="assistants")
    # A download under way when the store goes: more bytes than every buffer between the store and
    # the client holds, so the server is still reading from the store when it stops.
    large = client.files.create(file=("large.bin", b"z" * (CUT_SHORT_DOWNLOAD_MB << 20)), purpose="assistants")
    with httpx.stream("GET", f"{server.url}/files/{large.id}/content", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(CUT_SHORT_DOWNLOAD_MB << 20)
        body = response.iter_bytes()
        got = len(next(body))
        stop_process(moto)
        # The response ends where the store did: the connection closes before the declared length.
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in body:
                got += len(chunk)
    assert 0 < got < CUT_SHORT_DOWNLOAD_MB << 20

    http = httpx.Client(base_url=server.url, timeout=60)
    for data in (b"small", b"y" * (9 * 1024 * 1024)):  # a single PUT, and a multipart upload
        resp = http.post("/files", files={"file": ("a.txt", data)}, data={"purpose": "assistants"})
        assert_error(resp, 503, type_="server_error")
    assert {f["id"] for f in http.get("/files").json()["data"]} == {kept.id, large.id}  # no row for either
    assert_error(http.get(f"/files/{kept.id}/content"), 503, type_="server_error")
    # A delete that cannot remove the bytes keeps the row, to be tried again.
    assert_error(http.delete(f"/files/{kept.id}"), 503, type_="server_error")
    assert client.files.retrieve(kept.id).id == kept.id
    # The SDK retries a 503 (here, until it gives up).
    retrying = sdk(server.url).with_options(max_retries=1)
    with pytest.raises(openai.InternalServerError) as failed:
        retrying.files.content(kept.id)
    assert failed.value.status_code == 503
    log = server.log()
    assert "file store unavailable" in log
    # The cut-short download is one warning line, with no traceback.
    (cut_short,) = [line for line in log.splitlines() if large.id in line]
    assert f"WARNING api.http.routers.files: download of {large.id} cut short: file store unavailable" in cut_short
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


# --- the pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, bucket, key",
    [
        ("s3://files-bucket", "files-bucket", "files/t/file-1"),
        ("s3://files-bucket/", "files-bucket", "files/t/file-1"),
        ("s3://files.example/a/b", "files.example", "a/b/files/t/file-1"),
        ("s3://files-bucket/prod/", "files-bucket", "prod/files/t/file-1"),
    ],
)
def test_the_setting_names_bucket_and_prefix(tmp_path, url, bucket, key):
    from api.files.file_store import store_for
    from api.settings import Settings

    store = store_for(Settings(file_store=url, data_dir=tmp_path))
    assert (store.bucket, store.key("files/t/file-1")) == (bucket, key)


@pytest.mark.parametrize("url", ["bucket/prefix", "s3://", "s3://B", "file:///srv/files", "s3://Upper-Case"])
def test_a_store_url_that_is_not_s3_is_refused_at_start(tmp_path, url):
    import pydantic

    from api.settings import Settings

    with pytest.raises(pydantic.ValidationError):
        Settings(file_store=url, data_dir=tmp_path)


def test_unset_is_the_local_directory(tmp_path):
    from api.files.file_store import LocalStore, store_for
    from api.settings import Settings

    store = store_for(Settings(data_dir=tmp_path))
    assert isinstance(store, LocalStore) and store.path("files/t/f") == tmp_path / "files/t/f"


@pytest.mark.parametrize(
    "error, becomes",
    [
        (ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject"), FileNotFoundError),
        (ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject"), FileNotFoundError),
        (ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "PutObject"), "StoreUnavailable"),
        (ClientError({"Error": {"Code": "NoSuchBucket", "Message": "no"}}, "PutObject"), "StoreUnavailable"),
        (ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject"), "StoreUnavailable"),
        (ConnectionRefusedError(111, "refused"), "StoreUnavailable"),
        (TimeoutError(), "StoreUnavailable"),
        (FileNotFoundError("local"), None),
        (ValueError("a bug"), None),
    ],
)
def test_store_failures_become_unavailable_or_missing(error, becomes):
    from api.files.file_store import StoreUnavailable
    from api.files.s3_store import _translate

    got = _translate(error, "k")
    if becomes is None:
        assert got is None
    elif becomes == "StoreUnavailable":
        assert isinstance(got, StoreUnavailable)
    else:
        assert isinstance(got, becomes)


def _record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", (), (type(exc), exc, None)
    )


def test_a_response_cut_short_is_reported_once_not_again_with_a_traceback():
    from api.observability.logs import QuietQueue, ResponseCutShort

    quiet = QuietQueue("warning")

    def raised(exc: BaseException, during: BaseException | None = None) -> BaseException:
        try:
            try:
                if during is not None:
                    raise during
            finally:
                raise exc
        except BaseException as caught:  # noqa: BLE001 - the exception as a handler would see it
            return caught

    cut = ResponseCutShort("file-1")
    # As uvicorn sees it: itself, wrapped by a framework, or inside the task group that streamed the body.
    for exc in (cut, raised(RuntimeError("response already started"), cut), BaseExceptionGroup("body", [cut])):
        assert quiet.filter(_record(exc)) is False
    # Any other failure of a request keeps its traceback.
    for exc in (RuntimeError("boom"), BaseExceptionGroup("body", [ValueError("x")])):
        assert quiet.filter(_record(exc)) is True
