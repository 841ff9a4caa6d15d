"""The public API's microversions (accel.api.microversions): the range follows from
the features, and a feature is refused (406) below its microversion."""

from __future__ import annotations

import pytest

from accel.api.microversions import (
    MAX_MICROVERSION,
    MIN_MICROVERSION,
    ApiFeature,
    parse_microversion,
)


def test_the_range_runs_from_2_0_to_the_newest_feature() -> None:
    features = sorted(feature.since for feature in ApiFeature)
    assert MIN_MICROVERSION == (2, 0)
    assert features == [(2, minor) for minor in range(1, MAX_MICROVERSION[1] + 1)]


@pytest.mark.parametrize(
    ("header", "version"),
    [(None, (2, 0)), ("accelerator 2.2", (2, 2)), ("latest", MAX_MICROVERSION), ("2.1", (2, 1))],
)
def test_a_request_names_its_microversion(header: str | None, version: tuple[int, int]) -> None:
    assert parse_microversion(header) == version


@pytest.mark.parametrize("header", ["2.9", "1.0", "two", ""])
def test_a_microversion_out_of_range_or_malformed_is_refused(header: str) -> None:
    with pytest.raises(ValueError):
        parse_microversion(header)


def test_a_feature_is_spoken_from_its_microversion_on() -> None:
    assert not ApiFeature.PROFILE_BY_NAME.spoken_in((2, 1))
    assert ApiFeature.PROFILE_BY_NAME.spoken_in((2, 2))
