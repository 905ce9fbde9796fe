"""Findings and run records to Log Analytics: the real LogsIngestionClient against the ingestion emulator,
spool and evidence in Azurite through the real azure-storage-blob client."""

import gzip
import json
import uuid

import pytest

from auditors.findings import FINDING_FIELDS
from auditors.pipeline import FAILED, SUCCEEDED, RunRequest, run_audit
from auditors.services import Services
from auditors.settings import Settings, SettingsError
from auditors.sinks.evidence import EvidenceArchive
from auditors.sinks.log_analytics import FIELD_LIMIT, LogAnalyticsSink, fit_fields
from auditors.sinks.spool import LIVE, Spool
from auditors.sinks.tables import (
    FINDINGS_STREAM,
    RUN_COLUMNS,
    RUNS_STREAM,
    TABLES_FILE,
    column_problems,
    render,
)
from auditors.sources.credentials import StaticTokenCredential
from emulators.ingestion import IngestionFaults, LogsIngestionEmulator

DCR = "dcr-" + "ab" * 16


@pytest.fixture
def ingestion(tmp_path):
    started = []

    def start(**kwargs):
        emulator = LogsIngestionEmulator(dcr_id=DCR, ca_out=tmp_path / "ingest-ca.pem", seed=1, **kwargs).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def settings(tmp_path, azurite):
    suffix = uuid.uuid4().hex[:8]
    return Settings(sink="log-analytics", ingestion_endpoint="https://127.0.0.1", dcr_immutable_id=DCR,
                    evidence=True, storage_connection_string=azurite, evidence_container=f"evidence-{suffix}",
                    spool_container=f"spool-{suffix}", out_dir=str(tmp_path / "out"))


def sink_for(emulator, settings, **kwargs):
    kwargs.setdefault("retry_backoff_factor", 0.01)
    return LogAnalyticsSink(endpoint=emulator.endpoint, rule_id=DCR, credential=StaticTokenCredential("token"),
                            stream=FINDINGS_STREAM,
                            spool=Spool(Services(settings).store(settings.spool_container)),
                            connection_verify=str(emulator.ca_path), **kwargs)


def local_findings(outcome) -> list[dict]:
    return [json.loads(line) for line in outcome.out_files[0].open()]


def test_demo_scan_delivers_every_finding_exactly(ingestion, settings):
    emulator = ingestion()
    outcome = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    assert outcome.status == SUCCEEDED
    assert emulator.landed(FINDINGS_STREAM) == local_findings(outcome)
    [run] = emulator.landed(RUNS_STREAM)
    assert run["RunId"] == outcome.record.RunId and run["FindingCount"] == len(local_findings(outcome))
    assert run["Counts"]["AKS-ACR-001"]["Fail"] == outcome.summary.counts["AKS-ACR-001"]["Fail"]


def test_large_runs_go_in_bodies_of_at_most_1_mb_in_parallel(ingestion, settings):
    emulator = ingestion()
    records = [{"TimeGenerated": "2026-11-29T00:00:00Z", "RunId": "r", "FindingId": f"{i:032x}",
                "Message": "x" * 400, "Evidence": {"facts": list(range(40))}} for i in range(12_000)]
    stats = sink_for(emulator, settings, workers=4).upload_records(FINDINGS_STREAM, records)
    assert stats.batches > 5 and stats.spooled_rows == 0
    assert emulator.stats.rejected == {}  # a body over 1 MB would have been refused with 413
    landed = sorted(emulator.landed(FINDINGS_STREAM), key=lambda r: r["FindingId"])  # parallel: any order
    assert landed == [{k: r[k] for k in r if k in FINDING_FIELDS} for r in records]


def test_throttling_server_errors_and_dropped_connections_are_recovered(ingestion, settings):
    emulator = ingestion(faults=IngestionFaults.parse(["429:2", "503:2", "reset:1"]))
    outcome = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    assert emulator.stats.faults == {"429": 2, "503": 2, "reset": 1}
    assert emulator.landed(FINDINGS_STREAM) == local_findings(outcome)
    assert outcome.status == SUCCEEDED and outcome.delivered["log-analytics"].detail["upload"]["throttled"] == 2


def test_a_failing_stream_is_spooled_and_the_next_run_delivers_it_first(ingestion, settings):
    broken = ingestion(faults=IngestionFaults.parse([], [f"{FINDINGS_STREAM}:500"]))
    first = run_audit(settings, RunRequest("demo"),
                      log_analytics=sink_for(broken, settings, retry_total=1, attempts=1))
    assert first.delivered["log-analytics"].detail["upload"]["spooled_rows"] == len(local_findings(first))
    assert first.status == "Incomplete" and first.record.SpoolPending >= 1
    assert broken.landed(FINDINGS_STREAM) == [] and len(broken.landed(RUNS_STREAM)) == 1
    produced_first = local_findings(first)

    healthy = ingestion()
    second = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(healthy, settings))
    landed = healthy.landed(FINDINGS_STREAM)
    assert landed[:len(produced_first)] == produced_first  # the spool first, exactly as produced
    assert landed[len(produced_first):] == local_findings(second)
    assert second.record.SpoolPending == 0 and second.status == SUCCEEDED


def test_crash_before_spool_clean_up_duplicates_but_never_loses(ingestion, settings):
    emulator = ingestion()
    spool = Spool(Services(settings).store(settings.spool_container))
    rows = [{"RunId": "old-run", "FindingId": f"{i:032x}", "TimeGenerated": "2026-11-28T00:00:00Z"} for i in range(50)]
    spool.put(FINDINGS_STREAM, [json.dumps(r).encode() for r in rows], "earlier failure")
    crashing = sink_for(emulator, settings)
    crashing.spool.remove = lambda name: (_ for _ in ()).throw(RuntimeError("process killed"))
    with pytest.raises(RuntimeError):
        crashing.replay_spool()
    sink_for(emulator, settings).replay_spool()  # the next run replays the same entry again
    landed = emulator.landed(FINDINGS_STREAM)
    assert len(landed) == 100  # at least once: delivered twice
    assert {(r["RunId"], r["FindingId"]) for r in landed} == {(r["RunId"], r["FindingId"]) for r in rows}
    assert spool.names() == []


def test_failed_runs_get_a_run_record_too(ingestion, settings, tmp_path):
    emulator = ingestion()
    outcome = run_audit(settings, RunRequest("snapshot", tmp_path / "missing"),
                        log_analytics=sink_for(emulator, settings))
    assert outcome.status == FAILED and outcome.summary is None
    [run] = emulator.landed(RUNS_STREAM)
    assert run["RunStatus"] == FAILED and "no such file or directory" in run["Errors"][0]
    assert emulator.landed(FINDINGS_STREAM) == []
    archive = EvidenceArchive(Services(settings).store(settings.evidence_container))
    assert archive.find(outcome.record.RunId) is not None  # visible in the archive as well


def test_oversized_fields_are_cut_with_a_marker_and_kept_whole_in_the_archive(ingestion, settings, tmp_path):
    emulator = ingestion()
    huge = {"RunId": "r", "FindingId": "f" * 32, "TimeGenerated": "2026-11-29T00:00:00Z",
            "Message": "m" * (FIELD_LIMIT + 5000), "Evidence": {"blob": "e" * (FIELD_LIMIT * 2)}}
    fitted = fit_fields(huge)
    assert len(fitted["Message"].encode()) <= FIELD_LIMIT and "truncated by acr-pull-auditor" in fitted["Message"]
    assert fitted["Evidence"]["truncated"] is True and fitted["Evidence"]["originalBytes"] > FIELD_LIMIT
    sink_for(emulator, settings).upload_records(FINDINGS_STREAM, [huge])
    [landed] = emulator.landed(FINDINGS_STREAM)
    assert landed["Message"] == fitted["Message"] and landed["Evidence"] == fitted["Evidence"]
    assert huge["Message"] == "m" * (FIELD_LIMIT + 5000)  # the caller's record is untouched


def test_evidence_archive_verifies_and_detects_tampering(ingestion, settings, azurite):
    from azure.storage.blob import BlobServiceClient

    emulator = ingestion()
    outcome = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    archive = EvidenceArchive(Services(settings).store(settings.evidence_container))
    run = archive.find(outcome.record.RunId)
    assert archive.verify(run) == []
    manifest = archive.manifest(run)
    assert {o["name"] for o in manifest["objects"]} == {"snapshot.jsonl.gz", "findings.jsonl.gz", "summary.json",
                                                        "rules.json"}
    assert manifest["coverage"] == outcome.record.Coverage and "clusters" in manifest["queries"]
    archived = gzip.decompress(archive.store.get(run.prefix + "findings.jsonl.gz")).decode().splitlines()
    assert [json.loads(x) for x in archived] == local_findings(outcome)
    container = BlobServiceClient.from_connection_string(azurite).get_container_client(settings.evidence_container)
    with pytest.raises(Exception, match=r"already exists|BlobAlreadyExists"):
        archive.store.put(run.prefix + "summary.json", b"{}")  # create-only
    container.upload_blob(run.prefix + "summary.json", b'{"RunStatus": "Succeeded", "FailCount": 0}',
                          overwrite=True)
    container.delete_blob(run.prefix + "rules.json")
    problems = archive.verify(run)
    assert any("summary.json: modified" in p for p in problems)
    assert any("rules.json: missing" in p for p in problems)


def test_export_bundle_holds_manifest_findings_csv_and_a_readable_summary(ingestion, settings, tmp_path):
    import csv
    import io
    import zipfile

    emulator = ingestion()
    first = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    second = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    archive = EvidenceArchive(Services(settings).store(settings.evidence_container))
    runs = archive.runs()
    assert {r.run_id for r in runs} == {first.record.RunId, second.record.RunId}
    path = archive.export(runs, tmp_path / "bundle.zip")
    with zipfile.ZipFile(path) as bundle:
        names = bundle.namelist()
        folder = next(n.split("/")[0] for n in names if first.record.RunId in n)
        assert {f"{folder}/{x}" for x in ("manifest.json", "findings.csv", "summary.txt", "summary.json")} <= set(names)
        rows = list(csv.DictReader(io.StringIO(bundle.read(f"{folder}/findings.csv").decode())))
        summary = bundle.read(f"{folder}/summary.txt").decode()
    assert len(rows) == len(local_findings(first)) and list(rows[0]) == list(FINDING_FIELDS)
    assert "all 5 objects match the manifest" not in summary  # 4 objects plus the manifest itself
    assert "objects match the manifest" in summary and "AKS-ACR-001:" in summary and "Exceptions:" in summary


def test_settings_name_every_missing_or_malformed_value():
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"AUDIT_SINK": "log-analytics", "LOGS_DCR_IMMUTABLE_ID": "not-a-dcr",
                           "LOGS_UPLOAD_WORKERS": "many", "AUDIT_SPOOL_MAX_MB": "0"})
    assert "LOGS_UPLOAD_WORKERS: 'many' is not a whole number" in str(error.value)
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"AUDIT_SINK": "log-analytics", "LOGS_DCR_IMMUTABLE_ID": "not-a-dcr",
                           "AUDIT_SPOOL_MAX_MB": "0", "AUDIT_SCOPE": "tenant rg:x"})
    text = str(error.value)
    for expected in ("LOGS_INGESTION_ENDPOINT: required", "LOGS_DCR_IMMUTABLE_ID: 'not-a-dcr'",
                     "AUDIT_SPOOL_MAX_MB: must be at least 1", "'rg:x': use tenant"):
        assert expected in text
    ok = Settings.from_env({"AUDIT_SINK": "log-analytics", "LOGS_INGESTION_ENDPOINT": "https://x.ingest.monitor.azure.com",
                            "LOGS_DCR_IMMUTABLE_ID": DCR, "AUDIT_SCOPE": "mg:a mg:b"})
    assert ok.evidence is True and ok.scope == ("mg:a", "mg:b")
    assert Settings.from_env({}).sink == "local" and Settings.from_env({}).evidence is False


def test_table_schema_file_is_generated_from_the_code_and_follows_the_service_rules():
    regenerate = "python -m auditors.sinks.tables > auditors/sinks/log_analytics_tables.json"
    assert TABLES_FILE.read_text() == render(), f"stale schema file; run: {regenerate}"
    from auditors.findings import FINDING_COLUMNS

    assert column_problems(FINDING_COLUMNS) == [] and column_problems(RUN_COLUMNS) == []
    assert dict(FINDING_COLUMNS)["Evidence"] == "dynamic"
    assert column_problems((("Title", "string"), ("1bad", "string"), ("x" * 46, "string"), ("A", "text"))) != []


@pytest.mark.parametrize(("path", "body", "headers", "status"), [
    (f"/dataCollectionRules/{DCR}/streams/{FINDINGS_STREAM}", b"[]", {}, 401),
    (f"/dataCollectionRules/dcr-other/streams/{FINDINGS_STREAM}", b"[]", {"Authorization": "Bearer t"}, 404),
    (f"/dataCollectionRules/{DCR}/streams/Custom-Nope", b"[]", {"Authorization": "Bearer t"}, 400),
    (f"/dataCollectionRules/{DCR}/streams/{FINDINGS_STREAM}", b"{}", {"Authorization": "Bearer t"}, 400),
    (f"/dataCollectionRules/{DCR}/streams/{FINDINGS_STREAM}", b'[{"FindingCount": 1, "TimeGenerated": 5}]',
     {"Authorization": "Bearer t"}, 400),
    (f"/dataCollectionRules/{DCR}/streams/{FINDINGS_STREAM}", b"[" + b'"x",' * 300_000 + b'"x"]',
     {"Authorization": "Bearer t"}, 413),
])
def test_ingestion_emulator_refuses_what_the_service_refuses(ingestion, path, body, headers, status):
    import ssl
    import urllib.request

    emulator = ingestion()
    request = urllib.request.Request(f"{emulator.endpoint}{path}?api-version=2023-01-01", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    context = ssl.create_default_context(cafile=str(emulator.ca_path))
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, context=context)
    assert error.value.code == status


def test_ingestion_emulator_drops_undeclared_columns(ingestion, settings):
    emulator = ingestion()
    sink_for(emulator, settings).upload_records(RUNS_STREAM, [{"RunId": "r", "NotAColumn": 1, "FindingCount": 3}])
    assert emulator.landed(RUNS_STREAM) == [{"RunId": "r", "FindingCount": 3}]


def test_spool_growth_is_bounded_and_reported(ingestion, settings):
    import dataclasses
    import os

    bounded = dataclasses.replace(settings, spool_max_mb=1)
    old_rows = [{"RunId": "x", "FindingId": f"{i:032x}", "Message": os.urandom(1024).hex()} for i in range(1500)]
    old_lines = [json.dumps(r).encode() for r in old_rows]
    Spool(Services(bounded).store(bounded.spool_container)).put(FINDINGS_STREAM, old_lines, "old failure")
    broken = ingestion(faults=IngestionFaults.parse([], [f"{FINDINGS_STREAM}:500", f"{RUNS_STREAM}:500"]))
    outcome = run_audit(bounded, RunRequest("demo"),
                        log_analytics=sink_for(broken, bounded, retry_total=0, attempts=1))
    assert outcome.status == "Incomplete"
    assert any("over its 1 MB bound" in e for e in outcome.record.Errors)
    assert outcome.record.SpoolPending >= 2


def test_cli_scan_with_log_analytics_sink_and_evidence_commands(ingestion, settings, tmp_path):
    import os
    import subprocess
    import sys

    emulator = ingestion()
    env = {**os.environ, "AUDIT_SINK": "log-analytics", "LOGS_INGESTION_ENDPOINT": emulator.endpoint,
           "LOGS_DCR_IMMUTABLE_ID": DCR, "LOGS_ACCESS_TOKEN": "secret-monitor-token",
           "REQUESTS_CA_BUNDLE": str(emulator.ca_path), "AUDIT_STORAGE_CONNECTION_STRING":
           settings.storage_connection_string, "AUDIT_EVIDENCE_CONTAINER": settings.evidence_container,
           "AUDIT_SPOOL_CONTAINER": settings.spool_container}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "auditors", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    scan = cli("scan", "--demo", "--out", str(tmp_path / "out"))
    assert scan.returncode == 0, scan.stderr
    produced = len((tmp_path / "out" / "findings.jsonl").read_text().splitlines())
    assert f"log analytics (findings): {produced} rows" in scan.stdout and "evidence: " in scan.stdout
    assert "secret-monitor-token" not in scan.stdout + scan.stderr
    assert len(emulator.landed(FINDINGS_STREAM)) == produced and len(emulator.landed(RUNS_STREAM)) == 1
    listing = cli("evidence", "list")
    run_id = emulator.landed(RUNS_STREAM)[0]["RunId"]
    assert listing.returncode == 0 and run_id in listing.stdout
    assert cli("evidence", "verify", "--run", run_id).returncode == 0
    exported = cli("evidence", "export", "--run", run_id, "--out", str(tmp_path / "e.zip"))
    assert exported.returncode == 0 and (tmp_path / "e.zip").exists()
    archive = EvidenceArchive(Services(settings).store(settings.evidence_container))
    archive.store.container.delete_blob(archive.find(run_id).prefix + "findings.jsonl.gz")
    failed = cli("evidence", "verify", "--run", run_id)
    assert failed.returncode == 1 and "findings.jsonl.gz: missing" in failed.stderr
    assert cli("evidence", "verify", "--run", "no-such-run").returncode == 2


def test_ingestion_emulator_command_stores_what_landed(tmp_path, settings):
    import os
    import signal
    import subprocess
    import sys

    store = tmp_path / "landed.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "auditors", "emulate", "ingestion", "--dcr", DCR, "--ca-out",
                                str(tmp_path / "ca.pem"), "--store", str(store), "--fail", "429:1"],
                               stdout=subprocess.PIPE, text=True)
    try:
        endpoint = process.stdout.readline().split(" on ")[1].split(" ")[0]
        env = {**os.environ, "AUDIT_SINK": "log-analytics", "LOGS_INGESTION_ENDPOINT": endpoint,
               "LOGS_DCR_IMMUTABLE_ID": DCR, "LOGS_ACCESS_TOKEN": "t", "REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem"),
               "AUDIT_LOCAL_DIR": str(tmp_path / "local")}
        scan = subprocess.run([sys.executable, "-m", "auditors", "scan", "--demo", "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, env=env, timeout=120)
        assert scan.returncode == 0, scan.stderr
    finally:
        os.kill(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    landed = [json.loads(line) for line in store.open()]
    findings = [json.loads(line) for line in (tmp_path / "out" / "findings.jsonl").open()]
    assert [x["record"] for x in landed if x["stream"] == FINDINGS_STREAM] == findings
    assert [x["record"]["RunStatus"] for x in landed if x["stream"] == RUNS_STREAM] == [SUCCEEDED]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["faults"] == {"429": 1} and stats["rows"] == len(findings) + 1
    assert (tmp_path / "local" / "evidence").exists()  # evidence on by default with log-analytics


def test_dcr_limiter_holds_requests_and_bytes_per_window():
    from auditors.sinks.log_analytics import DcrLimiter

    by_count = DcrLimiter(requests_per_minute=3, window=0.3)
    for _ in range(3):
        by_count.acquire(10)
    assert by_count.waited == 0
    by_count.acquire(10)
    assert by_count.waited > 0  # the fourth request had to wait for the window to move
    by_bytes = DcrLimiter(requests_per_minute=100, bytes_per_minute=1000, window=0.3)
    by_bytes.acquire(900)
    by_bytes.acquire(50)
    assert by_bytes.waited == 0
    by_bytes.acquire(100)
    assert by_bytes.waited > 0


def test_evidence_and_spool_through_a_token_credential_over_https(azurite_oauth, monkeypatch, tmp_path):
    """The deployed app's storage path: account URL + token credential (no shared key), over TLS."""
    import dataclasses

    url, ca, token = azurite_oauth
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    settings = Settings.from_env({"AUDIT_STORAGE_ACCOUNT_URL": url, "AUDIT_STORAGE_ACCESS_TOKEN": token,
                                  "AUDIT_EVIDENCE": "true", "AUDIT_EVIDENCE_CONTAINER": "evidence-oauth",
                                  "AUDIT_SPOOL_CONTAINER": "spool-oauth", "AUDIT_OUT_DIR": str(tmp_path / "out")})
    outcome = run_audit(settings, RunRequest("demo"))
    archive = EvidenceArchive(Services(settings).store(settings.evidence_container))
    run = archive.find(outcome.record.RunId)
    assert run is not None and archive.verify(run) == [] and outcome.record.EvidenceLocation.startswith(url)
    spool = Spool(Services(settings).store(settings.spool_container))
    name = spool.put(FINDINGS_STREAM, [b'{"RunId":"r"}'], "test")
    assert spool.read(name).lines == [b'{"RunId":"r"}']
    rejected = dataclasses.replace(settings, storage_token="not-a-jwt")
    with pytest.raises(Exception, match=r"(?i)auth|403"):
        Spool(Services(rejected).store("spool-oauth-2")).put(FINDINGS_STREAM, [], "x")  # Azurite checks the token


def test_unreadable_spool_entries_are_quarantined_and_the_rest_delivered(ingestion, settings):
    emulator = ingestion()
    spool = Spool(Services(settings).store(settings.spool_container))
    rows = [{"RunId": "old-run", "FindingId": f"{i:032x}", "TimeGenerated": "2026-11-28T00:00:00Z"} for i in range(20)]
    healthy = spool.put(FINDINGS_STREAM, [json.dumps(r).encode() for r in rows], "earlier failure")
    whole = gzip.compress(b'{"stream": "Custom-x"}\n{}\n')
    spool.store.put("spool/20260101T000000000000Z-truncated.jsonl.gz", whole[:len(whole) // 2])  # EOFError
    spool.store.put("spool/20260101T000000000001Z-notgzip.jsonl.gz", b"not gzip at all")
    spool.store.put("spool/20260101T000000000002Z-noheader.jsonl.gz", gzip.compress(b"[1, 2]\n"))
    outcome = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    assert outcome.record.QuarantinedSpoolEntries == 3
    assert sum("quarantined at" in e for e in outcome.record.Errors) == 3 and outcome.status == "Incomplete"
    landed = emulator.landed(FINDINGS_STREAM)
    assert landed[:20] == rows and len(landed) == 20 + len(local_findings(outcome))
    assert spool.names() == [] and spool.quarantined() == 3 and healthy not in {o.name for o in spool.store.list()}
    reasons = [spool.store.get(o.name).decode() for o in spool.store.list("spool/quarantine/")
               if o.name.endswith(".reason.txt")]
    assert len(reasons) == 3 and any("EOFError" in r or "Compressed file ended" in r for r in reasons)
    [run] = [r for r in emulator.landed(RUNS_STREAM)]
    assert run["QuarantinedSpoolEntries"] == 3
    again = run_audit(settings, RunRequest("demo"), log_analytics=sink_for(emulator, settings))
    assert again.status == SUCCEEDED and again.record.QuarantinedSpoolEntries == 0


class _StoreThatCannotDelete:
    """A local store whose deletes fail, like Blob Storage in the middle of an outage."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def delete(self, name: str) -> None:
        raise OSError("connection reset while deleting")


def test_a_spool_entry_that_cannot_be_removed_is_said_and_the_run_goes_on(ingestion, tmp_path):
    """Removing a delivered write-ahead entry is housekeeping: when storage refuses it, the findings already landed,
    so the run goes on and says the entry stays (the next run may deliver those rows again)."""
    from auditors.sinks.store import LocalStore

    emulator = ingestion()
    spool = Spool(_StoreThatCannotDelete(LocalStore(tmp_path / "store", container="spool")))
    sink = LogAnalyticsSink(endpoint=emulator.endpoint, rule_id=DCR, credential=StaticTokenCredential("token"),
                            stream=FINDINGS_STREAM, spool=spool, connection_verify=str(emulator.ca_path),
                            retry_backoff_factor=0.01, run_id="run-1", write_ahead_rows=50)
    settings = Settings(out_dir=str(tmp_path / "out"))
    outcome = run_audit(settings, RunRequest("demo", run_id="run-1"), log_analytics=sink)
    assert outcome.error is None and outcome.status != FAILED
    assert len(emulator.landed(FINDINGS_STREAM)) == len(local_findings(outcome))
    errors = outcome.delivered["log-analytics"].errors
    assert any("could not be removed from the spool" in e and "may be delivered again" in e for e in errors), errors


class _StoreWithoutHeartbeats(_StoreThatCannotDelete):
    """Storage that takes spool entries but refuses the heartbeat objects."""

    def put(self, name: str, data: bytes, **kwargs):
        if name.startswith(LIVE):
            raise OSError("heartbeat refused")
        return self._store.put(name, data, **kwargs)

    def delete(self, name: str) -> None:
        self._store.delete(name)


def test_a_heartbeat_that_cannot_be_written_is_said(ingestion, tmp_path):
    from auditors.sinks.store import LocalStore

    emulator = ingestion()
    spool = Spool(_StoreWithoutHeartbeats(LocalStore(tmp_path / "store", container="spool")))
    sink = LogAnalyticsSink(endpoint=emulator.endpoint, rule_id=DCR, credential=StaticTokenCredential("token"),
                            stream=FINDINGS_STREAM, spool=spool, connection_verify=str(emulator.ca_path),
                            retry_backoff_factor=0.01, run_id="run-2")
    outcome = run_audit(Settings(out_dir=str(tmp_path / "out")), RunRequest("demo", run_id="run-2"),
                        log_analytics=sink)
    assert len(emulator.landed(FINDINGS_STREAM)) == len(local_findings(outcome))
    errors = outcome.delivered["log-analytics"].errors
    assert any("heartbeat could not be written" in e and "heartbeat refused" in e for e in errors), errors
