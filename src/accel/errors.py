"""The one exception tree of accel.

    AccelError
    ├── InvalidInput        a request body, query or flag that does not validate (400)
    ├── Unauthorized        no or wrong credentials (401)
    ├── Forbidden           credentials fine, action refused (403)
    ├── NotFound            no such resource (404)
    ├── VersionNotAcceptable  a version this component cannot speak (406)
    ├── Conflict            the request collides with stored state (409)
    ├── TooLarge            a request body over the limit (413)
    ├── UnsupportedMediaType  a request body not labelled JSON (415)
    ├── Locked              accelerator requests still binding (423)
    ├── Unavailable         no live conductor to do it (503)
    │   └── DatabaseUnavailable  the database is away (503; see accel.db.outage)
    ├── NotImplementedYet   an action accel does not perform yet (501)
    └── PeerError           another component timed out or answered garbage

Foreign errors (aiohttp, httpx, SQLAlchemy, OSError from sysfs) are translated where they
enter accel and chained with ``from``; HTTP status codes are chosen by these classes,
and an error is turned into an answer by one mapping for every app (accel.web.errors).
Two gates answer before any app is reached and render their refusals with that
mapping's body shapes: the api's authentication and the internal token check.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldProblem:
    """One field of a request that did not validate."""

    field: str
    message: str


class AccelError(Exception):
    """Root of every error accel raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(AccelError):
    status_code = 400

    def __init__(self, message: str, problems: list[FieldProblem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[FieldProblem] = problems or []


class Unauthorized(AccelError):
    status_code = 401


class Forbidden(AccelError):
    status_code = 403


class NotFound(AccelError):
    status_code = 404


@dataclass
class SupportedRange:
    minimum: str
    maximum: str
    extra: dict[str, str] = field(default_factory=dict)


class VersionNotAcceptable(AccelError):
    status_code = 406

    def __init__(self, message: str, supported: SupportedRange) -> None:
        super().__init__(message)
        self.supported = supported


class Conflict(AccelError):
    status_code = 409


class TooLarge(AccelError):
    status_code = 413


class UnsupportedMediaType(AccelError):
    status_code = 415


class Locked(AccelError):
    """Cyborg's answer while an instance's accelerator requests are not all resolved."""

    status_code = 423


class Unavailable(AccelError):
    """No live conductor could do what the api needed done."""

    status_code = 503


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached, read or written just now; it will pass."""

    def __init__(self, message: str = "the database is unavailable; try again later") -> None:
        super().__init__(message)


class NotImplementedYet(AccelError):
    """A Cyborg endpoint whose action accel does not perform yet (it says so: 501)."""

    status_code = 501


class PeerError(AccelError):
    """A peer component could not be reached, timed out, or answered garbage."""

    status_code = 502

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer


class AnswerTooLarge(PeerError):
    """A peer's answer is over the size the caller takes from it: not read further."""


class PeerRefused(PeerError):
    """A peer understood the call and said no (a 4xx): its reason is the caller's to pass on.

    The status and message are the peer's own, so a component that lets this error
    through relays, say, a driver's 409 as a 409 with the driver's words rather than
    a vague 502.
    """

    def __init__(self, peer: str, status: int, reason: str) -> None:
        AccelError.__init__(self, reason)
        self.peer = peer
        self.status_code = status


class PeerTooOld(PeerRefused):
    """A peer speaks an internal version too old for the call (an upgrade is due)."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(peer, 409, reason)
