"""Azure Key Vault keys emulator: EC P-256 keys that sign and verify (ES256), over HTTPS on 127.0.0.1.

Speaks what `azure.keyvault.keys.crypto.CryptographyClient` sends. Every request needs `api-version`. A request
without a bearer token gets the challenge the SDK expects first: 401 with `WWW-Authenticate: Bearer
authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"` (the client must be
built with `verify_challenge_resource=False`, as this host is not a vault.azure.net name). Then:

- `GET /keys/{name}[/{version}]`: the key bundle, public part only (`kty` EC, `crv` P-256, `x`, `y`, `key_ops`).
- `POST /keys/{name}/{version}/sign` `{"alg": "ES256", "value": <base64url SHA-256 digest>}` -> `{"kid", "value":
  <base64url raw R||S, 64 bytes>}`.
- `POST /keys/{name}/{version}/verify` `{"alg", "digest", "value"}` -> `{"value": true|false}`.

Roles: with `permissions` (token -> operations among get, sign, verify) a token may do only what it is given, as
Key Vault Crypto User (all three) against a reader that may only get and verify; other tokens get 403
ForbiddenByRbac. Without it any token may do everything. `GET /stats` returns counters.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from emulators.server import HttpsEmulator, JsonHandler

_PATH = re.compile(r"^/keys/([A-Za-z0-9-]{1,127})(?:/([0-9a-f]{32})?)?(?:/(sign|verify))?/?$")
OPERATIONS = ("get", "sign", "verify")
DEFAULT_TENANT = "72f988bf-0000-0000-0000-000000000000"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kv_error(code: str, message: str, inner: str = "") -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


@dataclass
class KeyVaultStats:
    requests: int = 0
    challenged: int = 0
    keys_read: int = 0
    signed: int = 0
    verified: int = 0
    forbidden: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "challenged401": self.challenged, "keysRead": self.keys_read,
                "signed": self.signed, "verified": self.verified, "forbidden403": self.forbidden}


@dataclass
class EmulatedKey:
    name: str
    version: str
    private: ec.EllipticCurvePrivateKey = field(repr=False)


class KeyVaultEmulator(HttpsEmulator):
    def __init__(self, keys: tuple[str, ...] = ("evidence-signing",), *, tenant: str = DEFAULT_TENANT,
                 permissions: Mapping[str, set[str]] | None = None, ca_out=None, port: int = 0) -> None:
        super().__init__(ca_out=ca_out, port=port)
        self.tenant = tenant
        self.permissions = {token: set(ops) for token, ops in permissions.items()} if permissions else None
        self.keys = {name: EmulatedKey(name, secrets.token_hex(16), ec.generate_private_key(ec.SECP256R1()))
                     for name in keys}
        self.stats = KeyVaultStats()

    def key_id(self, name: str, *, versioned: bool = True) -> str:
        key = self.keys[name]
        return f"{self.endpoint}/keys/{name}/{key.version}" if versioned else f"{self.endpoint}/keys/{name}"

    def public_key(self, name: str) -> ec.EllipticCurvePublicKey:
        return self.keys[name].private.public_key()

    def allowed(self, token: str, operation: str) -> bool:
        return self.permissions is None or operation in self.permissions.get(token, set())

    def bundle(self, key: EmulatedKey) -> dict:
        numbers = key.private.public_key().public_numbers()
        now = int(time.time())
        return {"key": {"kid": f"{self.endpoint}/keys/{key.name}/{key.version}", "kty": "EC", "crv": "P-256",
                        "key_ops": ["sign", "verify"], "x": b64url(numbers.x.to_bytes(32, "big")),
                        "y": b64url(numbers.y.to_bytes(32, "big"))},
                "attributes": {"enabled": True, "created": now, "updated": now,
                               "recoveryLevel": "Recoverable+Purgeable"}}

    def sign(self, key: EmulatedKey, body: dict) -> tuple[int, dict]:
        digest = _digest(body.get("value"))
        if body.get("alg") != "ES256" or digest is None:
            return 400, kv_error("BadParameter", "alg must be ES256 and value a base64url SHA-256 digest (32 bytes)")
        r, s = decode_dss_signature(key.private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        with self._lock:
            self.stats.signed += 1
        return 200, {"kid": f"{self.endpoint}/keys/{key.name}/{key.version}",
                     "value": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}

    def verify(self, key: EmulatedKey, body: dict) -> tuple[int, dict]:
        digest = _digest(body.get("digest"))
        try:
            raw = from_b64url(str(body.get("value") or ""))
        except ValueError:
            raw = b""
        if body.get("alg") != "ES256" or digest is None or len(raw) != 64:
            return 400, kv_error("BadParameter", "alg must be ES256, digest 32 bytes and value 64 bytes (R||S)")
        signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            key.private.public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            valid = True
        except InvalidSignature:
            valid = False
        with self._lock:
            self.stats.verified += 1
        return 200, {"value": valid}


def _digest(value: Any) -> bytes | None:
    try:
        digest = from_b64url(value) if isinstance(value, str) else b""
    except ValueError:
        return None
    return digest if len(digest) == 32 else None


class _Handler(JsonHandler):
    owner: KeyVaultEmulator

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/stats":
            self.send_json(200, self.owner.stats.as_dict())
            return
        self.answer("GET")

    def do_POST(self) -> None:
        self.answer("POST")

    def answer(self, method: str) -> None:
        owner = self.owner
        raw = self.read_body()
        with owner._lock:
            owner.stats.requests += 1
        path, _, query = self.path.partition("?")
        authorization = self.headers.get("Authorization", "")
        token = authorization[7:].strip() if authorization.startswith("Bearer ") else ""
        if not token:
            with owner._lock:
                owner.stats.challenged += 1
            challenge = (f'Bearer authorization="https://login.microsoftonline.com/{owner.tenant}", '
                         'resource="https://vault.azure.net"')
            self.send_json(401, kv_error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
                           {"WWW-Authenticate": challenge})
            return
        if "api-version=" not in query:
            self.send_json(400, kv_error("BadParameter", "The 'api-version' parameter is required."))
            return
        match = _PATH.match(path)
        if not match or (method == "POST") != bool(match.group(3)) or (match.group(3) and not match.group(2)):
            self.send_json(404 if not match else 405, kv_error("NotFound" if not match else "MethodNotAllowed",
                                                               f"{method} {path} is not served."))
            return
        name, version, operation = match.groups()
        key = owner.keys.get(name)
        if key is None or (version and version != key.version):
            self.send_json(404, kv_error("KeyNotFound", f"A key with (name/id) {name}{'/' + version if version else ''}"
                                                        " was not found in this key vault."))
            return
        needed = operation or "get"
        if not owner.allowed(token, needed):
            with owner._lock:
                owner.stats.forbidden += 1
            self.send_json(403, kv_error("Forbidden", f"Caller is not authorized to perform action on resource: "
                                                      f"keys/{needed}", "ForbiddenByRbac"))
            return
        if operation is None:
            with owner._lock:
                owner.stats.keys_read += 1
            self.send_json(200, owner.bundle(key))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.send_json(400, kv_error("BadParameter", "The body must be a JSON object."))
            return
        status, payload = owner.sign(key, body) if operation == "sign" else owner.verify(key, body)
        self.send_json(status, payload)


KeyVaultEmulator.handler = _Handler


SERVICE, HELP = "keyvault", "Azure Key Vault keys (EC P-256, ES256 sign/verify) on 127.0.0.1"


def add_arguments(parser) -> None:
    parser.add_argument("--key", action="append", default=[], metavar="NAME",
                        help="an EC P-256 key to create (default evidence-signing); repeatable")
    parser.add_argument("--tenant", default=DEFAULT_TENANT, help="tenant named in the 401 challenge")
    parser.add_argument("--grant", action="append", default=[], metavar="TOKEN=OPS",
                        help="only this bearer token may do OPS (comma-separated get,sign,verify); repeatable. "
                             "Without --grant any token may do everything")


def build(args) -> KeyVaultEmulator:
    permissions: dict[str, set[str]] = {}
    for grant in args.grant:
        token, _, operations = grant.partition("=")
        chosen = {o.strip() for o in operations.split(",") if o.strip()}
        if not token or not chosen <= set(OPERATIONS):
            raise ValueError(f"--grant {grant!r}: use TOKEN=get,sign,verify (any of them)")
        permissions[token] = chosen
    return KeyVaultEmulator(tuple(args.key) or ("evidence-signing",), tenant=args.tenant,
                            permissions=permissions or None, ca_out=args.ca_out, port=args.port)
