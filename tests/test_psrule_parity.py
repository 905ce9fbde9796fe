"""PSRule for Azure's own test exports load, and our verdicts agree with the verdicts PSRule asserts.

Mapping: Azure.ACR.AdminUser -> AKS-ACR-007, Azure.ACR.AnonymousAccess -> AKS-ACR-009 (PSRule's `None`
= our NotApplicable), Azure.AKS.ManagedIdentity -> AKS-ACR-006. Expected verdicts are parsed from the
copied `verdicts_extracted.txt`, not restated here.
"""

import re
from pathlib import Path

import pytest

from auditors.engine import Evaluator
from auditors.model import Inventory
from auditors.pairing import PairsConfig
from auditors.sources.snapshot import LoadReport, iter_snapshot

DATA = Path(__file__).parent / "data" / "psrule"
MAPPING = {"Azure.ACR.AdminUser": "AKS-ACR-007", "Azure.ACR.AnonymousAccess": "AKS-ACR-009",
           "Azure.AKS.ManagedIdentity": "AKS-ACR-006"}
OURS = {"Fail": "Fail", "Pass": "Pass", "None": "NotApplicable"}


def psrule_verdicts(rule: str) -> dict[str, str]:
    line = next(x for x in (DATA / "verdicts_extracted.txt").read_text().splitlines()
                if x.startswith(f"[Conditions] {rule} |"))
    verdicts = {}
    for status, names in re.findall(r"(Fail|Pass|None)\(\d+\): ([^|]+)", line):
        for name in names.split(","):
            verdicts[name.strip()] = OURS[status]
    return verdicts


@pytest.fixture(scope="module")
def findings():
    report = LoadReport()
    inventory = Inventory.from_rows(iter_snapshot(DATA, report))
    assert len(inventory.registries) == 13 and len(inventory.clusters) == 11
    return list(Evaluator(inventory, PairsConfig(), run_id="r", time_generated="t").run())


@pytest.mark.parametrize("psrule_rule", sorted(MAPPING))
def test_same_verdicts_as_psrule(findings, psrule_rule):
    expected = psrule_verdicts(psrule_rule)
    ours = {(f.ClusterName or f.RegistryName): f.Status for f in findings if f.RuleId == MAPPING[psrule_rule]}
    expected = {name: status for name, status in expected.items() if name != "system"}  # an agent pool, not a cluster
    assert expected, "no verdicts parsed"
    assert {name: ours.get(name) for name in expected} == expected


def test_registries_keyed_by_id_not_login_server(findings):
    # registry-J carries registry-I's loginServer; both must still be evaluated separately.
    names = {f.RegistryName for f in findings if f.RuleId == "AKS-ACR-007"}
    assert {"registry-I", "registry-J"} <= names


def test_child_resources_are_flattened_and_location_variants_normalised():
    inventory = Inventory.from_rows(iter_snapshot(DATA))
    registry_b = next(r for r in inventory.registries.values() if r.name == "registry-B")
    assert sorted(registry_b.replica_locations) == ["region", "region2"]
    cluster_a = next(c for c in inventory.clusters.values() if c.name == "cluster-A")
    assert cluster_a.location == "australiaeast"  # "Australia East"
