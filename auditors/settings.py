"""Settings: plain, typed data read from the environment in this one place and validated once.

The same names are set by the infrastructure (infra/) as app settings of the Functions app; the README's
table is generated from `Settings.ENVIRONMENT`. Every missing or malformed value is reported together,
one line each, before any work starts. Nothing here builds clients: see `auditors.services`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from auditors import ncrontab
from auditors.arm import PUBLIC_ARM_ENDPOINT
from auditors.durations import parse_lookback
from auditors.scopes import CollectionScope, ScopeError
from auditors.sinks.tables import FINDINGS_STREAM, RUNS_STREAM

SINKS = ("local", "log-analytics")
_DCR_ID = re.compile(r"dcr-[0-9a-f]{32}")
_STREAM = re.compile(r"Custom-[A-Za-z][A-Za-z0-9_]*")
# Blob container names: 3-63 lower-case letters, digits and single hyphens, starting with a letter or digit.
_CONTAINER = re.compile(r"(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings: " + "; ".join(problems))
        self.problems = problems


def _secret():
    return field(default="", repr=False)


@dataclass(frozen=True)
class Settings:
    sink: str = "local"
    ingestion_endpoint: str = ""
    dcr_immutable_id: str = ""
    findings_stream: str = FINDINGS_STREAM
    runs_stream: str = RUNS_STREAM
    monitor_audience: str = "https://monitor.azure.com"
    upload_workers: int = 4
    workers: int = 0
    write_ahead_rows: int = 20_000
    evidence: bool = False
    storage_account_url: str = ""
    storage_connection_string: str = _secret()
    evidence_container: str = "evidence"
    spool_container: str = "spool"
    local_dir: str = ".acr-pull-auditor"
    spool_max_mb: int = 512
    spool_stale_seconds: int = 300
    arm_endpoint: str = PUBLIC_ARM_ENDPOINT
    scope: tuple[str, ...] = ()
    out_dir: str = "out"
    pairs_file: str = ""
    schedule: str = "0 0 */6 * * *"
    graph: bool = True
    graph_endpoint: str = "https://graph.microsoft.com"
    deny_assignments: bool = True
    container_insights: bool = True
    logs_query_endpoint: str = "https://api.loganalytics.io"
    pull_lookback: str = "P1D"
    exemptions_file: str = ""
    exemption_max_days: int = 365
    credential_warn_days: int = 30
    signing_key_id: str = ""
    arm_token: str = _secret()
    monitor_token: str = _secret()
    storage_token: str = _secret()
    graph_token: str = _secret()
    logs_query_token: str = _secret()
    keyvault_token: str = _secret()

    # field -> (environment variable, description) — the README's settings table is generated from this
    ENVIRONMENT = {
        "sink": ("AUDIT_SINK", "`local` (files only) or `log-analytics`"),
        "ingestion_endpoint": ("LOGS_INGESTION_ENDPOINT", "Logs Ingestion endpoint of the DCR (or its DCE), https"),
        "dcr_immutable_id": ("LOGS_DCR_IMMUTABLE_ID", "immutable id of the data collection rule, `dcr-<32 hex>`"),
        "findings_stream": ("LOGS_FINDINGS_STREAM", f"stream of the findings table (default `{FINDINGS_STREAM}`)"),
        "runs_stream": ("LOGS_RUNS_STREAM", f"stream of the runs table (default `{RUNS_STREAM}`)"),
        "monitor_audience": ("LOGS_AUDIENCE", "token audience of Azure Monitor (sovereign clouds differ)"),
        "upload_workers": ("LOGS_UPLOAD_WORKERS", "parallel uploads (default 4)"),
        "workers": ("AUDIT_WORKERS", "processes that read a snapshot's role assignments (a file of 64 MiB or more) "
                                     "and evaluate the clusters (4,000 or more), each a share (0, the default: "
                                     "one per CPU, up to 8; 1: the run's own only); evaluation only when findings "
                                     "go to local files"),
        "write_ahead_rows": ("LOGS_WRITE_AHEAD_ROWS", "findings per write-ahead chunk, spooled before they are "
                                                      "sent (default 20000)"),
        "evidence": ("AUDIT_EVIDENCE", "`true` to write the evidence archive (default: on with log-analytics)"),
        "storage_account_url": ("AUDIT_STORAGE_ACCOUNT_URL", "Blob endpoint for spool and evidence, "
                                                             "`https://<account>.blob.core.windows.net`"),
        "storage_connection_string": ("AUDIT_STORAGE_CONNECTION_STRING", "instead of the URL: a connection "
                                                                         "string (Azurite, development only)"),
        "evidence_container": ("AUDIT_EVIDENCE_CONTAINER", "evidence container (default `evidence`)"),
        "spool_container": ("AUDIT_SPOOL_CONTAINER", "spool container (default `spool`)"),
        "spool_stale_seconds": ("AUDIT_SPOOL_STALE_SECONDS", "a run whose heartbeat in the spool is older than "
                                                             "this is taken for dead and its write-ahead entries "
                                                             "are delivered by the next run (default 300)"),
        "local_dir": ("AUDIT_LOCAL_DIR", "without storage: folder for spool/ and evidence/ (default "
                                         "`.acr-pull-auditor`)"),
        "spool_max_mb": ("AUDIT_SPOOL_MAX_MB", "spool size that marks a run Incomplete (default 512)"),
        "arm_endpoint": ("AZURE_ARM_ENDPOINT", "Resource Manager endpoint (default public cloud)"),
        "scope": ("AUDIT_SCOPE", "space-separated scopes: `tenant`, `mg:NAME`, `sub:ID` (default tenant)"),
        "out_dir": ("AUDIT_OUT_DIR", "folder for findings.jsonl / findings.csv (default `out`)"),
        "pairs_file": ("AUDIT_PAIRS_FILE", "pairs file (YAML or JSON), optional"),
        "schedule": ("AUDIT_SCHEDULE", "six-field NCRONTAB of the timer (default `0 0 */6 * * *`, every 6 hours)"),
        "graph": ("AUDIT_GRAPH", "`false` to skip Microsoft Graph (group members, service principals and their "
                                 "credential end dates; default true)"),
        "graph_endpoint": ("AUDIT_GRAPH_ENDPOINT", "Microsoft Graph endpoint (sovereign clouds: "
                                                   "https://graph.microsoft.us, https://microsoftgraph.chinacloudapi.cn)"),
        "deny_assignments": ("AUDIT_DENY_ASSIGNMENTS", "`false` to skip listing deny assignments (default true)"),
        "container_insights": ("AUDIT_CONTAINER_INSIGHTS", "`false` to skip reading observed pulls from the "
                                                           "clusters' Log Analytics workspaces (default true)"),
        "logs_query_endpoint": ("AUDIT_LOGS_QUERY_ENDPOINT", "Log Analytics query endpoint (default "
                                                             "https://api.loganalytics.io)"),
        "pull_lookback": ("AUDIT_PULL_LOOKBACK", "how far back observed pulls count, ISO 8601 duration "
                                                 "(default `P1D`)"),
        "exemptions_file": ("AUDIT_EXEMPTIONS_FILE", "exemptions (YAML or JSON): a path, or `blob:CONTAINER/NAME` "
                                                     "in the auditor's storage account"),
        "exemption_max_days": ("AUDIT_EXEMPTION_MAX_DAYS", "longest an exemption may run from today (default 365)"),
        "credential_warn_days": ("AUDIT_CREDENTIAL_WARN_DAYS", "warn when a cluster's service principal credential "
                                                               "expires within this many days (default 30)"),
        "signing_key_id": ("AUDIT_SIGNING_KEY_ID", "optional Key Vault key id (EC P-256) that signs each evidence "
                                                   "manifest's hash"),
        "arm_token": ("AZURE_ACCESS_TOKEN", "laptop only: a bearer token for Resource Manager instead of "
                                            "DefaultAzureCredential"),
        "monitor_token": ("LOGS_ACCESS_TOKEN", "laptop only: a bearer token for Azure Monitor"),
        "storage_token": ("AUDIT_STORAGE_ACCESS_TOKEN", "laptop only: a bearer token for Blob Storage"),
        "graph_token": ("GRAPH_ACCESS_TOKEN", "laptop only: a bearer token for Microsoft Graph"),
        "logs_query_token": ("LOGS_QUERY_ACCESS_TOKEN", "laptop only: a bearer token for the Log Analytics query API"),
        "keyvault_token": ("KEYVAULT_ACCESS_TOKEN", "laptop only: a bearer token for Key Vault (manifest signing)"),
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from environment variables (default: the process environment), then `overrides` (already
        typed, e.g. from the command line; None means not given). Raises SettingsError listing every problem."""
        env = os.environ if env is None else env
        values: dict = {}
        problems: list[str] = []
        for item in fields(cls):
            variable = cls.ENVIRONMENT[item.name][0]
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            value, problem = _convert(item.type, raw.strip())
            if problem:
                problems.append(f"{variable}: {raw.strip()!r} {problem}")
            else:
                values[item.name] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "evidence" not in values and values.get("sink") == "log-analytics":
            values["evidence"] = True
        settings = cls(**values)  # a value that failed to convert keeps its (valid) default
        problems += settings.problems()
        if problems:
            raise SettingsError(problems)
        return settings

    def problems(self) -> list[str]:
        """Every invalid value, one line each."""
        env = {name: variable for name, (variable, _) in self.ENVIRONMENT.items()}
        found: list[str] = []

        def check(name: str, problem: str | None) -> None:
            if problem:
                found.append(f"{env[name]}: {problem}")

        check("sink", None if self.sink in SINKS else f"{self.sink!r} is not one of {', '.join(SINKS)}")
        if self.sink == "log-analytics":
            check("ingestion_endpoint", _https_problem(self.ingestion_endpoint, required="with the log-analytics sink"))
            check("dcr_immutable_id", "required with the log-analytics sink" if not self.dcr_immutable_id else
                  None if _DCR_ID.fullmatch(self.dcr_immutable_id) else
                  f"{self.dcr_immutable_id!r} is not `dcr-` followed by 32 hex digits")
        for name in ("findings_stream", "runs_stream"):
            value = getattr(self, name)
            check(name, None if _STREAM.fullmatch(value) else f"{value!r} must look like Custom-<TableName>")
        for name in ("evidence_container", "spool_container"):
            value = getattr(self, name)
            check(name, None if _CONTAINER.fullmatch(value) else
                  f"{value!r} is not a container name (3-63 lower-case letters, digits and single hyphens)")
        check("storage_account_url", _https_problem(self.storage_account_url) if self.storage_account_url else None)
        check("arm_endpoint", _https_problem(self.arm_endpoint, required="always"))
        check("monitor_audience", _https_problem(self.monitor_audience, required="always"))
        check("write_ahead_rows", None if 1 <= self.write_ahead_rows <= 1_000_000 else
              f"{self.write_ahead_rows} must be between 1 and 1000000")
        check("upload_workers", None if 1 <= self.upload_workers <= 32 else f"{self.upload_workers} must be "
                                                                            "between 1 and 32")
        check("workers", None if 0 <= self.workers <= 64 else f"{self.workers} must be between 0 and 64")
        check("spool_max_mb", None if self.spool_max_mb >= 1 else "must be at least 1")
        check("spool_stale_seconds", None if self.spool_stale_seconds >= 2 else "must be at least 2")
        for name in ("graph_endpoint", "logs_query_endpoint"):
            check(name, _https_problem(getattr(self, name), required="always"))
        check("signing_key_id", _https_problem(self.signing_key_id) if self.signing_key_id else None)
        check("exemption_max_days", None if 1 <= self.exemption_max_days <= 3650 else
              f"{self.exemption_max_days} must be between 1 and 3650")
        check("credential_warn_days", None if 0 <= self.credential_warn_days <= 365 else
              f"{self.credential_warn_days} must be between 0 and 365")
        try:
            parse_lookback(self.pull_lookback)
        except ValueError as exc:
            check("pull_lookback", str(exc))
        if self.exemptions_file.startswith("blob:"):
            container, _, name = self.exemptions_file[5:].partition("/")
            check("exemptions_file", None if _CONTAINER.fullmatch(container) and name else
                  f"{self.exemptions_file!r}: use blob:CONTAINER/NAME")
        schedule_problem = ncrontab.problem(self.schedule)
        check("schedule", schedule_problem and f"{self.schedule!r}: {schedule_problem}")
        try:
            CollectionScope.parse(list(self.scope))
        except ScopeError as exc:
            found.append(f"{env['scope']} / --scope: {exc}")
        return found

    @property
    def collection_scope(self) -> CollectionScope:
        return CollectionScope.parse(list(self.scope))


def _convert(kind, raw: str):
    """(value, problem) for one environment value of a field's type."""
    if kind in ("int", int):
        try:
            return int(raw), None
        except ValueError:
            return None, "is not a whole number"
    if kind in ("bool", bool):
        lowered = raw.lower()
        if lowered not in _TRUE + _FALSE:
            return None, "is not true or false"
        return lowered in _TRUE, None
    if kind in ("tuple[str, ...]",):
        return tuple(raw.split()), None
    return raw, None


def _https_problem(url: str, required: str = "") -> str | None:
    if not url:
        return f"required {required}".strip() if required and required != "always" else "required"
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return f"{url!r} must be an https URL"
    if parts.query or parts.username or parts.password:
        return f"{url.split('?')[0]!r}…: must not carry a query string or credentials"
    return None


def valid_schedule(expression: str) -> bool:
    """A six-field NCRONTAB expression as the Functions timer takes it."""
    return ncrontab.problem(expression) is None


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    lines = ["| Variable | Meaning |", "|---|---|"]
    lines += [f"| `{variable}` | {text} |" for variable, text in Settings.ENVIRONMENT.values()]
    return "\n".join(lines)
