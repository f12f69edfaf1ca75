"""An OpenAI-compatible embedding endpoint that holds every request whose text carries a marker
until the test releases it: a server's ingestion is then certainly in flight when the test acts."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from tests.test_vector_stores import _EmbeddingsHandler


@dataclass
class HeldEmbeddings:
    marker: str
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None

    def start(self) -> "HeldEmbeddings":
        held = self

        class Handler(_EmbeddingsHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["content-length"]))
                if held.marker in raw.decode() and not held.release.is_set():
                    held.entered.set()
                    held.release.wait(60)
                self.rfile = io.BytesIO(raw)
                try:
                    super().do_POST()
                except OSError:
                    pass  # the process that asked was killed

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def env(self) -> dict[str, str]:
        """A server's settings for using this endpoint for its stores' embeddings."""
        return dict(
            ASSISTGRAPH_EMBEDDING_PROVIDER="openai",
            ASSISTGRAPH_EMBEDDING_MODEL="hash-embed",
            ASSISTGRAPH_EMBEDDING_BASE_URL=f"http://127.0.0.1:{self.httpd.server_port}/v1",
            ASSISTGRAPH_EMBEDDING_API_KEY="sk-embed",
        )

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
