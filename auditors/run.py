"""One audit run end to end: replay the spool, scan, deliver findings, archive evidence, record the run.

The Functions timer and `python -m auditors run` call `run_audit` with settings from the environment;
`python -m auditors scan --sink log-analytics` calls it with the CLI's choices. Whatever happens, a run
record is written (Log Analytics and the evidence archive), so a run that produced nothing, or failed,
is visible.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from azure.core.exceptions import ClientAuthenticationError

from auditors import __version__
from auditors.pairing import PairsFileError
from auditors.rules import Status
from auditors.scan import ScanResult, demo_path, run_scan
from auditors.settings import Settings
from auditors.sinks.evidence import EvidenceArchive
from auditors.sinks.log_analytics import LogAnalyticsSink, UploadStats
from auditors.sinks.spool import Spool
from auditors.sinks.tables import rule_catalog_version
from auditors.sources.resource_graph import ScopeError
from auditors.sources.snapshot import SnapshotError

Progress = Callable[[str], None]
INPUT_ERRORS = (SnapshotError, PairsFileError, ScopeError, ClientAuthenticationError)
SUCCEEDED, INCOMPLETE, FAILED = "Succeeded", "Incomplete", "Failed"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class RunOutcome:
    record: dict
    scan: ScanResult | None
    uploads: dict[str, UploadStats] = field(default_factory=dict)
    evidence_prefix: str = ""
    error: Exception | None = None  # why the scan itself failed

    @property
    def status(self) -> str:
        return self.record["RunStatus"]


class RowRecorder:
    """Gzip JSON Lines copy of every row the run evaluates, for the evidence archive (streamed)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "snapshot.jsonl.gz"
        self._handle = gzip.open(self.path, "wt", encoding="utf-8")  # noqa: SIM115  (closed by close())

    def rows(self, rows):
        for row in rows:
            self._handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            yield row

    def close(self) -> None:
        self._handle.close()


def _read_findings(path: Path):
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def run_audit(settings: Settings, *, snapshot: str | Path | None = None, demo: bool = False, collector=None,
              run_id: str | None = None, progress: Progress | None = None,
              sink: LogAnalyticsSink | None = None) -> RunOutcome:
    """Run one audit. Live when neither `snapshot` nor `demo` is given (then `collector` collects)."""
    say = progress or (lambda _m: None)
    started = datetime.now(UTC)
    run_id = run_id or str(uuid.uuid4())
    errors: list[str] = []
    uploads: dict[str, UploadStats] = {}
    spool = Spool(settings.store(settings.spool_container), max_bytes=settings.spool_max_mb * 1024 * 1024)
    if settings.sink == "log-analytics" and sink is None:
        from auditors.sources.credentials import monitor_credential

        sink = LogAnalyticsSink(endpoint=settings.ingestion_endpoint, rule_id=settings.dcr_immutable_id,
                                credential=monitor_credential(), spool=spool, workers=settings.upload_workers,
                                audience=settings.monitor_audience)
    if sink is not None:
        try:  # earlier runs' undelivered rows go first
            replayed = sink.replay_spool(say)
            if replayed.rows:
                uploads["spoolReplay"] = replayed
                say(f"spool replay: {replayed.rows:,} rows, {replayed.spooled_rows:,} failed again")
        except Exception as exc:  # the spool stays; this run goes on
            errors.append(f"spool replay failed: {type(exc).__name__}: {exc}")

    work = Path(tempfile.mkdtemp(prefix="acr-audit-"))
    recorder = RowRecorder(work) if settings.evidence else None
    source = "demo" if demo else "snapshot" if snapshot else "live"
    result: ScanResult | None = None
    failure: Exception | None = None
    try:
        result = run_scan(demo_path() if demo else snapshot, settings.out_dir,
                          pairs_file=settings.pairs_file or (demo_path() / "pairs.yaml" if demo else None),
                          run_id=run_id, progress=say, collector=collector,
                          row_filter=recorder.rows if recorder else None)
    except Exception as exc:
        failure = exc
        errors.append(f"scan failed: {type(exc).__name__}: {exc}")
        say(f"scan failed: {exc}")
        if not isinstance(exc, INPUT_ERRORS):
            say(traceback.format_exc(limit=5))
    finally:
        if recorder:
            recorder.close()

    if result is not None and sink is not None:
        findings_path = result.out_files[0]
        uploads["findings"] = sink.upload(settings.findings_stream, _read_findings(findings_path))
        say(f"uploaded {uploads['findings'].rows:,} findings in {uploads['findings'].requests:,} requests "
            f"({uploads['findings'].spooled_rows:,} spooled)")
    for stats in uploads.values():
        errors += stats.errors

    record = _run_record(run_id, started, source, settings, result, errors, spool)
    outcome = RunOutcome(record, result, uploads, error=failure)
    if settings.evidence:
        try:
            archive = EvidenceArchive(settings.store(settings.evidence_container))
            record["EvidenceLocation"] = archive.store.location(archive.prefix(run_id, started))
            findings_path = result.out_files[0] if result else work / "findings.jsonl"
            findings_path.touch()
            outcome.evidence_prefix = archive.write(
                record, findings_path=findings_path, snapshot_path=recorder.path if recorder else None,
                started=started, queries=_query_texts())
            say(f"evidence archived at {record['EvidenceLocation']}")
        except Exception as exc:
            record["Errors"].append(f"evidence archive failed: {type(exc).__name__}: {exc}")
            record["RunStatus"] = FAILED
    if sink is not None:
        uploads["runs"] = sink.upload(settings.runs_stream, [record])
        if uploads["runs"].spooled_rows:
            say("the run record could not be delivered and was spooled")
    return outcome


def _query_texts() -> dict[str, str]:
    from auditors.sources.kql import collector_queries

    return {name: query.text for name, query in collector_queries().items()}


def _run_record(run_id: str, started: datetime, source: str, settings: Settings, result: ScanResult | None,
                errors: list[str], spool: Spool) -> dict:
    counts: dict[str, dict[str, int]] = {}
    totals: Counter = Counter()
    coverage: dict = {}
    scope = "snapshot" if source != "live" else " ".join(settings.scope) or "tenant"
    subscriptions = 0
    if result is not None:
        counts = {rule: dict(c) for rule, c in result.summary.counts.items()}
        for rule_counts in counts.values():
            totals.update(rule_counts)
        subscriptions = len(result.inventory.subscriptions)
        if result.coverage is not None:
            coverage = result.coverage.as_dict()
            scope = result.coverage.scope
        else:
            coverage = {"source": source, "rows": result.load.rows if result.load else None,
                        "gaps": [g.to_dict() for g in result.inventory.gaps]}
    pending_entries, pending_bytes = spool.usage()
    if pending_bytes > spool.max_bytes:
        errors.append(f"spool holds {pending_bytes / 1e6:.1f} MB in {pending_entries} entries, over its "
                      f"{spool.max_bytes / 1e6:.0f} MB bound: the ingestion endpoint keeps failing")
    if result is not None and result.coverage is not None and coverage.get("gaps") and not coverage.get("rows"):
        errors.append("collection failed: no query returned data (" + "; ".join(
            g["reason"] for g in coverage["gaps"][:3]) + ")")
        status = FAILED
    elif result is None:
        status = FAILED
    elif errors or coverage.get("gaps") or pending_entries:
        status = INCOMPLETE
    else:
        status = SUCCEEDED
    return {
        "TimeGenerated": _iso(datetime.now(UTC)), "RunId": run_id, "StartTime": _iso(started),
        "EndTime": _iso(datetime.now(UTC)), "RunStatus": status, "Source": source, "Scope": scope,
        "SubscriptionsSeen": subscriptions, "FindingCount": sum(totals.values()),
        "PassCount": totals[Status.PASS.value], "FailCount": totals[Status.FAIL.value],
        "UnknownCount": totals[Status.UNKNOWN.value], "NotApplicableCount": totals[Status.NOT_APPLICABLE.value],
        "Counts": counts, "Coverage": coverage, "Errors": errors, "SpoolPending": pending_entries,
        "EvidenceLocation": "", "ToolVersion": __version__, "RuleCatalogVersion": rule_catalog_version(),
    }


class RunFailed(RuntimeError):
    """Raised to the Functions host so the platform records the failed invocation."""


def collector_from_settings(settings: Settings, progress: Progress | None = None, **overrides):
    from auditors.sources.credentials import arm_credential
    from auditors.sources.resource_graph import CollectionScope, ResourceGraphCollector

    options = {"page_size": 1000, "concurrency": 4, **overrides}
    return ResourceGraphCollector(arm_credential(), endpoint=settings.arm_endpoint,
                                  scope=CollectionScope.parse(list(settings.scope)), progress=progress, **options)


def execute(progress: Progress | None = None, env=None) -> RunOutcome:
    """What the timer runs and `python -m auditors run` runs: everything from environment settings."""
    settings = Settings.from_env(env)
    return run_audit(settings, collector=collector_from_settings(settings, progress), progress=progress)


def timer_run(log: Progress) -> RunOutcome:
    """The Functions timer's body: run, log the run row, raise when the run failed."""
    outcome = execute(log)
    record = outcome.record
    log(f"run {record['RunId']} {record['RunStatus']}: {record['FindingCount']} findings (Fail "
        f"{record['FailCount']}, Unknown {record['UnknownCount']}), scope {record['Scope']}, "
        f"{record['SubscriptionsSeen']} subscriptions, spool {record['SpoolPending']}, "
        f"evidence {record['EvidenceLocation'] or 'off'}")
    for error in record["Errors"]:
        log(f"run {record['RunId']} problem: {error}")
    if outcome.status == FAILED:
        raise RunFailed(f"run {record['RunId']} failed: {'; '.join(record['Errors']) or 'see the run row'}")
    return outcome
