"""The evidence archive against someone who can write its container: hash chain per scope, verify that reports
instead of crashing, identifiers and names that cannot escape, exports, the Log Analytics anchor through the real
LogsQueryClient, and no secret in anything archived or exported."""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import itertools
import json
import re
import threading
import uuid
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from auditors import evidence_commands
from auditors.sinks.evidence import (
    CHAIN,
    MANIFEST,
    EvidenceArchive,
    InvalidRunId,
    WorkspaceAnchor,
    scope_key,
)
from auditors.sinks.store import LocalStore, ObjectExists, UnsafeObjectName
from auditors.sinks.tables import RUNS_STREAM
from auditors.sources.credentials import StaticTokenCredential
from tests.helpers import account_sas

DAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FINDINGS = [
    {"RunId": "x", "FindingId": "a" * 32, "RuleId": "AKS-ACR-001", "Status": "Fail", "Controls": ["NS-2", "IM-1"],
     "Message": "=HYPERLINK(\"http://evil\")", "Evidence": {"k": 1}},
    {"RunId": "x", "FindingId": "b" * 32, "RuleId": "AKS-ACR-002", "Status": "Pass", "Controls": ["NS-2"],
     "Exempted": False, "Evidence": None},
    {"RunId": "x", "FindingId": "c" * 32, "RuleId": "AKS-ACR-003", "Status": "Unknown", "Controls": ["IM-1"],
     "Evidence": {}},
]
EXEMPTIONS = {"file": "exemptions.yaml", "sha256": "0" * 64, "exemptions": [
    {"id": "EX-1", "rules": ["AKS-ACR-001"], "justification": "+cmd|' /C calc'!A0", "approvedBy": "secops@example.com",
     "expiresOn": "2026-06-30", "ticket": "CHG-1", "status": "active", "matched": 1},
    {"id": "EX-OLD", "rules": ["AKS-ACR-002"], "justification": "lapsed", "approvedBy": "a@example.com",
     "expiresOn": "2026-02-01", "ticket": "", "status": "expired", "matched": 0},
]}


def gz(records: list[dict]) -> bytes:
    return gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records), mtime=0)


def write_run(archive: EvidenceArchive, tmp_path: Path, run_id: str, started: datetime, *, scope: str = "tenant",
              findings: list[dict] | None = None, exemptions: dict | None = None):
    findings_file = tmp_path / f"findings-{uuid.uuid4().hex}.gz"
    findings_file.write_bytes(gz(FINDINGS if findings is None else findings))
    record = {"RunId": run_id, "Scope": scope, "RunStatus": "Succeeded", "StartTime": started.isoformat(),
              "FailCount": 1, "EvidenceLocation": archive.store.location(archive.prefix(run_id, started))}
    return archive.write(record, findings_gz=findings_file, snapshot_path=None, started=started,
                         queries={"clusters": "resources | where type == 'x'"}, exemptions=exemptions)


@pytest.fixture
def local(tmp_path):
    """An archive in a local folder with three runs of one scope, six hours apart."""
    root = tmp_path / "evidence"
    archive = EvidenceArchive(LocalStore(root))
    results = [write_run(archive, tmp_path, f"run-{n}", DAY + timedelta(hours=6 * n)) for n in range(3)]
    return archive, root, results


def problems_of(archive: EvidenceArchive, **kwargs) -> list[str]:
    return archive.verify_all(archive.runs(), **kwargs).problems


def replace(root: Path, name: str, data: bytes) -> None:
    """What a storage writer without WORM can do: delete an object and write another under its name."""
    path = root / name
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def manifest_of(root: Path, prefix: str) -> dict:
    return json.loads((root / prefix / MANIFEST).read_bytes())


def rehash(root: Path, prefix: str, manifest: dict) -> bytes:
    """The manifest with every entry's hash recomputed from what is in the folder now, written back."""
    for entry in manifest["objects"]:
        data = (root / prefix / entry["name"]).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    data = json.dumps(manifest, indent=2).encode()
    replace(root, prefix + MANIFEST, data)
    return data


def flip_fail_to_pass(root: Path, prefix: str) -> None:
    findings = [{**f, "Status": "Pass"} for f in FINDINGS]
    replace(root, prefix + "findings.jsonl.gz", gz(findings))


def rechain(root: Path, results, start: int) -> None:
    """A consistent rewrite from run `start` on: findings flipped, manifests re-hashed, later links and claims
    rewritten: everything the container holds agrees again."""
    previous = results[start - 1].manifest_sha256 if start else ""
    key = scope_key("tenant")
    for result in results[start:]:
        prefix = result.prefix
        flip_fail_to_pass(root, prefix)
        manifest = manifest_of(root, prefix)
        manifest["chain"]["previousManifestSha256"] = previous
        data = rehash(root, prefix, manifest)
        claim_name = f"{CHAIN}{key}/{result.chain_position:010d}.json"
        claim = json.loads((root / claim_name).read_bytes())
        claim.update(manifestSha256=hashlib.sha256(data).hexdigest(), previousManifestSha256=previous)
        replace(root, claim_name, json.dumps(claim).encode())
        previous = claim["manifestSha256"]


# -- the chain ------------------------------------------------------------------------------------------------

def test_each_run_links_to_the_previous_manifest_of_its_scope(local, tmp_path):
    archive, root, results = local
    other = write_run(archive, tmp_path, "other-1", DAY + timedelta(hours=1), scope="mg:finance")
    assert [r.chain_position for r in results] == [1, 2, 3] and other.chain_position == 1
    assert [r.previous_manifest_sha256 for r in results] == ["", results[0].manifest_sha256,
                                                             results[1].manifest_sha256]
    assert other.previous_manifest_sha256 == ""
    for result in results:
        assert hashlib.sha256((root / result.prefix / MANIFEST).read_bytes()).hexdigest() == result.manifest_sha256
        assert manifest_of(root, result.prefix)["chain"]["position"] == result.chain_position
    verification = archive.verify_all(archive.runs())
    assert verification.problems == [] and verification.intact


def tamper_rewrite_findings(root, results):
    flip_fail_to_pass(root, results[1].prefix)
    rehash(root, results[1].prefix, manifest_of(root, results[1].prefix))


def tamper_delete_run(root, results):
    for path in (root / results[1].prefix).iterdir():
        path.unlink()


def tamper_delete_manifest(root, results):
    (root / results[1].prefix / MANIFEST).unlink()


def tamper_move_to_another_day(root, results):
    source, target = root / results[1].prefix, root / "2026/03/05/run-1"
    target.parent.mkdir(parents=True)
    source.rename(target)


def tamper_empty_manifest(root, results):
    manifest = manifest_of(root, results[1].prefix)
    manifest["objects"] = []
    replace(root, results[1].prefix + MANIFEST, json.dumps(manifest).encode())


def tamper_entry_into_another_run(root, results):
    manifest = manifest_of(root, results[1].prefix)
    manifest["objects"][0]["name"] = "../run-0/findings.jsonl.gz"
    replace(root, results[1].prefix + MANIFEST, json.dumps(manifest).encode())


def tamper_forge_run_folder(root, results):
    """A new folder (possible under WORM: it overwrites nothing) copied from a real run, re-hashed."""
    forged = "2026/03/02/run-forged/"
    (root / forged).mkdir(parents=True)
    for path in (root / results[2].prefix).iterdir():
        (root / forged / path.name).write_bytes(path.read_bytes())
    flip_fail_to_pass(root, forged)
    manifest = manifest_of(root, forged)
    manifest["runId"] = "run-forged"
    rehash(root, forged, manifest)


def tamper_reorder(root, results):
    key = scope_key("tenant")
    second, third = (f"{CHAIN}{key}/{n:010d}.json" for n in (2, 3))
    second_claim, third_claim = (json.loads((root / name).read_bytes()) for name in (second, third))
    replace(root, second, json.dumps({**third_claim, "position": 2}).encode())
    replace(root, third, json.dumps({**second_claim, "position": 3}).encode())


@pytest.mark.parametrize(("tamper", "expected"), [
    (tamper_rewrite_findings, [r"run-1/: manifest SHA-256 .* differs from the one recorded at chain .* position 2",
                               r"run-2/: the previous run run-1 .* no longer has the manifest this run chains to"]),
    (tamper_delete_run, [r"run-1.* at chain .* position 2 is not in the archive",
                         r"run-2/: the previous run run-1 .* is missing"]),
    (tamper_delete_manifest, [r"run-1/?: run folder without a manifest", r"run-2/: the previous run run-1 .* missing"]),
    (tamper_move_to_another_day, [r"2026/03/05/run-1/manifest.json: run started on 2026-03-02 but is filed under "
                                  r"2026/03/05 \(moved to another day\)",
                                  r"position 2 belongs to run run-1 at 2026/03/02/run-1/"]),
    (tamper_empty_manifest, [r"run-1/manifest.json: manifest lists no objects",
                             r"run-1/findings.jsonl.gz: not listed in the manifest",
                             r"run-1/: manifest SHA-256 .* differs"]),
    (tamper_entry_into_another_run, [r"run-1/manifest.json: manifest malformed: objects\[0\]: .*'\.\./run-0/"
                                     r"findings.jsonl.gz'"]),
    (tamper_forge_run_folder, [r"run-forged/: chain .* position 3 belongs to run run-2 .* this run is not in the "
                               r"chain"]),
    (tamper_reorder, [r"run-1/: chain .* position 2 belongs to run run-2", r"run-2/: chain .* position 3 belongs to "
                                                                           r"run run-1"]),
], ids=lambda value: value.__name__.removeprefix("tamper_") if callable(value) else "")
def test_tampering_by_a_storage_writer_breaks_verification_naming_where(local, tamper, expected):
    archive, root, results = local
    assert problems_of(archive) == []
    tamper(root, results)
    problems = problems_of(archive)
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), f"{pattern!r} not in {problems}"


def test_two_writers_at_once_never_share_a_position(tmp_path):
    """Deterministic interleaving: the second writer claims position 2 while the first is about to."""
    root = tmp_path / "evidence"
    first_store, second_store = LocalStore(root), LocalStore(root)
    archive, rival = EvidenceArchive(first_store), EvidenceArchive(second_store)
    write_run(archive, tmp_path, "run-0", DAY)
    original_put, refused = first_store.put, []

    def put_after_the_rival(name: str, data: bytes) -> None:
        if name.startswith(CHAIN) and not refused:
            refused.append(name)
            write_run(rival, tmp_path, "rival", DAY + timedelta(minutes=1))  # takes the position first
        try:
            original_put(name, data)
        except ObjectExists:
            refused.append("lost " + name)
            raise

    first_store.put = put_after_the_rival
    result = write_run(archive, tmp_path, "run-1", DAY + timedelta(minutes=2))
    assert any(entry.startswith("lost chain/") for entry in refused)  # the race happened and was lost
    rival_manifest = hashlib.sha256((root / "2026/03/02/rival" / MANIFEST).read_bytes()).hexdigest()
    assert result.chain_position == 3 and result.previous_manifest_sha256 == rival_manifest
    assert problems_of(archive) == []


def test_concurrent_writers_against_blob_storage_keep_the_chain_linear(azurite, tmp_path):
    from azure.storage.blob import BlobServiceClient

    from auditors.sinks.store import BlobStore

    container = f"evidence-{uuid.uuid4().hex[:8]}"
    writers, per_writer = 4, 3
    barrier = threading.Barrier(writers)
    results, errors = [], []

    def writer(index: int) -> None:
        archive = EvidenceArchive(BlobStore(BlobServiceClient.from_connection_string(azurite)
                                            .get_container_client(container)))
        try:
            for n in range(per_writer):
                barrier.wait(timeout=60)
                results.append(write_run(archive, tmp_path, f"w{index}-{n}", DAY + timedelta(minutes=n)))
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    by_position = sorted(results, key=lambda r: r.chain_position)
    assert [r.chain_position for r in by_position] == list(range(1, writers * per_writer + 1))
    for before, after in itertools.pairwise(by_position):
        assert after.previous_manifest_sha256 == before.manifest_sha256
    archive = EvidenceArchive(BlobStore(BlobServiceClient.from_connection_string(azurite)
                                        .get_container_client(container)))
    assert problems_of(archive) == []


# -- verify reports malformed input, never a traceback ------------------------------------------------------------

def args(action: str, **values) -> argparse.Namespace:
    defaults = {"date_from": None, "date_to": None, "run": None, "out": None, "workspace": None,
                "signing_key": None, "require_signature": False}
    return argparse.Namespace(action=action, **{**defaults, **values})


def command(archive, action: str, *, logs_client=None, **values) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = evidence_commands.run(args(action, **values), archive, logs_client=logs_client, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


MALFORMED = [
    (b"[1, 2]", "a JSON object is expected, found list"),
    (json.dumps({"runId": "run-1", "objects": [{"name": "summary.json", "bytes": 3}]}).encode(),
     "summary.json: `sha256` must be 64 lower-case hex digits"),
    (json.dumps({"runId": "run-1", "objects": [{"name": "../run-0/summary.json", "sha256": "0" * 64,
                                                "bytes": 1}]}).encode(), "'../run-0/summary.json'"),
    (json.dumps({"runId": "run-1", "objects": [{"name": "a\\b", "sha256": "0" * 64, "bytes": 1}]}).encode(),
     "contains a backslash"),
    (json.dumps({"runId": "run-1", "objects": "everything"}).encode(), "`objects` must be a list"),
    (b"\xff\xfe not json", "manifest unreadable"),
]


@pytest.mark.parametrize(("manifest", "expected"), MALFORMED, ids=[m[1][:30] for m in MALFORMED])
def test_a_malformed_manifest_is_a_problem_line_not_a_traceback(local, manifest, expected):
    archive, root, results = local
    replace(root, results[1].prefix + MANIFEST, manifest)
    code, out, err = command(archive, "verify")
    assert code == 1 and "Traceback" not in err and expected in err and "FAILED" in out
    code, out, err = command(archive, "list")
    assert code == 0 and "run-1" in out and "Traceback" not in err


def test_a_symlinked_object_is_a_problem_and_its_target_is_never_read(local, tmp_path):
    archive, root, results = local
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    summary = root / results[0].prefix / "summary.json"
    summary.unlink()
    summary.symlink_to(secret)
    (root / results[0].prefix / "extra").symlink_to(tmp_path, target_is_directory=True)
    code, _, err = command(archive, "verify")
    assert code == 1 and "run-0/summary.json: not a plain object" in err and "symbolic link" in err
    assert "run-0/extra: not listed in the manifest" in err
    code, _, err = command(archive, "export", out=str(tmp_path / "bundle.zip"))
    with zipfile.ZipFile(tmp_path / "bundle.zip") as bundle:
        assert all(b"TOP-SECRET" not in bundle.read(name) for name in bundle.namelist())
    assert code == 1 and "integrity problems" in err


def test_export_to_a_folder_is_refused_and_entry_names_stay_inside_the_run_folder(local, tmp_path):
    archive, root, results = local
    code, _, err = command(archive, "export", out=str(tmp_path))
    assert code == 2 and "is a folder" in err and "Traceback" not in err
    replace(root, results[1].prefix + MANIFEST, json.dumps({"runId": "run-1", "objects": [
        {"name": "..\\..\\evil.txt", "sha256": "0" * 64, "bytes": 1}]}).encode())
    replace(root, "2026/03/02/..\\..\\evil/" + MANIFEST, (root / results[0].prefix / MANIFEST).read_bytes())
    out = tmp_path / "new" / "bundle.zip"
    code, _, _ = command(archive, "export", out=str(out))
    with zipfile.ZipFile(out) as bundle:
        names = bundle.namelist()
    assert code == 1 and names
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}_run-\d/[a-z.]+", name) for name in names), names
    code, _, err = command(archive, "verify")
    assert code == 1 and "evil/manifest.json: outside the archive layout" in err


# -- identifiers -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", "", "a..b", ".hidden", "x" * 129, "a\\b", "a b"])
def test_run_ids_that_could_leave_their_folder_are_refused_everywhere(local, tmp_path, run_id):
    archive, root, _ = local
    before = sorted(p for p in root.rglob("*"))
    with pytest.raises(InvalidRunId, match="run id"):
        write_run(archive, tmp_path, run_id, DAY)
    with pytest.raises(InvalidRunId):
        archive.find(run_id)
    assert sorted(p for p in root.rglob("*")) == before
    if run_id:  # an empty --run means no run was chosen
        code, _, err = command(archive, "verify", run=run_id)
        assert code == 2 and "run id" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "a\\..\\b", "a/../b", "a//b", "./a", "a/", "c:evil",
                                  "a\x00b"])
def test_local_store_refuses_names_that_escape_or_alias(tmp_path, name):
    store = LocalStore(tmp_path / "root")
    with pytest.raises(UnsafeObjectName):
        store.put(name, b"x")
    with pytest.raises(UnsafeObjectName):
        store.get(name)
    assert not (tmp_path / "outside").exists()


def test_local_store_refuses_a_container_that_is_a_path_and_links_out_of_its_root(tmp_path):
    with pytest.raises(UnsafeObjectName, match="container name"):
        LocalStore(tmp_path / "local", container="../../etc")
    assert LocalStore(tmp_path / "local", container="evidence").root == tmp_path / "local" / "evidence"
    store = LocalStore(tmp_path / "root")
    store.put("a/b", b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b").write_bytes(b"outside")
    (tmp_path / "root" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeObjectName, match="symbolic link"):
        store.get("link/b")
    with pytest.raises(UnsafeObjectName, match="symbolic link"):
        store.put("link/new", b"x")
    assert not (outside / "new").exists() and store.get("a/b") == b"inside"
    assert [o.name for o in store.list()] == ["a/b", "link"]


def test_local_store_before_its_folder_exists_reports_objects_missing(tmp_path):
    from auditors.sinks.store import ObjectMissing

    store = LocalStore(tmp_path / "not-yet")
    with pytest.raises(ObjectMissing):
        store.get("spool/entry.jsonl.gz")
    store.delete("spool/entry.jsonl.gz")
    assert store.list() == [] and not (tmp_path / "not-yet").exists()


# -- list and export --------------------------------------------------------------------------------------------

def test_list_shows_time_status_scope_chain_position_and_location(local):
    archive, root, results = local
    code, out, err = command(archive, "list")
    lines = out.splitlines()
    assert code == 0 and "created (UTC)" in lines[0] and "3 run(s)" in err
    created = manifest_of(root, results[2].prefix)["createdAt"]
    assert re.search(rf"{re.escape(created)}\s+run-2\s+Succeeded\s+3\s+tenant\s+{re.escape(str(root))}/2026/03/02/"
                     r"run-2/", lines[3]), lines[3]


def test_export_holds_manifest_findings_exceptions_controls_and_the_verify_result(tmp_path):
    archive = EvidenceArchive(LocalStore(tmp_path / "evidence"))
    result = write_run(archive, tmp_path, "run-x", DAY, exemptions=EXEMPTIONS)
    code, out, _ = command(archive, "export", run="run-x", out=str(tmp_path / "e.zip"))
    assert code == 0 and "wrote" in out
    folder = "2026-03-02_run-x/"
    with zipfile.ZipFile(tmp_path / "e.zip") as bundle:
        read = {name.removeprefix(folder): bundle.read(name) for name in bundle.namelist()}
    assert set(read) == {"manifest.json", "summary.json", "findings.csv", "exceptions.csv", "controls.csv",
                         "verify.txt", "summary.txt"}
    assert hashlib.sha256(read["manifest.json"]).hexdigest() == result.manifest_sha256  # as archived, byte for byte
    findings = list(csv.DictReader(io.StringIO(read["findings.csv"].decode())))
    assert findings[0]["Message"] == "'=HYPERLINK(\"http://evil\")" and findings[0]["Controls"] == "NS-2;IM-1"
    exceptions = list(csv.DictReader(io.StringIO(read["exceptions.csv"].decode())))
    assert [(e["id"], e["justification"], e["expiresOn"]) for e in exceptions] == [
        ("EX-1", "'+cmd|' /C calc'!A0", "2026-06-30")]  # in force only; formula neutralised
    controls = list(csv.DictReader(io.StringIO(read["controls.csv"].decode())))
    assert controls == [{"control": "IM-1", "pass": "0", "fail": "1", "unknown": "1", "notApplicable": "0",
                         "exempted": "0"},
                        {"control": "NS-2", "pass": "1", "fail": "1", "unknown": "0", "notApplicable": "0",
                         "exempted": "0"}]
    assert read["verify.txt"] == b"intact\n"
    assert "position 1" in read["summary.txt"].decode() and result.manifest_sha256 in read["summary.txt"].decode()


# -- secrets never reach the archive -------------------------------------------------------------------------------

def _connection_strings(azurite: str) -> dict[str, tuple[str, list[str]]]:
    """Connection-string variants of the same Azurite account, each with the secret that must not leak."""
    fields, sas, signature = account_sas(azurite)
    endpoint = fields["BlobEndpoint"]
    return {
        "account-key": (azurite, [fields["AccountKey"]]),
        "sas": (f"BlobEndpoint={endpoint};SharedAccessSignature={sas}", [signature, sas]),
        "sas-leading-question-mark": (f"BlobEndpoint={endpoint};SharedAccessSignature=?{sas}", [signature, sas]),
    }


@pytest.mark.parametrize("variant", ["account-key", "sas", "sas-leading-question-mark", "token"])
def test_no_credential_reaches_any_archived_object_the_list_or_the_export(request, monkeypatch, tmp_path, variant):
    from urllib.parse import unquote

    from auditors.pipeline import RunRequest, run_audit
    from auditors.services import Services
    from auditors.settings import Settings

    container = f"evidence-{uuid.uuid4().hex[:8]}"
    if variant == "token":  # the deployed path: account URL and a bearer token, over TLS
        url, ca, token = request.getfixturevalue("azurite_oauth")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
        secrets = [token]
        settings = Settings(evidence=True, storage_account_url=url, storage_token=token, evidence_container=container,
                            out_dir=str(tmp_path / "out"))
    else:
        connection, secrets = _connection_strings(request.getfixturevalue("azurite"))[variant]
        settings = Settings(evidence=True, storage_connection_string=connection, evidence_container=container,
                            out_dir=str(tmp_path / "out"))
    secrets = [s for secret in secrets for s in (secret, unquote(secret))]
    outcome = run_audit(settings, RunRequest("demo"))
    assert outcome.record.EvidenceLocation and not any(s in outcome.record.EvidenceLocation for s in secrets)
    archive = Services(settings).evidence_archive
    objects = archive.store.list()
    assert len(objects) >= 6  # snapshot, findings, summary, rules, manifest and the chain claim
    for item in objects:
        data = archive.store.get(item.name)
        data = gzip.decompress(data) if item.name.endswith(".gz") else data
        assert not any(s.encode() in data for s in secrets), f"{item.name} holds the credential"
    code, out, err = command(archive, "list")
    assert code == 0 and outcome.record.RunId in out and not any(s in out + err for s in secrets)
    code, _, _ = command(archive, "export", out=str(tmp_path / "e.zip"))
    with zipfile.ZipFile(tmp_path / "e.zip") as bundle:
        for name in bundle.namelist():
            assert not any(s.encode() in bundle.read(name) for s in secrets), f"export {name} holds the credential"
    assert code == 0


# -- the workspace anchor through the real LogsQueryClient ----------------------------------------------------------

WORKSPACE = "6f1d1c39-3a58-4a4e-8a3c-2d3c4b5a6f70"


@pytest.fixture
def workspace(tmp_path):
    """The query emulator serving the runs table from a landed-rows store, and a real LogsQueryClient for it."""
    from azure.monitor.query import LogsQueryClient

    from emulators.logs import LogsQueryEmulator

    store = tmp_path / "landed.jsonl"
    store.touch()
    emulator = LogsQueryEmulator([], ca_out=tmp_path / "logs-ca.pem", runs_store=store,
                                 runs_workspace=WORKSPACE).start()
    client = LogsQueryClient(StaticTokenCredential("token"), endpoint=emulator.endpoint,
                             connection_verify=str(emulator.ca_path), retry_total=0)
    yield store, client, emulator
    emulator.stop()


def land(store: Path, result, run_id: str, started: datetime, manifest_sha256: str | None = None) -> None:
    """The run row as the pipeline sends it after archiving (one JSON line per landed row, as the ingestion
    emulator writes them)."""
    record = {"TimeGenerated": (started + timedelta(minutes=3)).isoformat(), "RunId": run_id,
              "StartTime": started.isoformat(), "RunStatus": "Succeeded", "Scope": "tenant",
              "ManifestSha256": manifest_sha256 or result.manifest_sha256,
              "PreviousManifestSha256": result.previous_manifest_sha256, "ChainPosition": result.chain_position}
    with store.open("a") as handle:
        handle.write(json.dumps({"stream": RUNS_STREAM, "record": record}) + "\n")


def anchored(local, workspace):
    archive, root, results = local
    store, client, _ = workspace
    for n, result in enumerate(results):
        land(store, result, f"run-{n}", DAY + timedelta(hours=6 * n))
    return archive, root, results, store, client


def test_workspace_anchor_passes_an_intact_archive(local, workspace):
    archive, _, _, _, client = anchored(local, workspace)
    code, out, err = command(archive, "verify", workspace=WORKSPACE, logs_client=client)
    assert code == 0 and "verified 3 run(s): intact" in out, err
    code, out, err = command(archive, "verify", workspace=WORKSPACE, date_from=date(2026, 3, 2),
                             date_to=date(2026, 3, 2), logs_client=client)
    assert code == 0, err


def test_a_consistent_rewrite_of_the_chain_is_caught_only_by_the_workspace(local, workspace):
    archive, root, results, _, client = anchored(local, workspace)
    rechain(root, results, 1)
    assert problems_of(archive) == []  # the container alone agrees with itself
    code, _, err = command(archive, "verify", workspace=WORKSPACE, logs_client=client)
    assert code == 1
    for run_id in ("run-1", "run-2"):
        assert re.search(rf"{run_id}/: manifest SHA-256 .* differs from the run row ingested", err), err
    assert "run-0/: manifest" not in err


def test_a_forged_run_appended_with_its_own_claim_is_caught_by_the_workspace(local, workspace, tmp_path):
    archive, _, _, _, client = anchored(local, workspace)
    write_run(archive, tmp_path, "run-forged", DAY + timedelta(hours=20))  # a writer can do all the archive does
    assert problems_of(archive) == []
    code, _, err = command(archive, "verify", workspace=WORKSPACE, logs_client=client)
    assert code == 1 and f"workspace {WORKSPACE} has no run row for run run-forged" in err


def test_a_deleted_last_run_is_caught_by_the_workspace(local, workspace):
    archive, root, results, _, client = anchored(local, workspace)
    for path in (root / results[2].prefix).iterdir():
        path.unlink()
    (root / f"{CHAIN}{scope_key('tenant')}/{3:010d}.json").unlink()
    assert problems_of(archive) == []  # the tail of a chain can go without a trace in the container
    code, _, err = command(archive, "verify", workspace=WORKSPACE, logs_client=client)
    assert code == 1 and "run run-2 (started 2026-03-02T21:00:00Z" in err and "no archived run" in err


def test_a_later_row_with_another_hash_is_reported(local, workspace):
    archive, _, results, store, client = anchored(local, workspace)
    land(store, results[1], "run-1", DAY + timedelta(hours=6), manifest_sha256="f" * 64)
    code, _, err = command(archive, "verify", run="run-1", workspace=WORKSPACE, logs_client=client)
    assert code == 1 and "later run rows for run run-1 with other manifest hashes (ffffffffffffffff…)" in err


def test_an_unusable_workspace_is_unusable_input(local, workspace):
    archive, _, _, _, client = anchored(local, workspace)
    code, _, err = command(archive, "verify", workspace="00000000-0000-0000-0000-000000000001",
                           logs_client=client)
    assert code == 2 and "workspace 00000000-0000-0000-0000-000000000001" in err and "Traceback" not in err


def test_the_anchor_reads_rows_in_the_order_they_landed_and_within_the_window(workspace, tmp_path):
    store, client, emulator = workspace
    archive = EvidenceArchive(LocalStore(tmp_path / "evidence"))
    result = write_run(archive, tmp_path, "run-a", DAY)
    land(store, result, "run-a", DAY)
    land(store, result, "run-a", DAY, manifest_sha256="e" * 64)
    land(store, result, "run-old", DAY - timedelta(days=30))
    anchor = WorkspaceAnchor.query(client, WORKSPACE, DAY - timedelta(days=1), DAY + timedelta(days=1))
    assert sorted(anchor.rows) == ["run-a"]
    assert [r.manifest_sha256 for r in anchor.rows["run-a"]] == [result.manifest_sha256, "e" * 64]
    assert anchor.rows["run-a"][0].chain_position == 1 and anchor.rows["run-a"][0].started == DAY
    assert emulator.stats.per_query["verify_runs"] == 1


def test_logs_emulator_command_serves_the_runs_table_without_a_snapshot(tmp_path):
    from emulators import cli as emulator_cli

    store = tmp_path / "landed.jsonl"
    parsed = emulator_cli.parser().parse_args(["logs", "--runs-store", str(store), "--runs-workspace", WORKSPACE])
    emulator = emulator_cli.services()["logs"].build(parsed)
    assert emulator.runs_store == store and emulator.runs_workspace == WORKSPACE
    with pytest.raises(ValueError, match="--snapshot, --runs-store"):
        emulator_cli.services()["logs"].build(emulator_cli.parser().parse_args(["logs"]))


def test_the_runs_query_names_the_columns_the_run_record_has():
    from auditors.sinks.evidence import verify_runs_query
    from auditors.sinks.tables import RUN_COLUMNS, RUNS_TABLE

    text = verify_runs_query()
    assert RUNS_TABLE in text
    for column in re.findall(r"\b([A-Z][A-Za-z0-9]+)\b", text.split("| project", 1)[1].split("| order")[0]):
        if column != "IngestedAt":
            assert column in dict(RUN_COLUMNS), column



# -- signatures (Key Vault emulator, the real CryptographyClient) -------------------------------------------------

@pytest.fixture
def vault(tmp_path):
    from emulators.keyvault import KeyVaultEmulator

    emulator = KeyVaultEmulator(("evidence-signing", "attacker-key"), ca_out=tmp_path / "kv-ca.pem", permissions={
        "auditor": {"get", "sign", "verify"}, "verifier": {"get", "verify"}, "attacker": {"get", "sign"}}).start()
    yield emulator
    emulator.stop()


def signer_for(vault, token: str = "auditor", key: str = "evidence-signing"):
    from auditors.sinks.evidence import KeyVaultSigner

    return KeyVaultSigner(vault.key_id(key), StaticTokenCredential(token), connection_verify=str(vault.ca_path))


def verify_signed(archive, vault, token: str = "verifier", key_id: str = "", **values) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = evidence_commands.run(args("verify", signing_key=key_id or vault.key_id("evidence-signing", versioned=False),
                                      **values), archive, keyvault_credential=StaticTokenCredential(token),
                                 keyvault_options={"connection_verify": str(vault.ca_path)}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def signed_archive(vault, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "evidence"
    archive = EvidenceArchive(LocalStore(root), signer=signer_for(vault))
    results = [write_run(archive, tmp_path, f"run-{n}", DAY + timedelta(hours=6 * n)) for n in range(2)]
    return archive, root, results


def test_each_manifest_hash_is_signed_es256_raw_r_s_by_the_vault_key(vault, tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

    from emulators.keyvault import from_b64url

    archive, root, results = signed_archive(vault, tmp_path)
    assert vault.stats.challenged >= 1  # the SDK met the 401 challenge first
    for result in results:
        document = json.loads((root / result.prefix / "manifest.sig.json").read_bytes())
        assert document["manifestSha256"] == result.manifest_sha256 and result.signature_key_id == document["keyId"]
        raw = from_b64url(document["signature"])
        assert len(raw) == 64
        vault.public_key("evidence-signing").verify(  # raises if the signature is not over this manifest's hash
            encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
            bytes.fromhex(result.manifest_sha256), ec.ECDSA(Prehashed(hashes.SHA256())))
    code, out, err = verify_signed(archive, vault)
    assert code == 0 and "intact" in out, err


def test_a_storage_writer_cannot_add_or_alter_signed_runs_unnoticed(vault, tmp_path):
    archive, root, results = signed_archive(vault, tmp_path)
    unsigned = EvidenceArchive(LocalStore(root))  # a writer of the container, without the key
    write_run(unsigned, tmp_path, "forged-unsigned", DAY + timedelta(hours=13))
    other_key = EvidenceArchive(LocalStore(root), signer=signer_for(vault, "attacker", "attacker-key"))
    write_run(other_key, tmp_path, "forged-other-key", DAY + timedelta(hours=14))
    first_signature = json.loads((root / results[0].prefix / "manifest.sig.json").read_bytes())
    replace(root, results[1].prefix + "manifest.sig.json",
            json.dumps({**first_signature, "manifestSha256": results[1].manifest_sha256}).encode())
    code, _, err = verify_signed(archive, vault)
    assert code == 1
    assert re.search(r"forged-unsigned/: not signed, but its chain is signed from position 1", err), err
    assert re.search(r"forged-other-key/manifest.sig.json: signed with .*/keys/attacker-key/.*, not the trusted key",
                     err), err
    assert re.search(r"run-1/manifest.sig.json: signature does not verify with the trusted key", err), err
    assert "run-0/" not in err


def test_an_identity_that_may_only_verify_cannot_sign(vault, tmp_path):
    from azure.core.exceptions import HttpResponseError

    archive = EvidenceArchive(LocalStore(tmp_path / "evidence"), signer=signer_for(vault, "verifier"))
    with pytest.raises(HttpResponseError) as refused:
        write_run(archive, tmp_path, "run-0", DAY)
    assert refused.value.status_code == 403 and vault.stats.signed == 0


def test_signatures_can_be_required_and_an_unreachable_vault_is_unusable_input(vault, tmp_path, local):
    archive, _, _ = local  # written without a signer
    code, _, err = verify_signed(archive, vault, require_signature=True)
    assert code == 1 and err.count("not signed, but signatures are required") == 3
    signed, _, _ = signed_archive(vault, tmp_path / "signed")
    key_id = vault.key_id("evidence-signing")
    vault.stop()
    code, _, err = verify_signed(signed, vault, key_id=key_id)
    assert code == 2 and "cannot check signatures" in err and "Traceback" not in err


def test_keyvault_emulator_is_discovered_by_the_emulator_command():
    from emulators import cli as emulator_cli

    assert "keyvault" in emulator_cli.services()
    parsed = emulator_cli.parser().parse_args(["keyvault", "--key", "k1", "--grant", "t=get,verify"])
    emulator = emulator_cli.services()["keyvault"].build(parsed)
    assert list(emulator.keys) == ["k1"] and emulator.permissions == {"t": {"get", "verify"}}
    with pytest.raises(ValueError, match="--grant"):
        emulator_cli.services()["keyvault"].build(emulator_cli.parser().parse_args(["keyvault", "--grant", "t=all"]))
