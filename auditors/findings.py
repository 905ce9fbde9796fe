"""The finding record: one per (rule, resource or pair). Its columns are the Log Analytics table schema."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from operator import attrgetter
from pathlib import Path
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
    return finding_id_of_keys(rule_id.upper(), [finding_key(r) for r in resource_ids])


def finding_key(resource_id: str) -> str:
    """A resource id as finding ids compare it."""
    return resource_id.strip().rstrip("/").lower()


def finding_id_of_keys(rule_id_upper: str, keys: list[str]) -> str:
    """`finding_id` from the upper-case rule id and the resources' `finding_key`s, worked out beforehand."""
    return hashlib.sha256("|".join([rule_id_upper, *keys]).encode()).hexdigest()[:32]


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
    line: bytes  # the finding as its wire row (see `wire_record`), one JSON object, no newline
    evidence: bytes  # the Evidence object's JSON, as it appears inside `line`


# -- the wire row ---------------------------------------------------------------------------------------------
# A finding travels (findings.jsonl, the Logs Ingestion body, the evidence archive) as a *wire row*: a column is
# left out when its value is what a reader derives anyway, and `expand` (Python) and the DCR's transformKql
# (Log Analytics, generated from the same definitions by `auditors.sinks.tables.transform_kql`) put it back, so
# the table and every reader see every column. Derived are: the rule catalog's columns but Severity, from RuleId;
# ResourceId from the finding's cluster, else its registry; SubscriptionId and ResourceGroup from ResourceId;
# resource names from their ids; a public-cloud login server from the registry's name; Exempted false; and empty
# values. A value that differs from its derivation is written out, so nothing is lost. (One difference remains:
# Kusto cannot tell a missing string from "", so a derivable column sent explicitly empty is derived in the table
# and kept empty here.)

LAST_SEGMENT = r"([^/]+)$"
SUBSCRIPTION_OF = r"(?i)^/subscriptions/([^/]+)"
RESOURCE_GROUP_OF = r"(?i)^/subscriptions/[^/]+/resourcegroups/([^/]+)"
REGISTRY_NAME = r"[A-Za-z0-9]+"  # what ACR allows: the only names a login server is derived from
PUBLIC_LOGIN_SUFFIX = ".azurecr.io"
_EMPTY: dict[str, Any] = {name: (False if kind == "boolean" else None if kind == "datetime" else
                                 [] if name == "Controls" else {} if kind == "dynamic" else "")
                          for name, kind in FINDING_COLUMNS}


def _last_segment(resource_id: str) -> str:
    """As LAST_SEGMENT extracts it."""
    return resource_id.rpartition("/")[2]


_subscription_of, _resource_group_of = re.compile(SUBSCRIPTION_OF).search, re.compile(RESOURCE_GROUP_OF).search
_registry_name_rule = re.compile(REGISTRY_NAME).fullmatch


def _subscription_and_group(resource_id: str) -> tuple[str, str]:
    """As SUBSCRIPTION_OF and RESOURCE_GROUP_OF extract them ("" where they do not match): the same patterns the
    transform uses, case-insensitive as they are."""
    subscription, group = _subscription_of(resource_id), _resource_group_of(resource_id)
    return (subscription.group(1) if subscription else ""), (group.group(1) if group else "")


@cache
def _catalog() -> dict[str, dict[str, Any]]:
    from auditors.rules import catalog

    # Severity is not among them: it stays in the row, as it is what people filter on.
    return {rule.meta.id: {"RuleTitle": rule.meta.title, "Category": rule.meta.category,
                           "Scope": rule.meta.scope.value, "Controls": list(rule.meta.controls)}
            for rule in catalog()}


def _derived(rule_id: str, cluster_id: str, registry_id: str, registry_name: str, resource_id: str) -> dict[str, Any]:
    """What a reader derives for each derivable column, from the row's own values of these five ("" if none)."""
    return {**_catalog().get(rule_id, {}),
            **_derived_from_resources(cluster_id, registry_id, registry_name, resource_id)}


@lru_cache(maxsize=4096)  # findings come resource by resource: a handful of rules share each result
def _derived_from_resources(cluster_id: str, registry_id: str, registry_name: str,
                            resource_id: str) -> dict[str, str]:
    # A finding is about its cluster (cluster and pair findings) or else its registry: the rule's scope is not
    # needed, so a row reads the same whatever a later catalog says of its rule.
    registry_name = registry_name or _last_segment(registry_id)
    subscription, group = _subscription_and_group(resource_id or cluster_id or registry_id)
    return {"ClusterName": _last_segment(cluster_id), "RegistryName": _last_segment(registry_id),
            "RegistryLoginServer": registry_name.lower() + PUBLIC_LOGIN_SUFFIX
            if registry_id and _registry_name_rule(registry_name) else "",
            "ResourceId": cluster_id or registry_id,
            "SubscriptionId": subscription, "ResourceGroup": group}


_WIRE_ORDER = tuple(name for name in FINDING_FIELDS if name != "Evidence")
_WIRE_VALUES = attrgetter(*_WIRE_ORDER)
_WIRE_INDEX = {name: index for index, name in enumerate(_WIRE_ORDER)}
_WIRE_EMPTY = [_EMPTY[name] for name in _WIRE_ORDER]


def wire_record(finding: Finding) -> dict[str, Any]:
    """The finding's columns as they travel: those a reader derives (or that are empty) are left out."""
    defaults = _WIRE_EMPTY.copy()
    for name, value in _derived(finding.RuleId or "", finding.ClusterId or "", finding.RegistryId or "",
                                finding.RegistryName or "", finding.ResourceId or "").items():
        defaults[_WIRE_INDEX[name]] = value
    return {name: value for name, value, default in zip(_WIRE_ORDER, _WIRE_VALUES(finding), defaults, strict=True)
            if value != default}


def expand(record: dict[str, Any]) -> dict[str, Any]:
    """A wire row (or an older full record) with every column, in the table's order."""
    def text(name: str) -> str:
        value = record.get(name)
        return value if isinstance(value, str) else ""

    derived = _derived(text("RuleId"), text("ClusterId"), text("RegistryId"), text("RegistryName"), text("ResourceId"))
    full = {}
    for name in FINDING_FIELDS:
        if name in record:
            full[name] = record[name]
        elif name in derived:
            value = derived[name]
            full[name] = value.copy() if isinstance(value, list) else value  # the catalog's list stays its own
        else:
            value = _EMPTY[name]
            full[name] = value.copy() if isinstance(value, list | dict) else value
    return full


class FindingsFileError(ValueError):
    """A findings file cannot be read; the message names the file, the line and the problem."""


def findings_file(path: str | Path) -> Path:
    """The findings file a user points at: the file itself, or the folder holding findings.jsonl (or its .gz)."""
    given = Path(path)
    if not given.is_dir():
        return given
    plain = given / "findings.jsonl"
    return plain if plain.exists() or not (given / "findings.jsonl.gz").exists() else given / "findings.jsonl.gz"


def read_records(path: str | Path, *, skip_damaged: bool = False) -> Iterator[dict[str, Any]]:
    """Every finding of a findings.jsonl (or .jsonl.gz) file, expanded to all columns, one at a time. A damaged
    line raises FindingsFileError, or is skipped with `skip_damaged` (an earlier run's file: its finding then
    counts as new)."""
    return map(expand, read_rows(path, skip_damaged=skip_damaged))


def read_rows(path: str | Path, *, skip_damaged: bool = False) -> Iterator[dict[str, Any]]:
    """The findings of a file as written (wire rows, not expanded): for readers that need only columns a wire row
    always keeps (ids, status, times, message, evidence)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    if skip_damaged:
                        continue
                    raise FindingsFileError(f"{path}:{number}: not a JSON finding: {exc}") from None
                if not isinstance(record, dict) or not isinstance(record.get("RuleId"), str):
                    if skip_damaged:
                        continue
                    raise FindingsFileError(f"{path}:{number}: not a finding record (no RuleId)")
                yield record
    except (OSError, EOFError, zlib.error) as exc:
        raise FindingsFileError(f"{path}: cannot read the findings file: {getattr(exc, 'strerror', None) or exc}") \
            from None


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
    return value


def encode(finding: Finding) -> EncodedFinding:
    evidence = _dumps(finding.Evidence)
    head = _dumps(wire_record(finding))  # the evidence is spliced in, not encoded twice
    line = head[:-1] + (b',"Evidence":' if len(head) > 2 else b'"Evidence":') + evidence + b"}"
    return EncodedFinding(finding, line, evidence)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A CSV cell that spreadsheets will not run: text starting like a formula gets a leading apostrophe
    (OWASP's CSV injection advice); the JSON and Log Analytics outputs keep the raw value."""
    if value.__class__ is not str:
        value = "" if value is None else ("true" if value else "false") if isinstance(value, bool) else \
            ";".join(value) if isinstance(value, list) else str(value)
    return "'" + value if value[:1] in _FORMULA_FIRST else value


_FORMULA_FIRST = frozenset(_FORMULA_START)

