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
from auditors.changes import ChangeCounts, ChangeTracker, PreviousRun
from auditors.durations import parse_lookback
from auditors.engine import Evaluator
from auditors.exemptions import ExemptionsError, ExemptionSet, load_exemptions
from auditors.forking import processes_for
from auditors.inputs import (
    BeyondResourceGraph,
    Loaded,
    RowRecorder,
    capture_time,
    collect_live,
    demo_path,
    load_snapshot,
    read_manifest,
)
from auditors.pairing import PairsConfig, PairsFileError, load_pairs_file
from auditors.report import Summary
from auditors.reports import ReportSink
from auditors.rules import Status, catalog, catalog_version
from auditors.scopes import ScopeError
from auditors.services import Services
from auditors.settings import Settings
from auditors.sinks.base import FindingSink, SinkStats
from auditors.sinks.evidence import EvidenceSink
from auditors.sinks.local import (
    FINDINGS_JSONL,
    LocalFilesSink,
    OutputFolderError,
    check_output_folder,
    write_run_record,
)
from auditors.sinks.log_analytics import LogAnalyticsSink, UploadStats
from auditors.sinks.store import ObjectMissing
from auditors.sinks.tables import RunRecord
from auditors.sources.connection import EndpointProblem
from auditors.sources.snapshot import SnapshotError
from auditors.workers import evaluate_and_deliver, process_count

Progress = Callable[[str], None]
INPUT_ERRORS = (SnapshotError, PairsFileError, ScopeError, ClientAuthenticationError, OutputFolderError,
                ExemptionsError, EndpointProblem)
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
    collector: Any = None  # a prepared Resource Graph collector (tests); else built from the settings
    collector_options: dict = field(default_factory=dict)  # page_size, concurrency
    report: tuple[str, ...] = ()  # report formats (html, md, json) to write beside the findings


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
    exemptions: ExemptionSet | None = None
    changes: ChangeCounts | None = None
    previous: str = ""  # where the previous run's findings came from ('' when there were none)
    expected_run_row: str = ""  # the spool entry that says this run was interrupted, until the real row is sent
    error: Exception | None = None  # why the run itself failed
    seconds: float = 0.0
    reports: list[Path] = field(default_factory=list)  # the report files written (RunRequest.report)
    processes: int = 1  # processes that evaluated the findings (settings.workers)

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
    run = new_run(request)
    services = services or Services(settings, say)
    outcome = RunOutcome(run, RunRecord())
    try:
        work = Path(tempfile.mkdtemp(prefix="acr-audit-"))  # this run's own scratch folder
    except OSError as exc:
        raise OutputFolderError(f"cannot make this run's scratch folder in {tempfile.gettempdir()}: "
                                f"{exc.strerror or exc} (TMPDIR names another place)") from None
    recorder = RowRecorder(work) if settings.evidence else None
    errors: list[str] = []
    report: ReportSink | None = None
    try:
        remote = _remote_delivery(settings, services, log_analytics, outcome, errors, say)
        try:
            check_output_folder(settings.out_dir)
            evaluator = prepare(settings, request, services, run, work, recorder, say, outcome)  # load → evaluator
            previous = _previous_run(settings, services, run, outcome.loaded, work, say)
            outcome.previous = previous.origin if previous else ""
            tracker = ChangeTracker(previous, run_id=run.run_id, time_generated=run.time_generated,
                                    not_collected=_not_collected(outcome.loaded.inventory))
            outcome.changes = tracker.counts
            outcome.summary = Summary()
            sinks = _sinks(settings, run, work, outcome.summary, remote)
            report = ReportSink(request.report) if request.report else None
            sinks += [report] if report else []
            outcome.processes = process_count(settings.workers, len(evaluator.inventory.clusters), sinks)
            if outcome.processes > 1:
                say(f"evaluating in {outcome.processes} processes")
            outcome.delivered = evaluate_and_deliver(evaluator, tracker, sinks, outcome.processes)  # deliver
            outcome.pairs, outcome.unpaired_clusters = evaluator.pair_count, evaluator.unpaired_clusters
        except Exception as exc:  # the run is recorded as Failed, whatever broke
            outcome.error = exc
            errors.append(f"run failed: {type(exc).__name__}: {exc}")
            if not isinstance(exc, INPUT_ERRORS):  # input errors are the caller's to print, once
                say(f"run failed: {exc}")
                say(traceback.format_exc(limit=5))
        finally:
            if recorder:
                recorder.close()
        for stats in outcome.delivered.values():
            errors += stats.errors
        outcome.record = _record(run, settings, outcome, errors, services, remote)
        if outcome.out_files:  # beside the findings, for `report` and `explain` later
            write_run_record(outcome.out_files[0].parent, outcome.record.to_record(), run.run_id)
            if report is not None and outcome.error is None:
                outcome.reports = report.write_files(outcome.record.to_record(), outcome.out_files[0].parent)
        if settings.evidence:
            _archive(services, outcome, work, recorder, say)                         # archive
        if remote is not None:                                                        # record
            runs = remote.deliver_run_row(settings.runs_stream, outcome.record.to_record(), outcome.expected_run_row)
            if runs.spooled_rows:
                say("the run record could not be delivered and was spooled")
            if runs.lost_rows:  # only this process's output knows the run happened
                outcome.record.RunStatus = FAILED
                outcome.record.Errors += runs.errors
            remote.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcome.seconds = (datetime.now(UTC) - run.started).total_seconds()
    return outcome


def prepare(settings: Settings, request: RunRequest, services: Services, run: RunInfo, work: Path,
            recorder: RowRecorder | None, say: Progress, outcome: RunOutcome) -> Evaluator:
    """Settings, exemptions and inventory (collected or loaded) made into an evaluator; `outcome` records what
    was loaded as soon as it is, so a failure later still reports it."""
    config = _pairs(settings, request)
    outcome.exemptions = _exemptions(settings, services, work, evaluation_moment(request), say)
    outcome.loaded = _load(request, services, recorder, say)
    return Evaluator(outcome.loaded.inventory, config, run_id=run.run_id, time_generated=run.time_generated,
                     progress=say, credential_warn_days=settings.credential_warn_days,
                     pull_lookback=parse_lookback(settings.pull_lookback), exemptions=outcome.exemptions)


def _previous_run(settings: Settings, services: Services, run: RunInfo, loaded: Loaded, work: Path,
                  say: Progress) -> PreviousRun | None:
    """The previous run's findings, copied into this run's work folder: the output folder's, else (a timer run
    has no lasting output folder) the newest archived run of the same scope that did not fail."""
    local = Path(settings.out_dir) / FINDINGS_JSONL
    try:
        if local.is_file():
            copy = work / "previous-findings.jsonl"
            shutil.copyfile(local, copy)
            origin = str(local)
        elif settings.evidence:
            found = services.evidence_archive.latest_findings(_scope(run, settings, loaded))
            if found is None:
                say("changes: no previous run of this scope in the evidence archive; every finding is New")
                return None
            copy, origin = work / "previous-findings.jsonl.gz", found[1]
            copy.write_bytes(found[0])
        else:
            say(f"changes: no previous findings in {settings.out_dir}; every finding is New")
            return None
        previous = PreviousRun.read(copy, origin)
    except Exception as exc:  # comparing is a convenience: without it, every finding is New
        say(f"changes: the previous run's findings could not be read ({type(exc).__name__}: {exc}); "
            "every finding is New")
        return None
    say(f"changes: compared with run {previous.run_id or '?'} ({len(previous.statuses):,} findings, {origin})")
    return previous


def _not_collected(inventory) -> Callable[[str], str | None]:
    """Why this run may lack data for a subscription (None: it saw it whole). Any kind of row counts: a pair can
    also come from role assignments, identities or observed pulls, so a gap in any of them may hide a finding."""
    gaps = inventory.gaps

    def why(subscription_id: str) -> str | None:
        subscription = subscription_id.lower()
        for gap in gaps:
            if not gap.subscriptions or subscription in gap.subscriptions:
                return f"{gap.query}: {gap.reason}"
        return None

    return why


def _scope(run: RunInfo, settings: Settings, loaded: Loaded | None) -> str:
    """What the run covered, as the run record and the evidence chain name it."""
    if loaded is not None and loaded.coverage is not None:
        return loaded.coverage.scope
    return "snapshot" if run.source != "live" else " ".join(settings.scope) or "tenant"


def new_run(request: RunRequest) -> RunInfo:
    return RunInfo(request.run_id or str(uuid.uuid4()), datetime.now(UTC), request.source)


def _remote_delivery(settings: Settings, services: Services, given: LogAnalyticsSink | None, outcome: RunOutcome,
                     errors: list[str], say: Progress) -> LogAnalyticsSink | None:
    """The Log Analytics sink when configured, after replaying what earlier runs could not deliver."""
    if settings.sink != "log-analytics" and given is None:
        return None
    remote = given or services.log_analytics(run_id=outcome.run.run_id)
    try:
        outcome.replayed = remote.replay_spool(say)
        errors += outcome.replayed.errors
        if outcome.replayed.rows:
            say(f"spool replay: {outcome.replayed.rows:,} rows, {outcome.replayed.spooled_rows:,} failed again")
    except Exception as exc:  # the spool stays; this run goes on
        errors.append(f"spool replay failed: {type(exc).__name__}: {exc}")
    run = outcome.run
    outcome.expected_run_row = remote.expect_run_row(settings.runs_stream, RunRecord(
        TimeGenerated=iso(run.started), RunId=run.run_id, StartTime=iso(run.started), EndTime=iso(run.started),
        RunStatus=FAILED, Source=run.source, ToolVersion=__version__, RuleCatalogVersion=catalog_version(),
        Errors=["interrupted: the run did not finish (killed, crashed or timed out); the findings it delivered "
                "carry its RunId, and the next run delivered what it had written ahead"]).to_record())
    return remote


def evaluation_moment(request: RunRequest) -> datetime:
    """The moment verdicts are made for: a snapshot's capture time (a replay gives the same verdicts later), else
    now."""
    if request.source in ("demo", "snapshot"):
        captured = capture_time(read_manifest(demo_path() if request.source == "demo" else request.snapshot))
        if captured:
            try:
                moment = datetime.fromisoformat(captured.replace("Z", "+00:00"))
                return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            except ValueError:
                pass
    return datetime.now(UTC)


def _exemptions(settings: Settings, services: Services, work: Path, moment: datetime,
                say: Progress) -> ExemptionSet | None:
    """The exemptions file (a path, or `blob:CONTAINER/NAME` in the auditor's storage), validated for the run's
    date; a missing blob means no exemptions yet, a missing local file is an error."""
    source = settings.exemptions_file
    if not source:
        return None
    path = Path(source)
    if source.startswith("blob:"):
        container, _, name = source[5:].partition("/")
        try:
            data = services.store(container).get(name)
        except ObjectMissing:
            say(f"no exemptions: {source} does not exist yet")
            return None
        path = work / Path(name).name
        path.write_bytes(data)
    ids = {r.meta.id: r.meta.scope.value for r in catalog()}
    exemptions = load_exemptions(path, rule_ids=list(ids), today=moment.date(), max_days=settings.exemption_max_days,
                                 rule_scopes=ids)
    exemptions.path = source
    say(f"exemptions: {len(exemptions)} from {source} ({len(exemptions.expired())} expired)")
    return exemptions


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
        return load_snapshot(request.snapshot, say, record_rows, processes_for(services.settings.workers))
    if request.collector is None:
        services.check_arm_credential()
    collector = request.collector or services.resource_graph(**request.collector_options)
    return collect_live(collector, say, record_rows, beyond_resource_graph(services))


def beyond_resource_graph(services: Services) -> BeyondResourceGraph:
    settings = services.settings
    return BeyondResourceGraph(services, deny=settings.deny_assignments, graph=settings.graph,
                               insights=settings.container_insights)


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
        exemptions = outcome.exemptions
        archived = archive.write(record.to_record(), findings_gz=findings,
                                 snapshot_path=recorder.path if recorder else None, started=outcome.run.started,
                                 queries=_query_texts(), exemptions=None if exemptions is None else {
                                     "file": exemptions.path, "sha256": exemptions.sha256,
                                     "exemptions": exemptions.as_records()})
        # After writing: summary.json cannot hold the hash of the manifest that lists it; the run row does.
        outcome.evidence_prefix = archived.prefix
        record.ManifestSha256, record.PreviousManifestSha256 = archived.manifest_sha256, \
            archived.previous_manifest_sha256
        record.ChainPosition = archived.chain_position
        say(f"evidence archived at {record.EvidenceLocation} (chain position {archived.chain_position})")
    except Exception as exc:
        record.Errors.append(f"evidence archive failed: {type(exc).__name__}: {exc}")
        record.RunStatus = FAILED
        record.EvidenceLocation = ""  # nothing is there


def _query_texts() -> dict[str, str]:
    from auditors.sources.kql import collector_queries

    return {name: query.text for name, query in collector_queries().items()}


def _record(run: RunInfo, settings: Settings, outcome: RunOutcome, errors: list[str], services: Services,
            remote: LogAnalyticsSink | None) -> RunRecord:
    summary, loaded = outcome.summary, outcome.loaded
    changes = outcome.changes or ChangeCounts()
    counts = {rule: dict(c) for rule, c in summary.counts.items()} if summary and outcome.error is None else {}
    totals: Counter = Counter()
    for rule_counts in counts.values():
        totals.update(rule_counts)
    coverage: dict = {"source": run.source, **loaded.coverage_dict()} if loaded is not None else {}
    scope = _scope(run, settings, loaded)
    pending_entries = 0
    if remote is not None:
        try:
            pending_entries, pending_bytes = remote.spool.usage(frozenset({outcome.expected_run_row}))
        except Exception as exc:  # storage down: said once, below
            pending_entries, pending_bytes = 0, 0
            errors.append(f"spool unavailable: {type(exc).__name__}: {exc}")
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
        RuleCatalogVersion=catalog_version(), Permissions=dict(loaded.inventory.permissions) if loaded else {},
        UnreadableRows=loaded.inventory.unreadable_rows if loaded else 0,
        QuarantinedSpoolEntries=outcome.replayed.quarantined if outcome.replayed else 0,
        ExemptedCount=sum(summary.exempted.values()) if summary else 0,
        ExemptionsSha256=outcome.exemptions.sha256 if outcome.exemptions else "",
        Exemptions=_exemption_states(outcome.exemptions),
        NewCount=changes.new, FixedCount=changes.fixed, CarriedForward=changes.carried_forward,
    )


def _exemption_states(exemptions: ExemptionSet | None) -> dict:
    if exemptions is None:
        return {}
    return {"active": [e.id for e in exemptions.active()],
            "expiring": [{"id": e.id, "expiresOn": e.expires_on.isoformat()} for e in exemptions.expiring_within()],
            "expired": [{"id": e.id, "expiresOn": e.expires_on.isoformat()} for e in exemptions.expired()],
            "stale": [e.id for e in exemptions.stale()]}


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
