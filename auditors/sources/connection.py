"""Connection failures that waiting will not fix: a certificate that does not verify, a missing CA bundle, a host
name that does not resolve, a port that refuses connections. Every source names them at once instead of retrying
them as if they were transient."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from typing import Any


class EndpointProblem(ValueError):
    """An endpoint that cannot be used as configured; the message names the endpoint, the problem and the fix."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (azure-core, requests and urllib3 wrap it several times)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [current.__cause__, current.__context__, getattr(current, "inner_exception", None),
                  getattr(current, "reason", None), *current.args]


def lasting_problem(exc: BaseException) -> str | None:
    """What is wrong, in a few words with the fix, when retrying cannot help; None for a failure worth retrying.
    (No parentheses or semicolons: callers embed the text in their own messages.)"""
    for cause in _causes(exc):
        text = str(cause)
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            detail = getattr(cause, "verify_message", "") or "certificate verify failed"
            return (f"its TLS certificate does not verify, {detail}: if your own CA signs it, point "
                    "REQUESTS_CA_BUNDLE at that CA's certificate")
        if "Could not find a suitable TLS CA certificate bundle" in text:
            return f"the CA bundle {text.split(':', 1)[-1].strip()} cannot be read: fix REQUESTS_CA_BUNDLE"
        if isinstance(cause, socket.gaierror) or "Failed to resolve" in text or "Name or service not known" in text:
            return "its host name does not resolve: check the endpoint setting and the DNS server"
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED \
                or "Connection refused" in text:
            return "it refuses connections, nothing listens on that port: check the endpoint setting"
    return None
