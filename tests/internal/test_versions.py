"""Choosing the internal version two components speak."""

from __future__ import annotations

import pytest

from accel.errors import VersionNotAcceptable
from accel.internal.versions import NEWEST, VersionRange, format_version

BEYOND_NEWEST = format_version((NEWEST[0], NEWEST[1] + 1))


def test_a_caller_naming_no_version_speaks_the_seeds() -> None:
    assert VersionRange().negotiate(None) == (1, 0)


def test_a_version_in_range_is_answered_in_that_version() -> None:
    assert VersionRange().negotiate("1.1") == (1, 1)
    assert VersionRange().negotiate(" 1.0 ") == (1, 0)


@pytest.mark.parametrize("asked", [BEYOND_NEWEST, "2.0", "0.9", "one", "1", ""])
def test_an_unknown_or_malformed_version_is_refused_with_the_range(asked: str) -> None:
    with pytest.raises(VersionNotAcceptable) as refused:
        VersionRange().negotiate(asked)
    assert (refused.value.supported.minimum, refused.value.supported.maximum) == (
        "1.0",
        format_version(NEWEST),
    )


def test_an_older_release_speaks_up_to_its_own_version() -> None:
    older = VersionRange.up_to("1.0")
    with pytest.raises(VersionNotAcceptable):
        older.negotiate("1.1")
    assert VersionRange().common_with(older.maximum) == (1, 0)


def test_a_range_outside_what_this_code_knows_is_refused() -> None:
    with pytest.raises(ValueError):
        VersionRange.up_to(BEYOND_NEWEST)
