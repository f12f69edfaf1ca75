"""Failures the tool turns into messages for the model (they are never raised out of the tool)."""


class CodeInterpreterError(Exception):
    """Base class: its text is written for the model and the user, not for a developer."""


class SandboxUnavailable(CodeInterpreterError):
    """No working sandbox on this machine (or the remote gateway is unreachable)."""


class SessionStartFailed(CodeInterpreterError):
    """A kernel did not start or did not answer in time."""


class InvalidFileName(CodeInterpreterError):
    """A name that is not a plain relative path under /mnt/data."""


class FileTooLarge(CodeInterpreterError):
    """A file over the configured size limit."""


class FileNotInSession(CodeInterpreterError):
    """No regular file of that name under /mnt/data."""
