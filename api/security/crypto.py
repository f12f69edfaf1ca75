"""Secrets at rest: Fernet (AES-128-CBC + HMAC) under a key derived from the configured secret,
and the sealer every stored or per-run secret of a tool source goes through (an action's
credentials, an MCP server's headers)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from api.contract.errors import InvalidRequest, ServerError
from api.settings import Settings


def _fernet(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


def configured_secret(settings: Settings) -> str | None:
    """ASSISTGRAPH_SECRET_KEY as text, or None when it is not set."""
    return settings.secret_key.get_secret_value() if settings.secret_key else None


def encrypt(secret: str | None, plaintext: str) -> bytes:
    if not secret:
        raise ServerError("ASSISTGRAPH_SECRET_KEY must be set before credentials can be stored.")
    return _fernet(secret).encrypt(plaintext.encode())


def decrypt(secret: str | None, token: bytes) -> str:
    if not secret:
        raise ServerError("ASSISTGRAPH_SECRET_KEY is not set; stored credentials cannot be read.")
    try:
        return _fernet(secret).decrypt(bytes(token)).decode()
    except InvalidToken as exc:
        raise ServerError("Stored credentials cannot be decrypted with the configured secret key.") from exc


def seal(settings: Settings, value: Any, *, param: str, before: str) -> bytes:
    """`value` as JSON, encrypted for storage. Without a secret key the client is told what to set
    (a 400 on `param`: "ASSISTGRAPH_SECRET_KEY must be set on the server before <before>.")."""
    secret = configured_secret(settings)
    if not secret:
        raise InvalidRequest(f"ASSISTGRAPH_SECRET_KEY must be set on the server before {before}.", param=param)
    return encrypt(secret, json.dumps(value))


def unseal(settings: Settings, sealed: bytes | str | None, default: Any = None) -> Any:
    """What `seal` stored (`default` where nothing was). Text is a sealed value kept in a JSON
    document (a run's config)."""
    if not sealed:
        return default
    token = sealed.encode() if isinstance(sealed, str) else sealed
    return json.loads(decrypt(configured_secret(settings), token))


def new_api_key() -> str:
    return "sk-ag-" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # API keys are 256-bit random strings: a plain digest is enough (no dictionary to defend against).
    return hashlib.sha256(key.encode()).hexdigest()
