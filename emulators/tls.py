"""A throwaway certificate authority and a 127.0.0.1 server certificate for the emulators."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def server_context(ca_out: str | Path | None) -> tuple[ssl.SSLContext, Path | None]:
    """TLS context for a server on 127.0.0.1/localhost; the CA's PEM goes to `ca_out` for clients to trust."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    path = None
    if ca_out:
        path = Path(ca_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        authority.cert_pem.write_to_path(str(path))
    return context, path
