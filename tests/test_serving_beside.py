"""Apps served beside a process's own (accel.serving.serve's ``beside``): one that
cannot start is left behind, the others serve, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.processes import wait_until

PROCESS = """
import json, sys
from contextlib import asynccontextmanager
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from accel.serving import Served, serve
from accel.sockets import bind

def app(name, fails=False):
    @asynccontextmanager
    async def lifespan(app):
        if fails:
            raise RuntimeError("cannot start")
        yield
    return Starlette(routes=[Route("/", lambda r: PlainTextResponse(name))], lifespan=lifespan)

sockets = [bind("127.0.0.1:0") for _ in range(3)]
print(json.dumps([s.getsockname()[1] for s in sockets]), flush=True)
serve(app("main"), sockets[0], beside=[
    Served("the failing one", app("failing", fails=True), sockets[1]),
    Served("the good one", app("good"), sockets[2]),
])
"""


def _answer(port: int) -> str | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2.0)
    except httpx.HTTPError:
        return None
    assert "date" in response.headers
    return response.text


def test_an_app_beside_that_cannot_start_leaves_the_others_serving() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PROCESS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            main, failing, good = json.loads(process.stdout.readline())
            wait_until(lambda: _answer(main) == "main" and _answer(good) == "good", "both to serve")
            with pytest.raises(httpx.ConnectError):  # closed, not left unanswered
                httpx.get(f"http://127.0.0.1:{failing}/", timeout=2.0)
            process.send_signal(signal.SIGTERM)
            _, errors = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, errors
    assert "the failing one stopped; the rest of this process serves on" in errors


KEEPING = """
import json
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from accel.serving import Served, serve
from accel.sockets import bind

app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("hi"))])
sockets = [bind("127.0.0.1:0") for _ in range(2)]
print(json.dumps([s.getsockname()[1] for s in sockets]), flush=True)
serve(app, sockets[0], keep_alive=1.0, beside=[Served("beside", app, sockets[1], keep_alive=30.0)])
"""


def _asked(connection: socket.socket) -> bytes:
    connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"hi"):
        chunk = connection.recv(65536)
        if not chunk:
            return answer  # closed
        answer += chunk
    return answer


def test_an_app_beside_keeps_idle_connections_as_long_as_it_is_told() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", KEEPING], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            ports = json.loads(process.stdout.readline())
            wait_until(lambda: all(_answer(port) == "hi" for port in ports), "both to serve")
            with (
                socket.create_connection(("127.0.0.1", ports[0]), 10) as main,
                socket.create_connection(("127.0.0.1", ports[1]), 10) as beside,
            ):
                for connection in (main, beside):
                    connection.settimeout(10)
                    assert _asked(connection).startswith(b"HTTP/1.1 200")
                assert main.recv(1) == b""  # closed once idle for its second
                assert _asked(beside).startswith(b"HTTP/1.1 200")  # kept past it
        finally:
            process.kill()
            process.communicate(timeout=30)
