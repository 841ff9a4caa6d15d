"""A report is rendered and hashed once per report and version (discovery_http's
``Renderings``): an idle node's heartbeats hand back the same result, and render and
hash nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from accel.internal.discovery_http import Renderings, hardware_etag, hardware_response
from accel.internal.schemas import AccSpecs, AccStatus, DriverOutcome, HardwareEntry, Kind
from accel.internal.versions import NEWEST, Feature

OLDER = Feature.HEALTH.since[0], Feature.HEALTH.since[1] - 1


def entry(number: int) -> HardwareEntry:
    return HardwareEntry(
        uuid=UUID(int=number),
        acc_specs=AccSpecs(remote=0, num=1, device_type=Kind.GPU, acc_capability={}),
        acc_status=AccStatus(setup_required=False, reboot_required=False),
    )


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> list[HardwareEntry]:
    """Every entry put on the wire, in order."""
    seen: list[HardwareEntry] = []
    wire = HardwareEntry.wire

    def counted(self: HardwareEntry, version: Any) -> dict[str, Any]:
        seen.append(self)
        return wire(self, version)

    monkeypatch.setattr(HardwareEntry, "wire", counted)
    return seen


def test_the_same_report_is_rendered_once_per_version(wired: list[HardwareEntry]) -> None:
    renderings = Renderings()
    entries = [entry(1), entry(2)]
    drivers = [DriverOutcome(type=Kind.GPU, endpoint="127.0.0.1:1", state="ok")]
    first = hardware_response(NEWEST, 1, entries, drivers, None, renderings)
    etag = first.headers["etag"]
    again = hardware_response(NEWEST, 2, entries, drivers, etag, renderings)
    assert again.status_code == 304 and again.headers["etag"] == etag
    assert hardware_etag(NEWEST, entries, drivers, renderings) == etag
    assert len(wired) == 2  # each entry once, for three uses
    hardware_response(OLDER, 3, entries, drivers, None, renderings)
    assert len(wired) == 4  # another version's wire is another rendering


def test_a_new_report_is_rendered_anew_even_when_equal(wired: list[HardwareEntry]) -> None:
    renderings = Renderings()
    entries = [entry(1)]
    etag = hardware_response(NEWEST, 1, entries, None, None, renderings).headers["etag"]
    copy = [entry(1)]
    assert hardware_response(NEWEST, 2, copy, None, etag, renderings).status_code == 304
    changed = [entry(3)]
    answer = hardware_response(NEWEST, 3, changed, None, etag, renderings)
    assert answer.status_code == 200 and answer.headers["etag"] != etag
    assert len(wired) == 3
    # What a service with no renderings answers is the same.
    assert hardware_response(NEWEST, 3, changed).body == answer.body
