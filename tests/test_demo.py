"""The embedded demo estate: in sync with its builder, and it shows every verdict of every rule."""

from collections import defaultdict

from auditors.inputs import demo_path
from auditors.rules import catalog
from tests.helpers import demo_config, demo_rows, evaluate
from tools import build_demo

# Rules whose Unknown verdict can occur, and the demo resources that show it.
UNKNOWN_EXPECTED = {"AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-004", "AKS-ACR-005", "AKS-ACR-008"}


def test_committed_demo_files_match_the_builder():
    for name, content in build_demo.build().items():
        committed = (demo_path() / name).read_text(encoding="utf-8")
        assert committed == build_demo.render(name, content), f"run `python tools/build_demo.py` ({name} is stale)"


def test_every_rule_passes_and_fails_somewhere_in_the_demo():
    statuses = defaultdict(set)
    for finding in evaluate(demo_rows(), demo_config()):
        statuses[finding.RuleId].add(finding.Status)
    for rule in catalog():
        assert {"Pass", "Fail"} <= statuses[rule.meta.id], rule.meta.id
    for rule_id in UNKNOWN_EXPECTED:
        assert "Unknown" in statuses[rule_id], rule_id


def test_demo_has_realistic_tenant_structure():
    rows = demo_rows()
    subscriptions = [r for r in rows if r["type"] == "microsoft.resources/subscriptions"]
    assert len(subscriptions) >= 5
    assert {len(r["properties"]["managementGroupAncestorsChain"]) for r in subscriptions} >= {3, 4}
    hub = next(r for r in rows if r.get("name") == "vnet-hub-weu")
    assert len(hub["properties"]["virtualNetworkPeerings"]) >= 3
