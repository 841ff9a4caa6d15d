"""Hostile connections against every component's process: URLs past the limit,
contradictory framing, connections that send nothing or never finish their head or
body, and more connections than a process should hold. Each refusal is a JSON body
and a closed connection, and the component goes on answering others."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from accel.cli.argv import flags
from accel.cli.fleet_daemons import api
from accel.http_protocol import WireLimits
from tests.integration.raw_http import (
    RawAnswer,
    address,
    closed_by_peer,
    connect,
    deaf_reader,
    exchange,
    peer_gone,
    read_answer,
    wait_closed,
)
from tests.integration.test_hostile_bodies import components
from tests.processes import TOKEN, Service, bound_socket, url_of, wait_until

__all__ = ["components"]  # the module-scoped fixture: api, conductor, agent, driver
COMPONENTS = ["api", "conductor", "agent", "driver"]
LIMITS = WireLimits()
# Long enough for the server's deadline and then some; only a safety net.
CLOSE_DEADLINE = max(LIMITS.body_timeout, LIMITS.write_timeout) + 30
# ``python -m accel ARGS`` with a hard limit of 512 descriptors.
LOW_FILE_LIMIT = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512)); "
    "sys.argv[0] = 'accel'; "
    "runpy.run_module('accel', run_name='__main__')"
)


def error_text(component: str, answer: RawAnswer) -> str:
    """The message of an error body in the component's own shape."""
    body = answer.json()
    if component == "api":
        return str(body["error_message"])
    return str(body["error"])


@pytest.mark.parametrize(
    "path",
    ["/v2/accelerator_requests", "/accelerator/v2/accelerator%5Frequests"],
    ids=["plain", "prefixed-and-escaped"],
)
def test_a_bulk_delete_of_two_thousand_arqs_reaches_the_api(
    components: dict[str, Service], path: str
) -> None:
    arqs = ",".join(str(uuid.uuid4()) for _ in range(2000))
    assert len(arqs) > 65536
    answer = exchange(
        components["api"], f"DELETE {path}?arqs={arqs} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    # Answered by the api itself: none of them exists.
    assert answer.status == 404, answer.body
    assert "openstack-api-version" in answer.headers
    assert answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_url_past_the_limit_is_414_with_a_json_body(
    components: dict[str, Service], component: str
) -> None:
    path = "/v1/hardware?x=" + "a" * (LIMITS.max_url_bytes + 1)
    with connect(components[component]) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = read_answer(sock)
        assert answer.status == 414
        assert "URL longer than" in error_text(component, answer)
        wait_closed(sock, "a refused connection", 10)


@pytest.mark.parametrize(
    ("request_head", "status", "named"),
    [
        (
            b"POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n",
            400,
            "Transfer-Encoding",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"h" * (200 * 1024) + b"\r\n\r\n", 431, "head"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed HTTP request"),
    ],
    ids=["te-and-cl", "huge-head", "garbage", "bad-header"],
)
@pytest.mark.parametrize("component", COMPONENTS)
def test_a_malformed_request_is_refused_with_a_json_body_and_closed(
    components: dict[str, Service], component: str, request_head: bytes, status: int, named: str
) -> None:
    with connect(components[component]) as sock:
        sock.sendall(request_head)
        answer = read_answer(sock)
        assert answer.status == status
        assert named in error_text(component, answer)
        assert answer.headers["connection"] == "close"
        wait_closed(sock, "a refused connection", 10)


def body_head(component: str) -> bytes:
    """The head of a request whose endpoint reads its 1,000 bytes of body."""
    path, token = "/v2/device_profiles", ""
    if component != "api":
        path = "/v1/setup" if component == "driver" else "/v1/hello"
        token = f"Authorization: Bearer {TOKEN}\r\nAccel-Internal-Version: 1.3\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{token}"
        "Content-Length: 1000\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_chunked_body_past_the_limit_is_refused_before_it_ends(
    components: dict[str, Service], component: str
) -> None:
    head = body_head(component).replace(b"Content-Length: 1000", b"Transfer-Encoding: chunked")
    chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    with connect(components[component]) as sock:
        sock.sendall(head)
        for _ in range(20):  # 1.25 MiB, and the body never ends
            sock.sendall(chunk)
        answer = read_answer(sock)
    assert answer.status == 413, answer.body
    assert "larger than" in error_text(component, answer)


def drip(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Sends ``data`` a byte a second until done, stopped, or the server closes."""
    for byte in data:
        if stop.wait(1.0):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


def test_silent_and_slow_connections_are_closed_and_others_still_answered(
    components: dict[str, Service],
) -> None:
    stop = threading.Event()
    held: dict[str, socket.socket] = {}
    deaf: dict[str, socket.socket] = {}  # never read from: only their state is looked at
    drippers: list[threading.Thread] = []
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
    try:
        for name in COMPONENTS:
            service = components[name]
            held[f"{name} silent"] = connect(service)
            slow_head = connect(service)
            held[f"{name} slow head"] = slow_head
            drippers.append(threading.Thread(target=drip, args=(slow_head, head, stop)))
            half_body = connect(service)
            half_body.sendall(body_head(name) + b'{"status": "READY"')  # and nothing more
            held[f"{name} half body"] = half_body
            slow_body = connect(service)
            slow_body.sendall(body_head(name))
            held[f"{name} slow body"] = slow_body
            drippers.append(threading.Thread(target=drip, args=(slow_body, b" " * 1000, stop)))
            deaf[f"{name} deaf reader"] = deaf_reader(service, 2000)
        for dripper in drippers:
            dripper.start()

        open_ones = set(held) | set(deaf)
        received = {what: bytearray() for what in held}
        deadline = time.monotonic() + CLOSE_DEADLINE
        while open_ones:
            open_ones = {
                what
                for what in open_ones
                if not (
                    peer_gone(deaf[what])
                    if what in deaf
                    else closed_by_peer(held[what], received[what])
                )
            }
            for name in COMPONENTS:  # everyone else is still served meanwhile
                assert httpx.get(components[name].url + "/", timeout=10).status_code == 200
            if time.monotonic() > deadline:
                raise AssertionError(f"still open after {CLOSE_DEADLINE} s: {sorted(open_ones)}")
            time.sleep(0.5)
        # Who asked something incomplete is told why; who asked nothing, nothing.
        for what, answer in received.items():
            if what.endswith("silent"):
                assert answer == b"", what
            else:
                assert answer.startswith(b"HTTP/1.1 408"), (what, bytes(answer))
                assert b"not received within" in answer, (what, bytes(answer))
        # Cut off, the requests left running ended quietly.
        for name in COMPONENTS:
            assert "Traceback" not in components[name].log_path.read_text(), name
    finally:
        stop.set()
        for dripper in drippers:
            dripper.join(5)
        for sock in [*held.values(), *deaf.values()]:
            sock.close()


def test_connections_past_the_cap_are_refused_and_the_process_keeps_its_descriptors(
    tmp_path: Path,
) -> None:
    # An api whose descriptor limit is 512: it takes 256 connections and keeps the
    # rest for its database and its logs.
    sock = bound_socket()
    log_path = tmp_path / "api.log"

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LOW_FILE_LIMIT,
                "api",
                *flags(
                    api,
                    database=f"sqlite:///{tmp_path / 'accel.db'}",
                    auth="noauth",
                    listen_fd=sock.fileno(),
                ),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            env={k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")},
        )
    service = Service("api", [], log_path, url_of(sock), process, sock)
    flood: list[socket.socket] = []
    try:
        wait_until(lambda: service.serves(), "the api to serve", on_timeout=service.log)
        for _ in range(400):
            flood.append(socket.create_connection(address(service), timeout=10))
        # Past the cap, connections are answered 503 and closed at once; the others
        # are held (until their head is late).
        refused = wait_until(
            lambda: _refused(flood, 400 - 256),
            "the connections past the cap to be refused",
            on_timeout=service.log,
        )
        assert 400 - 256 <= refused <= 400 - 256 + 8
        for held in flood:
            held.close()
        flood.clear()
        # Once the flood has gone the api answers again, its descriptors intact.
        wait_until(lambda: service.serves(), "the api to answer again", on_timeout=service.log)
        response = httpx.post(
            service.url + "/v2/device_profiles",
            json=[{"name": "after-the-flood", "groups": [{"resources:PGPU": "1"}]}],
            timeout=10,
        )
        assert response.status_code == 201, response.text
    finally:
        for held in flood:
            held.close()
        service.stop()
        sock.close()


def _refused(flood: list[socket.socket], expected: int) -> int:
    """How many of ``flood`` were answered 503, once at least ``expected`` were.

    Peeked, not read: this is polled, and a poll that read an answer's start would
    leave the next poll only its rest."""
    refused = 0
    for held in flood:
        held.setblocking(False)
        try:
            refused += held.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 503")
        except BlockingIOError:
            pass
        finally:
            held.setblocking(True)
    return refused if refused >= expected else 0


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    assert threading.active_count() <= before
