"""A small recording HTTP server standing in for Nova's external-events endpoint: the
one stand-in the OpenStack tests allow. It answers as a script of behaviours says
(one per request, then ``ok``), and records every request it got. ``held`` answers as
``ok`` does, once the test sets ``let_go``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Behaviour = Literal["ok", "race", "garbage", "silent", "error", "held"]
SILENCE_SECONDS = 30.0  # "silent": no answer for longer than any try waits


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    behaviour: Behaviour


@dataclass
class NovaRecorder:
    url: str = ""
    script: list[Behaviour] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    let_go: threading.Event = field(default_factory=threading.Event)

    def next_behaviour(self) -> Behaviour:
        with self.lock:
            return self.script.pop(0) if self.script else "ok"

    def answered(self, behaviours: tuple[Behaviour, ...] = ("ok", "race")) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.behaviour in behaviours]

    def for_instance(self, instance: str) -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if isinstance(r.body, dict)
                and any(e.get("server_uuid") == instance for e in r.body.get("events", []))
            ]

    def reset(self, *script: Behaviour) -> None:
        with self.lock:
            self.script = list(script)
            self.requests.clear()


def _handler(recorder: NovaRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # keystoneauth may ask for the version document
            self._answer(200, {"version": {"id": "v2.1", "status": "CURRENT", "links": []}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            behaviour = recorder.next_behaviour()
            with recorder.lock:
                recorder.requests.append(
                    Recorded(self.path, dict(self.headers.items()), body, behaviour)
                )
            events = body.get("events", []) if isinstance(body, dict) else []
            if behaviour == "held":
                recorder.let_go.wait(SILENCE_SECONDS)
            if behaviour in ("ok", "held"):
                self._answer(200, {"events": [{**e, "code": 200} for e in events]})
            elif behaviour == "race":
                self._answer(207, {"events": [{**e, "code": 422} for e in events]})
            elif behaviour == "error":
                self._answer(500, {"computeFault": {"message": "boom"}})
            elif behaviour == "garbage":
                self.wfile.write(b"\x00\xffnot http at all\r\n\r\n")
                self.close_connection = True
            else:  # silent: hold the connection, say nothing
                recorder.released.wait(SILENCE_SECONDS)
                self.close_connection = True

        def _answer(self, status: int, document: Any) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def nova_recorder() -> Iterator[NovaRecorder]:
    """A recorder on 127.0.0.1, its url ending in /v2.1 as Nova's endpoint does."""
    recorder = NovaRecorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_port}/v2.1"
    try:
        yield recorder
    finally:
        recorder.released.set()
        recorder.let_go.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
