"""What text a request may carry: no NUL characters and no unpaired UTF-16 surrogates.

Postgres stores neither (text and jsonb refuse `\\u0000`; a lone surrogate cannot be encoded as
UTF-8), and no client means them: they are refused as a 400 when the request comes in
(`api/http/guard.py` for bodies, query strings and paths, the upload reader for multipart fields)
rather than failing deep inside a query.
"""

from __future__ import annotations

import json
import re

NUL = "NUL characters (\\u0000)"
SURROGATE = "unpaired surrogates (\\ud800-\\udfff)"

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")

# A JSON text carries NUL or a surrogate as a `\uXXXX` escape, or (a surrogate) as its three-byte
# UTF-8-style encoding ED A0..BF xx: not valid UTF-8, but Python's json.loads decodes bytes with
# "surrogatepass" and would let it through as a lone surrogate. An escape is a `\u` after an odd run of
# backslashes; a high surrogate escape directly followed by a low one is a valid pair. Scanning the
# raw bytes for these (most bodies have no `\u` at all) costs far less than decoding the body a
# second time just to look at every string.
_ESCAPE = re.compile(rb"(\\+)u([0-9a-fA-F]{4})")
_ENCODED_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def text_problem(value: str) -> str | None:
    """What is wrong with one string, or None."""
    found = _BAD_CHAR.search(value)
    if found is None:
        return None
    return NUL if found.group() == "\x00" else SURROGATE


def json_body_problem(body: bytes) -> str | None:
    """What is wrong with the strings of a JSON body (without parsing it), or None."""
    if b"\x00" in body:
        return NUL  # raw NUL bytes: not UTF-8 JSON at all (UTF-16/32 bodies included)
    if b"\xed" in body and _ENCODED_SURROGATE.search(body):
        return SURROGATE
    if b"\\u" not in body:
        return None
    high_ends_at = None  # where an escaped high surrogate ended, waiting for its low half
    for match in _ESCAPE.finditer(body):
        escaped = len(match.group(1)) % 2 == 1  # else: an escaped backslash, then a literal "u"
        at = match.end(1) - 1  # the escape's own backslash
        if high_ends_at is not None:
            if not (escaped and at == high_ends_at and 0xDC00 <= int(match.group(2), 16) <= 0xDFFF):
                return SURROGATE
            high_ends_at = None
            continue
        if not escaped:
            continue
        code = int(match.group(2), 16)
        if code == 0:
            return NUL
        if 0xDC00 <= code <= 0xDFFF:
            return SURROGATE
        if 0xD800 <= code <= 0xDBFF:
            high_ends_at = match.end()
    return SURROGATE if high_ends_at is not None else None


def locate(body: bytes) -> str | None:
    """The dotted path of the first bad string in a JSON body (a key counts as its own path), for
    the error's `param`; None when the body does not parse or nothing is found."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _walk(value, "")


def _walk(value, path: str) -> str | None:
    if isinstance(value, str):
        return (path or None) if text_problem(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if text_problem(key):
                return path or None
            found = _walk(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _walk(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
