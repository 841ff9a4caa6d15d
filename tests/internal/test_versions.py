"""Choosing the internal version two components speak."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pytest

from accel.api.microversions import MAX_MICROVERSION, MIN_MICROVERSION, ApiFeature
from accel.errors import VersionNotAcceptable
from accel.internal.versions import NEWEST, OLDEST, Feature, VersionRange, format_version

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


def test_each_feature_is_a_minor_version_of_its_own_in_the_documented_table() -> None:
    features = sorted(feature.since for feature in Feature)
    assert features == [(1, minor) for minor in range(1, NEWEST[1] + 1)]
    table = (Path(__file__).parents[2] / "docs" / "internal-api.md").read_text()
    for since in features:
        assert f"\n| {format_version(since)} | " in table


def test_a_feature_is_spoken_from_its_version_on() -> None:
    assert not Feature.SETUP.spoken_in((1, 2))
    assert Feature.SETUP.spoken_in((1, 3)) and Feature.SETUP.spoken_in(NEWEST)


@pytest.mark.parametrize(
    ("features", "oldest", "newest"),
    [(Feature, OLDEST, NEWEST), (ApiFeature, MIN_MICROVERSION, MAX_MICROVERSION)],
)
def test_each_version_brings_one_feature_listed_in_order(
    features: type[Enum], oldest: tuple[int, int], newest: tuple[int, int]
) -> None:
    """Internal versions and the api's microversions alike: a feature's version is its
    own (a second name for one version would be an alias, left out of iteration), the
    enum lists them oldest first, and every minor version after the oldest brought one."""
    versions = [feature.value for feature in features]
    assert len(features.__members__) == len(versions), "two features share a version"
    assert versions == sorted(versions), "features are listed out of order"
    major, first = oldest
    assert versions == [(major, minor) for minor in range(first + 1, newest[1] + 1)]
