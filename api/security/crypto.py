"""Secrets at rest: Fernet (AES-128-CBC + HMAC) under a key derived from the configured secret."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken

from api.contract.errors import ServerError


def _fernet(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


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


def new_api_key() -> str:
    return "sk-ag-" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # API keys are 256-bit random strings: a plain digest is enough (no dictionary to defend against).
    return hashlib.sha256(key.encode()).hexdigest()
