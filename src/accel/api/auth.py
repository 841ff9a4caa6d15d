"""Who is calling the public API: ``noauth`` for development, or a tokens file.

Callers send ``X-Auth-Token`` as OpenStack clients do. The version documents at
``/`` and ``/v2`` answer anyone, as in Cyborg.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from accel.api.openstack import error_response

log = logging.getLogger(__name__)

AuthMode = Literal["noauth", "token"]
PUBLIC_PATHS = frozenset(
    {
        "",
        "/",
        "/v2",
        "/v2/",
        "/v2.json",
        "/accelerator",
        "/accelerator/",
        "/accelerator/v2",
        "/accelerator/v2/",
    }
)


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str
    project_id: str
    roles: tuple[Literal["admin", "manager", "member", "reader", "service"], ...]


@dataclass(frozen=True)
class RequestContext:
    identity: Identity

    @property
    def is_admin(self) -> bool:
        return "admin" in self.identity.roles


DEVELOPER = Identity(user_id="noauth", project_id="noauth", roles=("admin",))


def load_tokens(path: Path) -> dict[str, Identity]:
    """The tokens file: a JSON object mapping each token to its identity."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read tokens file {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"tokens file {path} must hold a JSON object")
    try:
        return {token: Identity.model_validate(identity) for token, identity in document.items()}
    except ValidationError as exc:
        raise ValueError(f"tokens file {path}: {exc}") from exc


class Authentication:
    def __init__(self, app: ASGIApp, mode: AuthMode, tokens: dict[str, Identity]) -> None:
        self.app = app
        self.mode = mode
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if self.mode == "noauth":
            identity: Identity | None = DEVELOPER
        else:
            token = Headers(scope=scope).get("x-auth-token")
            identity = self.tokens.get(token) if token else None
        if identity is None:
            await error_response(401, "authentication required: send a valid X-Auth-Token")(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})["context"] = RequestContext(identity)
        await self.app(scope, receive, send)
