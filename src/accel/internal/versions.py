"""Minor versions of the internal API and how two components agree on one.

A caller names the version it speaks in ``Accel-Internal-Version: 1.N``; the callee
answers in that version and echoes it, or answers 406 with the range it speaks. A
caller that gets a 406 retries once at the highest version both sides know, so
components one minor version apart work together during a rolling upgrade.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum, unique

from accel.errors import SupportedRange, VersionNotAcceptable

HEADER = "Accel-Internal-Version"
MAJOR = 1
Version = tuple[int, int]


# Unique: a second feature of one version would quietly become an alias of the
# first (and drop out of iteration): a version's features go under one name.
@unique
class Feature(Enum):
    """What each minor version brought (docs/internal-api.md has the whole list). A
    gate asks whether a version has a feature, never compares version numbers."""

    # Hardware entries in full, discovery generations, the long poll of
    # GET /v1/hardware, drivers' outcomes, a hello's name and resync.
    GENERATIONS = (1, 1)
    # The conductor's POST /v1/accelerator_requests, which the api allocates with.
    BINDING = (1, 2)
    # Setup operations: the conductor's POST /v1/operations, /v1/setup of agents and drivers.
    SETUP = (1, 3)
    # Starting a discovery and answering with its result in one call; hardware ETags.
    DISCOVERY_WAIT = (1, 4)
    # An agent's hello carries the ETag of its node's hardware as it last discovered it.
    HELLO_ETAG = (1, 5)
    # Hardware entries, and their virtual functions, carry the driver's ``health``.
    HEALTH = (1, 6)

    @property
    def since(self) -> Version:
        """The first version that has it."""
        since: Version = self.value
        return since

    def spoken_in(self, version: Version) -> bool:
        """Whether a peer speaking ``version`` has this feature."""
        since: Version = self._value_  # not the property: this runs on every heartbeat
        return version >= since


OLDEST: Version = (1, 0)
NEWEST: Version = max(feature.since for feature in Feature)


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


_VERSION = re.compile(r"\s*(\d{1,3})\.(\d{1,3})\s*")


# Every internal request names its version: the few texts seen are parsed once each.
@functools.lru_cache(maxsize=64)
def parse_version(text: str) -> Version:
    match = _VERSION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version of the form MAJOR.MINOR")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class VersionRange:
    """The internal versions one component speaks."""

    minimum: Version = OLDEST
    maximum: Version = NEWEST

    def __post_init__(self) -> None:
        if not OLDEST <= self.minimum <= self.maximum <= NEWEST:
            raise ValueError(
                f"internal version range {format_version(self.minimum)}-"
                f"{format_version(self.maximum)} is not within "
                f"{format_version(OLDEST)}-{format_version(NEWEST)}"
            )

    @classmethod
    def up_to(cls, maximum: str | None) -> VersionRange:
        """The full range, or capped at ``maximum`` (to act as an older release)."""
        if maximum is None:
            return cls()
        return cls(OLDEST, parse_version(maximum))

    def supported(self) -> SupportedRange:
        return SupportedRange(format_version(self.minimum), format_version(self.maximum))

    def negotiate(self, requested: str | None) -> Version:
        """The version to answer a request in; a caller naming none speaks the seed's 1.0."""
        if requested is None:
            return self.minimum
        try:
            version = parse_version(requested)
        except ValueError as exc:
            raise VersionNotAcceptable(str(exc), self.supported()) from exc
        if not self.minimum <= version <= self.maximum:
            raise VersionNotAcceptable(
                f"internal version {format_version(version)} is not supported", self.supported()
            )
        return version

    def common_with(self, peer_maximum: Version) -> Version | None:
        """The highest version both sides speak, if there is one."""
        best = min(self.maximum, peer_maximum)
        return best if best >= self.minimum else None
