"""The `scan` and `rules` commands as a user runs them (a real subprocess, real files)."""

import csv
import json
import subprocess
import sys

import pytest

from auditors.findings import FINDING_FIELDS, expand, read_records
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
    records = list(read_records(out / "findings.jsonl"))
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
    # the kubelet identity is gone: every pull of aks-analytics fails, though its pair rules pass
    assert worst[0].startswith("  aks-analytics -> acrcontosobasic: Fail, root cause AKS-ACR-005: The kubelet")
    assert any(line.startswith("  aks-web-eastus -> acrcontosoedge: Fail, root cause AKS-ACR-001") for line in worst)
    first_unknown = next(i for i, line in enumerate(worst) if ": Unknown" in line)
    assert all(": Fail" not in line for line in worst[first_unknown:] if line.startswith("  "))
    assert "Pull verdicts (AKS-ACR-000): 9 of 16 pair(s) cannot pull" in result.stdout
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


def test_rules_lists_the_catalog():
    result = cli("rules")
    assert result.returncode == 0
    for rule in catalog():
        assert rule.meta.id in result.stdout
    listed = json.loads(cli("rules", "--json").stdout)
    assert [r["id"] for r in listed] == [r.meta.id for r in catalog()]
    assert all(r["statuses"] and "controls" in r for r in listed)
    lines = result.stdout.splitlines()
    title_column = lines[0].index("Title")
    assert all(line[title_column - 2:title_column] == "  " for line in lines[1:len(listed) + 1])  # aligned
    controls = {line.split()[0]: line[lines[0].index("Controls"):] for line in lines[1:len(listed) + 1]}
    assert controls["AKS-ACR-001"] == ", ".join(next(r for r in listed if r["id"] == "AKS-ACR-001")["controls"])


def test_one_rule_is_shown_with_its_documentation():
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs/rules/AKS-ACR-013.md").read_text()
    for wanted in ("AKS-ACR-013", "aks-acr-013", "13"):
        result = cli("rules", wanted)
        assert result.returncode == 0 and result.stdout.startswith("# AKS-ACR-013: Exemption has not expired\n")
        assert result.stdout.strip() == page[page.index("# AKS-ACR-013"):].strip()
    as_json = json.loads(cli("rules", "013", "--json").stdout)
    assert as_json["id"] == "AKS-ACR-013" and as_json["documentation"] == page
    missing = cli("rules", "AKS-ACR-099")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: no rule 'AKS-ACR-099'; the rules are AKS-ACR-000, ")


def test_summary_points_at_groups_that_keep_verdicts_unknown(tmp_path):
    from tests.helpers import demo_copy
    from tools.build_demo import guid

    without_graph = demo_copy(tmp_path / "estate", sources=("deny", "insights"))
    result = cli("scan", "--snapshot", str(without_graph), "--pairs", "auditors/demo/pairs.yaml", "--out",
                 str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"Top groups: {guid('group:acr-readers')} (2)" in result.stdout and "GroupMember.Read.All" in result.stdout
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

    from tests.helpers import demo_copy

    process, endpoint, ca = emulator_process("--page-size", "3")
    env = {**os.environ, "AZURE_ACCESS_TOKEN": "cli-secret-token", "REQUESTS_CA_BUNDLE": str(ca),
           "AUDIT_GRAPH": "false", "AUDIT_CONTAINER_INSIGHTS": "false"}  # Resource Graph and deny assignments
    live = subprocess.run([sys.executable, "-m", "auditors", "scan", "--arm-endpoint", endpoint, "--pairs",
                           "auditors/demo/pairs.yaml", "--out", str(tmp_path / "live"), "--run-id", "r"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert live.returncode == 0, live.stderr
    assert "coverage: tenant, 6 subscriptions" in live.stdout and "0 throttled (429)" in live.stdout
    assert "cli-secret-token" not in live.stdout + live.stderr
    estate = demo_copy(tmp_path / "estate", sources=("deny",))
    cli("scan", "--snapshot", str(estate), "--pairs", "auditors/demo/pairs.yaml", "--out", str(tmp_path / "demo"),
        "--run-id", "r", "--quiet")

    def findings(folder):
        lines = (folder / "findings.jsonl").open()
        return sorted((expand(json.loads(line)) | {"TimeGenerated": None, "FirstSeen": None} for line in lines),
                      key=lambda r: r["FindingId"])

    assert findings(tmp_path / "live") == findings(tmp_path / "demo")
    os.kill(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=10)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["throttled429"] == 0 and stats["requests"] == stats["pages"] > 8
    assert stats["denyAssignments"]["requests"] == 2  # one listing per subscription that holds registries


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


@pytest.mark.parametrize(("scope", "expected"), [
    ("mg:doesnotexist", "scope mg:doesnotexist: no management group with this id, or no subscription under it"),
    ("sub:00000000-0000-4000-8000-0000000000ff", "scope sub:00000000-0000-4000-8000-0000000000ff: no such "
                                                 "subscription is visible to the credential"),
])
def test_a_scope_that_matches_nothing_exits_2_naming_it(emulator_process, tmp_path, scope, expected):
    import os

    _, endpoint, ca = emulator_process()
    env = {**os.environ, "AZURE_ACCESS_TOKEN": "t", "REQUESTS_CA_BUNDLE": str(ca)}
    result = subprocess.run([sys.executable, "-m", "auditors", "scan", "--scope", scope, "--arm-endpoint", endpoint,
                             "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {expected}")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "findings.jsonl").exists()


@pytest.mark.parametrize("problem", ["refused", "ca-bundle", "certificate"])
def test_connection_problems_retrying_cannot_fix_are_named_at_once(emulator_process, tmp_path, problem):
    import os
    import time

    env = {**os.environ, "AZURE_ACCESS_TOKEN": "t"}
    env.pop("REQUESTS_CA_BUNDLE", None)
    endpoint, expected = "https://127.0.0.1:1", "it refuses connections, nothing listens on that port"
    if problem == "ca-bundle":
        env["REQUESTS_CA_BUNDLE"] = str(tmp_path / "missing-ca.pem")
        expected = f"the CA bundle {tmp_path / 'missing-ca.pem'} cannot be read: fix REQUESTS_CA_BUNDLE"
    elif problem == "certificate":  # the emulator's certificate comes from its own CA, which is not trusted here
        _, endpoint, _ = emulator_process()
        expected = "its TLS certificate does not verify"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "auditors", "scan", "--arm-endpoint", endpoint, "--out",
                             str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: Resource Graph at {endpoint}: {expected}")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert time.monotonic() - started < 8  # not retried with back-off
    assert list((tmp_path / "out").glob("findings.*")) == []


def _clean_env(tmp_path, **extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AUDIT_", "LOGS_", "IDENTITY_", "MSI_"))}
    # Managed identity is asked at a local port that refuses, so the credential chain never leaves 127.0.0.1.
    return {**env, "HOME": str(tmp_path), "IDENTITY_ENDPOINT": "http://127.0.0.1:1/token", "IDENTITY_HEADER": "x",
            **extra}


@pytest.mark.parametrize(("case", "args", "env", "expected"), [
    ("no credential", ("scan",), {},
     "error: no Azure credential: sign in with `az login`, set AZURE_ACCESS_TOKEN to a bearer token, or run where a "
     "managed identity is available"),
    ("out is a file", ("scan", "--demo", "--out", "README.md"), {}, "error: --out README.md: is a file, not a folder"),
    ("every bad setting at once", ("scan", "--demo"),
     {"LOGS_UPLOAD_WORKERS": "abc", "AUDIT_SPOOL_MAX_MB": "x", "AZURE_ARM_ENDPOINT": "notaurl"},
     "error: invalid settings: LOGS_UPLOAD_WORKERS: 'abc' is not a whole number; AUDIT_SPOOL_MAX_MB: 'x' is not a "
     "whole number; AZURE_ARM_ENDPOINT: 'notaurl' must be an https URL"),
    ("page size", ("scan", "--demo", "--page-size", "5000"), {},
     "argument --page-size: 5000 is not between 1 and 1000"),
    ("page size zero", ("scan", "--demo", "--page-size", "0"), {}, "argument --page-size: 0 is not between 1 and 1000"),
    ("subscription not a GUID", ("scan", "--scope", "sub:not-a-guid"), {"AZURE_ACCESS_TOKEN": "t"},
     "scope 'sub:not-a-guid': a subscription is given by its id, a GUID"),
    ("bad YAML pairs file", ("scan", "--demo", "--pairs", "tests/data/broken-pairs.yaml"), {},
     "broken-pairs.yaml: line 3: invalid YAML"),
])
def test_errors_that_help_are_one_line_and_exit_2(tmp_path, case, args, env, expected):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-m", "auditors", *args, *(["--out", str(tmp_path / "out")]
                             if "--out" not in args else []), "--quiet"], capture_output=True, text=True,
                            env=_clean_env(tmp_path, PYTHONPATH=str(root), **env), cwd=root, timeout=60)
    assert result.returncode == 2, (case, result.stderr)
    assert expected in result.stderr and "Traceback" not in result.stderr, case
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "out" / "findings.jsonl").exists()


def test_no_room_for_the_runs_scratch_folder_is_one_line_and_exit_2(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import errno, os, sys, tempfile\n"
            "def full(*args, **kwargs):\n"
            "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "tempfile.mkdtemp = full\n"
            "from auditors.cli import main\n"
            f"sys.exit(main(['scan', '--demo', '--out', {str(tmp_path / 'out')!r}, '--quiet']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60,
                            env=_clean_env(tmp_path, PYTHONPATH=str(root)))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot make this run's scratch folder in ") and \
        result.stderr.rstrip().endswith("No space left on device (TMPDIR names another place)"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "out" / "findings.jsonl").exists()


def test_a_closed_pipe_ends_quietly():
    result = subprocess.run(f"{sys.executable} -m auditors rules --json | head -1", shell=True, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout == "[\n" and result.stderr == ""


def test_scan_writes_the_reports_asked_for_and_report_rebuilds_them_from_the_findings(tmp_path):
    out = tmp_path / "out"
    result = cli("scan", "--demo", "--out", str(out), "--report", "html", "--report", "json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"reports: {out / 'report.html'}, {out / 'summary.json'}" in result.stdout
    assert not (out / "report.md").exists()
    summary = json.loads((out / "summary.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert summary["run"]["runId"] == run["RunId"] and summary["overview"]["pairs"] == 16
    page = (out / "report.html").read_text()
    assert "<script" not in page.lower() and 'src="http' not in page and "aks-web-eastus" in page
    # Later, from the findings alone (the run record beside them is picked up), into another folder.
    again = cli("report", "--findings", str(out / "findings.jsonl"), "--out", str(tmp_path / "later"))
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "later").iterdir()) == ["report.html", "report.md", "summary.json"]
    rebuilt = json.loads((tmp_path / "later" / "summary.json").read_text())
    assert rebuilt["overview"] == summary["overview"] and rebuilt["run"]["runId"] == run["RunId"]
    bad = cli("report", "--findings", str(out), "--format", "pdf")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "invalid choice: 'pdf'" in bad.stderr


def test_summary_keeps_clusters_with_one_name_apart_and_ranks_pairs_by_the_pull_verdict(tmp_path):
    from tests.helpers import add_twin_cluster, demo_copy

    snapshot = demo_copy(tmp_path / "snap")
    add_twin_cluster(snapshot, "aks-analytics")
    result = cli("scan", "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"), "--out",
                 str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    worst = result.stdout[result.stdout.index("Worst cluster -> registry pairs:"):].splitlines()[1:]
    lines = [line for line in worst if line.strip().startswith("aks-analytics (")]
    assert {line.split(")")[0].strip() for line in lines} == {"aks-analytics (rg-aks-analytics",
                                                               "aks-analytics (rg-aks-analytics-2"}
    assert all(": Fail, root cause AKS-ACR-005: " in line for line in lines)
    assert worst[0].strip().split(": ")[1].startswith("Fail")  # cannot-pull pairs first


def test_an_emulator_on_a_busy_port_says_so_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("emulate", "arg", "--demo", "--port", str(port))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert len(result.stderr.splitlines()) == 1


def test_counts_are_written_in_the_singular_for_one(tmp_path):
    from tests.helpers import demo_copy

    snapshot = demo_copy(tmp_path / "snap")
    resources = json.loads((snapshot / "resources.json").read_text())
    clusters = [r for r in resources if r["type"] == "microsoft.containerservice/managedclusters"]
    keep = next(r for r in clusters if r["name"] == "aks-analytics")
    (snapshot / "resources.json").write_text(json.dumps([r for r in resources if r not in clusters or r is keep]))
    result = cli("scan", "--snapshot", str(snapshot), "--out", str(tmp_path / "out"), "--quiet")
    assert " for 1 cluster, " in result.stdout and "1 clusters" not in result.stdout
