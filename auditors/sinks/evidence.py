"""Tamper-evident evidence archive: one folder per run, every object listed with its SHA-256 in a manifest, the
manifests of one audit scope linked in a hash chain, optionally each manifest's hash signed with a Key Vault key.

Layout in the evidence container (or local directory):

    YYYY/MM/DD/<runId>/          the day the run started (UTC)
        snapshot.jsonl.gz        the rows the run evaluated (when recorded)
        findings.jsonl.gz        every finding, full values
        summary.json             the run record (without the chain columns, which depend on the manifest)
        rules.json               the rule catalog
        exemptions.json          the exemptions as evaluated (when the run had an exemptions file)
        manifest.json            written last: every object above with name, sha256, bytes, and the chain link
        manifest.sig.json        optional, after the manifest: ES256 signature of the manifest's SHA-256
    chain/<scopeKey>/<position:010d>.json
                                 one claim per chain position: runId, prefix, manifestSha256, previous hash

`scopeKey` is the first 32 hex digits of the SHA-256 of the run record's `Scope`. A claim is created once
(create-only) before the manifest is written: two runs of one scope at the same time cannot both take a position;
the one that finds it taken reads the new head and takes the next. Objects are never overwritten; the
container's time-based immutability policy (infrastructure) keeps them that way. What each check catches and what
it cannot catch: docs/evidence-threat-model.md.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from auditors import __version__
from auditors.findings import FINDING_FIELDS, EncodedFinding, csv_cell, expand
from auditors.rules import catalog_document
from auditors.sinks.base import SinkStats
from auditors.sinks.store import ObjectExists, ObjectMissing, ObjectStore, UnsafeObjectName, check_object_name

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig.json"
SNAPSHOT, FINDINGS, SUMMARY, RULES, EXEMPTIONS = ("snapshot.jsonl.gz", "findings.jsonl.gz", "summary.json",
                                                  "rules.json", "exemptions.json")
CHAIN = "chain/"
MANIFEST_FORMAT = 2
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_CLAIM_ATTEMPTS = 64
# Hosts of one deployment may disagree on the time by a little; more than this between links is a reordering.
CLOCK_TOLERANCE = timedelta(minutes=5)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLAIM_NAME = re.compile(r"(\d{10})\.json")
_SCOPE_KEY = re.compile(r"[0-9a-f]{32}")
VERIFY_RUNS_QUERY = "verify_runs.kql"


class InvalidRunId(ValueError):
    pass


class ChainContended(RuntimeError):
    """No chain position could be claimed after many attempts: far more concurrent runs than expected."""


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or ".." in run_id:
        shown = repr(run_id)[:140]
        raise InvalidRunId(f"run id {shown} is not valid: use 1-128 letters, digits, `.`, `_` or `-`, starting with a "
                           "letter or digit, without `..`")
    return run_id


def scope_key(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:32]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


class EvidenceSink:
    """The run's findings, gzip JSON Lines, gathered for the archive as they are produced."""

    name = "evidence"

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / FINDINGS
        self._file = self.path.open("wb")
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=6, mtime=0)
        self.stats = SinkStats(self.name)

    def write(self, batch: list[EncodedFinding]) -> None:
        data = b"\n".join(encoded.line for encoded in batch) + b"\n"
        self._gzip.write(data)
        self.stats.rows += len(batch)
        self.stats.bytes += len(data)

    def close(self) -> SinkStats:
        self._gzip.close()
        self._file.close()
        return self.stats

    def abort(self) -> None:
        self.close()


# -- signing -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    key_id: str
    algorithm: str
    value: bytes

    def document(self, manifest_sha256: str) -> dict:
        return {"algorithm": self.algorithm, "keyId": self.key_id, "manifestSha256": manifest_sha256,
                "signature": base64.urlsafe_b64encode(self.value).decode().rstrip("=")}


class ManifestSigner(Protocol):
    def sign(self, digest: bytes) -> Signature: ...


class SignatureChecker(Protocol):
    def check(self, document: Any, manifest_sha256: str) -> str | None:
        """None when the signature document signs this hash with the trusted key, else why not."""


# Key Vault's DNS suffixes: on these hosts the SDK's check that a 401 challenge names Key Vault stays on.
KEY_VAULT_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".managedhsm.azure.net")


def key_vault_options(key_id: str, **options) -> dict:
    """CryptographyClient options for a key id: the challenge-resource check only where Key Vault's own domains
    are (an emulator on 127.0.0.1 cannot pass it)."""
    host = (urlsplit(key_id).hostname or "").lower()
    return {"verify_challenge_resource": host.endswith(KEY_VAULT_SUFFIXES), **options}


class KeyVaultSigner:
    """Signs a manifest's SHA-256 with an EC P-256 Key Vault key (ES256) through azure-keyvault-keys: the key
    never leaves the vault, so whoever can write the container but cannot use the key cannot sign."""

    def __init__(self, key_id: str, credential, **client_options) -> None:
        from azure.keyvault.keys.crypto import CryptographyClient

        self.client = CryptographyClient(key_id, credential, **key_vault_options(key_id, **client_options))

    def sign(self, digest: bytes) -> Signature:
        from azure.keyvault.keys.crypto import SignatureAlgorithm

        result = self.client.sign(SignatureAlgorithm.es256, digest)
        return Signature(result.key_id or "", "ES256", result.signature)


def same_key(key_id: str, trusted_key_id: str) -> bool:
    """Whether a signature's key id names the trusted key: same vault and key name; any version of it when the
    trusted id has none (rotation), that version when it has one."""
    def parts(text: str) -> tuple[str, str, str] | None:
        match = re.fullmatch(r"(https://[^/?#]+)/keys/([^/?#]+)(?:/([^/?#]*))?/?", text.strip())
        return (match.group(1).lower(), match.group(2).lower(), match.group(3) or "") if match else None

    signed, trusted = parts(key_id), parts(trusted_key_id)
    if signed is None or trusted is None or signed[:2] != trusted[:2]:
        return False
    return not trusted[2] or signed[2] == trusted[2]


class KeyVaultSignatureChecker:
    """Checks signatures against one trusted Key Vault key. The key id in a signature document is chosen by whoever
    wrote it, so it must name the trusted key; the signature is then checked with that key (the SDK fetches the
    public key and checks locally when the identity may read it, else asks the vault to verify)."""

    def __init__(self, trusted_key_id: str, credential, **client_options) -> None:
        self.trusted_key_id = trusted_key_id
        self.credential = credential
        self.client_options = client_options
        self._clients: dict[str, Any] = {}

    def check(self, document: Any, manifest_sha256: str) -> str | None:
        from azure.core.exceptions import AzureError
        from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

        if not isinstance(document, dict) or not all(isinstance(document.get(k), str) for k in
                                                     ("algorithm", "keyId", "manifestSha256", "signature")):
            return "signature document malformed (needs algorithm, keyId, manifestSha256, signature)"
        if document["algorithm"] != "ES256":
            return f"signature algorithm {document['algorithm'][:20]!r} is not ES256"
        if document["manifestSha256"] != manifest_sha256:
            return "signature is for another manifest (its manifestSha256 differs)"
        if not same_key(document["keyId"], self.trusted_key_id):
            return f"signed with {document['keyId'][:200]}, not the trusted key {self.trusted_key_id}"
        try:
            value = base64.urlsafe_b64decode(document["signature"] + "=" * (-len(document["signature"]) % 4))
        except ValueError:
            return "signature is not base64url"
        key_id = document["keyId"]
        try:
            client = self._clients.get(key_id)
            if client is None:
                client = self._clients[key_id] = CryptographyClient(
                    key_id, self.credential, **key_vault_options(key_id, **self.client_options))
            valid = client.verify(SignatureAlgorithm.es256, bytes.fromhex(manifest_sha256), value).is_valid
        except AzureError as exc:
            raise SignatureCheckUnavailable(f"cannot check signatures with {key_id}: "
                                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
        return None if valid else "signature does not verify with the trusted key"


class SignatureCheckUnavailable(RuntimeError):
    """The key could not be used to check (vault unreachable, no permission): not a finding about the archive."""


# -- the Log Analytics anchor ------------------------------------------------------------------------------------

def verify_runs_query() -> str:
    return (resources.files("auditors.sinks") / "queries" / VERIFY_RUNS_QUERY).read_text(encoding="utf-8")


@dataclass(frozen=True)
class RunRow:
    """A run row as the workspace holds it: the manifest hash the auditor recorded when the run finished."""

    run_id: str
    manifest_sha256: str
    previous_manifest_sha256: str
    chain_position: int | None
    scope: str
    started: datetime | None
    ingested: datetime | None


class WorkspaceQueryFailed(RuntimeError):
    pass


@dataclass
class WorkspaceAnchor:
    """The runs table's rows over a window, by run id, first ingested first (spool replays repeat a row)."""

    rows: dict[str, list[RunRow]]
    window: tuple[datetime | None, datetime | None]
    workspace: str = ""

    @classmethod
    def query(cls, client, workspace_id: str, start: datetime | None, end: datetime | None) -> WorkspaceAnchor:
        """Run verify_runs.kql with an `azure.monitor.query.LogsQueryClient` over [start, end] (None: all)."""
        from azure.core.exceptions import AzureError
        from azure.monitor.query import LogsQueryPartialResult

        timespan = (start, end) if start is not None and end is not None else None
        try:
            result = client.query_workspace(workspace_id, verify_runs_query(), timespan=timespan)
        except AzureError as exc:
            raise WorkspaceQueryFailed(f"workspace {workspace_id}: {type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        if isinstance(result, LogsQueryPartialResult):
            raise WorkspaceQueryFailed(f"workspace {workspace_id}: partial result ({result.partial_error}); the "
                                       "anchor cannot be trusted to be complete")
        rows: dict[str, list[RunRow]] = {}
        table = result.tables[0] if result.tables else None
        for values in (table.rows if table else []):
            row = dict(zip(table.columns, values, strict=False))
            position = row.get("ChainPosition")
            record = RunRow(str(row.get("RunId") or ""), str(row.get("ManifestSha256") or ""),
                            str(row.get("PreviousManifestSha256") or ""),
                            int(position) if isinstance(position, int | float) else None, str(row.get("Scope") or ""),
                            _as_datetime(row.get("StartTime")), _as_datetime(row.get("IngestedAt")))
            rows.setdefault(record.run_id, []).append(record)
        for found in rows.values():
            found.sort(key=lambda r: r.ingested or datetime.min.replace(tzinfo=UTC))
        return cls(rows, (start, end), workspace_id)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return _parse_time(value)


# -- the archive -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchivedRun:
    prefix: str
    run_id: str
    day: date


@dataclass(frozen=True)
class ArchiveResult:
    """What the pipeline puts in the run record: EvidenceLocation (from `prefix`), ManifestSha256,
    PreviousManifestSha256 and ChainPosition."""

    prefix: str
    manifest_sha256: str
    previous_manifest_sha256: str
    chain_position: int
    signature_key_id: str = ""


@dataclass(frozen=True)
class ChainClaim:
    position: int
    run_id: str
    prefix: str
    manifest_sha256: str
    previous_manifest_sha256: str


@dataclass
class LoadedManifest:
    """A manifest read back with its shape checked: whatever is malformed is a problem line, never an exception."""

    run: ArchivedRun
    data: bytes = b""
    document: dict = field(default_factory=dict)
    entries: list[dict] = field(default_factory=list)  # the well-formed entries
    problems: list[str] = field(default_factory=list)
    present: bool = False  # the object exists (whatever it holds)
    readable: bool = False  # ... and is a JSON object

    @property
    def sha256(self) -> str:
        return _sha256(self.data)

    @property
    def chain(self) -> dict:
        chain = self.document.get("chain")
        return chain if isinstance(chain, dict) else {}

    @property
    def position(self) -> int | None:
        position = self.chain.get("position")
        return position if isinstance(position, int) and not isinstance(position, bool) and position >= 1 else None

    @property
    def scope(self) -> str:
        scope = self.document.get("scope")
        return scope if isinstance(scope, str) else ""

    @property
    def created_at(self) -> datetime | None:
        return _parse_time(self.document.get("createdAt"))

    @property
    def started_at(self) -> datetime | None:
        return _parse_time(self.document.get("startedAt"))


@dataclass
class Verification:
    """Problems per run (by prefix) and problems that belong to no single run (chain gaps, stray objects, run rows
    without an archived run)."""

    runs: list[ArchivedRun]
    by_run: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def problems(self) -> list[str]:
        """Each problem once (a damaged claim is seen from both runs it links)."""
        found = [p for run in self.runs for p in self.by_run.get(run.prefix, [])] + self.general
        return list(dict.fromkeys(found))

    @property
    def intact(self) -> bool:
        return not self.problems


class EvidenceArchive:
    def __init__(self, store: ObjectStore, *, signer: ManifestSigner | None = None) -> None:
        self.store = store
        self.signer = signer

    @staticmethod
    def prefix(run_id: str, started: datetime) -> str:
        return f"{_utc(started):%Y/%m/%d}/{check_run_id(run_id)}/"

    # -- writing ---------------------------------------------------------------------------------------------

    def write(self, run_record: dict, *, findings_gz: Path, snapshot_path: Path | None, started: datetime,
              queries: dict[str, str] | None = None, exemptions: dict | None = None) -> ArchiveResult:
        """Archive one run and link it into its scope's chain. The manifest is written last (then its signature),
        so a run with a manifest is whole. `exemptions`: the exemptions as evaluated, stored as exemptions.json;
        the pipeline passes {"file", "sha256", "exemptions": ExemptionSet.as_records()}."""
        run_id = check_run_id(run_record.get("RunId"))
        prefix = self.prefix(run_id, started)
        objects: list[tuple[str, bytes]] = [
            (FINDINGS, findings_gz.read_bytes()),
            (SUMMARY, json.dumps(run_record, indent=2, default=str).encode()),
            (RULES, json.dumps(catalog_document(), indent=2).encode()),
        ]
        if snapshot_path is not None:
            objects.insert(0, (SNAPSHOT, snapshot_path.read_bytes()))
        if exemptions is not None:
            objects.append((EXEMPTIONS, json.dumps(exemptions, indent=2, default=str).encode()))
        listed = []
        for name, data in objects:
            self.store.put(prefix + name, data)
            listed.append({"name": name, "sha256": _sha256(data), "bytes": len(data)})
        manifest = {
            "format": MANIFEST_FORMAT, "tool": "acr-pull-auditor", "toolVersion": __version__, "runId": run_id,
            "startedAt": _iso(started), "createdAt": "", "scope": str(run_record.get("Scope") or ""),
            "runStatus": run_record.get("RunStatus"), "ruleCatalogVersion": run_record.get("RuleCatalogVersion"),
            "coverage": run_record.get("Coverage"), "queries": queries or {}, "objects": listed,
        }
        data, claim = self._claim_position(manifest, prefix)
        self.store.put(prefix + MANIFEST, data)
        key_id = ""
        if self.signer is not None:
            signature = self.signer.sign(bytes.fromhex(claim.manifest_sha256))
            self.store.put(prefix + SIGNATURE, json.dumps(signature.document(claim.manifest_sha256), indent=2).encode())
            key_id = signature.key_id
        return ArchiveResult(prefix, claim.manifest_sha256, claim.previous_manifest_sha256, claim.position, key_id)

    def _claim_position(self, manifest: dict, prefix: str) -> tuple[bytes, ChainClaim]:
        """Take the next free position of the scope's chain with a create-only claim; a writer that loses the race
        rereads the head and tries the next position, so the chain stays linear."""
        key = scope_key(manifest["scope"])
        for _ in range(MAX_CLAIM_ATTEMPTS):
            head = self._head(key)
            position = (head.position if head else 0) + 1
            previous = head.manifest_sha256 if head else ""
            manifest["createdAt"] = _iso(datetime.now(UTC))  # after the head exists: links are in time order
            manifest["chain"] = {"scopeKey": key, "position": position, "previousManifestSha256": previous,
                                 "previousRunId": head.run_id if head else ""}
            data = json.dumps(manifest, indent=2).encode()
            claim = ChainClaim(position, manifest["runId"], prefix, _sha256(data), previous)
            try:
                self.store.put(_claim_name(key, position), json.dumps({
                    "position": position, "runId": claim.run_id, "prefix": prefix, "scope": manifest["scope"],
                    "manifestSha256": claim.manifest_sha256, "previousManifestSha256": previous,
                    "createdAt": manifest["createdAt"]}, indent=2).encode())
            except ObjectExists:
                continue
            return data, claim
        raise ChainContended(f"no free chain position for scope {manifest['scope']!r} after {MAX_CLAIM_ATTEMPTS} "
                             "attempts")

    def _positions(self, key: str) -> list[int]:
        folder = f"{CHAIN}{key}/"
        found = []
        for item in self.store.list(folder):
            match = _CLAIM_NAME.fullmatch(item.name[len(folder):])
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def _head(self, key: str) -> ChainClaim | None:
        positions = self._positions(key)
        if not positions:
            return None
        claim, _problem = self.claim(key, positions[-1])
        # An unreadable head (tampered) still advances the position; the broken link is reported by verify.
        return claim or ChainClaim(positions[-1], "", "", "", "")

    def claim(self, key: str, position: int) -> tuple[ChainClaim | None, str | None]:
        """(the claim, None), (None, None) when there is none, or (None, why it is unusable)."""
        name = _claim_name(key, position)
        try:
            document = json.loads(self.store.get(name))
        except ObjectMissing:
            return None, None
        except (ValueError, UnsafeObjectName) as exc:
            return None, f"{self.store.location(name)}: unreadable chain claim ({str(exc)[:200]})"
        fields_ok = (isinstance(document, dict) and document.get("position") == position
                     and isinstance(document.get("runId"), str) and isinstance(document.get("prefix"), str)
                     and isinstance(document.get("manifestSha256"), str)
                     and isinstance(document.get("previousManifestSha256"), str))
        if not fields_ok:
            return None, (f"{self.store.location(name)}: malformed chain claim (position {position}, runId, prefix, "
                          "manifestSha256 and previousManifestSha256 expected)")
        return ChainClaim(position, document["runId"], document["prefix"], document["manifestSha256"],
                          document["previousManifestSha256"]), None

    # -- reading ---------------------------------------------------------------------------------------------

    def latest_findings(self, scope: str, *, max_back: int = 10) -> tuple[bytes, str] | None:
        """The gzip findings of the newest run of this scope's chain that did not fail (a failed run's findings
        are partial), with its location; None when there is none within `max_back` runs."""
        key = scope_key(scope)
        for position in reversed(self._positions(key)[-max_back:]):
            claim, _problem = self.claim(key, position)
            if claim is None:
                continue
            try:
                manifest = json.loads(self.store.get(claim.prefix + MANIFEST))
                if isinstance(manifest, dict) and manifest.get("runStatus") != "Failed":
                    return self.store.get(claim.prefix + FINDINGS), self.store.location(claim.prefix + FINDINGS)
            except (ObjectMissing, ValueError, UnsafeObjectName):
                continue
        return None

    def runs(self, date_from: date | None = None, date_to: date | None = None) -> list[ArchivedRun]:
        """Archived runs (those with a manifest) between two days, inclusive. Folders whose names are not a day and
        a valid run id are not runs (verify reports them)."""
        found = []
        for item in self._listing(date_from, date_to):
            run = _run_of(item.name)
            if run is None or item.name != run.prefix + MANIFEST:
                continue
            if (date_from and run.day < date_from) or (date_to and run.day > date_to):
                continue
            found.append(run)
        return sorted(found, key=lambda r: (r.day, r.run_id))

    def _listing(self, date_from: date | None, date_to: date | None):
        if date_from and date_to and 0 <= (date_to - date_from).days <= 366:
            for n in range((date_to - date_from).days + 1):
                yield from self.store.list(f"{date_from + timedelta(days=n):%Y/%m/%d}/")
        else:
            yield from self.store.list("")

    def find(self, run_id: str) -> ArchivedRun | None:
        check_run_id(run_id)
        return next((r for r in self.runs() if r.run_id == run_id), None)

    def manifest(self, run: ArchivedRun) -> dict:
        """The manifest document; {} when it is not a readable JSON object (`load_manifest` says why)."""
        return self.load_manifest(run).document

    def load_manifest(self, run: ArchivedRun) -> LoadedManifest:
        loaded = LoadedManifest(run)
        location = self.store.location(run.prefix + MANIFEST)
        try:
            loaded.data = self.store.get(run.prefix + MANIFEST)
            loaded.present = True
            document = json.loads(loaded.data)
        except (ObjectMissing, UnsafeObjectName, ValueError) as exc:
            loaded.problems.append(f"{location}: manifest unreadable: {str(exc)[:300]}")
            return loaded
        if not isinstance(document, dict):
            loaded.problems.append(f"{location}: manifest malformed: a JSON object is expected, found "
                                   f"{type(document).__name__}")
            return loaded
        loaded.document, loaded.readable = document, True
        objects = document.get("objects")
        if not isinstance(objects, list):
            loaded.problems.append(f"{location}: manifest malformed: `objects` must be a list")
            objects = []
        seen: set[str] = set()
        for index, entry in enumerate(objects):
            problem = _entry_problem(entry, seen)
            if problem:
                loaded.problems.append(f"{location}: manifest malformed: objects[{index}]: {problem}")
            else:
                seen.add(entry["name"])
                loaded.entries.append(entry)
        if not loaded.entries and not loaded.problems:
            loaded.problems.append(f"{location}: manifest lists no objects (emptied?)")
        return loaded

    # -- verifying -------------------------------------------------------------------------------------------

    def verify(self, run: ArchivedRun, *, checker: SignatureChecker | None = None,
               anchor: WorkspaceAnchor | None = None) -> list[str]:
        """Every problem with one archived run, empty when intact: the manifest's shape, missing, modified or
        unlisted objects, the folder against the manifest, its chain link, and when given its signature and its
        run row in the workspace."""
        loaded = self.load_manifest(run)
        problems = list(loaded.problems)
        if not loaded.readable:
            return problems
        problems += self._object_problems(run, loaded)
        problems += self._identity_problems(run, loaded)
        problems += self._link_problems(run, loaded)
        problems += self._signature_problems(run, loaded, checker)
        if anchor is not None:
            problems += _anchor_problems(self.store.location(run.prefix), loaded, anchor)
        return problems

    def _object_problems(self, run: ArchivedRun, loaded: LoadedManifest) -> list[str]:
        problems = []
        for entry in loaded.entries:
            location = self.store.location(run.prefix + entry["name"])
            try:
                data = self.store.get(run.prefix + entry["name"])
            except ObjectMissing:
                problems.append(f"{location}: missing")
                continue
            except UnsafeObjectName as exc:
                problems.append(f"{location}: not a plain object ({exc})")
                continue
            if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
                problems.append(f"{location}: modified (SHA-256 {_sha256(data)[:16]}…, manifest says "
                                f"{entry['sha256'][:16]}…)")
        listed = {entry["name"] for entry in loaded.entries}
        for item in self.store.list(run.prefix):
            name = item.name[len(run.prefix):]
            if name not in (MANIFEST, SIGNATURE) and name not in listed:
                problems.append(f"{self.store.location(item.name)}: not listed in the manifest")
        return problems

    def _identity_problems(self, run: ArchivedRun, loaded: LoadedManifest) -> list[str]:
        """The folder must be where the manifest says the run belongs: its run id and the day it started."""
        location = self.store.location(run.prefix + MANIFEST)
        document = loaded.document
        problems = []
        if document.get("runId") != run.run_id:
            problems.append(f"{location}: the manifest is of run {str(document.get('runId'))[:140]!r}, not of the "
                            f"folder's run {run.run_id} (moved or copied)")
        started = loaded.started_at or loaded.created_at
        if started is None:
            problems.append(f"{location}: manifest malformed: no valid startedAt/createdAt")
        elif started.astimezone(UTC).date() != run.day:
            problems.append(f"{location}: run started on {started.astimezone(UTC):%Y-%m-%d} but is filed under "
                            f"{run.day:%Y/%m/%d} (moved to another day)")
        return problems

    def _link_problems(self, run: ArchivedRun, loaded: LoadedManifest) -> list[str]:
        """This run's place in its scope's chain: its claim names it and its manifest's hash, and the previous
        position's claim holds the hash this manifest chains to, of a manifest that is still there unchanged."""
        location = self.store.location(run.prefix)
        chain, position = loaded.chain, loaded.position
        key = scope_key(loaded.scope)
        if not chain:
            return [f"{location}: manifest has no chain link (not chained, or written by a forger)"]
        previous = chain.get("previousManifestSha256")
        if position is None or not isinstance(previous, str) or chain.get("scopeKey") != key \
                or (previous and not _SHA256.fullmatch(previous)) or (position == 1) != (previous == ""):
            return [f"{location}: manifest malformed: chain link must have the scope's key, a position from 1 and "
                    "the previous manifest's SHA-256 (empty only at position 1)"]
        problems = []
        claim, unusable = self.claim(key, position)
        where = f"chain {key[:12]}… position {position}"
        if unusable:
            problems.append(unusable)
        elif claim is None:
            problems.append(f"{location}: {where} has no claim: the run is not in the chain (forged, or its claim "
                            "was deleted)")
        elif claim.run_id != run.run_id or claim.prefix != run.prefix:
            problems.append(f"{location}: {where} belongs to run {claim.run_id[:140]} at {claim.prefix[:200]}: this "
                            "run is not in the chain (forged, moved or reordered)")
        elif claim.manifest_sha256 != loaded.sha256:
            problems.append(f"{location}: manifest SHA-256 {loaded.sha256[:16]}… differs from the one recorded at "
                            f"{where} ({claim.manifest_sha256[:16]}…): the manifest was rewritten")
        if position > 1:
            problems += self._previous_link_problems(location, key, position, previous, loaded)
        return problems

    def _previous_link_problems(self, location: str, key: str, position: int, previous: str,
                                loaded: LoadedManifest) -> list[str]:
        where = f"chain {key[:12]}… position {position - 1}"
        before, unusable = self.claim(key, position - 1)
        if unusable:
            return [unusable]
        if before is None:
            return [f"{location}: the chain is broken before it: {where} has no claim (deleted)"]
        if before.manifest_sha256 != previous:
            return [f"{location}: chains to manifest {previous[:16]}…, but {where} recorded "
                    f"{before.manifest_sha256[:16]}… (a run before it was replaced or reordered)"]
        try:
            prior = _run_of(check_object_name(before.prefix + MANIFEST))
        except UnsafeObjectName:
            prior = None
        if prior is None or prior.run_id != before.run_id:
            return [f"{location}: {where} names an invalid folder {before.prefix[:200]!r}"]
        prior_manifest = self.load_manifest(prior)
        if not prior_manifest.present:
            return [f"{location}: the previous run {before.run_id} ({where}) is missing at "
                    f"{self.store.location(before.prefix)} (deleted or moved)"]
        if prior_manifest.sha256 != previous:
            return [f"{location}: the previous run {before.run_id} ({where}) no longer has the manifest this run "
                    "chains to (rewritten)"]
        earlier, later = prior_manifest.created_at, loaded.created_at
        if earlier and later and later + CLOCK_TOLERANCE < earlier:
            return [f"{location}: created {_iso(later)}, before the previous run {before.run_id} ({_iso(earlier)}): "
                    "the chain is out of time order (reordered)"]
        return []

    def _signature_problems(self, run: ArchivedRun, loaded: LoadedManifest,
                            checker: SignatureChecker | None) -> list[str]:
        location = self.store.location(run.prefix + SIGNATURE)
        try:
            document = json.loads(self.store.get(run.prefix + SIGNATURE))
        except ObjectMissing:
            return []  # whether a signature was due is decided across the chain (verify_all)
        except (ValueError, UnsafeObjectName) as exc:
            return [f"{location}: signature unreadable: {str(exc)[:200]}"]
        if checker is None:
            return []
        problem = checker.check(document, loaded.sha256)
        return [f"{location}: {problem}"] if problem else []

    def is_signed(self, run: ArchivedRun) -> bool:
        return any(item.name == run.prefix + SIGNATURE for item in self.store.list(run.prefix))

    def verify_all(self, runs: list[ArchivedRun], *, checker: SignatureChecker | None = None,
                   anchor: WorkspaceAnchor | None = None, require_signature: bool = False,
                   date_from: date | None = None, date_to: date | None = None,
                   single_run: bool = False) -> Verification:
        """Each run's problems, and what no single run shows: positions missing from a chain, claims whose run is
        gone, run folders without a manifest, objects outside the layout, signatures that stopped, and run rows
        in the workspace whose run is not in the archive. With a date range, only the runs, chain positions and
        run rows of those days are examined; with `single_run`, only the runs given and their links."""
        result = Verification(runs)
        manifests = {run.prefix: self.load_manifest(run) for run in runs}
        for run in runs:
            result.by_run[run.prefix] = self.verify(run, checker=checker, anchor=anchor)
        whole = date_from is None and date_to is None and not single_run
        archived = self.runs()
        if not single_run:
            result.general += self._layout_problems(date_from, date_to)
        result.general += self._chain_problems(manifests, whole, {run.prefix for run in archived})
        self._signing_problems(runs, manifests, require_signature, result)
        if checker is None:
            result.notes.append("signatures not checked: no trusted signing key given")
        if anchor is not None:
            archived_ids = {run.run_id for run in archived}
            for run_id, rows in sorted(anchor.rows.items()):
                started = rows[0].started
                in_range = started is not None and (date_from is None or started.date() >= date_from) \
                    and (date_to is None or started.date() <= date_to)
                if run_id not in archived_ids and in_range and not single_run:
                    result.general.append(f"workspace {anchor.workspace}: run {run_id[:140]} (started "
                                          f"{_iso(started)}, manifest {rows[0].manifest_sha256[:16]}…) has a run row "
                                          "but no archived run (deleted?)")
        else:
            result.notes.append("run rows not checked: no workspace given (a consistent rewrite of a whole chain "
                                "is not detectable from the container alone)")
        return result

    def _layout_problems(self, date_from: date | None, date_to: date | None) -> list[str]:
        """Run folders without a manifest and objects that fit no part of the layout."""
        problems = []
        folders: dict[str, set[str]] = {}
        for item in self._listing(date_from, date_to):
            name = item.name
            if name.startswith(CHAIN):
                if date_from is None and date_to is None and not _is_claim_name(name):
                    problems.append(f"{self.store.location(name)}: not a chain claim")
                continue
            run = _run_of(name)
            if run is None:
                problems.append(f"{self.store.location(name)}: outside the archive layout "
                                "(YYYY/MM/DD/<runId>/<object>)")
                continue
            folders.setdefault(run.prefix, set()).add(name[len(run.prefix):])
        for prefix, names in sorted(folders.items()):
            if MANIFEST not in names:
                problems.append(f"{self.store.location(prefix)}: run folder without a manifest (manifest deleted, "
                                "or the run never finished archiving)")
        return problems

    def _chain_problems(self, manifests: Mapping[str, LoadedManifest], whole: bool, archived: set[str]) -> list[str]:
        """Gaps and dangling claims. Whole archive: every chain, every position. Otherwise the positions between
        the first and the last run examined of each scope."""
        problems = []
        spans: dict[str, tuple[int, int]] = {}
        for loaded in manifests.values():
            if loaded.position is not None and loaded.chain.get("scopeKey") == scope_key(loaded.scope):
                key = scope_key(loaded.scope)
                low, high = spans.get(key, (loaded.position, loaded.position))
                spans[key] = (min(low, loaded.position), max(high, loaded.position))
        if whole:
            for item in self.store.list(CHAIN):
                key = item.name[len(CHAIN):].split("/", 1)[0]
                if _SCOPE_KEY.fullmatch(key) and key not in spans:
                    spans[key] = (1, 0)  # a chain none of whose runs is left
        for key, (low, high) in sorted(spans.items()):
            positions = self._positions(key)
            if whole:
                low, high = 1, max(positions or [0])
            present = set(positions)
            for position in range(low, high + 1):
                where = f"chain {key[:12]}… position {position}"
                if position not in present:
                    problems.append(f"{self.store.location(_claim_name(key, position))}: {where} is missing (deleted)")
                    continue
                claim, unusable = self.claim(key, position)
                if unusable:
                    problems.append(unusable)
                elif claim is not None and claim.prefix not in archived:
                    problems.append(f"{self.store.location(claim.prefix)}: run {claim.run_id[:140]} at {where} is "
                                    "not in the archive (deleted or moved)")
        return problems

    def _signing_problems(self, runs: list[ArchivedRun], manifests: Mapping[str, LoadedManifest],
                          require_signature: bool, result: Verification) -> None:
        """An unsigned run is a problem when signatures are required, or when an earlier run of its chain was
        signed: once a scope's runs are signed, a forger cannot drop signing unnoticed."""
        by_chain: dict[str, list[tuple[int, ArchivedRun]]] = {}
        for run in runs:
            loaded = manifests[run.prefix]
            if loaded.position is not None:
                by_chain.setdefault(scope_key(loaded.scope), []).append((loaded.position, run))
        for chain in by_chain.values():
            signed_since = None
            for position, run in sorted(chain, key=lambda pair: pair[0]):
                if self.is_signed(run):
                    signed_since = signed_since or position
                elif require_signature or signed_since is not None:
                    reason = "signatures are required" if require_signature else \
                        f"its chain is signed from position {signed_since}"
                    result.by_run[run.prefix].append(f"{self.store.location(run.prefix)}: not signed, but {reason}")

    # -- export ----------------------------------------------------------------------------------------------

    def export(self, runs: list[ArchivedRun], out: Path, *, checker: SignatureChecker | None = None) -> Path:
        """A zip for auditors, per run: the manifest (and its signature) as archived, summary.json, findings.csv,
        exceptions.csv, controls.csv, the verify result and a readable summary.txt. Entry names are built only from
        the run's day and its validated id. Written beside `out`, then renamed over it."""
        if out.is_dir():
            raise IsADirectoryError(f"{out} is a folder; give a file name such as {out / 'evidence.zip'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(handle)
        try:
            with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                for run in runs:
                    self._export_run(bundle, run, checker)
            os.replace(temporary, out)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return out

    def _export_run(self, bundle: zipfile.ZipFile, run: ArchivedRun, checker: SignatureChecker | None) -> None:
        folder = f"{run.day:%Y-%m-%d}_{check_run_id(run.run_id)}/"
        loaded = self.load_manifest(run)
        problems = self.verify(run, checker=checker)
        if loaded.data:
            bundle.writestr(folder + MANIFEST, loaded.data)
        signature = self._optional(run.prefix + SIGNATURE)
        if signature is not None:
            bundle.writestr(folder + SIGNATURE, signature)
        summary = _json_object(self._optional(run.prefix + SUMMARY))
        bundle.writestr(folder + SUMMARY, json.dumps(summary, indent=2))
        findings, unreadable = _findings(self._optional(run.prefix + FINDINGS))
        bundle.writestr(folder + "findings.csv", _findings_csv(findings))
        exemptions = _json_object(self._optional(run.prefix + EXEMPTIONS))
        bundle.writestr(folder + "exceptions.csv", _exceptions_csv(exemptions))
        bundle.writestr(folder + "controls.csv", _controls_csv(findings))
        bundle.writestr(folder + "verify.txt", "\n".join(problems or ["intact"]) + "\n")
        bundle.writestr(folder + "summary.txt", _readable(summary, loaded, problems, unreadable,
                                                          signed=signature is not None))

    def _optional(self, name: str) -> bytes | None:
        try:
            return self.store.get(name)
        except (ObjectMissing, UnsafeObjectName):
            return None


def _claim_name(key: str, position: int) -> str:
    return f"{CHAIN}{key}/{position:010d}.json"


def _is_claim_name(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 3 and bool(_SCOPE_KEY.fullmatch(parts[1])) and bool(_CLAIM_NAME.fullmatch(parts[2]))


def _run_of(name: str) -> ArchivedRun | None:
    """The run whose folder holds this object, when the name is `YYYY/MM/DD/<valid run id>/<plain name>`."""
    parts = name.split("/")
    if len(parts) != 5 or not all(p.isdigit() for p in parts[:3]) or not parts[4]:
        return None
    try:
        day = date(int(parts[0]), int(parts[1]), int(parts[2]))
        check_run_id(parts[3])
    except ValueError:
        return None
    if f"{day:%Y/%m/%d}" != "/".join(parts[:3]):
        return None
    return ArchivedRun("/".join(parts[:4]) + "/", parts[3], day)


def _entry_problem(entry: Any, seen: set[str]) -> str | None:
    if not isinstance(entry, dict):
        return f"an entry must be an object with name, sha256 and bytes, found {type(entry).__name__}"
    name, digest, size = entry.get("name"), entry.get("sha256"), entry.get("bytes")
    if not isinstance(name, str) or not name:
        return "no `name`"
    try:
        check_object_name(name)
    except UnsafeObjectName as exc:
        return f"{exc}; entries name objects of the run's own folder"
    if "/" in name or name in (MANIFEST, SIGNATURE):
        return f"name {name[:200]!r} is not an object of the run's own folder"
    if name in seen:
        return f"name {name!r} listed twice"
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return f"{name}: `sha256` must be 64 lower-case hex digits"
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"{name}: `bytes` must be a whole number"
    return None


def _anchor_problems(location: str, loaded: LoadedManifest, anchor: WorkspaceAnchor) -> list[str]:
    """The manifest must be the one whose hash the run row recorded when the run finished."""
    run_id = loaded.run.run_id
    rows = anchor.rows.get(run_id, [])
    where = f"workspace {anchor.workspace}"
    if not rows:
        return [f"{location}: {where} has no run row for run {run_id} with a manifest hash (forged, or the row is "
                "still in the spool)"]
    problems = []
    first = rows[0]
    if first.manifest_sha256 != loaded.sha256:
        problems.append(f"{location}: manifest SHA-256 {loaded.sha256[:16]}… differs from the run row ingested "
                        f"{_iso(first.ingested) if first.ingested else ''} ({first.manifest_sha256[:16]}…): the "
                        "manifest was rewritten after the run")
    if first.chain_position is not None and loaded.position is not None and first.chain_position != loaded.position:
        problems.append(f"{location}: chain position {loaded.position} differs from the run row's "
                        f"{first.chain_position}")
    later = {r.manifest_sha256 for r in rows[1:]} - {first.manifest_sha256}
    if later:
        problems.append(f"{location}: {where} holds later run rows for run {run_id} with other manifest hashes "
                        f"({', '.join(sorted(h[:16] + '…' for h in later))}): rows were added after the run")
    return problems


# -- export helpers ----------------------------------------------------------------------------------------------

def _json_object(data: bytes | None) -> dict:
    try:
        value = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _findings(data: bytes | None) -> tuple[list[dict], int]:
    """(findings that parse, how many lines did not)."""
    if data is None:
        return [], 0
    try:
        lines = gzip.decompress(data).decode("utf-8", errors="replace").splitlines()
    except (OSError, EOFError):
        return [], 1
    findings, unreadable = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            findings.append(expand(record))
        else:
            unreadable += 1
    return findings, unreadable


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    elif isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return csv_cell(value)


def _csv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def _findings_csv(findings: list[dict]) -> str:
    rows = []
    for record in findings:
        evidence = json.dumps(record.get("Evidence"), ensure_ascii=False, separators=(",", ":"))
        rows.append([_cell(record.get(name)) for name in FINDING_FIELDS[:-1]] + [csv_cell(evidence)])
    return _csv(FINDING_FIELDS, rows)


EXCEPTION_COLUMNS = ("id", "rules", "justification", "approvedBy", "expiresOn", "ticket")


def _exceptions_csv(exemptions: dict) -> str:
    """The exemptions in force during the run (expired entries exempted nothing)."""
    entries = exemptions.get("exemptions")
    rows = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("status") != "expired":
            rows.append([_cell(entry.get(column)) for column in EXCEPTION_COLUMNS])
    return _csv(EXCEPTION_COLUMNS, rows)


CONTROL_COLUMNS = ("control", "pass", "fail", "unknown", "notApplicable", "exempted")


def _controls_csv(findings: list[dict]) -> str:
    counts: dict[str, Counter] = {}
    for record in findings:
        controls = record.get("Controls")
        controls = controls.split(";") if isinstance(controls, str) else controls
        for control in controls if isinstance(controls, list) else []:
            if isinstance(control, str) and control.strip():
                tally = counts.setdefault(control.strip(), Counter())
                tally[str(record.get("Status"))] += 1
                tally["exempted"] += record.get("Exempted") is True
    rows = [[csv_cell(control), c["Pass"], c["Fail"], c["Unknown"], c["NotApplicable"], c["exempted"]]
            for control, c in sorted(counts.items())]
    return _csv(CONTROL_COLUMNS, rows)


def _readable(summary: dict, loaded: LoadedManifest, problems: list[str], unreadable_findings: int, *,
              signed: bool) -> str:
    coverage = summary.get("Coverage") if isinstance(summary.get("Coverage"), dict) else {}
    chain = loaded.chain
    integrity = ("PROBLEMS: " + "; ".join(problems)) if problems else \
        f"all {len(loaded.entries)} objects match the manifest; chain link intact"
    lines = [
        f"Run {summary.get('RunId', loaded.run.run_id)} ({summary.get('RunStatus', loaded.document.get('runStatus'))})",
        f"  time:      {summary.get('StartTime')} to {summary.get('EndTime')}",
        f"  source:    {summary.get('Source')}   scope: {summary.get('Scope')}",
        f"  coverage:  {summary.get('SubscriptionsSeen')} subscriptions; "
        f"{coverage.get('requests', '-')} requests, {coverage.get('rows', '-')} rows, "
        f"{len(coverage.get('gaps') or [])} collection gap(s)",
        f"  findings:  {summary.get('FindingCount')} (Pass {summary.get('PassCount')}, "
        f"Fail {summary.get('FailCount')}, Unknown {summary.get('UnknownCount')}, "
        f"NotApplicable {summary.get('NotApplicableCount')})",
        f"  tool:      {summary.get('ToolVersion')}, rule catalog {summary.get('RuleCatalogVersion')}",
        f"  manifest:  SHA-256 {loaded.sha256 if loaded.data else '-'}",
        f"  chain:     position {chain.get('position', '-')}, previous manifest "
        f"{chain.get('previousManifestSha256') or '-'}",
        f"  signature: {'present (see verify.txt)' if signed else 'none'}",
        "  integrity: " + integrity,
    ]
    if unreadable_findings:
        lines.append(f"  note:      {unreadable_findings} archived finding line(s) could not be read")
    lines += ["", "Per rule (Pass / Fail / Unknown / NotApplicable):"]
    counts = summary.get("Counts") if isinstance(summary.get("Counts"), dict) else {}
    for rule_id, rule_counts in sorted(counts.items()):
        if isinstance(rule_counts, dict):
            lines.append(f"  {rule_id}: {rule_counts.get('Pass', 0)} / {rule_counts.get('Fail', 0)} / "
                         f"{rule_counts.get('Unknown', 0)} / {rule_counts.get('NotApplicable', 0)}")
    errors = summary.get("Errors") if isinstance(summary.get("Errors"), list) else []
    gaps = coverage.get("gaps") if isinstance(coverage.get("gaps"), list) else []
    exceptions = [str(e) for e in errors] + [f"collection gap: {g.get('query')}: {g.get('reason')}"
                                             for g in gaps if isinstance(g, dict)]
    lines += ["", "Exceptions:"] + ([f"  - {e}" for e in exceptions] or ["  none"])
    lines += ["", "Exemptions in force: exceptions.csv; evidence per control: controls.csv"]
    return "\n".join(lines) + "\n"
