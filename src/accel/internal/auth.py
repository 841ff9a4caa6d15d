"""The deployment's shared token that every internal call must carry.

The token is read from a file or from the environment, never from the command line,
so it does not show in process listings; requests are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

ENV_TOKEN = "ACCEL_INTERNAL_TOKEN"
MIN_TOKEN_LENGTH = 16


class TokenMissing(Exception):
    """The component was started without a usable internal token."""


def load_token(token_file: Path | None) -> str:
    """The internal token from ``token_file``, else from ``ACCEL_INTERNAL_TOKEN``."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise TokenMissing(f"cannot read internal token file {token_file}: {exc}") from exc
        source = str(token_file)
    else:
        token = os.environ.get(ENV_TOKEN, "").strip()
        source = ENV_TOKEN
    if not token:
        raise TokenMissing(
            "no internal token: pass --internal-token-file or set ACCEL_INTERNAL_TOKEN"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenMissing(f"the internal token from {source} is shorter than {MIN_TOKEN_LENGTH}")
    return token


def create_token_file(path: Path) -> Path:
    """Writes a fresh random token readable by its owner only, unless one exists."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries exactly this bearer token."""
    if authorization is None:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())
