"""How every internal and public endpoint reads a JSON body (``read_body``): what is
taken, and the 4xx that names what is wrong, whichever way the body was sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from accel.errors import AccelError
from accel.internal.error_body import INTERNAL_ERRORS
from accel.internal.schemas import AgentHello
from accel.web.bodies import read_body
from accel.web.errors import failure_response

HELLO = b'{"status": "READY", "endpoint": "127.0.0.1:7001", "name": "node1"}'


NOTE = b'{"text": "anything at all", "more": {"nested": ["a"]}}'


class Note(BaseModel):
    """Free text and fields of any name: only the NUL check stands in the way."""

    model_config = ConfigDict(extra="allow")
    text: str


def endpoint(model: type[BaseModel]) -> Callable[[Request], Awaitable[Response]]:
    async def take(request: Request) -> Response:
        try:
            body = await read_body(request, model)
        except AccelError as exc:
            return failure_response(exc, INTERNAL_ERRORS)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True))

    return take


@pytest.fixture
def client() -> Iterator[TestClient]:
    routes = [
        Route("/", endpoint(AgentHello), methods=["POST"]),
        Route("/note", endpoint(Note), methods=["POST"]),
    ]
    with TestClient(
        Starlette(routes=routes), headers={"Content-Type": "application/json"}
    ) as opened:
        yield opened


def chunked(body: bytes) -> Iterator[bytes]:
    """The body without a Content-Length, in two pieces."""
    yield body[:10]
    yield body[10:]


@pytest.mark.parametrize("send", [lambda body: body, chunked], ids=["sized", "chunked"])
def test_a_good_body_is_taken_whichever_way_it_came(client: TestClient, send: object) -> None:
    response = client.post("/", content=send(HELLO))  # type: ignore[operator]
    assert response.status_code == 200
    assert response.json() == {
        "status": "READY",
        "endpoint": "127.0.0.1:7001",
        "name": "node1",
        "resync": False,
    }


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (HELLO[:-1], "not valid JSON"),
        (b"[" + HELLO + b"]", "must be a JSON object"),
        (HELLO.replace(b"READY", b"SLEEPING"), "status"),
        (HELLO.replace(b'"name"', b'"admin": true, "name"'), "admin"),
    ],
    ids=["cut-short", "array", "bad-status", "unknown"],
)
@pytest.mark.parametrize("send", [lambda body: body, chunked], ids=["sized", "chunked"])
def test_a_bad_body_is_400_naming_what_is_wrong(
    client: TestClient, body: bytes, named: str, send: object
) -> None:
    response = client.post("/", content=send(body))  # type: ignore[operator]
    assert response.status_code == 400
    answer = response.json()
    fields = [problem["field"] for problem in answer.get("problems", [])]
    assert named in answer["error"] or named in fields


@pytest.mark.parametrize(
    "body",
    [
        NOTE.replace(b"anything", b"any\\u0000thing"),
        NOTE.replace(b'"more"', b'"mo\\u0000re"'),
        NOTE.replace(b'["a"]', b'["\\u0000"]'),
    ],
    ids=["in-a-value", "in-a-key", "nested"],
)
@pytest.mark.parametrize("send", [lambda body: body, chunked], ids=["sized", "chunked"])
def test_a_nul_character_anywhere_is_400(client: TestClient, body: bytes, send: object) -> None:
    assert client.post("/note", content=NOTE).status_code == 200
    response = client.post("/note", content=send(body))  # type: ignore[operator]
    assert response.status_code == 400
    assert "NUL character" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/note", b"[" * 1000 + b"]" * 1000),
        ("/", HELLO[:-1] + b', "resync": ' + b"[" * 33 + b"]" * 33 + b"}"),
        ("/note", b'{"text": "t", "more": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}"),
    ],
    ids=["a-thousand-deep", "just-past-the-bound", "deep-free-form-field"],
)
@pytest.mark.parametrize("send", [lambda body: body, chunked], ids=["sized", "chunked"])
def test_json_nested_past_the_bound_is_400(
    client: TestClient, path: str, body: bytes, send: object
) -> None:
    response = client.post(path, content=send(body))  # type: ignore[operator]
    assert response.status_code == 400
    assert "nested deeper than 32 levels" in response.json()["error"]


def test_json_nested_to_the_bound_is_taken_where_a_field_is_free_form(client: TestClient) -> None:
    # A typed body's free-form fields are held by pydantic's parser (200 levels):
    # a body that fits its model is parsed once, on the hot path of every heartbeat.
    body = b'{"text": "t", "more": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert client.post("/note", content=body).status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_a_body_not_labelled_json_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    request = client.build_request("POST", "/", content=HELLO, headers=headers)
    if content_type is None:
        del request.headers["Content-Type"]
    response = client.send(request)
    assert response.status_code == 415
    assert "Content-Type must be application/json" in response.json()["error"]
