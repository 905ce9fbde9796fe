"""The two Log Analytics custom tables and their DCR stream declarations, defined once.

`log_analytics_tables.json` beside this module is generated from these definitions
(`python -m auditors.sinks.tables > auditors/sinks/log_analytics_tables.json`); the infrastructure and the
ingestion emulator read that file, and a test keeps it in step with the code.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from auditors.findings import FINDING_COLUMNS

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


def rule_catalog_version() -> str:
    from auditors.rules import catalog

    text = json.dumps([{**vars(r.meta), "severity": r.meta.severity.value, "scope": r.meta.scope.value}
                       for r in catalog()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


if __name__ == "__main__":
    sys.stdout.write(render())
