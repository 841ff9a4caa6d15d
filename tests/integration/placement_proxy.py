"""A loopback proxy in front of a real Placement that counts the calls it passes and
can hold one: the call matching ``hold_on`` is kept unanswered (its caller waits) until
``release`` is set, then its connection is dropped (or, asked so, the call is passed on
late). It lets a test kill a conductor in the middle of a report, at a chosen call,
without timing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# How long a held call waits for ``release`` at most: every wait bounded.
HOLD_SECONDS = 60.0


class PlacementProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=10.0)
        self.calls: list[tuple[str, str]] = []
        self.hold_on: Callable[[str, str], bool] | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.late = False
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def hold(self, when: Callable[[str, str], bool], late: bool = False) -> None:
        """Holds the next call for which ``when(method, path)`` is true. ``late``: once
        released it is passed on to Placement (a write delivered late), not dropped."""
        self.held.clear()
        self.release.clear()
        self.hold_on = when
        self.late = late


class _Forward(BaseHTTPRequestHandler):
    server: PlacementProxy
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        method, path = self.command, self.path
        self.server.calls.append((method, path))
        hold_on = self.server.hold_on
        if hold_on is not None and hold_on(method, path.split("?")[0]):
            self.server.hold_on = None
            self.server.held.set()
            self.server.release.wait(HOLD_SECONDS)
            if not self.server.late:
                self.close_connection = True
                return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        }
        answer = self.server.upstream.request(method, path, content=body, headers=headers)
        try:
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)
        except OSError:  # a late answer whose caller gave up
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def placement_proxy(upstream: str) -> Iterator[PlacementProxy]:
    proxy = PlacementProxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.release.set()
        proxy.shutdown()
        proxy.server_close()
        proxy.upstream.close()
