"""One typed settings object, read from environment variables and validated at start.

The same names are set by the infrastructure (infra/) as app settings of the Functions app; the README
lists them. Every missing or malformed value is reported, one line each, before any work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from auditors.sinks.tables import FINDINGS_STREAM, RUNS_STREAM

SINKS = ("local", "log-analytics")
_DCR_ID = re.compile(r"dcr-[0-9a-f]{32}")
_STREAM = re.compile(r"Custom-[A-Za-z][A-Za-z0-9_]*")


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    sink: str = "local"
    ingestion_endpoint: str = ""
    dcr_immutable_id: str = ""
    findings_stream: str = FINDINGS_STREAM
    runs_stream: str = RUNS_STREAM
    monitor_audience: str = "https://monitor.azure.com"
    upload_workers: int = 4
    evidence: bool = False
    storage_account_url: str = ""
    storage_connection_string: str = ""
    evidence_container: str = "evidence"
    spool_container: str = "spool"
    local_dir: str = ".acr-pull-auditor"
    spool_max_mb: int = 512
    arm_endpoint: str = "https://management.azure.com"
    scope: tuple[str, ...] = ()
    out_dir: str = "out"
    pairs_file: str = ""
    schedule: str = "0 0 */6 * * *"

    # field -> (environment variable, description) — the README's settings table is generated from this
    ENVIRONMENT = {
        "sink": ("AUDIT_SINK", "`local` (files only) or `log-analytics`"),
        "ingestion_endpoint": ("LOGS_INGESTION_ENDPOINT", "Logs Ingestion endpoint of the DCR (or its DCE), https"),
        "dcr_immutable_id": ("LOGS_DCR_IMMUTABLE_ID", "immutable id of the data collection rule, `dcr-<32 hex>`"),
        "findings_stream": ("LOGS_FINDINGS_STREAM", f"stream of the findings table (default `{FINDINGS_STREAM}`)"),
        "runs_stream": ("LOGS_RUNS_STREAM", f"stream of the runs table (default `{RUNS_STREAM}`)"),
        "monitor_audience": ("LOGS_AUDIENCE", "token audience of Azure Monitor (sovereign clouds differ)"),
        "upload_workers": ("LOGS_UPLOAD_WORKERS", "parallel uploads (default 4)"),
        "evidence": ("AUDIT_EVIDENCE", "`true` to write the evidence archive (default: on with log-analytics)"),
        "storage_account_url": ("AUDIT_STORAGE_ACCOUNT_URL", "Blob endpoint for spool and evidence, "
                                                             "`https://<account>.blob.core.windows.net`"),
        "storage_connection_string": ("AUDIT_STORAGE_CONNECTION_STRING", "instead of the URL: a connection "
                                                                         "string (Azurite, development only)"),
        "evidence_container": ("AUDIT_EVIDENCE_CONTAINER", "evidence container (default `evidence`)"),
        "spool_container": ("AUDIT_SPOOL_CONTAINER", "spool container (default `spool`)"),
        "local_dir": ("AUDIT_LOCAL_DIR", "without storage: folder for spool/ and evidence/ (default "
                                         "`.acr-pull-auditor`)"),
        "spool_max_mb": ("AUDIT_SPOOL_MAX_MB", "spool size that marks a run Incomplete (default 512)"),
        "arm_endpoint": ("AZURE_ARM_ENDPOINT", "Resource Manager endpoint (default public cloud)"),
        "scope": ("AUDIT_SCOPE", "space-separated scopes: `tenant`, `mg:NAME`, `sub:ID` (default tenant)"),
        "out_dir": ("AUDIT_OUT_DIR", "folder for findings.jsonl / findings.csv (default `out`)"),
        "pairs_file": ("AUDIT_PAIRS_FILE", "pairs file (YAML or JSON), optional"),
        "schedule": ("AUDIT_SCHEDULE", "six-field NCRONTAB of the timer (default `0 0 */6 * * *`, every 6 hours)"),
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if env is None else env
        values: dict = {}
        problems: list[str] = []
        for item in fields(cls):
            variable = cls.ENVIRONMENT[item.name][0]
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            if item.type in ("int", int):
                try:
                    values[item.name] = int(raw)
                except ValueError:
                    problems.append(f"{variable}: {raw!r} is not a whole number")
            elif item.type in ("bool", bool):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    problems.append(f"{variable}: {raw!r} is not true or false")
                values[item.name] = raw.lower() in ("true", "1", "yes")
            elif item.name == "scope":
                values[item.name] = tuple(raw.split())
            else:
                values[item.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "evidence" not in values and values.get("sink") == "log-analytics":
            values["evidence"] = True
        if problems:
            raise SettingsError(problems)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems = []
        env = self.ENVIRONMENT
        if self.sink not in SINKS:
            problems.append(f"{env['sink'][0]}: {self.sink!r} is not one of {', '.join(SINKS)}")
        if self.sink == "log-analytics":
            if not self.ingestion_endpoint:
                problems.append(f"{env['ingestion_endpoint'][0]}: required with the log-analytics sink")
            elif not self.ingestion_endpoint.startswith("https://"):
                problems.append(f"{env['ingestion_endpoint'][0]}: {self.ingestion_endpoint!r} must be an https URL")
            if not self.dcr_immutable_id:
                problems.append(f"{env['dcr_immutable_id'][0]}: required with the log-analytics sink")
            elif not _DCR_ID.fullmatch(self.dcr_immutable_id):
                problems.append(f"{env['dcr_immutable_id'][0]}: {self.dcr_immutable_id!r} is not `dcr-` followed "
                                "by 32 hex digits")
        for name in ("findings_stream", "runs_stream"):
            if not _STREAM.fullmatch(getattr(self, name)):
                problems.append(f"{env[name][0]}: {getattr(self, name)!r} must look like Custom-<TableName>")
        if self.storage_account_url and not self.storage_account_url.startswith("https://"):
            problems.append(f"{env['storage_account_url'][0]}: {self.storage_account_url!r} must be an https URL")
        if self.upload_workers < 1 or self.upload_workers > 32:
            problems.append(f"{env['upload_workers'][0]}: {self.upload_workers} must be between 1 and 32")
        if self.spool_max_mb < 1:
            problems.append(f"{env['spool_max_mb'][0]}: must be at least 1")
        if not valid_schedule(self.schedule):
            problems.append(f"{env['schedule'][0]}: {self.schedule!r} is not a six-field NCRONTAB expression "
                            "(second minute hour day month day-of-week)")
        for scope in self.scope:
            if not (scope == "tenant" or re.fullmatch(r"(mg|sub):\S+", scope)):
                problems.append(f"{env['scope'][0]} / --scope: {scope!r} is not tenant, mg:NAME or sub:ID")
        if problems:
            raise SettingsError(problems)

    # -- stores ---------------------------------------------------------------------------------------
    def store(self, container: str):
        """Blob container when storage is configured, else a local folder under `local_dir`."""
        from auditors.sinks.store import BlobStore, LocalStore

        if self.storage_connection_string:
            from azure.storage.blob import BlobServiceClient

            service = BlobServiceClient.from_connection_string(self.storage_connection_string)
            return BlobStore(service.get_container_client(container))
        if self.storage_account_url:
            from azure.storage.blob import BlobServiceClient

            from auditors.sources.credentials import storage_credential

            service = BlobServiceClient(self.storage_account_url, credential=storage_credential())
            return BlobStore(service.get_container_client(container))
        return LocalStore(Path(self.local_dir) / container)


_CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*|[A-Za-z]{3}(-[A-Za-z]{3})?")
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def valid_schedule(expression: str) -> bool:
    """A six-field NCRONTAB expression as the Functions timer takes it (numbers, ranges, steps, lists)."""
    parts = expression.split()
    if len(parts) != 6:
        return False
    for part, (low, high) in zip(parts, _CRON_RANGES, strict=True):
        if not _CRON_FIELD.fullmatch(part):
            return False
        for number in re.findall(r"\d+", part.split("/")[0]):
            if not low <= int(number) <= high:
                return False
    return True


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    lines = ["| Variable | Meaning |", "|---|---|"]
    lines += [f"| `{variable}` | {text} |" for variable, text in Settings.ENVIRONMENT.values()]
    return "\n".join(lines)
