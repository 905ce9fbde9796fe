"""Nothing lost when a run is killed or two run at once, counted end to end: the real CLI in its own process, the
ingestion emulator in another (the rows it accepted are in its store file), spool and evidence on local storage.
A killed run's written-ahead findings and its "interrupted" run row are delivered by the next run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditors.findings import expand, read_records
from auditors.sinks.spool import Spool
from auditors.sinks.store import LocalStore
from auditors.sinks.tables import FINDINGS_STREAM, RUNS_STREAM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from synth_estate import generate

DCR = "dcr-" + "cd" * 16
STALE = 3  # seconds without a heartbeat after which a run is dead (the default is 300)


@pytest.fixture
def estate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("estate")
    generate(folder, clusters=80, registries=20, role_assignments=500, subscriptions=8, seed=3)
    return folder


@pytest.fixture
def ingestion(tmp_path):
    started = []

    def start(*extra: str):
        store = tmp_path / "landed.jsonl"
        process = subprocess.Popen([sys.executable, "-m", "auditors", "emulate", "ingestion", "--dcr", DCR,
                                    "--ca-out", str(tmp_path / "ca.pem"), "--store", str(store), *extra],
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        endpoint = process.stdout.readline().split(" on ")[1].split(" ")[0]
        return endpoint, store

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def environment(tmp_path, endpoint, **extra):
    return {**os.environ, "AUDIT_SINK": "log-analytics", "LOGS_INGESTION_ENDPOINT": endpoint,
            "LOGS_DCR_IMMUTABLE_ID": DCR, "LOGS_ACCESS_TOKEN": "t", "REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem"),
            "AUDIT_LOCAL_DIR": str(tmp_path / "local"), "AUDIT_SPOOL_STALE_SECONDS": str(STALE),
            "AUDIT_SIGNING_KEY_ID": "", **{k: str(v) for k, v in extra.items()}}


def scan(tmp_path, estate, env, out="out", **popen):
    command = [sys.executable, "-m", "auditors", "scan", "--snapshot", str(estate), "--out", str(tmp_path / out),
               "--quiet"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def landed(store: Path, stream: str) -> list[dict]:
    if not store.exists():
        return []
    rows = []
    for line in store.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:  # the last line may be half-written at the moment of reading
            continue
        if item["stream"] == stream:
            rows.append(expand(item["record"]) if stream == FINDINGS_STREAM else item["record"])
    return rows


def spool_of(tmp_path) -> Spool:
    return Spool(LocalStore(tmp_path / "local", container="spool"))


def written_ahead(spool: Spool) -> tuple[set[str], list[str]]:
    """FindingIds in the write-ahead entries now in the spool, and the entries' names."""
    ids, names = set(), []
    for name in spool.names():
        entry = spool.read(name)
        if entry is not None and entry.stream == FINDINGS_STREAM:
            names.append(name)
            ids |= {json.loads(line)["FindingId"] for line in entry.lines}
    return ids, names


def expected_findings(tmp_path, estate) -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-m", "auditors", "scan", "--snapshot", str(estate), "--out",
                           str(tmp_path / "expected"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 3), done.stderr
    return {r["FindingId"]: r for r in read_records(tmp_path / "expected/findings.jsonl")}


def wait_for(condition, timeout=120.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("point", ["at-start", "mid-upload", "after-findings"])
def test_a_run_killed_at_any_point_loses_nothing(tmp_path, estate, ingestion, point):
    expected = expected_findings(tmp_path, estate)
    endpoint, store = ingestion("--delay", "0.3")
    env = environment(tmp_path, endpoint, LOGS_WRITE_AHEAD_ROWS=400, LOGS_UPLOAD_WORKERS=1)
    spool = spool_of(tmp_path)
    killed = scan(tmp_path, estate, env)
    if point == "at-start":  # the interrupted run row is written ahead before anything else happens
        wait_for(lambda: any("-wal-" in n for n in spool.names()), what="the run row written ahead")
    elif point == "mid-upload":
        wait_for(lambda: len(landed(store, FINDINGS_STREAM)) >= 400, what="the first chunk to land")
    else:  # every finding evaluated and written locally; the last write-ahead chunks still on their way
        wait_for(lambda: (tmp_path / "out" / "findings.jsonl").exists() and written_ahead(spool)[1],
                 what="the findings written and the last chunk on its way")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    ahead, entries = written_ahead(spool)
    delivered_before = {r["FindingId"] for r in landed(store, FINDINGS_STREAM)}
    [run_id] = {n.rsplit("-wal-", 1)[1].removesuffix(".jsonl.gz") for n in spool.names() if "-wal-" in n}

    time.sleep(STALE + 1)  # its heartbeat goes stale: the next run takes over what it left
    recovery = scan(tmp_path, estate, env, out="out-2")
    _stdout, stderr = recovery.communicate(timeout=300)
    assert recovery.returncode == 0, stderr

    mine = [r for r in landed(store, FINDINGS_STREAM) if r["RunId"] == run_id]
    ids = {r["FindingId"] for r in mine}
    assert ahead | delivered_before <= ids <= set(expected)  # everything it wrote ahead or sent, nothing else
    if point != "at-start":
        assert entries, "the killed run had findings in its write-ahead log"
    runs = {r["RunId"]: r for r in landed(store, RUNS_STREAM)}
    assert runs[run_id]["RunStatus"] == "Failed" and runs[run_id]["Errors"][0].startswith("interrupted")
    others = [r for r in landed(store, FINDINGS_STREAM) if r["RunId"] != run_id]
    assert {r["FindingId"] for r in others} == set(expected) and len(others) == len(expected)
    assert [r["RunStatus"] for key, r in runs.items() if key != run_id] == ["Succeeded"]
    assert spool.names() == []


def test_two_runs_at_once_deliver_and_archive_each_its_own_findings(tmp_path, estate, ingestion):
    expected = expected_findings(tmp_path, estate)
    endpoint, store = ingestion("--delay", "0.05")
    env = environment(tmp_path, endpoint, LOGS_WRITE_AHEAD_ROWS=300, AUDIT_EVIDENCE="true")
    first, second = scan(tmp_path, estate, env), scan(tmp_path, estate, env)  # the same --out
    for process in (first, second):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    runs = landed(store, RUNS_STREAM)
    assert len(runs) == 2 and {r["RunStatus"] for r in runs} == {"Succeeded"}
    for run in runs:
        mine = [r for r in landed(store, FINDINGS_STREAM) if r["RunId"] == run["RunId"]]
        assert len(mine) == len(expected) == run["FindingCount"] + run["ExemptedCount"]
        assert {r["FindingId"] for r in mine} == set(expected)
    local = [json.loads(line) for line in (tmp_path / "out/findings.jsonl").open()]
    assert len({r["RunId"] for r in local}) == 1 and len(local) == len(expected)  # one whole run, not a mixture
    listing = subprocess.run([sys.executable, "-m", "auditors", "evidence", "verify"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    import gzip

    archive = tmp_path / "local" / "evidence"
    for findings in archive.rglob("findings.jsonl.gz"):
        records = [json.loads(line) for line in gzip.decompress(findings.read_bytes()).splitlines()]
        assert len({r["RunId"] for r in records}) == 1 and len(records) == len(expected)
    assert len(list(archive.rglob("findings.jsonl.gz"))) == 2
    assert spool_of(tmp_path).names() == []


DOWN_STORAGE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDX"
                "J1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:1/"
                "devstoreaccount1;")


@pytest.mark.parametrize("log_analytics_down", [False, True])
def test_storage_down_at_start_ends_in_bounded_time_with_one_line_and_exit_4(tmp_path, ingestion, log_analytics_down):
    endpoint, store = ingestion()
    env = environment(tmp_path, "https://127.0.0.1:1" if log_analytics_down else endpoint,
                      AUDIT_STORAGE_CONNECTION_STRING=DOWN_STORAGE)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "auditors", "scan", "--demo", "--out", str(tmp_path / "out"),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 30
    assert done.returncode == 4 and "Traceback" not in done.stderr
    problems = done.stderr.splitlines()
    assert problems[0].startswith("problem: storage http://127.0.0.1:1/devstoreaccount1 is unavailable, it refuses "
                                  "connections")
    assert "lost for this run: " in problems[0] and "evidence archive" in problems[0]
    local = (tmp_path / "out/findings.jsonl").read_text().splitlines()
    if log_analytics_down:  # nothing anywhere but here: the local output and these lines say what was lost
        assert len(problems) == 3
        assert all("neither delivered" in p and "(storage unavailable)" in p for p in problems[1:])
        assert f"{len(local)} neither delivered nor spooled" in done.stdout
    else:  # the run still records itself in Log Analytics, as Failed, saying why
        assert len(problems) == 1
        [run] = landed(store, RUNS_STREAM)
        assert run["RunStatus"] == "Failed" and any("evidence archive failed" in e for e in run["Errors"])
        assert run["EvidenceLocation"] == "" and len(landed(store, FINDINGS_STREAM)) == len(local)
