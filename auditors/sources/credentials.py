"""Credentials: a pre-acquired token, or DefaultAzureCredential."""

from __future__ import annotations

import base64
import json
import time

from azure.core.credentials import AccessToken


def _expiry(token: str) -> int:
    """`exp` of a JWT, or an hour from now for opaque tokens (the service rejects expired ones anyway)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return int(time.time()) + 3600


class StaticTokenCredential:
    """A bearer token obtained elsewhere (e.g. `az account get-access-token`); never printed."""

    def __init__(self, token: str) -> None:
        self._token = token.strip()
        self._expires_on = _expiry(self._token)

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        return AccessToken(self._token, self._expires_on)

    def __repr__(self) -> str:
        return "StaticTokenCredential(<redacted>)"


def credential(token: str = ""):
    """A pre-acquired bearer token when given (laptop use), else DefaultAzureCredential (managed identity in
    Azure, `az login` on a laptop). Which token applies to which service is the settings' business."""
    if token.strip():
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
