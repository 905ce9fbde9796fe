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
    from auditors.scan import demo_path

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
    assert [r["id"] for r in listed] == [r.meta.id for r in catalog()]


def test_summary_points_at_groups_that_keep_verdicts_unknown(demo_scan):
    from tools.build_demo import guid

    result, _ = demo_scan
    assert f"Top groups: {guid('group:acr-readers')} (1)" in result.stdout
    assert guid("group:secops") not in result.stdout  # declared in the demo pairs file, so decided
