"""The embedded demo estate: in sync with its builder, and it shows every verdict of every rule."""

from collections import defaultdict

from auditors.exemptions import load_exemptions
from auditors.inputs import demo_path
from auditors.rules import catalog
from tests.helpers import demo_config, demo_rows, evaluate
from tools import build_demo

# Rules whose Unknown verdict can occur, and the demo resources that show it.
UNKNOWN_EXPECTED = {"AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-004", "AKS-ACR-005", "AKS-ACR-008"}


def test_committed_demo_files_match_the_builder():
    for name, content in build_demo.files().items():
        committed = (demo_path() / name).read_text(encoding="utf-8")
        assert committed == build_demo.render(name, content), f"run `python tools/build_demo.py` ({name} is stale)"


def demo_exemptions():
    from datetime import date

    ids = {r.meta.id: r.meta.scope.value for r in catalog()}
    captured = date.fromisoformat(build_demo.CAPTURED_AT[:10])
    return load_exemptions(demo_path() / "exemptions.yaml", rule_ids=list(ids), today=captured, rule_scopes=ids)


def test_every_rule_passes_and_fails_somewhere_in_the_demo():
    statuses = defaultdict(set)
    for finding in evaluate(demo_rows(), demo_config(), exemptions=demo_exemptions()):
        statuses[finding.RuleId].add(finding.Status)
    for rule in catalog():
        assert {"Pass", "Fail"} <= statuses[rule.meta.id], rule.meta.id
    for rule_id in UNKNOWN_EXPECTED:
        assert "Unknown" in statuses[rule_id], rule_id
    assert statuses["AKS-ACR-002"] == {"Pass", "Fail", "Unknown", "NotApplicable"}  # every status


def test_the_demo_shows_every_observed_failure_class_and_both_exemption_effects():
    findings = evaluate(demo_rows(), demo_config(), exemptions=demo_exemptions())
    classes = set()
    for finding in findings:
        if finding.RuleId == "AKS-ACR-002":
            classes |= set(finding.Evidence.get("classes", {}))
    others = {host for f in findings if f.RuleId == "AKS-ACR-002" for host in f.Evidence.get("otherRegistries", {})}
    assert classes | {"Other"} >= {"Unauthorized", "Forbidden", "NameResolution", "Unreachable", "NotFound",
                                   "Throttled"} and "docker.io" in others
    assert [f.ExemptionId for f in findings if f.Exempted] == ["EX-0042"]  # in force: the finding is exempted
    expired = [f for f in findings if f.RuleId == "AKS-ACR-013" and f.Status == "Fail"]
    assert [f.Evidence["exemptionId"] for f in expired] == ["EX-0017"]
    assert any(f.RuleId == "AKS-ACR-007" and f.Status == "Fail" and f.RegistryName == "acrcontosoedge"
               and not f.Exempted for f in findings)  # its finding counts again
    observed = [f for f in findings if f.PairSource == "observed"]
    assert {(f.ClusterName, f.RegistryName) for f in observed} == {("aks-ml-training", "acrcontosolegacy")}


def test_demo_has_realistic_tenant_structure():
    rows = demo_rows()
    subscriptions = [r for r in rows if r["type"] == "microsoft.resources/subscriptions"]
    assert len(subscriptions) >= 5
    assert {len(r["properties"]["managementGroupAncestorsChain"]) for r in subscriptions} >= {3, 4}
    hub = next(r for r in rows if r.get("name") == "vnet-hub-weu")
    assert len(hub["properties"]["virtualNetworkPeerings"]) >= 3
