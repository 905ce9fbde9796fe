"""The finding record: one per (rule, resource or pair). Its columns are the Log Analytics table schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

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
    ("Evidence", "dynamic"),
)
FINDING_FIELDS = tuple(name for name, _ in FINDING_COLUMNS)


def finding_id(rule_id: str, *resource_ids: str) -> str:
    """Stable across runs: rule id plus the lower-cased ids of the resources the finding is about."""
    text = "|".join([rule_id.upper(), *(r.strip().lower() for r in resource_ids)])
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
    Evidence: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FINDING_FIELDS}
