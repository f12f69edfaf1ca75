"""A TCP proxy in front of a Postgres unix socket that a test can take down and bring back: a database
outage as the server sees one (every connection closed at once, new ones refused), without stopping
the cluster other tests share.

Hand-written because what a test needs is exactly this switch; a general proxy would add nothing.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class DatabaseProxy:
    def __init__(self, socket_path: Path):
        self._target = str(socket_path)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def down(self) -> None:
        """Close every connection through the proxy; refuse new ones until `up()`."""
        with self._lock:
            self._up.clear()
            sockets, self._open = self._open, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            # Under the lock: a connection accepted just as `down()` runs is either closed by it or refused.
            with self._lock:
                if not self._up.is_set():
                    client.close()  # as a refused connection: the client sees the server close at once
                    continue
                upstream = socket.socket(socket.AF_UNIX)
                try:
                    upstream.connect(self._target)
                except OSError:
                    client.close()
                    continue
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
