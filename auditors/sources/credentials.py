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


MONITOR_TOKEN_VARIABLE = "LOGS_ACCESS_TOKEN"
STORAGE_TOKEN_VARIABLE = "AUDIT_STORAGE_ACCESS_TOKEN"


def _credential(token_variable: str):
    """A pre-acquired token from `token_variable` when set, else DefaultAzureCredential (managed identity in
    Azure, `az login` on a laptop)."""
    token = os.environ.get(token_variable, "").strip()
    if token:
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def arm_credential():
    """For Resource Manager (Resource Graph): `AZURE_ACCESS_TOKEN` or DefaultAzureCredential."""
    return _credential(TOKEN_VARIABLE)


def monitor_credential():
    """For the Logs Ingestion API (https://monitor.azure.com): `LOGS_ACCESS_TOKEN` or DefaultAzureCredential."""
    return _credential(MONITOR_TOKEN_VARIABLE)


def storage_credential():
    """For Blob Storage (https://storage.azure.com): `AUDIT_STORAGE_ACCESS_TOKEN` or DefaultAzureCredential."""
    return _credential(STORAGE_TOKEN_VARIABLE)
