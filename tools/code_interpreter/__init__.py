"""`code_interpreter`: stateful Python sessions (Jupyter kernels) in a sandbox, and the tool that uses them.

The host opens one store at start (`open_session_store(CodeInterpreterConfig(...))`), binds a
`CodeInterpreterTool` per run to that run's thread session, and closes the store at shutdown.
"""

from .backends import open_session_store
from .config import CodeInterpreterConfig
from .errors import (
    CodeInterpreterError,
    FileNotInSession,
    FileTooLarge,
    InvalidFileName,
    SandboxUnavailable,
    SessionStartFailed,
)
from .execution import Execution, FileInfo, Image
from .gateway import GatewaySessionStore, InMemoryKernelIdMapping, KernelIdMapping
from .local import LocalSessionStore
from .store import Session, SessionStore, UnavailableStore
from .tool import CodeInterpreterTool

__all__ = [
    "CodeInterpreterConfig",
    "CodeInterpreterError",
    "CodeInterpreterTool",
    "Execution",
    "FileInfo",
    "FileNotInSession",
    "FileTooLarge",
    "GatewaySessionStore",
    "Image",
    "InMemoryKernelIdMapping",
    "InvalidFileName",
    "KernelIdMapping",
    "LocalSessionStore",
    "SandboxUnavailable",
    "Session",
    "SessionStartFailed",
    "SessionStore",
    "UnavailableStore",
    "open_session_store",
]
