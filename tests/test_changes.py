"""Changes since the previous run (Change, FirstSeen, New and Fixed) and findings carried forward for resources a
run could not collect, through the real pipeline and files."""

import json
import subprocess
import sys

from auditors.findings import read_records
from auditors.services import Services
from auditors.settings import Settings
from tests.helpers import demo_copy, run_scan


def findings(out) -> dict[tuple[str, str, str], dict]:
    records = list(read_records(out / "findings.jsonl"))
    return {(r["RuleId"], r["ClusterName"], r["RegistryName"]): r for r in records}


def test_a_second_demo_run_reports_nothing_new():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        command = [sys.executable, "-m", "auditors", "scan", "--demo", "--out", str(out), "--quiet"]
        first = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert "no previous findings to compare with" in first.stdout
        before = findings(out)
        assert {r["Change"] for r in before.values()} == {"New"}
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == first.returncode
        assert f"since the previous run ({out / 'findings.jsonl'}): 0 new problem(s), 0 fixed" in second.stdout
        after = findings(out)
        assert {r["Change"] for r in after.values()} == {"Unchanged"}
        assert all(after[key]["FirstSeen"] == before[key]["TimeGenerated"] for key in after)
        assert {r["RunId"] for r in after.values()} != {r["RunId"] for r in before.values()}


def _grant_pull(snapshot, cluster: str, registry: str) -> None:
    """An AcrPull assignment for the cluster's kubelet identity at the registry scope."""
    resources = json.loads((snapshot / "resources.json").read_text())
    kubelet = next(r for r in resources if r["name"] == cluster)["properties"]["identityProfile"]["kubeletidentity"]
    scope = next(r for r in resources if r["name"] == registry)["id"]
    row = {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/0b1c2d3e-0000-4000-8000-00000000beef",
           "type": "microsoft.authorization/roleassignments", "name": "0b1c2d3e-0000-4000-8000-00000000beef",
           "subscriptionId": scope.split("/")[2], "properties": {
               "scope": scope, "principalId": kubelet["objectId"], "principalType": "ServicePrincipal",
               "roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/"
                                   "7f951dda-4ed3-4680-a7ca-43fe172d538d"}}
    (snapshot / "extra_assignment.jsonl").write_text(json.dumps(row) + "\n")


def test_a_fix_and_a_new_problem_are_counted_and_marked(tmp_path):
    snapshot = demo_copy(tmp_path / "snap")
    _grant_pull(snapshot, "aks-web-eastus", "acrcontosoedge")
    first = run_scan(snapshot, tmp_path / "out")
    (snapshot / "extra_assignment.jsonl").unlink()  # the grant is removed: pull fails again
    second = run_scan(snapshot, tmp_path / "out")
    after = findings(tmp_path / "out")
    permission = after[("AKS-ACR-001", "aks-web-eastus", "acrcontosoedge")]
    assert permission["Status"] == "Fail" and permission["Change"] == "New"
    assert permission["FirstSeen"] == second.run.time_generated
    assert second.record.NewCount >= 1 and second.record.FixedCount == 0
    # ... and granted again: Fixed.
    _grant_pull(snapshot, "aks-web-eastus", "acrcontosoedge")
    third = run_scan(snapshot, tmp_path / "out")
    again = findings(tmp_path / "out")[("AKS-ACR-001", "aks-web-eastus", "acrcontosoedge")]
    assert again["Status"] == "Pass" and again["Change"] == "Changed"
    assert third.record.FixedCount >= 1 and third.record.NewCount == 0
    assert first.record.NewCount > 0  # a first run: every problem is new
    untouched = findings(tmp_path / "out")[("AKS-ACR-007", "", "acrcontosoedge")]
    assert untouched["Change"] == "Unchanged" and untouched["FirstSeen"] == first.run.time_generated


def test_findings_of_a_subscription_that_could_not_be_collected_are_carried_forward(tmp_path):
    snapshot = demo_copy(tmp_path / "snap")
    run_scan(snapshot, tmp_path / "out")
    before = findings(tmp_path / "out")
    web = before[("AKS-ACR-001", "aks-web-eastus", "acrcontosoedge")]
    subscription = web["SubscriptionId"]
    # The next collection fails for that subscription's clusters: the rows are missing and the manifest says why.
    resources = json.loads((snapshot / "resources.json").read_text())
    gone = [r for r in resources if r["type"] == "microsoft.containerservice/managedclusters"
            and r["subscriptionId"] == subscription]
    names = {r["name"] for r in gone}
    assert "aks-web-eastus" in names and "aks-ml-training" not in names
    deleted = next(r for r in resources if r["name"] == "aks-ml-training")  # deleted, its subscription collected
    kept = [r for r in resources if r not in gone and r is not deleted]
    (snapshot / "resources.json").write_text(json.dumps(kept))
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["coverage"]["gaps"] = [{"query": "clusters", "types": ["microsoft.containerservice/managedclusters"],
                                     "subscriptions": [subscription], "reason": "HTTP 500 after 4 attempts"}]
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    outcome = run_scan(snapshot, tmp_path / "out")
    after = findings(tmp_path / "out")
    carried = after[("AKS-ACR-001", "aks-web-eastus", "acrcontosoedge")]
    assert carried["Status"] == "Unknown" and carried["LastKnownStatus"] == "Fail"
    assert carried["LastSeen"] == web["TimeGenerated"] and carried["RunId"] == outcome.run.run_id
    assert carried["Message"].startswith("Not evaluated in this run: clusters: HTTP 500 after 4 attempts. Last "
                                         "known: Fail on ")
    assert carried["Evidence"]["carriedForward"] is True and carried["Change"] == "Changed"
    carried_ids = {r["FindingId"] for r in after.values() if r["Evidence"].get("carriedForward")}
    assert outcome.record.CarriedForward == len(carried_ids) > 0
    assert {r["ClusterName"] for r in after.values() if r["FindingId"] in carried_ids} == names
    assert not [key for key in after if key[1] == "aks-ml-training"]  # gone where collection was whole: not kept
    # Carried again in the next run, with the status last actually seen.
    run_scan(snapshot, tmp_path / "out")
    twice = findings(tmp_path / "out")[("AKS-ACR-001", "aks-web-eastus", "acrcontosoedge")]
    assert twice["LastKnownStatus"] == "Fail" and twice["LastSeen"] == web["TimeGenerated"]
    assert twice["Change"] == "Unchanged"


def test_a_timer_run_compares_with_the_archive_of_its_scope(tmp_path):
    snapshot = demo_copy(tmp_path / "snap")
    settings = Settings(evidence=True, local_dir=str(tmp_path / "store"), signing_key_id="", graph=False,
                        deny_assignments=False, container_insights=False)
    first = run_scan(snapshot, tmp_path / "out-1", services=Services(settings))
    assert first.record.EvidenceLocation and first.previous == ""
    second = run_scan(snapshot, tmp_path / "out-2", services=Services(settings))  # no local previous findings
    assert second.previous.endswith(f"{first.run.run_id}/findings.jsonl.gz"), second.previous
    assert second.record.NewCount == 0
    assert {r["Change"] for r in findings(tmp_path / "out-2").values()} == {"Unchanged"}


def test_unreadable_previous_findings_make_every_finding_new_without_failing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "findings.jsonl").write_text('{"FindingId": "x", "Status": "Fail"}\n{ broken\n')
    outcome = run_scan(demo_copy(tmp_path / "snap"), out)
    assert outcome.record.RunStatus == "Succeeded"
    assert {r["Change"] for r in findings(out).values()} == {"New"}


def test_after_a_carried_run_the_status_last_seen_decides_the_change(tmp_path):
    snapshot = demo_copy(tmp_path / "snap")
    first = run_scan(snapshot, tmp_path / "out")
    before = findings(tmp_path / "out")
    resources_path, manifest_path = snapshot / "resources.json", snapshot / "manifest.json"
    resources, manifest = resources_path.read_text(), manifest_path.read_text()
    web = before[("AKS-ACR-003", "aks-web-eastus", "acrcontosoedge")]      # Fail (the firewall)
    passing = before[("AKS-ACR-006", "aks-web-eastus", "")]                 # Pass
    assert (web["Status"], passing["Status"]) == ("Fail", "Pass")
    # A run that cannot collect the cluster's subscription carries both forward ...
    kept = [r for r in json.loads(resources) if r["subscriptionId"] != web["SubscriptionId"]
            or r["type"] != "microsoft.containerservice/managedclusters"]
    resources_path.write_text(json.dumps(kept))
    gap = json.loads(manifest)
    gap["coverage"]["gaps"] = [{"query": "clusters", "types": ["microsoft.containerservice/managedclusters"],
                                "subscriptions": [web["SubscriptionId"]], "reason": "HTTP 500"}]
    manifest_path.write_text(json.dumps(gap))
    run_scan(snapshot, tmp_path / "out")
    # ... and the next collects it again, with the identity now failing its Pass check.
    resources_path.write_text(resources)
    manifest_path.write_text(manifest)
    rows = json.loads(resources)
    cluster = next(r for r in rows if r["name"] == "aks-web-eastus")
    cluster["identity"] = None
    cluster["properties"]["servicePrincipalProfile"] = {"clientId": "0b0b0b0b-0000-4000-8000-000000000000"}
    resources_path.write_text(json.dumps(rows))
    third = run_scan(snapshot, tmp_path / "out")
    after = findings(tmp_path / "out")
    still_failing = after[("AKS-ACR-003", "aks-web-eastus", "acrcontosoedge")]
    newly_failing = after[("AKS-ACR-006", "aks-web-eastus", "")]
    assert newly_failing["Status"] == "Fail" and newly_failing["Change"] == "New"   # Pass before it was carried
    assert still_failing["Change"] == "Unchanged" and still_failing["FirstSeen"] == first.run.time_generated
    assert third.record.NewCount >= 1


def test_a_gap_in_any_kind_of_row_keeps_the_findings_of_its_subscription():
    """Pairs also come from role assignments, identities and observed pulls: a query of those that failed for a
    subscription may hide a pair, so its last findings are carried forward rather than dropped as gone."""
    from auditors.model import Gap, Inventory
    from auditors.pipeline import _not_collected

    inventory = Inventory()
    inventory.gaps.append(Gap("role_assignments", ("microsoft.authorization/roleassignments",),
                              frozenset({"sub-a"}), "HTTP 429 after 4 attempts"))
    why = _not_collected(inventory)
    assert why("SUB-A") == "role_assignments: HTTP 429 after 4 attempts" and why("sub-b") is None


def test_a_finding_is_carried_when_its_registry_subscription_was_not_collected(tmp_path):
    from auditors.changes import ChangeTracker, PreviousRun

    cluster = "/subscriptions/sub-a/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks"
    registry = "/subscriptions/sub-b/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr"
    record = {"TimeGenerated": "2026-11-29T00:00:00Z", "RunId": "before", "FindingId": "f1", "RuleId": "AKS-ACR-001",
              "Severity": "High", "Status": "Fail", "ClusterId": cluster, "RegistryId": registry, "Message": "no role",
              "Evidence": {}}
    path = tmp_path / "previous.jsonl"
    path.write_text(json.dumps(record) + "\n")
    tracker = ChangeTracker(PreviousRun.read(path, "test"), run_id="now", time_generated="2026-11-30T00:00:00Z",
                            not_collected=lambda sub: "registries: HTTP 500" if sub == "sub-b" else None)
    [carried] = list(tracker.annotate([]))
    assert carried.FindingId == "f1" and carried.Status == "Unknown" and carried.LastKnownStatus == "Fail"
