"""The `scan` and `rules` commands as a user runs them (a real subprocess, real files)."""

import csv
import json
import subprocess
import sys

import pytest

from auditors.findings import FINDING_FIELDS
from auditors.rules import catalog


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "auditors", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.fixture(scope="module")
def demo_scan(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = cli("scan", "--demo", "--out", str(out), "--run-id", "run-1")
    return result, out


def test_demo_scan_writes_jsonl_and_csv_with_the_same_findings(demo_scan):
    result, out = demo_scan
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    with (out / "findings.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(records) == len(rows) > 50
    assert list(rows[0]) == list(FINDING_FIELDS) == list(records[0])
    assert [r["FindingId"] for r in records] == [r["FindingId"] for r in rows]
    assert json.loads(rows[0]["Evidence"]) == records[0]["Evidence"]
    assert {r["RunId"] for r in records} == {"run-1"}


def test_finding_ids_are_unique_and_stable_across_runs(demo_scan, tmp_path):
    _, out = demo_scan
    first = [json.loads(line)["FindingId"] for line in (out / "findings.jsonl").read_text().splitlines()]
    assert len(first) == len(set(first))
    assert cli("scan", "--demo", "--out", str(tmp_path), "--quiet").returncode == 0
    second = [json.loads(line)["FindingId"] for line in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert second == first


def test_summary_table_lists_every_rule_and_worst_pairs_first(demo_scan):
    result, _ = demo_scan
    for rule in catalog():
        assert rule.meta.id in result.stdout
    worst = result.stdout.split("Worst cluster -> registry pairs:\n")[1].splitlines()
    assert worst[0].startswith("  aks-web-eastus -> acrcontosoedge: AKS-ACR-001 Fail")  # three failures
    first_unknown_only = next(i for i, line in enumerate(worst) if "Fail" not in line)
    assert all("Fail" not in line for line in worst[first_unknown_only:] if line.startswith("  "))
    assert "[scan] read" in result.stderr  # progress goes to stderr


def test_no_secret_reaches_findings(demo_scan):
    _, out = demo_scan
    text = (out / "findings.jsonl").read_text()
    assert '"secret"' not in text.lower()


@pytest.mark.parametrize(("threshold", "code"), [("High", 1), ("low", 1), ("Critical", 0)])
def test_fail_on_threshold(tmp_path, threshold, code):
    result = cli("scan", "--demo", "--out", str(tmp_path), "--quiet", "--fail-on", threshold)
    assert result.returncode == code, result.stderr
    if code:
        assert "--fail-on" in result.stderr


def test_fail_on_rejects_unknown_severity(tmp_path):
    result = cli("scan", "--demo", "--out", str(tmp_path), "--fail-on", "urgent")
    assert result.returncode == 2 and "unknown severity" in result.stderr


def test_unusable_snapshot_exits_2_naming_file_and_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    result = cli("scan", "--snapshot", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert f"error: {bad}: line 1 column 3: invalid JSON" in result.stderr
    assert not (tmp_path / "o" / "findings.jsonl").exists()


def test_bad_pairs_file_exits_2(tmp_path):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text("pairs: {}")
    result = cli("scan", "--demo", "--pairs", str(pairs), "--out", str(tmp_path))
    assert result.returncode == 2 and "`pairs` must be a list" in result.stderr


def test_snapshot_directory_scan(tmp_path):
    from auditors.inputs import demo_path

    result = cli("scan", "--snapshot", str(demo_path()), "--out", str(tmp_path), "--quiet")
    assert result.returncode == 0
    # without the demo pairs file, only tag- and role-declared pairs exist
    assert "aks-ml-training -> acrcontosoabac" in result.stdout


def test_rules_lists_catalog_and_reserved_ids():
    result = cli("rules")
    assert result.returncode == 0
    for rule in catalog():
        assert rule.meta.id in result.stdout
    assert "AKS-ACR-002" in result.stdout and "reserved" in result.stdout
    listed = json.loads(cli("rules", "--json").stdout)
    assert [r["id"] for r in listed if "reserved" not in r] == [r.meta.id for r in catalog()]


def test_summary_points_at_groups_that_keep_verdicts_unknown(demo_scan):
    from tools.build_demo import guid

    result, _ = demo_scan
    assert f"Top groups: {guid('group:acr-readers')} (2)" in result.stdout
    assert guid("group:secops") not in result.stdout  # declared in the demo pairs file, so decided


@pytest.fixture
def emulator_process(tmp_path):
    import os
    import signal

    processes = []

    def start(*extra):
        ca = tmp_path / f"ca{len(processes)}.pem"
        process = subprocess.Popen([sys.executable, "-m", "auditors", "emulate", "arg", "--demo", "--ca-out", str(ca),
                                    *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        line = process.stdout.readline()
        endpoint = line.split(" on ")[1].split(" ")[0]
        return process, endpoint, ca

    yield start
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


def test_live_scan_through_the_cli_matches_the_demo(emulator_process, tmp_path):
    import os
    import signal

    process, endpoint, ca = emulator_process("--page-size", "3")
    env = {**os.environ, "AZURE_ACCESS_TOKEN": "cli-secret-token", "REQUESTS_CA_BUNDLE": str(ca)}
    live = subprocess.run([sys.executable, "-m", "auditors", "scan", "--arm-endpoint", endpoint, "--pairs",
                           "auditors/demo/pairs.yaml", "--out", str(tmp_path / "live"), "--run-id", "r"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert live.returncode == 0, live.stderr
    assert "coverage: tenant, 6 subscriptions" in live.stdout and "0 throttled (429)" in live.stdout
    assert "cli-secret-token" not in live.stdout + live.stderr
    cli("scan", "--demo", "--out", str(tmp_path / "demo"), "--run-id", "r", "--quiet")

    def findings(folder):
        return sorted((json.loads(line) | {"TimeGenerated": None} for line in (folder / "findings.jsonl").open()),
                      key=lambda r: r["FindingId"])

    assert findings(tmp_path / "live") == findings(tmp_path / "demo")
    os.kill(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=10)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["throttled429"] == 0 and stats["requests"] == stats["pages"] > 8


def test_incomplete_live_scan_exits_3_and_says_what_is_missing(emulator_process, tmp_path):
    import os

    _, endpoint, ca = emulator_process("--fail-query", "public_ips")
    env = {**os.environ, "AZURE_ACCESS_TOKEN": "t", "REQUESTS_CA_BUNDLE": str(ca)}
    result = subprocess.run([sys.executable, "-m", "auditors", "scan", "--arm-endpoint", endpoint, "--out",
                             str(tmp_path)], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 3, result.stderr
    assert "INCOMPLETE: 1 query batch(es) failed" in result.stdout
    assert "missing: public_ips" in result.stderr


def test_bad_scope_exits_2(tmp_path):
    import os

    env = {**os.environ, "AZURE_ACCESS_TOKEN": "t"}
    result = subprocess.run([sys.executable, "-m", "auditors", "scan", "--scope", "rg:x", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "--scope" in result.stderr and "'rg:x'" in result.stderr
    assert "use tenant, mg:NAME or sub:SUBSCRIPTION-ID" in result.stderr and len(result.stderr.splitlines()) == 1
