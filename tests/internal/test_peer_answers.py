"""A peer's answer read as its typed model, or a PeerError in words an operator reads:
where the answer is wrong and how, never the parser's own text or the peer's values."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from accel.errors import PeerError
from accel.internal.peer_answers import parse_answer, refusal_reason
from accel.internal.peer_http import PeerAnswer

URL = "http://127.0.0.1:7001/v1/hardware"


class Item(BaseModel):
    name: str
    count: int


class Listing(BaseModel):
    items: list[Item]


def answer(content: bytes | str, status: int = 200) -> PeerAnswer:
    raw = content.encode() if isinstance(content, str) else content
    return PeerAnswer(URL, status, {"content-type": "application/json"}, raw)


def garbage(content: bytes | str) -> str:
    with pytest.raises(PeerError) as caught:
        parse_answer(answer(content), Listing, "GET /v1/hardware")
    assert caught.value.peer == URL
    assert caught.value.message.startswith(f"{URL}: ")
    return caught.value.message.removeprefix(f"{URL}: ")


def test_a_good_answer_is_its_model() -> None:
    parsed = parse_answer(answer('{"items": [{"name": "a", "count": 2}]}'), Listing, "GET")
    assert parsed == Listing(items=[Item(name="a", count=2)])


def test_an_answer_that_is_not_json_says_so() -> None:
    assert garbage("<html>502 Bad Gateway</html>") == "GET /v1/hardware answered garbage: not JSON"


def test_a_wrong_answer_names_where_and_how_without_the_peers_values() -> None:
    message = garbage('{"items": [{"name": "a", "count": "many-secret"}]}')
    assert message.startswith("GET /v1/hardware answered garbage: items[0].count: ")
    assert "many-secret" not in message and "Listing" not in message and "http" not in message


def test_a_missing_answer_field_is_named() -> None:
    assert garbage("{}") == "GET /v1/hardware answered garbage: items: Field required"


def test_at_most_three_problems_are_listed_and_the_rest_counted() -> None:
    items = [{"name": n, "count": "x"} for n in "abcde"]
    message = garbage(json.dumps({"items": items}))
    assert message.count("items[") == 3
    assert message.endswith("; and 2 more")


def test_text_with_a_nul_is_refused_as_a_request_body_would_be() -> None:
    message = garbage('{"items": [{"name": "a\\u0000b", "count": 1}]}')
    assert message == (
        "GET /v1/hardware answered garbage: answer.items[0].name contains a NUL character"
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"error": "no such operation"}', "no such operation"),
        ('{"detail": "version 1.9 is not spoken here"}', "version 1.9 is not spoken here"),
        ('{"message": "busy"}', "busy"),
        ('{"error": {"code": 3}}', '{"error": {"code": 3}}'),
        ('["a list"]', '["a list"]'),
        ("plain text refusal", "plain text refusal"),
    ],
)
def test_a_refusals_reason_is_read_however_its_body_is_shaped(body: str, reason: str) -> None:
    assert refusal_reason(answer(body, 409)) == reason


def test_a_long_refusal_that_is_not_json_is_cut() -> None:
    assert refusal_reason(answer("x" * 2000, 500)) == "x" * 500
