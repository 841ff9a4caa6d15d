"""Allow and deny lists of devices, as Nova's PCI whitelist: what a spec says, and
which devices a filter admits."""

from __future__ import annotations

import pytest

from accel.driver.filters import EVERYTHING, DeviceFilter, DeviceSpec
from accel.driver.pci import PciIdentity

H100 = PciIdentity("0000:b1:00.0", 0x10DE, 0x2330, 0x030200)
A100 = PciIdentity("0000:17:00.0", 0x10DE, 0x20B5, 0x030200)
QAT = PciIdentity("0000:6b:00.0", 0x8086, 0x4940, 0x0B4000)


def test_a_spec_names_ids_a_class_prefix_and_an_address_glob() -> None:
    assert DeviceSpec.parse("10de:2330, class=0302, address=0000:B1:*") == DeviceSpec(
        0x10DE, 0x2330, "0302", "0000:b1:*"
    )
    assert DeviceSpec.parse("*:20B5") == DeviceSpec(None, 0x20B5)
    assert DeviceSpec.parse("class=0x0b4000") == DeviceSpec(class_prefix="0b4000")


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("nvidia", "is not VENDOR:DEVICE"),
        ("10de:23300", "is not VENDOR:DEVICE"),
        ("class=030", "class must be 2, 4 or 6 hex digits"),
        ("class=zz", "class must be 2, 4 or 6 hex digits"),
        ("10de:*,", "is not VENDOR:DEVICE"),
    ],
)
def test_a_spec_that_says_something_else_is_refused(text: str, refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        DeviceSpec.parse(text)


@pytest.mark.parametrize(
    ("spec", "matched"),
    [
        ("10de:*", {H100, A100}),
        ("*:4940", {QAT}),
        ("10de:2330", {H100}),
        ("class=03", {H100, A100}),
        ("class=0b40", {QAT}),
        ("address=0000:b1:*", {H100}),
        ("10de:*,address=0000:6b:*", set()),  # every criterion must hold
    ],
)
def test_a_spec_matches_the_devices_all_its_criteria_hold_for(
    spec: str, matched: set[PciIdentity]
) -> None:
    assert {d for d in (H100, A100, QAT) if DeviceSpec.parse(spec).matches(d)} == matched


def test_with_no_lists_everything_is_admitted() -> None:
    assert all(EVERYTHING.admits(device) for device in (H100, A100, QAT))
    assert DeviceFilter.parse() == EVERYTHING


def test_an_allow_list_admits_only_what_it_names() -> None:
    nvidia = DeviceFilter.parse(allow=["10de:*"])
    assert (nvidia.admits(H100), nvidia.admits(QAT)) == (True, False)
    either = DeviceFilter.parse(allow=["10de:2330", "8086:*"])
    assert (either.admits(H100), either.admits(A100), either.admits(QAT)) == (True, False, True)


def test_a_deny_list_wins_over_the_allow_list() -> None:
    kept = DeviceFilter.parse(allow=["10de:*"], deny=["address=0000:b1:*"])
    assert (kept.admits(H100), kept.admits(A100), kept.admits(QAT)) == (False, True, False)
    assert not DeviceFilter.parse(deny=["class=0b"]).admits(QAT)
