"""What the OpenStack-side tests share: a small recording HTTP server, an accel
database per test and a node name no other test uses."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.databases import migrated_sessions

NODES = itertools.count()


class Recorder(ThreadingHTTPServer):
    """Answers every request with ``status`` (or not at all while ``hang``); keeps headers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.status = 200
        self.hang = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.server.hang.is_set():
            self.server.release.wait(5)  # longer than the client's timeout, bounded
            return
        body = b"{}"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(sqlite_url) as sessions:
        yield sessions


@pytest.fixture
def node() -> str:
    return f"compute-{uuid.uuid4().hex[:8]}-{next(NODES)}"
