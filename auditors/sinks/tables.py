"""The two Log Analytics custom tables and their DCR stream declarations, defined once.

`log_analytics_tables.json` beside this module is generated from these definitions
(`python -m auditors.sinks.tables > auditors/sinks/log_analytics_tables.json`); the infrastructure and the
ingestion emulator read that file, and a test keeps it in step with the code.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from auditors.findings import (
    FINDING_COLUMNS,
    LAST_SEGMENT,
    PUBLIC_LOGIN_SUFFIX,
    REGISTRY_NAME,
    RESOURCE_GROUP_OF,
    SUBSCRIPTION_OF,
)

FINDINGS_TABLE, FINDINGS_STREAM = "AcrPullAudit_CL", "Custom-AcrPullAudit"
RUNS_TABLE, RUNS_STREAM = "AcrPullAuditRuns_CL", "Custom-AcrPullAuditRuns"
TABLES_FILE = Path(__file__).with_name("log_analytics_tables.json")



def _column(kind: str):
    """A run-record field and its Log Analytics column type."""
    return field(default={"string": "", "datetime": "", "long": 0, "boolean": False}[kind], metadata={"kql": kind})


DYNAMIC = {"kql": "dynamic"}


@dataclass
class RunRecord:
    """One row of the runs table per run, whatever happened; its fields are the table's columns, in order."""

    TimeGenerated: str = _column("datetime")
    RunId: str = _column("string")
    StartTime: str = _column("datetime")
    EndTime: str = _column("datetime")
    RunStatus: str = _column("string")  # Succeeded | Incomplete | Failed
    Source: str = _column("string")  # live | snapshot | demo
    Scope: str = _column("string")
    SubscriptionsSeen: int = _column("long")
    FindingCount: int = _column("long")
    PassCount: int = _column("long")
    FailCount: int = _column("long")
    UnknownCount: int = _column("long")
    NotApplicableCount: int = _column("long")
    Counts: dict = field(default_factory=dict, metadata=DYNAMIC)  # {ruleId: {status: count}}
    Coverage: dict = field(default_factory=dict, metadata=DYNAMIC)
    Errors: list = field(default_factory=list, metadata=DYNAMIC)
    SpoolPending: int = _column("long")
    EvidenceLocation: str = _column("string")
    ToolVersion: str = _column("string")
    RuleCatalogVersion: str = _column("string")
    NewCount: int = _column("long")  # findings whose status is new since the previous run (Fail or Unknown)
    FixedCount: int = _column("long")  # Fail in the previous run, Pass now
    ExemptedCount: int = _column("long")
    ExemptionsSha256: str = _column("string")  # the exemptions file as evaluated
    Exemptions: dict = field(default_factory=dict, metadata=DYNAMIC)  # {active, expiring, expired, stale}: ids, dates
    CarriedForward: int = _column("long")  # findings kept Unknown for resources this run could not collect
    UnreadableRows: int = _column("long")
    QuarantinedSpoolEntries: int = _column("long")
    Permissions: dict = field(default_factory=dict, metadata=DYNAMIC)  # what each optional source was allowed to read
    ManifestSha256: str = _column("string")  # the evidence manifest of this run (tamper evidence)
    PreviousManifestSha256: str = _column("string")  # the manifest it chains to
    ChainPosition: int = _column("long")

    def to_record(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}


RUN_COLUMNS: tuple[tuple[str, str], ...] = tuple((item.name, item.metadata["kql"]) for item in fields(RunRecord))

# Names Log Analytics reserves for its own columns.
RESERVED_COLUMNS = {"_resourceid", "id", "_subscriptionid", "tenantid", "type", "uniqueid", "title"}
COLUMN_TYPES = {"string", "int", "long", "real", "boolean", "datetime", "dynamic"}
_COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,44}")


def column_problems(columns: tuple[tuple[str, str], ...]) -> list[str]:
    problems = []
    for name, kind in columns:
        if not _COLUMN_NAME.fullmatch(name):
            problems.append(f"{name}: must start with a letter, use [A-Za-z0-9_] and have at most 45 characters")
        if name.lower() in RESERVED_COLUMNS:
            problems.append(f"{name}: reserved by Log Analytics")
        if kind not in COLUMN_TYPES:
            problems.append(f"{name}: type {kind} is not one of {sorted(COLUMN_TYPES)}")
    return problems


def tables_document() -> dict:
    return {
        "_generated": "python -m auditors.sinks.tables > auditors/sinks/log_analytics_tables.json",
        "tables": [
            {"table": table, "stream": stream, "columns": [{"name": n, "type": t} for n, t in columns]}
            for table, stream, columns in ((FINDINGS_TABLE, FINDINGS_STREAM, FINDING_COLUMNS),
                                           (RUNS_TABLE, RUNS_STREAM, RUN_COLUMNS))
        ],
    }


def render() -> str:
    return json.dumps(tables_document(), indent=2) + "\n"


def load_stream_declarations(path: str | Path = TABLES_FILE) -> dict[str, dict[str, str]]:
    """Stream name -> {column: type}, from the schema file the infrastructure also uses."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return {t["stream"]: {c["name"]: c["type"] for c in t["columns"]} for t in document["tables"]}


FINDINGS_TRANSFORM_FILE = "infra/dcr/findings-transform.kql"


def _kql_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string literal is a valid KQL string literal


def transform_kql() -> str:
    """The findings stream's transformKql: the columns a wire row leaves out (`auditors.findings.wire_record`)
    put back, so the table holds every column. Only functions Azure Monitor allows in transformations: iif,
    case, extract, strcat, tolower, parse_json, isnull, todatetime."""
    from auditors.rules import catalog

    rules = [rule.meta for rule in catalog()]

    def by_rule(column: str, value) -> str:
        branches = ",\n        ".join(f"RuleId == {_kql_string(m.id)}, {value(m)}" for m in rules)
        return f"case({branches},\n        {column})"

    def from_catalog(column: str, value) -> str:
        return f"{column} = iif({column} == \"\", {by_rule(column, value)}, {column})"

    controls = by_rule("Controls", lambda m: f"parse_json({_kql_string(json.dumps(list(m.controls)))})")

    def extract(pattern: str, source: str) -> str:
        return f"extract({_kql_string(pattern)}, 1, {source})"

    lines = [
        "// Generated by `python -m auditors.sinks.tables --transform > infra/dcr/findings-transform.kql`;",
        "// a test keeps it in step with the code.",
        "// A finding arrives as a wire row (auditors/findings.py): columns a reader can derive are left out, and",
        "// put back here, so the table holds every column. Columns sent with a value keep it.",
        "source",
        "| extend TimeGenerated = todatetime(TimeGenerated)",
        "| extend " + ",\n    ".join(from_catalog(c, v) for c, v in (
            ("RuleTitle", lambda m: _kql_string(m.title)),
            ("Category", lambda m: _kql_string(m.category)), ("Scope", lambda m: _kql_string(m.scope.value)))),
        f"| extend Controls = iif(isnull(Controls), {controls}, Controls)",
        f"| extend ClusterName = iif(ClusterName == \"\", {extract(LAST_SEGMENT, 'ClusterId')}, ClusterName),",
        f"    RegistryName = iif(RegistryName == \"\", {extract(LAST_SEGMENT, 'RegistryId')}, RegistryName)",
        "| extend RegistryLoginServer = iif(RegistryLoginServer == \"\" and RegistryId != \"\"",
        f"    and {extract('^(' + REGISTRY_NAME + ')$', 'RegistryName')} != \"\",",
        f"    strcat(tolower(RegistryName), {_kql_string(PUBLIC_LOGIN_SUFFIX)}), RegistryLoginServer)",
        "| extend ResourceId = iif(ResourceId == \"\", iif(ClusterId != \"\", ClusterId, RegistryId), ResourceId)",
        "| extend Exempted = iif(isnull(Exempted), false, Exempted)",
        "| extend SubscriptionId = iif(SubscriptionId == \"\",",
        f"    {extract(SUBSCRIPTION_OF, 'ResourceId')}, SubscriptionId),",
        f"    ResourceGroup = iif(ResourceGroup == \"\", {extract(RESOURCE_GROUP_OF, 'ResourceId')}, ResourceGroup)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(transform_kql() if sys.argv[1:] == ["--transform"] else render())
