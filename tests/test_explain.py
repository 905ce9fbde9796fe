"""`explain CLUSTER [REGISTRY]` as a user runs it: the chain behind a verdict, from the demo, a snapshot or the
findings of an earlier run, in text and JSON; clear errors for clusters that are unknown or ambiguous."""

import json
import subprocess
import sys

import pytest

from tests.helpers import add_twin_cluster, demo_copy


def cli(*args):
    return subprocess.run([sys.executable, "-m", "auditors", *args], capture_output=True, text=True, timeout=120)


def explain_json(*args) -> dict:
    result = cli("explain", *args, "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_firewall_and_permission_causes_are_shown_with_their_fixes():
    result = cli("explain", "aks-web-eastus", "acrcontosoedge", "--demo", "--quiet")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "aks-web-eastus -> acrcontosoedge: Fail (cannot pull)" in text
    assert "[Fail] AKS-ACR-001" in text and "[Fail] AKS-ACR-003" in text
    assert "egressIps: 52.170.8.9" in text and "ipRules: 20.50.20.0/24; 198.51.100.7" in text
    fixes = text[text.index("Fix, blocking problems first"):]
    # The permission comes before the firewall: the pull meets it first.
    assert fixes.index("az role assignment create") < fixes.index("az acr network-rule add --name acrcontosoedge")
    assert "1. AKS-ACR-001 (Fail, blocks the pull)" in fixes
    assert "--ip-address 52.170.8.9" in fixes


def test_json_gives_the_same_chain_as_data():
    data = explain_json("aks-web-eastus", "acrcontosoedge", "--demo")
    (pair,) = data["pairs"]
    assert pair["verdict"]["status"] == "Fail" and pair["verdict"]["rootCause"] == "AKS-ACR-001"
    rules = [c["rule"] for c in pair["chain"]]
    assert rules[:5] == ["AKS-ACR-005", "AKS-ACR-006", "AKS-ACR-012", "AKS-ACR-014", "AKS-ACR-001"]
    assert {"AKS-ACR-002", "AKS-ACR-003", "AKS-ACR-004", "AKS-ACR-007", "AKS-ACR-008", "AKS-ACR-009",
            "AKS-ACR-011"} <= set(rules)
    assert [f["rule"] for f in pair["fixes"] if f["blocking"]] == ["AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-002"]
    observed = next(c for c in pair["chain"] if c["rule"] == "AKS-ACR-002")
    assert observed["evidence"]["classes"] == {"Forbidden": 14}


def test_a_cluster_alone_explains_every_registry_it_pairs_with_root_cause_first():
    data = explain_json("aks-analytics", "--demo")
    assert data["pairs"], "aks-analytics pairs with registries in the demo"
    for pair in data["pairs"]:
        assert pair["verdict"]["status"] == "Fail"
        assert pair["verdict"]["rootCause"] == "AKS-ACR-005", pair["registry"]["name"]
        assert pair["fixes"][0]["rule"] == "AKS-ACR-005"


def test_a_registry_nothing_pairs_is_evaluated_on_request():
    data = explain_json("aks-analytics", "acrcontosoedge", "--demo")
    (pair,) = data["pairs"]
    assert pair["registry"]["pairSource"] == "explain"
    assert {c["rule"]: c["status"] for c in pair["chain"]}["AKS-ACR-003"] == "Fail"


def test_an_earlier_runs_findings_explain_the_same(tmp_path):
    scan = cli("scan", "--demo", "--out", str(tmp_path), "--quiet")
    assert scan.returncode == 0, scan.stderr
    fresh = explain_json("aks-web-eastus", "acrcontosoedge", "--demo")
    earlier = explain_json("aks-web-eastus", "acrcontosoedge", "--findings", str(tmp_path / "findings.jsonl"))
    assert earlier["runId"] and earlier["runId"] != fresh["runId"]
    fresh.pop("runId"), earlier.pop("runId")
    assert earlier == fresh
    by_folder = explain_json("AKS-WEB-EASTUS", "acrcontosoedge.azurecr.io", "--findings", str(tmp_path))
    assert by_folder["pairs"][0]["registry"]["name"] == "acrcontosoedge"


def test_clusters_with_the_same_name_need_the_id(tmp_path):
    snapshot = demo_copy(tmp_path / "snap")
    twin = add_twin_cluster(snapshot, "aks-web-eastus")
    result = cli("explain", "aks-web-eastus", "--snapshot", str(snapshot), "--quiet")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "2 clusters are named 'aks-web-eastus'" in result.stderr
    assert "rg-aks-web-eastus-2" in result.stderr and "Traceback" not in result.stderr
    data = explain_json(twin["id"], "acrcontosoedge", "--snapshot", str(snapshot))
    assert data["cluster"]["id"].lower() == twin["id"].lower()


@pytest.mark.parametrize(("args", "expected"), [
    (("aks-web-eastu", "--demo"), "no cluster named 'aks-web-eastu' among 11 cluster(s); similar: aks-web-eastus"),
    (("aks-web-eastus", "acrnothere", "--demo"), "registry 'acrnothere'"),
])
def test_unknown_names_exit_2_with_one_line(args, expected):
    result = cli("explain", *args, "--quiet")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {expected}\n" or (expected in result.stderr and result.stderr.count("\n") == 1)


def test_unreadable_findings_file_is_named_with_its_line(tmp_path):
    findings = tmp_path / "findings.jsonl"
    findings.write_text('{"RuleId": "AKS-ACR-000"}\n{ broken\n')
    result = cli("explain", "aks-web-eastus", "--findings", str(findings))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {findings}:2: not a JSON finding")
    missing = cli("explain", "aks-web-eastus", "--findings", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read the findings file" in missing.stderr
