"""The finding record: one per (rule, resource or pair). Its columns are the Log Analytics table schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson

# (column, Log Analytics type). Defined once; sinks and infrastructure derive from it.
FINDING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("TimeGenerated", "datetime"),
    ("RunId", "string"),
    ("FindingId", "string"),
    ("RuleId", "string"),
    ("RuleTitle", "string"),
    ("Severity", "string"),
    ("Category", "string"),
    ("Status", "string"),
    ("Scope", "string"),
    ("ClusterId", "string"),
    ("ClusterName", "string"),
    ("RegistryId", "string"),
    ("RegistryName", "string"),
    ("RegistryLoginServer", "string"),
    ("ResourceId", "string"),
    ("SubscriptionId", "string"),
    ("ResourceGroup", "string"),
    ("PrincipalId", "string"),
    ("Owner", "string"),
    ("RegistryOwner", "string"),
    ("PairSource", "string"),
    ("Message", "string"),
    ("Remediation", "string"),
    ("Controls", "dynamic"),  # compliance control ids the rule provides evidence for
    ("Exempted", "boolean"),
    ("ExemptionId", "string"),
    ("ExemptionExpiresOn", "datetime"),
    ("FirstSeen", "datetime"),  # when this finding first had its current status
    ("Change", "string"),  # New | Changed | Unchanged, against the previous run
    ("LastKnownStatus", "string"),  # for a resource this run could not collect: its status when last seen
    ("LastSeen", "datetime"),  # ... and when that was
    ("Evidence", "dynamic"),  # last: encode() splices the encoded evidence in at the end
)
FINDING_FIELDS = tuple(name for name, _ in FINDING_COLUMNS)


def finding_id(rule_id: str, *resource_ids: str) -> str:
    """Stable across runs: rule id plus the ids of the resources the finding is about, as Azure compares them
    (any case, no surrounding space, no trailing `/`)."""
    text = "|".join([rule_id.upper(), *(r.strip().rstrip("/").lower() for r in resource_ids)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class Finding:
    TimeGenerated: str
    RunId: str
    FindingId: str
    RuleId: str
    RuleTitle: str
    Severity: str
    Category: str
    Status: str
    Scope: str
    ClusterId: str = ""
    ClusterName: str = ""
    RegistryId: str = ""
    RegistryName: str = ""
    RegistryLoginServer: str = ""
    ResourceId: str = ""
    SubscriptionId: str = ""
    ResourceGroup: str = ""
    PrincipalId: str = ""
    Owner: str = ""
    RegistryOwner: str = ""
    PairSource: str = ""
    Message: str = ""
    Remediation: str = ""
    Controls: list[str] = field(default_factory=list)
    Exempted: bool = False
    ExemptionId: str = ""
    ExemptionExpiresOn: str | None = None
    FirstSeen: str | None = None
    Change: str = ""
    LastKnownStatus: str = ""
    LastSeen: str | None = None
    Evidence: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FINDING_FIELDS}


@dataclass(slots=True)
class EncodedFinding:
    """A finding with its JSON encoded once; every sink shares these bytes (JSON Lines, the Logs Ingestion
    body, the evidence archive) and the CSV's Evidence cell reuses `evidence`."""

    finding: Finding
    line: bytes  # the finding as one JSON object, no newline
    evidence: bytes  # the Evidence object's JSON, as it appears inside `line`


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # a lone surrogate or a huge integer from a tenant row: keep what can be kept
        return orjson.dumps(_scrub(value))


def _scrub(value: Any) -> Any:
    """What orjson cannot write, made writable: lone surrogates replaced, integers beyond 64 bits as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, Finding):
        return {name: _scrub(getattr(value, name)) for name in FINDING_FIELDS}
    return value


def encode(finding: Finding) -> EncodedFinding:
    evidence = _dumps(finding.Evidence)
    value = finding.Evidence
    finding.Evidence = orjson.Fragment(evidence)  # splice the encoded evidence in rather than encode it twice
    try:
        line = _dumps(finding)
    finally:
        finding.Evidence = value
    return EncodedFinding(finding, line, evidence)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CSV_FIELDS = attrgetter(*FINDING_FIELDS[:-1])  # every column but Evidence, whose JSON is already encoded


def csv_cell(value: Any) -> str:
    """A CSV cell that spreadsheets will not run: text starting like a formula gets a leading apostrophe
    (OWASP's CSV injection advice); the JSON and Log Analytics outputs keep the raw value."""
    if value.__class__ is not str:
        value = "" if value is None else ("true" if value else "false") if isinstance(value, bool) else \
            ";".join(value) if isinstance(value, list) else str(value)
    return "'" + value if value[:1] in _FORMULA_FIRST else value


_FORMULA_FIRST = frozenset(_FORMULA_START)


def csv_row(encoded: EncodedFinding) -> list[str]:
    row = [csv_cell(value) for value in _CSV_FIELDS(encoded.finding)]
    row.append(encoded.evidence.decode())
    return row
