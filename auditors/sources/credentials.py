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


NO_CREDENTIAL = ("no Azure credential: sign in with `az login`, set {variable} to a bearer token, or run where a "
                 "managed identity is available")


class DefaultCredential:
    """DefaultAzureCredential (managed identity in Azure, `az login` on a laptop) that fails once, in one line
    naming the fix, instead of repeating its many-line report on every request."""

    def __init__(self, variable: str) -> None:
        from azure.identity import DefaultAzureCredential

        self._inner = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        self._variable = variable
        self._failed = False

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        from azure.core.exceptions import ClientAuthenticationError

        if not self._failed:
            try:
                return self._inner.get_token(*scopes, **kwargs)
            except ClientAuthenticationError:
                self._failed = True
        raise ClientAuthenticationError(NO_CREDENTIAL.format(variable=self._variable))

    def __repr__(self) -> str:
        return "DefaultCredential()"


def credential(token: str = "", variable: str = "AZURE_ACCESS_TOKEN"):
    """A pre-acquired bearer token when given (laptop use), else DefaultAzureCredential. Which token applies to
    which service is the settings' business; `variable` names the setting in the failure message."""
    if token.strip():
        return StaticTokenCredential(token)
    return DefaultCredential(variable)
