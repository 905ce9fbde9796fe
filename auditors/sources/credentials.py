"""Credentials for Azure Resource Manager: a pre-acquired token, or DefaultAzureCredential."""

from __future__ import annotations

import base64
import json
import os
import time

from azure.core.credentials import AccessToken

TOKEN_VARIABLE = "AZURE_ACCESS_TOKEN"


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


def arm_credential():
    """`AZURE_ACCESS_TOKEN` when set, else DefaultAzureCredential (managed identity in Azure, az login locally)."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if token:
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


MONITOR_TOKEN_VARIABLE = "LOGS_ACCESS_TOKEN"


def monitor_credential():
    """`LOGS_ACCESS_TOKEN` (a token for https://monitor.azure.com) when set, else DefaultAzureCredential."""
    token = os.environ.get(MONITOR_TOKEN_VARIABLE, "").strip()
    if token:
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


STORAGE_TOKEN_VARIABLE = "AUDIT_STORAGE_ACCESS_TOKEN"


def storage_credential():
    """`AUDIT_STORAGE_ACCESS_TOKEN` (a token for https://storage.azure.com) when set, else DefaultAzureCredential."""
    token = os.environ.get(STORAGE_TOKEN_VARIABLE, "").strip()
    if token:
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
