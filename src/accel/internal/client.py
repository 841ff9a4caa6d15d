"""The internal API's client: every call has a timeout, bounded retries and a version.

Peers are named by ``host:port`` or a base URL. Transport failures are retried a
bounded number of times; anything else a peer does wrong (an HTTP error, a body
that does not parse) becomes a PeerError at once. A 406 from a peer one minor
version older makes the client retry once at the version both speak, and remember
it for that peer (peer_versions.py).
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from accel.errors import PeerError, PeerRefused, PeerTooOld
from accel.internal.arq_schemas import ArqChanges, ArqOutcomes
from accel.internal.peer_answers import parse_answer, refusal_reason
from accel.internal.peer_http import DEFAULT_MAX_ANSWER_BYTES, PeerAnswer, PeerHttp
from accel.internal.peer_versions import PeerVersions, wire_body
from accel.internal.schemas import (
    COMMIT_BEFORE,
    MAX_AGENT_ANSWER_BYTES,
    MAX_ETAG_LENGTH,
    AgentHello,
    DiscoveryStarted,
    DriverHello,
    HardwareList,
    HelloAnswer,
)
from accel.internal.setup_schemas import (
    OperationRequest,
    OperationView,
    SetupCall,
    SetupProgress,
)
from accel.internal.tls import TlsFiles
from accel.internal.versions import (
    HEADER,
    Feature,
    Version,
    VersionRange,
    format_version,
    parse_version,
)

Answer = TypeVar("Answer", bound=BaseModel)


def base_url(peer: str, scheme: str = "http") -> str:
    """``scheme://host:port`` for a peer named either way (a given scheme is kept)."""
    peer = peer.strip().rstrip("/")
    return peer if "://" in peer else f"{scheme}://{peer}"


@dataclass(frozen=True)
class Discovery:
    """A peer's discovery: its report, or None when unchanged since the ETag sent."""

    report: HardwareList | None
    # The ETag of the report's content (1.4 peers), to send next time.
    etag: str | None


class InternalClient:
    """Talks the internal API to drivers, agents and conductors."""

    def __init__(
        self,
        token: str,
        versions: VersionRange,
        timeout: float = 5.0,
        attempts: int = 2,
        connections_per_peer: int = 8,
        tls: TlsFiles | None = None,
        keepalive: float = 5.0,
        report_bytes: int = MAX_AGENT_ANSWER_BYTES,
        shared: bool = False,
    ) -> None:
        """``report_bytes`` bounds a hardware answer (an agent's, by default; an agent
        reading its drivers passes a driver's bound). ``shared``: calls go through the
        process's session for these settings (peer_http.py), for a client whose peers
        are its node's own."""
        self.versions = versions
        self.report_bytes = report_bytes
        self.scheme = "https" if tls is not None else "http"
        self.peer_versions = PeerVersions(versions)
        self._http = PeerHttp(
            token,
            timeout,
            attempts,
            connections_per_peer,
            tls.client_context() if tls is not None else None,
            keepalive,
            shared,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def peer_version(self, peer: str) -> Version:
        """The version this client speaks to ``peer`` now."""
        return self.peer_versions.of(base_url(peer, self.scheme))

    def peer_spoke(self, peer: str, version: Version) -> None:
        """Remembers that ``peer`` speaks ``version``: the one it just called us in (its
        hello), or the newest it named in a hello answer. A peer that was upgraded is
        spoken to at its new version from then on, without asking."""
        self.peer_versions.spoke(base_url(peer, self.scheme), version)

    async def driver_hello(self, agent: str, hello: DriverHello) -> HelloAnswer:
        return await self._hello(agent, hello)

    async def agent_hello(self, conductor: str, hello: AgentHello) -> HelloAnswer:
        return await self._hello(conductor, hello)

    async def _hello(self, peer: str, hello: DriverHello | AgentHello) -> HelloAnswer:
        answer = await self._call("POST", peer, "/v1/hello", HelloAnswer, body=hello)
        if answer.max_version is not None:
            # A peer upgraded since we met it is spoken to at its new version from now.
            with suppress(ValueError):
                self.peer_spoke(peer, parse_version(answer.max_version))
        return answer

    async def change_arqs(
        self,
        conductor: str,
        changes: ArqChanges,
        commit_before: float | None = None,
        wait: float | None = None,
    ) -> ArqOutcomes:
        """Binds and unbinds accelerator requests (internal version 1.2 and later).

        ``commit_before``: the database-clock time after which the conductor must not
        commit (accel.db.commit_deadline); ``wait``: how long to wait for the answer.
        """
        response = await self._post_once(
            conductor, "/v1/accelerator_requests", changes, commit_before, wait
        )
        return parse_answer(response, ArqOutcomes, "POST /v1/accelerator_requests")

    async def setup(self, peer: str, call: SetupCall) -> SetupProgress:
        """Asks an agent or driver to run a setup action (internal version 1.3)."""
        await self._needs(peer, Feature.SETUP, "setup")
        return await self._call("POST", peer, "/v1/setup", SetupProgress, body=call)

    async def setup_progress(self, peer: str, operation: str) -> SetupProgress:
        await self._needs(peer, Feature.SETUP, "setup")
        return await self._call("GET", peer, f"/v1/setup/{operation}", SetupProgress)

    async def request_operation(
        self,
        conductor: str,
        request: OperationRequest,
        commit_before: float | None = None,
        wait: float | None = None,
    ) -> OperationView:
        """Asks a conductor to start a setup operation for the api (1.3); the deadline
        and the wait as for ``change_arqs``."""
        await self._needs(conductor, Feature.SETUP, "setup")
        response = await self._post_once(conductor, "/v1/operations", request, commit_before, wait)
        return parse_answer(response, OperationView, "POST /v1/operations")

    async def _post_once(
        self,
        conductor: str,
        path: str,
        body: BaseModel,
        commit_before: float | None,
        wait: float | None,
    ) -> PeerAnswer:
        """A change asked of a conductor, never resent once it may have arrived: after a
        lost answer the api asks the next conductor, then the database
        (accel.api.conductor_link), within the deadline it gave."""
        headers = {} if commit_before is None else {COMMIT_BEFORE: f"{commit_before:.6f}"}
        return await self._exchange(
            "POST", conductor, path, body, read_timeout=wait, resend=False, headers=headers
        )

    async def _needs(self, peer: str, feature: Feature, what: str) -> None:
        """Refuses clearly when ``peer`` is known to be too old for ``what``.

        A peer we have not met yet is first asked who it is, so that an older release
        is told apart from a route that is simply missing.
        """
        url = base_url(peer, self.scheme)
        if not self.peer_versions.knows(url):
            await self._learn_version(url)
        spoken = self.peer_version(url)
        if not feature.spoken_in(spoken):
            raise PeerTooOld(
                url,
                f"{url} speaks internal version {format_version(spoken)}, too old for "
                f"{what} (which needs {format_version(feature.since)}): upgrade it",
            )

    async def _learn_version(self, url: str) -> None:
        try:
            response = await self._send("GET", url, "/", self.versions.maximum, None, None, None)
            maximum = parse_version(str(response.json()["versions"][0]["max_version"]))
        except (PeerError, ValueError, KeyError, IndexError, TypeError):
            return  # the call itself will say what is wrong
        # Remembered even at our newest, so that the peer is asked only once.
        self.peer_versions.spoke(url, maximum)

    async def identify(self, peer: str) -> dict[str, Any]:
        """What a peer says it is (``GET /``: its component, and an agent its name)."""
        url = base_url(peer, self.scheme)
        response = await self._send("GET", url, "/", self.versions.maximum, None, None, None)
        try:
            found = response.json()
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    async def start_discovery(self, peer: str) -> DiscoveryStarted:
        return await self._call("POST", peer, "/v1/discovery", DiscoveryStarted)

    async def hardware(
        self, peer: str, min_generation: int | None = None, wait: float = 0.0
    ) -> HardwareList:
        """A peer's hardware; with ``min_generation`` it waits up to ``wait`` s for it."""
        params: dict[str, str] = {}
        if min_generation is not None:
            params = {"min_generation": str(min_generation), "wait": f"{wait:g}"}
        # A long poll may legitimately take ``wait`` seconds longer than a plain call.
        timeout = self._http.timeout + wait if params else None
        return await self._call(
            "GET",
            peer,
            "/v1/hardware",
            HardwareList,
            params=params,
            read_timeout=timeout,
            max_bytes=self.report_bytes,
        )

    async def discover(self, peer: str, wait: float) -> HardwareList:
        """A fresh discovery's result from a driver or agent, waiting up to ``wait`` s."""
        found = await self.discover_if_changed(peer, wait)
        assert found.report is not None, "asked without an ETag: never unchanged"
        return found.report

    async def discover_if_changed(
        self, peer: str, wait: float, etag: str | None = None
    ) -> Discovery:
        """A fresh discovery from a driver or agent; no report if its content still has
        ``etag``, the ETag of the last report the caller stored.

        From internal version 1.4 a peer starts the discovery and answers with its
        result in one call; an older one is asked to start, then polled (a 1.0 peer,
        which cannot be waited on, gives its latest result). A discovery that did not
        complete in time is a PeerError.
        """
        url = base_url(peer, self.scheme)
        if not self.peer_versions.knows(url):
            await self._learn_version(url)
        if Feature.DISCOVERY_WAIT.spoken_in(self.peer_version(url)):
            try:
                return await self._discover_waiting(url, wait, etag)
            except PeerRefused:
                # A peer that went back to an older release answers 406, and the
                # retry at its version (without ``wait``) 400: start, then poll it.
                if Feature.DISCOVERY_WAIT.spoken_in(self.peer_version(url)):
                    raise
        started = await self.start_discovery(url)
        if started.generation is None:
            return Discovery(await self.hardware(url), None)
        report = await self.hardware(url, started.generation, wait)
        if (report.generation or 0) < started.generation:
            raise PeerError(url, "discovery did not complete")
        return Discovery(report, None)

    async def _discover_waiting(self, url: str, wait: float, etag: str | None) -> Discovery:
        response = await self._exchange(
            "POST",
            url,
            "/v1/discovery",
            params={"wait": f"{wait:g}"},
            read_timeout=self._http.timeout + wait,
            headers={"If-None-Match": etag} if etag else None,
            max_bytes=self.report_bytes,
        )
        answered = response.headers.get("ETag")
        if answered is not None and len(answered) > MAX_ETAG_LENGTH:
            answered = None  # not one of ours: never stored, never sent back
        if response.status_code == 304:
            if etag is None or answered != etag:
                raise PeerError(url, f"answered 304 for ETag {answered!r}, not the one sent")
            return Discovery(None, etag)
        if response.status_code == 200:
            return Discovery(parse_answer(response, HardwareList, "POST /v1/discovery"), answered)
        started = parse_answer(response, DiscoveryStarted, "POST /v1/discovery")
        raise PeerError(url, f"discovery {started.generation} did not complete in {wait:g}s")

    async def _call(
        self,
        method: str,
        peer: str,
        path: str,
        answer: type[Answer],
        body: BaseModel | None = None,
        params: dict[str, str] | None = None,
        read_timeout: float | None = None,
        resend: bool = True,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> Answer:
        response = await self._exchange(
            method, peer, path, body, params, read_timeout, resend, max_bytes=max_bytes
        )
        return parse_answer(response, answer, f"{method} {path}")

    async def _exchange(
        self,
        method: str,
        peer: str,
        path: str,
        body: BaseModel | None = None,
        params: dict[str, str] | None = None,
        read_timeout: float | None = None,
        resend: bool = True,
        headers: dict[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> PeerAnswer:
        """A successful (2xx or 3xx) answer, at the newest version both sides speak."""
        url = base_url(peer, self.scheme)
        version = self.peer_version(url)
        for _ in range(2):
            response = await self._send(
                method, url, path, version, body, params, read_timeout, resend, headers, max_bytes
            )
            if response.status_code != 406:
                break
            downgraded = self.peer_versions.downgrade(url, version, response)
            if downgraded is None:
                raise PeerError(url, f"speaks no internal version we speak: {response.text[:200]}")
            version = downgraded
        if 400 <= response.status_code < 500:
            raise PeerRefused(url, response.status_code, refusal_reason(response))
        if response.status_code >= 400:
            raise PeerError(
                url, f"{method} {path} answered {response.status_code}: {response.text[:200]}"
            )
        return response

    async def _send(
        self,
        method: str,
        url: str,
        path: str,
        version: Version,
        body: BaseModel | None,
        params: dict[str, str] | None,
        read_timeout: float | None,
        resend: bool = True,
        extra_headers: dict[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> PeerAnswer:
        headers = {HEADER: format_version(version), **(extra_headers or {})}
        content = None
        if body is not None:
            content = json.dumps(wire_body(body, version)).encode()
            headers["Content-Type"] = "application/json"
        return await self._http.request(
            method, url, path, headers, content, params, read_timeout, resend, max_bytes
        )
