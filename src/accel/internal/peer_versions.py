"""Which internal version a client speaks to each peer, and a body as that version reads it.

A client speaks its newest version to a peer it has not met. A 406 from an older peer
names the newest version it speaks: the client retries once at the version both speak
(``PeerVersions.downgrade``) and remembers it for that peer. A hello, either way,
tells the version a peer speaks now, so an upgraded peer is spoken to at its new
version without asking.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from accel.internal.peer_http import PeerAnswer
from accel.internal.schemas import AgentHello
from accel.internal.versions import Feature, Version, VersionRange, format_version, parse_version

log = logging.getLogger(__name__)

# Peers remembered at most; past it the memory starts again (each peer is then asked
# anew), so a stream of made-up peers cannot grow it without bound.
MAX_PEER_VERSIONS = 100_000


class PeerVersions:
    """The version spoken to each peer, by its base URL."""

    def __init__(self, ours: VersionRange) -> None:
        self.ours = ours
        self._spoken: dict[str, Version] = {}

    def knows(self, url: str) -> bool:
        return url in self._spoken

    def of(self, url: str) -> Version:
        """The version spoken to ``url`` now: our newest until we learn otherwise."""
        return self._spoken.get(url, self.ours.maximum)

    def spoke(self, url: str, version: Version) -> None:
        """Remembers the newest version both speak, ``url`` speaking up to ``version``."""
        common = self.ours.common_with(version)
        if common is not None:
            self.remember(url, common)

    def remember(self, url: str, version: Version) -> None:
        if len(self._spoken) >= MAX_PEER_VERSIONS:
            self._spoken.clear()
        self._spoken[url] = version

    def downgrade(self, url: str, tried: Version, response: PeerAnswer) -> Version | None:
        """The older version to retry at after ``response``, a 406 to ``tried``; None if
        the peer names none that both speak below it."""
        try:
            peer_maximum = parse_version(str(response.json()["max_version"]))
        except (ValueError, KeyError, TypeError):
            return None
        common = self.ours.common_with(peer_maximum)
        if common is None or common >= tried:
            return None
        self.remember(url, common)
        log.info(
            "%s speaks internal version up to %s; using %s",
            url,
            format_version(peer_maximum),
            format_version(common),
        )
        return common


def wire_body(body: BaseModel, version: Version) -> dict[str, Any]:
    """A request body as a peer speaking ``version`` expects it."""
    document = body.model_dump(mode="json", exclude_none=True)
    if isinstance(body, AgentHello):
        if not Feature.HELLO_ETAG.spoken_in(version):
            document.pop("inventory_etag", None)
        if not Feature.GENERATIONS.spoken_in(version):
            document.pop("name", None)
            document.pop("resync", None)
    return document
