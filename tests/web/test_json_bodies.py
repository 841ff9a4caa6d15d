"""JSON off the wire: a document accel takes, or NotJson saying why; JSON only when
labelled as JSON."""

from __future__ import annotations

import pytest

from accel.web.json_bodies import MAX_DEPTH, NotJson, depth, is_json_media_type, loads


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_document_is_read_from_bytes_or_text() -> None:
    assert loads(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert loads('"just a string"') == "just a string"


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"{'a': 1}", b"[1,]", b"\xff\xfe", b"[NaN]", b'{"a": -Infinity}']
)
def test_what_is_not_json_is_refused(raw: bytes) -> None:
    with pytest.raises(NotJson, match="not valid JSON"):
        loads(raw)


def test_a_document_as_deep_as_allowed_is_taken_and_one_level_more_is_not() -> None:
    assert depth(loads(nested(MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(NotJson, match=f"nested deeper than {MAX_DEPTH} levels"):
        loads(nested(MAX_DEPTH + 1))


def test_a_document_deep_enough_to_exhaust_a_recursive_parser_is_refused() -> None:
    with pytest.raises(NotJson, match="nested deeper than"):
        loads(nested(100_000))
    assert issubclass(NotJson, ValueError)  # handlers that catch ValueError see it


def test_depth_counts_arrays_and_objects_along_the_deepest_path() -> None:
    assert depth(1) == depth("x") == depth(None) == 0
    assert depth([]) == depth({}) == 1
    assert depth({"a": [1, {"b": []}], "c": {}}) == 4


def test_depth_walks_any_depth_without_recursion() -> None:
    document: list[object] = []
    for _ in range(10_000):
        document = [document]
    # It stops once the depth is past refusing: the exact figure is not needed.
    assert depth(document) > MAX_DEPTH


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        "application/openstack-images-v2.1-json-patch+json",
        " application/json ;charset=UTF-8",
    ],
)
def test_json_and_json_based_media_types_say_json(content_type: str) -> None:
    assert is_json_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonx",
    ],
)
def test_anything_a_page_may_post_without_asking_is_not_json(content_type: str | None) -> None:
    assert not is_json_media_type(content_type)
