"""One audit run, end to end. The Functions timer, `python -m auditors run` and `scan` all call `run_audit`:

    settings → collect or load → inventory → evaluate → deliver → archive → record

Each stage hands its value to the next. The run id and the run's time stamps are made once, here. Whatever
happens, a run record is written (Log Analytics when configured, and the evidence archive), so a run that
produced nothing, or failed, is visible.
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ClientAuthenticationError

from auditors import __version__
from auditors.engine import Evaluator
from auditors.inputs import Loaded, RowRecorder, collect_live, demo_path, load_snapshot
from auditors.pairing import PairsConfig, PairsFileError, load_pairs_file
from auditors.report import Summary
from auditors.rules import Status, catalog_version
from auditors.scopes import ScopeError
from auditors.services import Services
from auditors.settings import Settings
from auditors.sinks.base import FindingSink, SinkStats, deliver
from auditors.sinks.evidence import EvidenceSink
from auditors.sinks.local import LocalFilesSink, OutputFolderError, check_output_folder
from auditors.sinks.log_analytics import LogAnalyticsSink, UploadStats
from auditors.sinks.tables import RunRecord
from auditors.sources.snapshot import SnapshotError

Progress = Callable[[str], None]
INPUT_ERRORS = (SnapshotError, PairsFileError, ScopeError, ClientAuthenticationError, OutputFolderError)
SUCCEEDED, INCOMPLETE, FAILED = "Succeeded", "Incomplete", "Failed"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RunRequest:
    """What to audit: the embedded demo, a snapshot on disk, or live collection (with an optional prepared
    collector; otherwise one is built from the settings)."""

    source: str = "live"  # demo | snapshot | live
    snapshot: str | Path | None = None
    run_id: str | None = None
    collector: Any = None


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started: datetime
    source: str

    @property
    def time_generated(self) -> str:
        return iso(self.started)


@dataclass
class RunOutcome:
    run: RunInfo
    record: RunRecord
    loaded: Loaded | None = None
    summary: Summary | None = None
    pairs: int = 0
    unpaired_clusters: int = 0
    delivered: dict[str, SinkStats] = field(default_factory=dict)
    replayed: UploadStats | None = None
    evidence_prefix: str = ""
    error: Exception | None = None  # why the run itself failed
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return self.record.RunStatus

    @property
    def inventory(self):
        return self.loaded.inventory if self.loaded else None

    @property
    def coverage(self):
        return self.loaded.coverage if self.loaded else None

    @property
    def out_files(self) -> list[Path]:
        local = self.delivered.get(LocalFilesSink.name)
        return [Path(p) for p in local.detail.get("files", [])] if local else []


def run_audit(settings: Settings, request: RunRequest, *, services: Services | None = None,
              progress: Progress | None = None, log_analytics: LogAnalyticsSink | None = None) -> RunOutcome:
    say = progress or (lambda _m: None)
    run = RunInfo(request.run_id or str(uuid.uuid4()), datetime.now(UTC), request.source)
    services = services or Services(settings, say)
    outcome = RunOutcome(run, RunRecord())
    work = Path(tempfile.mkdtemp(prefix="acr-audit-"))  # this run's own scratch folder
    recorder = RowRecorder(work) if settings.evidence else None
    errors: list[str] = []
    try:
        remote = _remote_delivery(settings, services, log_analytics, outcome, errors, say)
        try:
            config = _pairs(settings, request)                                       # settings
            check_output_folder(settings.out_dir)
            outcome.loaded = _load(request, services, recorder, say)                  # collect or load → inventory
            evaluator = Evaluator(outcome.loaded.inventory, config, run_id=run.run_id,  # evaluate
                                  time_generated=run.time_generated, progress=say)
            outcome.summary = Summary()
            sinks = _sinks(settings, run, work, outcome.summary, remote)
            outcome.delivered = deliver(evaluator.run(), sinks)                       # deliver
            outcome.pairs, outcome.unpaired_clusters = evaluator.pair_count, evaluator.unpaired_clusters
        except Exception as exc:  # the run is recorded as Failed, whatever broke
            outcome.error = exc
            errors.append(f"run failed: {type(exc).__name__}: {exc}")
            say(f"run failed: {exc}")
            if not isinstance(exc, INPUT_ERRORS):
                say(traceback.format_exc(limit=5))
        finally:
            if recorder:
                recorder.close()
        for stats in outcome.delivered.values():
            errors += stats.errors
        outcome.record = _record(run, settings, outcome, errors, services, remote)
        if settings.evidence:
            _archive(services, outcome, work, recorder, say)                         # archive
        if remote is not None:                                                        # record
            runs = remote.upload_records(settings.runs_stream, [outcome.record.to_record()])
            if runs.spooled_rows:
                say("the run record could not be delivered and was spooled")
            remote.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcome.seconds = (datetime.now(UTC) - run.started).total_seconds()
    return outcome


def _remote_delivery(settings: Settings, services: Services, given: LogAnalyticsSink | None, outcome: RunOutcome,
                     errors: list[str], say: Progress) -> LogAnalyticsSink | None:
    """The Log Analytics sink when configured, after replaying what earlier runs could not deliver."""
    if settings.sink != "log-analytics" and given is None:
        return None
    remote = given or services.log_analytics()
    try:
        outcome.replayed = remote.replay_spool(say)
        if outcome.replayed.rows:
            say(f"spool replay: {outcome.replayed.rows:,} rows, {outcome.replayed.spooled_rows:,} failed again")
    except Exception as exc:  # the spool stays; this run goes on
        errors.append(f"spool replay failed: {type(exc).__name__}: {exc}")
    return remote


def _pairs(settings: Settings, request: RunRequest) -> PairsConfig:
    if settings.pairs_file:
        return load_pairs_file(settings.pairs_file)
    if request.source == "demo":
        return load_pairs_file(demo_path() / "pairs.yaml")
    return PairsConfig()


def _load(request: RunRequest, services: Services, recorder: RowRecorder | None, say: Progress) -> Loaded:
    record_rows = recorder.rows if recorder else None
    if request.source == "demo":
        return load_snapshot(demo_path(), say, record_rows)
    if request.source == "snapshot":
        return load_snapshot(request.snapshot, say, record_rows)
    return collect_live(request.collector or services.resource_graph(), say, record_rows)


def _sinks(settings: Settings, run: RunInfo, work: Path, summary: Summary,
           remote: LogAnalyticsSink | None) -> list[FindingSink]:
    sinks: list[FindingSink] = [summary, LocalFilesSink(settings.out_dir, run.run_id)]
    if settings.evidence:
        sinks.append(EvidenceSink(work))
    if remote is not None:
        sinks.append(remote)
    return sinks


def _archive(services: Services, outcome: RunOutcome, work: Path, recorder: RowRecorder | None,
             say: Progress) -> None:
    record = outcome.record
    try:
        archive = services.evidence_archive
        prefix = archive.prefix(record.RunId, outcome.run.started)
        record.EvidenceLocation = archive.store.location(prefix)
        findings = work / "findings.jsonl.gz"
        if not findings.exists():  # the run failed before any finding: archive an empty list
            EvidenceSink(work).close()
        archived = archive.write(record.to_record(), findings_gz=findings,
                                 snapshot_path=recorder.path if recorder else None, started=outcome.run.started,
                                 queries=_query_texts())
        # After writing: summary.json cannot hold the hash of the manifest that lists it; the run row does.
        outcome.evidence_prefix = archived.prefix
        record.ManifestSha256, record.PreviousManifestSha256 = archived.manifest_sha256, \
            archived.previous_manifest_sha256
        record.ChainPosition = archived.chain_position
        say(f"evidence archived at {record.EvidenceLocation} (chain position {archived.chain_position})")
    except Exception as exc:
        record.Errors.append(f"evidence archive failed: {type(exc).__name__}: {exc}")
        record.RunStatus = FAILED


def _query_texts() -> dict[str, str]:
    from auditors.sources.kql import collector_queries

    return {name: query.text for name, query in collector_queries().items()}


def _record(run: RunInfo, settings: Settings, outcome: RunOutcome, errors: list[str], services: Services,
            remote: LogAnalyticsSink | None) -> RunRecord:
    summary, loaded = outcome.summary, outcome.loaded
    counts = {rule: dict(c) for rule, c in summary.counts.items()} if summary and outcome.error is None else {}
    totals: Counter = Counter()
    for rule_counts in counts.values():
        totals.update(rule_counts)
    coverage: dict = {}
    scope = "snapshot" if run.source != "live" else " ".join(settings.scope) or "tenant"
    if loaded is not None and loaded.coverage is not None:
        coverage, scope = loaded.coverage.as_dict(), loaded.coverage.scope
    elif loaded is not None:
        coverage = {"source": run.source, "rows": loaded.load.rows if loaded.load else None,
                    "gaps": [g.to_dict() for g in loaded.inventory.gaps]}
    pending_entries = 0
    if remote is not None:
        pending_entries, pending_bytes = remote.spool.usage()
        if pending_bytes > settings.spool_max_mb * 1024 * 1024:
            errors.append(f"spool holds {pending_bytes / 1e6:.1f} MB in {pending_entries} entries, over its "
                          f"{settings.spool_max_mb} MB bound: the ingestion endpoint keeps failing")
    live_collected_nothing = loaded is not None and loaded.coverage is not None and coverage.get("gaps") \
        and not coverage.get("rows")
    if live_collected_nothing:
        errors.append("collection failed: no query returned data (" + "; ".join(
            g["reason"] for g in coverage["gaps"][:3]) + ")")
    if live_collected_nothing or outcome.error is not None:
        status = FAILED
    elif errors or coverage.get("gaps") or pending_entries:
        status = INCOMPLETE
    else:
        status = SUCCEEDED
    now = iso(datetime.now(UTC))
    return RunRecord(
        TimeGenerated=now, RunId=run.run_id, StartTime=iso(run.started), EndTime=now, RunStatus=status,
        Source=run.source, Scope=scope, SubscriptionsSeen=len(loaded.inventory.subscriptions) if loaded else 0,
        FindingCount=sum(totals.values()), PassCount=totals[Status.PASS.value], FailCount=totals[Status.FAIL.value],
        UnknownCount=totals[Status.UNKNOWN.value], NotApplicableCount=totals[Status.NOT_APPLICABLE.value],
        Counts=counts, Coverage=coverage, Errors=errors, SpoolPending=pending_entries, ToolVersion=__version__,
        RuleCatalogVersion=catalog_version(),
    )


class RunFailed(RuntimeError):
    """Raised to the Functions host so the platform records the failed invocation."""


def execute(progress: Progress | None = None, env=None) -> RunOutcome:
    """What the timer runs and `python -m auditors run` runs: everything from environment settings."""
    settings = Settings.from_env(env)
    return run_audit(settings, RunRequest("live"), progress=progress)


def timer_run(log: Progress) -> RunOutcome:
    """The Functions timer's body: run, log the run row, raise when the run failed."""
    outcome = execute(log)
    record = outcome.record
    log(f"run {record.RunId} {record.RunStatus}: {record.FindingCount} findings (Fail {record.FailCount}, "
        f"Unknown {record.UnknownCount}), scope {record.Scope}, {record.SubscriptionsSeen} subscriptions, "
        f"spool {record.SpoolPending}, evidence {record.EvidenceLocation or 'off'}")
    for error in record.Errors:
        log(f"run {record.RunId} problem: {error}")
    if outcome.status == FAILED:
        raise RunFailed(f"run {record.RunId} failed: {'; '.join(record.Errors) or 'see the run row'}")
    return outcome
