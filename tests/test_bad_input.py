"""Bad input is a 400 with OpenAI's error body, wherever it comes in (JSON body, query string, path,
multipart fields), never a 500; the keep-alive connection it came on stays usable; and OpenAI's
request limits are enforced."""

from __future__ import annotations

import http.client as httpclient
import json
from urllib.parse import urlsplit

import httpx
import pytest

from api.contract import text
from api.responses.params import MAX_INPUT_ITEMS
from tests.conftest import ADMIN_KEY, assert_error, raw_post


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


class Raw:
    """One keep-alive HTTP/1.1 connection (http.client), to see what the server does to it."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.prefix = parts.path
        self.conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        self.conn.request(method, self.prefix + path, body=body, headers={"content-type": "application/json", **(headers or {})})
        resp = self.conn.getresponse()
        return resp, resp.read()

    def close(self):
        self.conn.close()


@pytest.mark.parametrize(
    "body, param",
    [
        pytest.param(b'{"model": "m", "name": "a\\u0000b"}', "name", id="nul-in-a-field"),
        pytest.param(b'{"model": "m", "metadata": {"k": "\\ud800"}}', "metadata.k", id="lone-high-surrogate"),
        pytest.param(b'{"model": "m", "metadata": {"k": "x\\udc00"}}', "metadata.k", id="lone-low-surrogate"),
        pytest.param(b'{"model": "m", "metadata": {"\\u0000": "v"}}', "metadata", id="nul-in-a-key"),
        pytest.param(
            b'{"model": "m", "tools": [{"type": "function", "function": {"name": "f", "description": "\\ud83d"}}]}',
            "tools[0].function.description",
            id="nested",
        ),
    ],
)
def test_nul_and_lone_surrogates_in_a_json_body_are_400_and_the_connection_stays_usable(server, body, param):
    raw = Raw(server.url)
    try:
        resp, data = raw.request("POST", "/assistants", body)
        assert resp.status == 400, data
        error = json.loads(data)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
        assert "NUL" in error["message"] or "surrogate" in error["message"]
        assert not resp.will_close
        sock = raw.conn.sock
        again, data = raw.request("GET", "/assistants?limit=1")
        assert again.status == 200, data
        assert raw.conn.sock is sock  # the same connection served the next request
    finally:
        raw.close()


@pytest.mark.parametrize(
    "body, problem",
    [
        pytest.param(b'{"a": "\xed\xa0\x80"}', text.SURROGATE, id="utf8-encoded-high-surrogate"),
        pytest.param(b'{"a": "x\xed\xbf\xbf"}', text.SURROGATE, id="utf8-encoded-low-surrogate"),
        pytest.param(b'{"a": "\xed\xa0\xbd\xed\xb8\x80"}', text.SURROGATE, id="cesu-8-pair"),
        pytest.param(b'{"\xed\xa0\x80": 1}', text.SURROGATE, id="in-a-key"),
        pytest.param('{"a": "\ud7ff \ue000 \U0001F600"}'.encode(), None, id="neighbours-are-fine"),
        pytest.param(b'{"a": "\\\\ud800"}', None, id="escaped-backslash"),
        pytest.param(b'{"a": "\\\\u0000", "b": "\\\\\\\\"}', None, id="only-backslashes"),
        pytest.param(b'{"a": "\\\\\\u0000"}', text.NUL, id="escaped-backslash-then-nul"),
        pytest.param(b'{"a": "\\\\ud83d\\\\ude00"}', None, id="escaped-pair-text"),
        pytest.param(b'{"a": "\\ud83d\\ude00"}', None, id="pair"),
        pytest.param(b'{"a": "\\ud83d"}', text.SURROGATE, id="lone-escape"),
    ],
)
def test_json_body_problem(body, problem):
    assert text.json_body_problem(body) == problem


def _post_routes(server) -> list[str]:
    document = httpx.get(f"{server.url.removesuffix('/v1')}/openapi.json", timeout=30).json()
    return sorted(
        path.removeprefix("/v1") for path, ops in document["paths"].items()
        if "post" in ops and path.startswith("/v1/")
    )


def test_utf8_encoded_lone_surrogates_are_400_on_every_route(server, http):
    body = b'{"model": "m", "input": "a\xed\xa0\x80b", "query": "\xed\xa0\x80", "name": "x"}'
    routes = _post_routes(server)
    assert "/embeddings" in routes and "/vector_stores/{vector_store_id}/search" in routes
    for route in routes:
        path = route.replace("{", "x_").replace("}", "")
        resp = http.post(path, content=body, headers={"content-type": "application/json"})
        assert_error(resp, 400, param="input")
        assert "surrogate" in resp.json()["error"]["message"], route
        # Other bytes that are not UTF-8: a 400 too (the body does not parse), never a 500.
        invalid = http.post(path, content=b'{"input": "\xff\xfe"}', headers={"content-type": "application/json"})
        assert 400 <= invalid.status_code < 500 and "error" in invalid.json(), (route, invalid.text)


def test_text_that_only_looks_like_bad_escapes_is_accepted(http, model_name):
    # An escaped backslash followed by "u0000" is the text \u0000; a surrogate pair is one character.
    created = http.post(
        "/assistants", content=b'{"model": "%s", "name": "a\\\\u0000 \\ud83d\\ude00"}' % model_name.encode(),
        headers={"content-type": "application/json"},
    )
    assert created.status_code == 200, created.text
    assert created.json()["name"] == "a\\u0000 \U0001F600"


@pytest.mark.parametrize(
    "path, param",
    [
        pytest.param("/assistants?after=%00", "after", id="query-value"),
        pytest.param("/threads/thread_x/messages?run_id=a%00b", "run_id", id="query-filter"),
        pytest.param("/assistants/asst_%00", None, id="path"),
        pytest.param("/threads/thread_%00/runs/run_1", None, id="nested-path"),
        pytest.param("/vector_stores/vs_%00/files", None, id="path-of-a-list"),
    ],
)
def test_nul_in_the_url_is_400(server, path, param):
    raw = Raw(server.url)
    try:
        resp, data = raw.request("GET", path)
        assert resp.status == 400, data
        assert json.loads(data)["error"]["param"] == param
        assert not resp.will_close
        assert raw.request("GET", "/assistants?limit=1")[0].status == 200
    finally:
        raw.close()


def test_nul_in_an_upload_field_or_file_name_is_400(http):
    boundary = "b0undary"
    for disposition, value in (
        ('form-data; name="purpose"', b"assistants\x00"),
        ('form-data; name="file"; filename="a\x00b.txt"', b"hello"),
    ):
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'.encode()
            if "purpose" not in disposition
            else b"",
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.txt"\r\n\r\nhi\r\n'.encode()
            if "filename" not in disposition
            else b"",
            f"--{boundary}--\r\n".encode(),
        ]
        resp = http.post(
            "/files", content=b"".join(parts), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        error = assert_error(resp, 400, param=resp.json()["error"]["param"])
        assert "NUL" in error["message"]


def test_a_non_ascii_admin_token_is_401_not_500(auth_server):
    resp = httpx.get(f"{auth_server.url}/admin/keys", headers={"Authorization": "Bearer clé-admin".encode("utf-8")})
    assert_error(resp, 401)
    ok = httpx.get(f"{auth_server.url}/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200


# --- OpenAI's request limits -----------------------------------------------------------------


def _message(content="hi", **extra):
    return {"role": "user", "content": content, **extra}


def test_message_content_is_at_most_256000_characters(http):
    thread = http.post("/threads", json={}).json()["id"]
    assert http.post(f"/threads/{thread}/messages", json=_message("x" * 256_000)).status_code == 200
    error = assert_error(http.post(f"/threads/{thread}/messages", json=_message("x" * 256_001)), 400, param="content")
    assert "256000" in error["message"] and "256001" in error["message"]
    parts = [{"type": "text", "text": "x" * 200_000}, {"type": "text", "text": "y" * 56_001}]
    assert_error(http.post(f"/threads/{thread}/messages", json=_message(parts)), 400, param="content")


def test_a_thread_is_created_with_at_most_32_messages(http, model_name):
    assert http.post("/threads", json={"messages": [_message()] * 32}).status_code == 200
    error = assert_error(http.post("/threads", json={"messages": [_message()] * 33}), 400, param="messages")
    assert "maximum length 32" in error["message"] and "length 33" in error["message"]
    assert_error(
        http.post("/threads/runs", json={"assistant_id": "asst_x", "thread": {"messages": [_message()] * 33}}),
        400,
        param="thread.messages",
    )
    thread = http.post("/threads", json={}).json()["id"]
    assert_error(
        http.post(f"/threads/{thread}/runs", json={"assistant_id": "asst_x", "additional_messages": [_message()] * 33}),
        400,
        param="additional_messages",
    )


@pytest.mark.parametrize(
    "body, param",
    [
        pytest.param({"tools": [{"type": "code_interpreter"}] * 129}, "tools", id="129-tools"),
        pytest.param({"instructions": "i" * 256_001}, "instructions", id="instructions"),
        pytest.param({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", id="17-metadata-keys"),
        pytest.param({"metadata": {"k": "v" * 513}}, "metadata", id="metadata-value"),
        pytest.param({"tool_resources": {"code_interpreter": {"file_ids": ["file-x"] * 21}}}, "tool_resources.code_interpreter.file_ids", id="21-code-files"),
    ],
)
def test_assistant_limits(http, model_name, body, param):
    assert_error(http.post("/assistants", json={"model": model_name, **body}), 400, param=param)


def test_tools_per_assistant_limit_is_inclusive(http, model_name):
    resp = http.post("/assistants", json={"model": model_name, "tools": [{"type": "code_interpreter"}] * 128})
    assert resp.status_code == 200, resp.text


def test_file_count_limits(http):
    thread = http.post("/threads", json={}).json()["id"]
    attachments = [{"file_id": f"file-{i}", "tools": [{"type": "file_search"}]} for i in range(21)]
    assert_error(http.post(f"/threads/{thread}/messages", json=_message(attachments=attachments)), 400, param="attachments")
    assert_error(http.post("/vector_stores", json={"file_ids": ["file-x"] * 501}), 400, param="file_ids")
    store = http.post("/vector_stores", json={}).json()["id"]
    assert_error(http.post(f"/vector_stores/{store}/file_batches", json={"file_ids": ["file-x"] * 2001}), 400, param="file_ids")


def test_a_body_over_the_size_cap_is_413_before_it_is_read(server):
    head = f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n"
    reply = raw_post(server.url, "/assistants", head)
    # The body never comes: a server that waited for it would answer 408 at its read timeout.
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "connection: close" in reply.lower()
    assert '"invalid_request_error"' in reply


def test_a_chunked_body_over_the_size_cap_is_413(http):
    def body():
        yield b'{"model": "m", "instructions": "'
        for _ in range(40):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    resp = http.post("/assistants", content=body(), headers={"content-type": "application/json"})
    error = assert_error(resp, 413)
    assert str(32 * 1024 * 1024) in error["message"]


def test_a_responses_input_past_the_item_limit_is_400(http, scripted, model_name):
    items = [{"role": "user", "content": "x"}] * (MAX_INPUT_ITEMS + 1)
    error = assert_error(http.post("/responses", json={"model": model_name, "input": items}), 400, param="input")
    assert str(MAX_INPUT_ITEMS) in error["message"]
    assert scripted.requests(model_name) == []


def test_other_methods_on_threads_runs_are_405_not_a_thread_id(server):
    # /threads/runs is POST only (create a thread and run it); `runs` is not read as a thread id.
    root = server.url.removesuffix("/v1")
    for base in (server.url, f"{root}/api/v1", f"{root}/openai"):
        for method in ("GET", "DELETE"):
            resp = httpx.request(method, f"{base}/threads/runs", timeout=30)
            assert_error(resp, 405, message="Method not allowed for this URL.")
            assert resp.headers["allow"] == "POST"
