"""A peer whose answer is JSON nested a thousand levels deep is a PeerError to the
internal client, whichever answer it is (a version list, a refusal, a 406, a
report), never a RecursionError out of the caller; and the client labels what it
sends as JSON, as every endpoint requires."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from accel.errors import PeerError
from accel.internal.arq_schemas import ArqChanges
from accel.internal.client import InternalClient
from accel.internal.versions import VersionRange
from tests.internal.test_peer_http import peer, requests_of

DEEP = b"[" * 1000 + b"]" * 1000
DEEP_IN_A_FIELD = b'{"error": ' + b"[" * 1000 + b"]" * 1000 + b"}"


def answers(status: int, body: bytes) -> object:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in requests_of(reader):
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize("status", [200, 400, 404, 406, 409, 500])
@pytest.mark.parametrize("body", [DEEP, DEEP_IN_A_FIELD], ids=["deep", "deep-in-a-field"])
@pytest.mark.parametrize("call", ["hardware", "setup_progress", "discover"])
def test_a_deep_answer_is_a_peer_error(status: int, body: bytes, call: str) -> None:
    async def scenario() -> None:
        internal = InternalClient("token", VersionRange(), attempts=1)
        try:
            async with peer(answers(status, body)) as url:  # type: ignore[arg-type]
                with pytest.raises(PeerError):
                    if call == "hardware":
                        await internal.hardware(url)
                    elif call == "setup_progress":
                        # Asks GET / for the peer's versions first: deep as well.
                        await internal.setup_progress(url, "op-1")
                    else:
                        await internal.discover(url, 0.1)
        finally:
            await internal.aclose()

    asyncio.run(scenario())


def test_the_internal_client_labels_its_bodies_json() -> None:
    heads: list[bytes] = []

    async def records(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head in requests_of(reader):
            heads.append(head)
            writer.write(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        internal = InternalClient("token", VersionRange(), attempts=1)
        changes = ArqChanges.model_validate({"delete": [str(uuid.uuid4())]})
        try:
            async with peer(records) as url:
                with pytest.raises(PeerError):
                    await internal.change_arqs(url, changes)
        finally:
            await internal.aclose()

    asyncio.run(scenario())
    assert b"content-type: application/json" in heads[0].lower()
