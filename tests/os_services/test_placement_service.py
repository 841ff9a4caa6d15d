"""The real Placement the tests start: it serves, and noauth2 wants the admin token."""

from __future__ import annotations

import httpx

from tests.placement_service import ThrowawayPlacement


def test_placement_serves_its_version_document_and_wants_a_token(
    placement: ThrowawayPlacement,
) -> None:
    versions = httpx.get(placement.url + "/", timeout=5).json()["versions"]
    assert versions[0]["max_version"] == "1.39"
    assert httpx.get(placement.url + "/resource_providers", timeout=5).status_code == 401
    with placement.client() as client:
        assert client.get("/resource_providers").status_code == 200
