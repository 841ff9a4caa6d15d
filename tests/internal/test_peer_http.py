"""PeerHttp: kept connections per peer, bounded tries, and a timeout on every read.

The peers here are raw asyncio servers on loopback ports, so each test controls
exactly what a peer does with its connection: answer and keep it, answer and close
it, accept and never answer, answer a byte at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest

from accel.errors import PeerError
from accel.internal.arq_schemas import ArqChanges
from accel.internal.client import InternalClient
from accel.internal.peer_http import PeerHttp
from accel.internal.versions import VersionRange

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
NO_HEADERS: dict[str, str] = {}


def client(
    timeout: float = 5.0, attempts: int = 1, keepalive: float = 5.0, shared: bool = False
) -> PeerHttp:
    return PeerHttp("token", timeout, attempts, 8, None, keepalive, shared)


async def answer(writer: asyncio.StreamWriter, body: bytes, close: bool = False) -> None:
    connection = b"close" if close else b"keep-alive"
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: " + connection + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()


async def requests_of(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request's head, until the client closes the connection."""
    while True:
        try:
            yield await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request: its head and its Content-Length of body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line[15:])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return head + await reader.readexactly(length)


class HangsUp:
    """A peer that reads each request whole, then hangs up without an answer: it may
    have acted on the request, and the client cannot know."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        self.received += 1
        writer.close()


@asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[str]:
    """A peer on a loopback port; on leaving, every connection it still holds is closed."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


def test_each_peer_answers_over_its_own_kept_connection() -> None:
    async def scenario() -> None:
        connections = 0

        async def keeps(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            number = connections
            async for _ in requests_of(reader):
                await answer(writer, f"connection {number}".encode())
            writer.close()

        http = client()
        try:
            async with peer(keeps) as first, peer(keeps) as second:
                answers = [
                    (await http.request("GET", url, "/", NO_HEADERS)).text
                    for url in (first, second, first, second)
                ]
        finally:
            await http.aclose()
        assert answers == ["connection 1", "connection 2", "connection 1", "connection 2"]

    asyncio.run(scenario())


def test_a_connection_the_peer_closed_is_not_used_again() -> None:
    # One try only: the second call succeeds because the client saw the close, not
    # because a failed send on the dead connection was retried.
    async def scenario() -> None:
        connections = 0

        async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer, b"ok")  # says keep-alive, then closes: its idle expiry
            writer.close()

        http = client(attempts=1)
        try:
            async with peer(answers_once) as url:
                for _ in range(3):
                    assert (await http.request("GET", url, "/", NO_HEADERS)).text == "ok"
                    await asyncio.sleep(0.1)
        finally:
            await http.aclose()
        assert connections == 3

    asyncio.run(scenario())


def test_an_idle_connection_is_not_kept_past_keepalive() -> None:
    async def scenario() -> None:
        ports: list[int] = []

        async def keeps(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            ports.append(writer.get_extra_info("peername")[1])
            async for _ in requests_of(reader):
                await answer(writer, b"ok")
            writer.close()

        http = client(keepalive=0.3)
        try:
            async with peer(keeps) as url:
                await http.request("GET", url, "/", NO_HEADERS)
                await http.request("GET", url, "/", NO_HEADERS)
                await asyncio.sleep(0.6)
                await http.request("GET", url, "/", NO_HEADERS)
        finally:
            await http.aclose()
        assert len(ports) == 2  # the first connection served two calls, then expired

    asyncio.run(scenario())


def test_a_peer_that_never_answers_costs_the_read_timeout_of_each_try() -> None:
    async def scenario() -> None:
        accepted = 0

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            await reader.read()  # never answers; returns when the client gives up

        http = client(timeout=0.2, attempts=2)
        try:
            async with peer(silent) as url:
                with pytest.raises(PeerError) as raised:
                    await http.request("POST", url, "/v1/hello", NO_HEADERS, b"{}")
        finally:
            await http.aclose()
        assert accepted == 2
        assert raised.value.peer == url
        assert f"{url}: POST /v1/hello failed" in raised.value.message
        assert raised.value.message.endswith("failed: timed out")

    asyncio.run(scenario())


@pytest.mark.parametrize(("resend", "tries"), [(True, 3), (False, 1)])
def test_a_call_the_peer_may_have_acted_on_is_resent_only_if_it_may_be(
    resend: bool, tries: int
) -> None:
    # The peer reads the whole request, then hangs up without an answer: it may have
    # bound the accelerator already, so a call that must not come twice is not retried.
    async def scenario() -> None:
        hangs_up = HangsUp()
        http = client(attempts=3)
        try:
            async with peer(hangs_up) as url:
                with pytest.raises(PeerError) as raised:
                    await http.request(
                        "POST", url, "/v1/operations", NO_HEADERS, b"{}", resend=resend
                    )
        finally:
            await http.aclose()
        assert hangs_up.received == tries
        assert "closed the connection without answering" in raised.value.message

    asyncio.run(scenario())


def test_an_accelerator_request_change_is_sent_once() -> None:
    # A bind the conductor made before its answer was lost would be refused if sent
    # again ("is Bound"): the api is told of the failure instead.
    async def scenario() -> None:
        hangs_up = HangsUp()
        internal = InternalClient("token", VersionRange(), attempts=3)
        changes = ArqChanges.model_validate({"delete": [str(uuid.uuid4())]})
        try:
            async with peer(hangs_up) as url:
                with pytest.raises(PeerError):
                    await internal.change_arqs(url, changes)
        finally:
            await internal.aclose()
        assert hangs_up.received == 1

    asyncio.run(scenario())


def test_a_long_poll_waits_for_its_own_read_timeout() -> None:
    async def scenario() -> None:
        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.5)  # longer than the client's timeout
            await answer(writer, b"late but in time", close=True)
            writer.close()

        http = client(timeout=0.2)
        try:
            async with peer(slow) as url:
                found = await http.request(
                    "GET", url, "/v1/hardware", NO_HEADERS, params={"wait": "1"}, read_timeout=1.5
                )
        finally:
            await http.aclose()
        assert found.status_code == 200 and found.text == "late but in time"

    asyncio.run(scenario())


def test_a_peer_that_drips_its_answer_is_cut_off() -> None:
    async def scenario() -> None:
        async def drips(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n")
            for _ in range(60):  # a byte each 0.1 s: every read is in time, the whole is not
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)

        http = client(timeout=0.4)
        try:
            async with peer(drips) as url:
                with pytest.raises(PeerError) as raised:
                    await http.request("GET", url, "/v1/hardware", NO_HEADERS)
        finally:
            await http.aclose()
        assert raised.value.message.endswith("failed: timed out")

    asyncio.run(scenario())


def test_nobody_listening_is_a_peer_error_naming_the_call() -> None:
    async def scenario() -> None:
        async with peer(lambda reader, writer: asyncio.sleep(0)) as url:
            pass  # closed again: nothing listens on its port now
        http = client(attempts=2)
        try:
            with pytest.raises(PeerError) as raised:
                await http.request("GET", url, "/v1/hardware", NO_HEADERS)
        finally:
            await http.aclose()
        assert raised.value.peer == url
        assert raised.value.message == f"{url}: GET /v1/hardware failed: connection refused"

    asyncio.run(scenario())


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HELLO THERE\r\n\r\n")
    await writer.drain()


async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (HangsUp(), "the peer closed the connection without answering"),
        (garbage, "the peer's answer is not HTTP"),
        (cut_off, "the peer's answer was cut off"),
    ],
)
def test_transport_failures_read_as_plain_reasons(handler: Handler, reason: str) -> None:
    """What /v2/agents shows as a sync's error: an operator's words, not aiohttp's
    class names, socket tuples and "ssl:default"."""

    async def scenario() -> None:
        http = client()
        try:
            async with peer(handler) as url:
                with pytest.raises(PeerError) as raised:
                    await http.request("GET", url, "/v1/hardware", NO_HEADERS)
        finally:
            await http.aclose()
        assert raised.value.message == f"{url}: GET /v1/hardware failed: {reason}"

    asyncio.run(scenario())


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_answer_over_the_byte_bound_is_refused_without_reading_it_all(declared: bool) -> None:
    # A peer that would stream 64 MiB: the client stops at its bound, whether the size
    # was declared up front or not, and says so.
    async def scenario() -> None:
        sent = 0

        async def floods(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            await reader.readuntil(b"\r\n\r\n")
            total = 64 << 20
            framing = (
                f"Content-Length: {total}" if declared else "Transfer-Encoding: chunked"
            ).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing)
            writer.write(b"\r\n\r\n")
            chunk = b"x" * (1 << 16)
            with suppress(ConnectionError):
                while sent < total:
                    writer.write(chunk if declared else b"10000\r\n" + chunk + b"\r\n")
                    await writer.drain()
                    sent += len(chunk)

        http = client()
        try:
            async with peer(floods) as url:
                with pytest.raises(PeerError, match="more than 1048576 bytes"):
                    await http.request("GET", url, "/", NO_HEADERS, max_bytes=1 << 20)
        finally:
            await http.aclose()
        assert sent < 32 << 20

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"hardware": [{"uuid": "nope"}]}', "hardware[0].uuid"),
        (b'{"hardware": [', "not JSON"),
        (
            b'{"hardware": [], "drivers": [{"type": "GPU", "endpoint": "\\u0000", "state": "ok"}]}',
            "NUL",
        ),
    ],
)
def test_an_answer_that_is_garbage_says_where_without_internals(body: bytes, named: str) -> None:
    async def garbage_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in requests_of(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()

    async def scenario() -> None:
        internal = InternalClient("token", VersionRange())
        try:
            async with peer(garbage_json) as url:
                with pytest.raises(PeerError) as raised:
                    await internal.hardware(url)
        finally:
            await internal.aclose()
        message = raised.value.message
        assert "GET /v1/hardware answered garbage: " in message and named in message
        for internal_word in ("HardwareList", "pydantic", "type=", "input_value"):
            assert internal_word not in message, message

    asyncio.run(scenario())


def test_shared_clients_of_one_process_and_settings_share_one_session() -> None:
    # A node's agent and built-in drivers, or the simulator's nodes, each made a
    # session of their own: a connector, a resolver and caches per client.
    async def scenario() -> None:
        connections = 0
        closed = asyncio.Event()

        async def keeps(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            number = connections
            async for _ in requests_of(reader):
                await answer(writer, f"connection {number}".encode())
            closed.set()  # the client closed it
            writer.close()

        first, second = client(shared=True), client(shared=True)
        other, own = client(keepalive=7.0, shared=True), client()
        async with peer(keeps) as url:
            try:
                said = [
                    (await http.request("GET", url, "/", NO_HEADERS)).text
                    for http in (first, second)
                ]
                # One kept connection for both: the second call took the first's.
                assert said == ["connection 1", "connection 1"]
                # Other settings, another session: its own connection.
                assert (await other.request("GET", url, "/", NO_HEADERS)).text == "connection 2"
                # A client not shared (one to the conductors) keeps a session of its own.
                assert (await own.request("GET", url, "/", NO_HEADERS)).text == "connection 3"
                await first.aclose()  # the session stays while the second holds it
                assert (await second.request("GET", url, "/", NO_HEADERS)).text == "connection 1"
                assert not closed.is_set()
                await second.aclose()  # the last holder: closed, with its connections
                await asyncio.wait_for(closed.wait(), 10)
            finally:
                for http in (first, second, other, own):
                    await http.aclose()

    asyncio.run(scenario())
