"""Cluster identity (005, 006), registry posture (007, 009, 011) and region (008)."""

import pytest

from tests.helpers import demo_config, demo_rows, evaluate, row, verdict


def run(rows):
    return evaluate(rows, demo_config())


# --- AKS-ACR-005 -----------------------------------------------------------------------------------
def test_existing_kubelet_identity_passes():
    assert verdict(run(demo_rows()), "AKS-ACR-005", "aks-payments-prod").Status == "Pass"


def test_deleted_kubelet_identity_in_scope_fails():
    finding = verdict(run(demo_rows()), "AKS-ACR-005", "aks-analytics")
    assert finding.Status == "Fail"
    assert "no longer exists" in finding.Message
    assert "--assign-kubelet-identity" in finding.Remediation


def test_kubelet_identity_in_out_of_scope_subscription_is_unknown():
    finding = verdict(run(demo_rows()), "AKS-ACR-005", "aks-ml-training")
    assert finding.Status == "Unknown"
    assert "outside the snapshot's scope" in finding.Message


def test_no_identity_rows_collected_is_unknown_not_fail():
    rows = [r for r in demo_rows() if r["type"] != "microsoft.managedidentity/userassignedidentities"]
    assert verdict(run(rows), "AKS-ACR-005", "aks-analytics").Status == "Unknown"


def test_managed_identity_cluster_without_kubelet_identity_fails():
    rows = demo_rows()
    del row(rows, "aks-payments-prod")["properties"]["identityProfile"]
    findings = run(rows)
    assert verdict(findings, "AKS-ACR-005", "aks-payments-prod").Status == "Fail"
    pull = verdict(findings, "AKS-ACR-001", "aks-payments-prod", "acrcontososhared")
    assert pull.Status == "Unknown" and "no kubelet identity" in pull.Message


def test_identity_type_none_without_service_principal_fails():
    rows = demo_rows()
    cluster = row(rows, "aks-payments-prod")
    cluster["identity"] = {"type": "None"}
    del cluster["properties"]["servicePrincipalProfile"]
    findings = run(rows)
    assert verdict(findings, "AKS-ACR-005", "aks-payments-prod").Status == "Fail"
    assert verdict(findings, "AKS-ACR-006", "aks-payments-prod").Status == "NotApplicable"


def test_sparse_cluster_row_is_unknown_and_does_not_crash():
    rows = demo_rows()
    cluster = row(rows, "aks-payments-prod")
    cluster["properties"] = None
    cluster.pop("identity")
    findings = run(rows)
    assert verdict(findings, "AKS-ACR-005", "aks-payments-prod").Status == "Unknown"
    assert verdict(findings, "AKS-ACR-006", "aks-payments-prod").Status == "Unknown"
    assert verdict(findings, "AKS-ACR-003", "aks-payments-prod", "acrcontososhared").Status == "Unknown"


# --- AKS-ACR-006 -----------------------------------------------------------------------------------
def test_service_principal_cluster_fails_managed_identity_passes():
    findings = run(demo_rows())
    finding = verdict(findings, "AKS-ACR-006", "aks-batch-dev")
    assert finding.Status == "Fail"
    assert "--enable-managed-identity" in finding.Remediation
    assert verdict(findings, "AKS-ACR-006", "aks-orders-prod").Status == "Pass"


# --- AKS-ACR-007 / 009 / 011 -----------------------------------------------------------------------
@pytest.mark.parametrize(("registry", "rule", "status"), [
    ("acrcontososhared", "AKS-ACR-007", "Pass"),
    ("acrcontosoedge", "AKS-ACR-007", "Fail"),
    ("acrcontosolegacy", "AKS-ACR-009", "Fail"),
    ("acrcontososhared", "AKS-ACR-009", "Pass"),
    ("acrcontosobasic", "AKS-ACR-009", "NotApplicable"),
    ("acrcontososhared", "AKS-ACR-011", "Pass"),
    ("acrcontosoedge", "AKS-ACR-011", "Pass"),
    ("acrcontosoabac", "AKS-ACR-011", "Fail"),
    ("acrcontosolegacy", "AKS-ACR-011", "NotApplicable"),
])
def test_registry_posture(registry, rule, status):
    finding = verdict(run(demo_rows()), rule, registry)
    assert finding.Status == status
    assert finding.ResourceId == finding.RegistryId
    if status == "Fail":
        assert f"--name {registry}" in finding.Remediation


def test_absent_admin_flag_takes_the_service_default_and_says_so():
    rows = demo_rows()
    del row(rows, "acrcontosoedge")["properties"]["adminUserEnabled"]
    finding = verdict(run(rows), "AKS-ACR-007", "acrcontosoedge")
    assert finding.Status == "Pass"
    assert "service default" in finding.Evidence["assumed"]


def test_registry_owner_comes_from_either_tag_spelling():
    findings = run(demo_rows())
    assert verdict(findings, "AKS-ACR-009", "acrcontosolegacy").Owner == "platform-team"  # tag `Owner`
    assert verdict(findings, "AKS-ACR-009", "acrcontosoedge").Owner == "edge-team"  # tag `owner`


# --- AKS-ACR-008 -----------------------------------------------------------------------------------
def test_same_region_passes_across_location_spellings():
    finding = verdict(run(demo_rows()), "AKS-ACR-008", "aks-payments-prod", "acrcontosolegacy")
    assert finding.Status == "Pass"  # "West Europe" vs "westeurope"


def test_replica_in_cluster_region_passes():
    finding = verdict(run(demo_rows()), "AKS-ACR-008", "aks-orders-dr", "acrcontososhared")
    assert finding.Status == "Pass"
    assert "replica" in finding.Message


def test_other_region_fails_with_replication_command():
    finding = verdict(run(demo_rows()), "AKS-ACR-008", "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Fail"
    assert "--location eastus" in finding.Remediation


def test_premium_registry_without_replication_rows_collected_is_unknown():
    rows = [r for r in demo_rows() if r["type"] != "microsoft.containerregistry/registries/replications"]
    assert verdict(run(rows), "AKS-ACR-008", "aks-orders-dr", "acrcontososhared").Status == "Unknown"


def test_missing_location_is_unknown():
    rows = demo_rows()
    row(rows, "aks-web-eastus")["location"] = None
    assert verdict(run(rows), "AKS-ACR-008", "aks-web-eastus", "acrcontosoedge").Status == "Unknown"


def test_cluster_row_with_identity_but_no_properties_is_unknown():
    rows = demo_rows()
    row(rows, "aks-payments-prod")["properties"] = {}
    assert verdict(run(rows), "AKS-ACR-005", "aks-payments-prod").Status == "Unknown"


def test_registry_row_without_sku_is_unknown_for_network_rules():
    rows = demo_rows()
    del row(rows, "acrcontosoedge")["sku"]
    findings = run(rows)
    assert verdict(findings, "AKS-ACR-011", "acrcontosoedge").Status == "Unknown"
    route = verdict(findings, "AKS-ACR-003", "aks-web-eastus", "acrcontosoedge")
    assert route.Status == "Unknown" and "no SKU" in route.Message


def test_firewall_that_allows_every_address_is_open():
    rows = demo_rows()
    row(rows, "acrcontosoedge")["properties"]["networkRuleSet"]["ipRules"].append(
        {"action": "Allow", "value": "0.0.0.0/0"})
    finding = verdict(run(rows), "AKS-ACR-011", "acrcontosoedge")
    assert finding.Status == "Fail" and "0.0.0.0/0" in finding.Message


def test_registry_row_without_properties_is_unknown_not_defaulted():
    rows = demo_rows()
    row(rows, "acrcontosoedge")["properties"] = None
    findings = run(rows)
    for rule in ("AKS-ACR-007", "AKS-ACR-009", "AKS-ACR-011"):
        assert verdict(findings, rule, "acrcontosoedge").Status == "Unknown", rule
    route = verdict(findings, "AKS-ACR-003", "aks-web-eastus", "acrcontosoedge")
    assert route.Status == "Unknown" and "no properties" in route.Message
