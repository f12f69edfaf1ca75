"""`file_search`: the model searches the files of the assistant's and the thread's vector stores.

The host binds the tool to a search function for the run's stores; the tool itself knows nothing of
where chunks live. Results reach the model with citation markers (【n:m†file】) that the API turns
into `file_citation` annotations when the answer quotes them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class Hit(Protocol):
    file_id: str
    filename: str
    score: float
    content: str


Search = Callable[..., Awaitable[list[Hit]]]


class FileSearchInput(BaseModel):
    query: str = Field(description="What to look for in the files: a question or keywords, in the files' language.")


class FileSearchTool(BaseTool):
    name: str = "file_search"
    description: str = (
        "Search the documents the user uploaded (and the assistant's knowledge files) for passages relevant to "
        "a query. Use it whenever the answer may be in those files. Each passage starts with a marker such as "
        "【0:1†report.pdf】; when you use a passage, quote its marker right after the statement it supports."
    )
    args_schema: type[BaseModel] = FileSearchInput
    response_format: str = "content_and_artifact"
    model_config = ConfigDict(arbitrary_types_allowed=True)

    search: Search
    max_num_results: int = 20
    score_threshold: float = 0.0
    ranker: str = "auto"
    _calls: int = PrivateAttr(default=0)

    def _run(self, query: str) -> Any:  # pragma: no cover - the graph only runs tools asynchronously
        raise NotImplementedError("file_search runs asynchronously")

    async def _arun(self, query: str) -> tuple[str, dict]:
        hits = await self.search(query, max_num_results=self.max_num_results, score_threshold=self.score_threshold)
        n, self._calls = self._calls, self._calls + 1
        results = [
            {
                "marker": f"【{n}:{i}†{hit.filename}】",
                "file_id": hit.file_id,
                "file_name": hit.filename,
                "score": round(float(hit.score), 6),
                "content": hit.content,
            }
            for i, hit in enumerate(hits)
        ]
        if not results:
            text = f"No passage of the files matches {query!r}."
        else:
            text = "\n\n".join(f"{r['marker']}\n{r['content']}" for r in results)
        artifact = {
            "query": query,
            "ranking_options": {"ranker": self.ranker, "score_threshold": self.score_threshold},
            "results": results,
        }
        return text, artifact
