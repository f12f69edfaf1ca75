"""Fuzzing the API from its own OpenAPI document (schemathesis): valid and invalid requests for
every operation, a bounded number of examples each. No answer is a server error, and every answer
is one the document declares (status, content type, body schema)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.http.app import create_app
from tests.conftest import _extra_server, _own_database, stop_process

EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzzed(scripted, workdir, database_url):
    """A server of its own (the fuzzer fills its database with oddities)."""
    srv = _extra_server(scripted, workdir, "fuzz", _own_database(database_url, "fuzz"))
    yield srv
    stop_process(srv.proc)


# The document as this code builds it (collection needs it before any server runs); the first test
# checks the server serves exactly this one.
DOCUMENT = create_app("postgresql://unused").openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


# Text a client should never send, sprinkled into a quarter of the generated requests (the generator
# alone rarely produces it): a NUL anywhere, and in JSON bodies unpaired surrogates too (in a URL
# they cannot even be encoded).
_BAD_TEXT = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udc00"])
_BAD_URL_TEXT = st.sampled_from(["\x00", "a\x00b"])


def _string_paths(value, path=(), keys=True):
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if keys:
                yield (*path, ("key", key))
            yield from _string_paths(item, (*path, key), keys)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_paths(item, (*path, i), keys)


def _replace(value, path, bad: str):
    if not path:
        return bad
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # a key of this dict
        return {(bad if k == head[1] else k): v for k, v in value.items()}
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(value[head], rest, bad)
    return copy


def _poisoned(value, bad_text, keys=True):
    paths = list(_string_paths(value, keys=keys)) if isinstance(value, (dict, list)) else []
    if not paths:
        return st.just(value)
    poisoned = st.tuples(st.sampled_from(paths), bad_text).map(lambda pick: _replace(value, *pick))
    return st.one_of(st.just(value), st.just(value), st.just(value), poisoned)


@schema.hook
def flatmap_body(context, body):
    content = (context.operation.definition.raw.get("requestBody") or {}).get("content") or {}
    if "application/json" not in content:  # multipart: its fields cannot carry surrogates either
        return _poisoned(body, _BAD_URL_TEXT, keys=False)
    return _poisoned(body, _BAD_TEXT)


@schema.hook
def flatmap_query(context, query):
    return _poisoned(query, _BAD_URL_TEXT, keys=False)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    return _poisoned(path_parameters, _BAD_URL_TEXT, keys=False)


def test_the_served_document_is_the_fuzzed_one(fuzzed):
    assert httpx.get(fuzzed.url.removesuffix("/v1") + "/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_every_request_as_documented(case, fuzzed):
    logged = fuzzed.log_path.stat().st_size
    case.call_and_validate(
        base_url=fuzzed.url.removesuffix("/v1"),
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        timeout=30,
    )
    # Nor did the server log an unhandled error on the way (an error logged after an answer was
    # sent shows in the next request's share of the log).
    since = fuzzed.log_path.read_bytes()[logged:].decode(errors="replace")
    assert "unhandled error" not in since and "Traceback" not in since, since
