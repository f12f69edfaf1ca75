"""Typed ingestion errors.

Each error carries the ``code`` a vector store file reports in ``last_error.code`` when its
ingestion fails, and a message written for the person who uploaded the file:

- :class:`UnsupportedFile` -> ``unsupported_file`` (a file type we do not index, e.g. ``.exe``);
- :class:`InvalidFile` -> ``invalid_file`` (a supported type whose bytes cannot be read: corrupt,
  truncated, encrypted, binary content under a text extension ...);
- :class:`EmptyFile` -> ``invalid_file`` (readable, but there is no text to index);
- :class:`LimitExceeded` -> ``invalid_file`` (over an ingestion limit, which the message names).

Anything else raised by the pipeline is a bug or an environment problem (``server_error``).
"""

from __future__ import annotations


class IngestionError(Exception):
    """Base class: a file could not be ingested for a reason the user should see."""

    code: str = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_last_error(self) -> dict[str, str]:
        """The ``last_error`` object of a failed vector store file."""
        return {"code": self.code, "message": self.message}


class UnsupportedFile(IngestionError):
    """The file type is not one we can index."""

    code = "unsupported_file"


class InvalidFile(IngestionError):
    """The file claims a supported type but its content cannot be parsed."""

    code = "invalid_file"


class EmptyFile(InvalidFile):
    """The file parsed, but contains no text to index."""


class LimitExceeded(InvalidFile):
    """The file needs more than the ingestion limits allow (tokens, unpacked size, memory, CPU or
    wall time); ``limit`` names which."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class InvalidChunkingStrategy(ValueError):
    """A ``chunking_strategy`` outside the documented bounds (a 400 for the API caller)."""
