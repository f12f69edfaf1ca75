"""`code_interpreter`: the model runs Python in the thread's stateful, sandboxed notebook session.

The host binds the tool per run to two callables: `session()` returns the run's thread's `Session`
(started if needed, with the thread's files placed in /mnt/data), and `save_output(name, bytes,
mime)` stores bytes as a File (purpose `assistants_output`) and returns its id. The tool returns
the text the model reads and, as the artifact, the run step's outputs in the contract's shape:

    {"outputs": [{"type": "logs", "logs": "..."}, {"type": "image", "image": {"file_id": "file-..."}}],
     "files": {"/mnt/data/result.csv": "file-..."}}

Everything that goes wrong (no sandbox, a kernel that will not start, a file too large to return)
comes back as output the model can act on; nothing is raised into the run.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from .errors import CodeInterpreterError
from .execution import Execution
from .output import readable
from .store import Session

log = logging.getLogger(__name__)

SaveOutput = Callable[[str, bytes, str], Awaitable[str]]


class CodeInterpreterInput(BaseModel):
    code: str = Field(
        description=(
            "Python source to run in the notebook session. The value of the last line is shown, as in "
            "Jupyter; use print() for anything else."
        )
    )


class CodeInterpreterTool(BaseTool):
    name: str = "code_interpreter"
    description: str = (
        "Run Python code in a stateful Jupyter notebook session, for calculations, data analysis, files and "
        "charts. Variables, imports and files persist between calls in this conversation. Files the user "
        "attached are in /mnt/data (the working directory). To give the user a file, save it under "
        "/mnt/data; the output lists the files written, and your answer links each one as "
        "sandbox:/mnt/data/<name>. Charts shown with matplotlib (plt.show()) or display() reach the user "
        "as images. Installed: numpy, pandas, matplotlib, scipy, sympy, openpyxl. There is no internet "
        "access, each call has a time limit, and long output is cut: print summaries, not whole tables."
    )
    args_schema: type[BaseModel] = CodeInterpreterInput
    response_format: str = "content_and_artifact"
    model_config = ConfigDict(arbitrary_types_allowed=True)

    session: Callable[[], Awaitable[Session]]
    save_output: SaveOutput

    def _run(self, code: str) -> Any:
        # For scripts and sync callers only; the graph awaits `_arun`.
        return asyncio.run(self._arun(code))

    async def _arun(self, code: str) -> tuple[str, dict[str, Any]]:
        try:
            session = await self.session()
            result = await session.execute(code)
        except CodeInterpreterError as exc:
            return _failure(str(exc))
        except Exception as exc:  # the model gets a message, the log the details
            log.exception("code_interpreter call failed")
            return _failure(f"The code interpreter failed unexpectedly ({type(exc).__name__}).")
        return await self._present(session, result)

    async def _present(self, session: Session, result: Execution) -> tuple[str, dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        notes = list(result.notes)
        if result.logs:
            outputs.append({"type": "logs", "logs": result.logs})
        token = secrets.token_hex(3)
        for n, image in enumerate(result.images, start=1):
            try:
                file_id = await self.save_output(f"image-{token}-{n}.{image.extension}", image.data, image.mime)
            except Exception:
                log.exception("code_interpreter: storing an image failed")
                notes.append("An image could not be stored.")
                continue
            outputs.append({"type": "image", "image": {"file_id": file_id}})
        files: dict[str, str] = {}
        written: list[str] = []
        for info in result.files:
            # A name the code made of arbitrary bytes is stored and shown escaped.
            path = readable(info.path)
            try:
                data = await session.read_file(info.name)
                mime = mimetypes.guess_type(info.name)[0] or "application/octet-stream"
                files[path] = await self.save_output(path.rsplit("/", 1)[-1], data, mime)
            except CodeInterpreterError as exc:
                notes.append(f"sandbox:{path} was not returned: {exc}")
                continue
            except Exception:
                log.exception("code_interpreter: storing %s failed", path)
                notes.append(f"sandbox:{path} could not be stored.")
                continue
            written.append(f"sandbox:{path} ({_size(info.size)})")

        parts = [result.logs if result.logs else "(no output)"]
        shown = sum(1 for o in outputs if o["type"] == "image")
        if shown:
            parts.append(f"[{shown} image{'s' if shown > 1 else ''} shown to the user.]")
        if written:
            parts.append("[Files written (link them as sandbox:/mnt/data/<name>): " + ", ".join(written) + "]")
        parts += [f"[Note: {readable(note)}]" for note in notes]
        return "\n\n".join(parts), {"outputs": outputs, "files": files}


def _failure(message: str) -> tuple[str, dict[str, Any]]:
    text = readable(f"Error: {message}")
    return text, {"outputs": [{"type": "logs", "logs": text}], "files": {}}


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} kB"
    return f"{size / 1024 / 1024:.1f} MB"
