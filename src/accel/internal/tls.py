"""Mutual TLS between components: each serves with its certificate, demands one from
its callers, and presents its own when it calls, all checked against one CA.

Optional: ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` come together or not at all.
With them, peers named without a scheme are called over https.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_options(cls, cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
        given = [value for value in (cert, key, ca) if value is not None]
        if not given:
            return None
        if cert is None or key is None or ca is None:
            raise ValueError("--tls-cert, --tls-key and --tls-ca go together")
        for path in (cert, key, ca):
            if not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return cls(cert, key, ca)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def server_options(self) -> dict[str, Any]:
        """uvicorn's settings for serving with this certificate and demanding one."""
        return {
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
            "ssl_ca_certs": str(self.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
