"""An action's credentials: the models that validate them and the headers they become."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, SecretStr, field_validator

from tools.openapi_actions.documents import RESERVED_HEADERS

# A token as RFC 9110 defines header names.
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"


def _single_line(value: SecretStr) -> SecretStr:
    if any(ch in value.get_secret_value() for ch in "\r\n\0"):
        raise ValueError("must not contain line breaks or NUL characters")
    return value


HeaderSecret = Annotated[SecretStr, Field(min_length=1, max_length=4096), AfterValidator(_single_line)]


class _Creds(BaseModel):
    # Validation errors must not echo the secrets they were given.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    def secrets(self) -> list[str]:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def public(self) -> dict[str, Any]:
        """What the API may show: the type and non-secret settings."""
        return {"type": self.type}  # type: ignore[attr-defined]

    def plain(self) -> dict[str, Any]:
        """The credentials with their secrets, for storage (encrypted) or a tool."""
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in self.__dict__.items()}


class ApiKeyCredentials(_Creds):
    type: Literal["api_key"]
    header: str = Field(default="X-Api-Key", pattern=HEADER_NAME)
    value: HeaderSecret

    @field_validator("header")
    @classmethod
    def _not_reserved(cls, header: str) -> str:
        if header.lower() in RESERVED_HEADERS:
            raise ValueError(f"header '{header}' cannot carry credentials")
        return header

    def secrets(self) -> list[str]:
        return [self.value.get_secret_value()]

    def headers(self) -> dict[str, str]:
        return {self.header: self.value.get_secret_value()}

    def public(self) -> dict[str, Any]:
        return {"type": "api_key", "header": self.header}


class BearerCredentials(_Creds):
    type: Literal["bearer"]
    token: HeaderSecret

    def secrets(self) -> list[str]:
        return [self.token.get_secret_value()]

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token.get_secret_value()}


def _no_colon(value: SecretStr) -> SecretStr:
    if ":" in value.get_secret_value():
        raise ValueError("a basic auth username cannot contain ':'")
    return value


class BasicCredentials(_Creds):
    type: Literal["basic"]
    username: Annotated[SecretStr, Field(max_length=1024), AfterValidator(_single_line), AfterValidator(_no_colon)]
    password: Annotated[SecretStr, Field(max_length=1024), AfterValidator(_single_line)]

    def _encoded(self) -> str:
        pair = f"{self.username.get_secret_value()}:{self.password.get_secret_value()}"
        return base64.b64encode(pair.encode()).decode()

    def secrets(self) -> list[str]:
        return [self.password.get_secret_value(), self._encoded()]

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + self._encoded()}


CredentialsUnion = Annotated[
    Union[ApiKeyCredentials, BearerCredentials, BasicCredentials], Field(discriminator="type")
]


class Credentials(RootModel[CredentialsUnion]):
    """An action's credentials, one of `{"type": "api_key", "header"?: "X-Api-Key", "value"}`,
    `{"type": "bearer", "token"}` or `{"type": "basic", "username", "password"}` (secrets as SecretStr)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    def plain(self) -> dict[str, Any]:
        return self.root.plain()

    def public(self) -> dict[str, Any]:
        return self.root.public()


def parse_credentials(value: Credentials | _Creds | dict | None) -> _Creds | None:
    if value is None:
        return None
    if isinstance(value, Credentials):
        return value.root
    if isinstance(value, _Creds):
        return value
    return Credentials.model_validate(value).root
