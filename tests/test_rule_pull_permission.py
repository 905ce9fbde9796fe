"""AKS-ACR-001: the pull identity holds a pull-granting role at the registry or an ancestor scope."""

from auditors.pairing import PairsConfig
from tests.helpers import demo_config, demo_rows, evaluate, manifest_without, row, verdict
from tools.build_demo import SUB, assignment, guid

RULE = "AKS-ACR-001"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def kubelet(cluster: str) -> str:
    return guid(f"kubelet:{cluster}")


def without_assignments_for(rows, principal):
    return [r for r in rows if r.get("properties", {}).get("principalId") != principal
            or not r["type"].endswith("roleassignments")]


def check(rows, cluster, registry, config=None):
    graph_collected = any(r["type"].startswith("microsoft.graph/") for r in rows)
    manifest = None if graph_collected else manifest_without("graph")
    return verdict(evaluate(rows, config or demo_config(), manifest), RULE, cluster, registry)


def without_graph(rows):
    """The demo as Resource Graph alone shows it: no group members, no service principals."""
    return [r for r in rows if not r["type"].startswith("microsoft.graph/")]


def without_deny_assignments(rows):
    return [r for r in rows if r["type"] != "microsoft.authorization/denyassignments"]


def test_direct_acrpull_at_registry_scope_passes():
    finding = check(demo_rows(), "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Pass"
    assert "AcrPull" in finding.Message
    assert finding.Evidence["grants"][0]["scopeLevel"] == "registry"
    assert finding.PrincipalId == kubelet("aks-payments-prod")


def test_removing_the_assignment_fails_with_remediation_naming_principal_and_registry():
    rows = without_assignments_for(without_graph(demo_rows()), kubelet("aks-payments-prod"))
    config = demo_config()
    assert check(rows, "aks-payments-prod", "acrcontososhared", config).Status == "Unknown"  # acr-readers group
    config.groups[guid("group:acr-readers")] = frozenset()
    finding = check(rows, "aks-payments-prod", "acrcontososhared", config)
    assert finding.Status == "Fail"
    assert "holds no role granting pull" in finding.Message
    registry_id = row(rows, "acrcontososhared")["id"]
    assert f"--assignee-object-id {kubelet('aks-payments-prod')}" in finding.Remediation
    assert f'--role "AcrPull" --scope {registry_id}' in finding.Remediation


def test_inherited_from_management_group_in_the_registry_ancestry():
    finding = check(without_deny_assignments(demo_rows()), "aks-online-web", "acrcontosoedge")
    assert finding.Status == "Pass"
    assert finding.Evidence["grants"][0]["scopeLevel"] == "management group mg-platform"


def test_management_group_outside_the_registry_ancestry_does_not_grant():
    rows = demo_rows()
    for r in rows:
        if r["type"].endswith("roleassignments") and r["properties"]["principalId"] == kubelet("aks-online-web"):
            r["properties"]["scope"] = "/providers/Microsoft.Management/managementGroups/mg-online"
    assert check(without_deny_assignments(rows), "aks-online-web", "acrcontosoedge").Status == "Fail"


def test_root_scope_assignment_is_inherited():
    rows = without_assignments_for(demo_rows(), kubelet("aks-web-eastus"))
    rows.append(assignment("/", kubelet("aks-web-eastus"), "AcrPull"))
    finding = check(rows, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Pass"
    assert finding.Evidence["grants"][0]["scopeLevel"] == "root"


def test_custom_role_granting_pull_only_through_a_wildcard_is_unknown_quoting_acr():
    finding = check(demo_rows(), "aks-orders-prod", "acrcontosoedge")  # Microsoft.ContainerRegistry/*/read
    assert finding.Status == "Unknown"
    assert "Contoso Image Reader" in finding.Message and "only through a wildcard" in finding.Message
    assert "Azure Resource Manager private link" in finding.Message
    assert "List Microsoft.ContainerRegistry/registries/pull/read explicitly" in finding.Message
    assert finding.Evidence["wildcardGrants"][0]["role"] == "Contoso Image Reader"


def test_custom_role_listing_pull_explicitly_passes_and_built_in_wildcards_still_count():
    rows = demo_rows()
    custom = next(r for r in rows if r.get("properties", {}).get("roleName") == "Contoso Image Reader")
    custom["properties"]["permissions"][0]["actions"] = ["Microsoft.ContainerRegistry/registries/pull/read"]
    finding = check(rows, "aks-orders-prod", "acrcontosoedge")
    assert finding.Status == "Pass" and "Contoso Image Reader" in finding.Message
    rows = without_assignments_for(demo_rows(), kubelet("aks-web-eastus"))
    rows.append(assignment(row(rows, "acrcontosoedge")["id"], kubelet("aks-web-eastus"), "Reader"))  # */read
    assert check(rows, "aks-web-eastus", "acrcontosoedge").Status == "Pass"


def test_custom_role_whose_not_actions_remove_pull_fails():
    rows = demo_rows()
    custom = next(r for r in rows if r.get("properties", {}).get("roleName") == "Contoso Image Reader")
    custom["properties"]["permissions"][0]["notActions"].append("Microsoft.ContainerRegistry/registries/pull/*")
    assert check(rows, "aks-orders-prod", "acrcontosoedge").Status == "Fail"


def test_abac_registry_ignores_acrpull_and_says_so():
    finding = check(demo_rows(), "aks-ml-training", "acrcontosoabac")
    assert finding.Status == "Fail"
    assert "ABAC" in finding.Message and "AcrPull" in finding.Message
    assert finding.Evidence["ignoredInAbacMode"][0]["role"] == "AcrPull"
    assert '"Container Registry Repository Reader"' in finding.Remediation


def test_abac_repository_reader_with_condition_passes_and_reports_the_condition():
    finding = check(demo_rows(), "aks-orders-prod", "acrcontosoabac")
    assert finding.Status == "Pass"
    assert "condition" in finding.Message
    assert "StringStartsWithIgnoreCase 'orders/'" in finding.Evidence["grants"][0]["condition"]


def test_owner_passes_in_legacy_mode_but_not_in_abac_mode():
    rows = without_assignments_for(demo_rows(), kubelet("aks-web-eastus"))
    edge = row(rows, "acrcontosoedge")
    rows.append(assignment(edge["id"], kubelet("aks-web-eastus"), "Owner"))
    assert check(rows, "aks-web-eastus", "acrcontosoedge").Status == "Pass"
    edge["properties"]["roleAssignmentMode"] = "AbacRepositoryPermissions"
    assert check(rows, "aks-web-eastus", "acrcontosoedge").Status == "Fail"


def test_absent_role_assignment_mode_assumes_legacy_and_says_so():
    rows = demo_rows()
    del row(rows, "acrcontososhared")["properties"]["roleAssignmentMode"]
    finding = check(rows, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Pass"
    assert "LegacyRegistryPermissions was assumed" in finding.Evidence["assumed"]


def test_group_grant_is_decided_by_microsoft_graph_or_the_pairs_file():
    graph = check(demo_rows(), "aks-orders-dr", "acrcontososhared")  # Graph lists its kubelet identity as a member
    assert graph.Status == "Pass" and graph.Evidence["grants"][0]["group"] == guid("group:acr-readers")
    rows = without_graph(demo_rows())
    finding = check(rows, "aks-orders-dr", "acrcontososhared")
    assert finding.Status == "Unknown"
    assert guid("group:acr-readers") in finding.Message and "GroupMember.Read.All" in finding.Message
    config = demo_config()
    config.groups[guid("group:acr-readers")] = frozenset({kubelet("aks-orders-dr")})
    assert check(rows, "aks-orders-dr", "acrcontososhared", config).Status == "Pass"
    config.groups[guid("group:acr-readers")] = frozenset()
    assert check(rows, "aks-orders-dr", "acrcontososhared", config).Status == "Fail"


def test_undeclared_reader_group_at_management_group_makes_no_grant_pairs_unknown_not_fail():
    finding = check(without_graph(demo_rows()), "aks-web-eastus", "acrcontosoedge", PairsConfig())
    assert finding.Status == "Unknown"
    assert guid("group:secops") in finding.Message
    decided = check(demo_rows(), "aks-web-eastus", "acrcontosoedge", PairsConfig())  # Graph: secops holds people
    assert decided.Status == "Fail"


def test_service_principal_cluster_is_unknown_until_mapped():
    rows = without_graph(demo_rows())
    finding = check(rows, "aks-batch-dev", "acrcontosoabac")
    assert finding.Status == "Unknown"
    assert "principals:" in finding.Message and "Application.Read.All" in finding.Message
    object_id = guid("sp-object:batch")
    rows.append(assignment(row(rows, "acrcontosoabac")["id"], object_id, "Container Registry Repository Reader"))
    config = demo_config()
    config.principals[guid("app:batch-sp")] = object_id
    mapped = check(rows, "aks-batch-dev", "acrcontosoabac", config)
    assert mapped.Status == "Pass"
    assert mapped.PrincipalId == object_id


def test_unresolvable_role_definition_is_unknown():
    rows = without_assignments_for(demo_rows(), kubelet("aks-web-eastus"))
    ra = assignment(row(rows, "acrcontosoedge")["id"], kubelet("aks-web-eastus"), "AcrPull")
    ra["properties"]["roleDefinitionId"] = ra["properties"]["roleDefinitionId"].replace(ACR_PULL, guid("role:gone"))
    rows.append(ra)
    finding = check(rows, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Unknown"
    assert guid("role:gone") in finding.Message


def test_builtin_definitions_absent_from_snapshot_are_still_resolved():
    rows = [r for r in demo_rows() if r.get("properties", {}).get("type") != "BuiltInRole"]
    assert check(rows, "aks-payments-prod", "acrcontososhared").Status == "Pass"


def test_subscription_scope_snapshot_cannot_fail_only_be_unknown():
    rows = [r for r in demo_rows()
            if not (r["type"].endswith("roleassignments") and not r["properties"]["scope"].startswith("/subscriptions"))
            and r.get("properties", {}).get("type") != "BuiltInRole"]
    finding = check(rows, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Unknown"
    assert "subscription scope" in finding.Message


def test_missing_subscription_ancestry_makes_no_grant_unknown():
    rows = [r for r in demo_rows() if r.get("subscriptionId") != SUB["platform-shared"]
            or r["type"] != "microsoft.resources/subscriptions"]
    finding = check(rows, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Unknown"
    assert "management groups are unknown" in finding.Message


def test_anonymous_pull_passes_without_any_role():
    finding = check(demo_rows(), "aks-payments-prod", "acrcontosolegacy")
    assert finding.Status == "Pass"
    assert "Anonymous pull" in finding.Message


def test_ids_compared_case_insensitively():
    rows = demo_rows()
    for r in rows:
        if r["type"].endswith("roleassignments") and r["properties"]["principalId"] == kubelet("aks-payments-prod"):
            r["properties"]["scope"] = r["properties"]["scope"].upper()
            r["properties"]["principalId"] = r["properties"]["principalId"].upper()
    row(rows, "aks-payments-prod")["id"] = row(rows, "aks-payments-prod")["id"].lower()
    assert check(rows, "aks-payments-prod", "acrcontososhared").Status == "Pass"


def test_group_assignment_with_unknown_role_definition_is_unknown():
    rows = without_assignments_for(demo_rows(), kubelet("aks-web-eastus"))
    ra = assignment(row(rows, "acrcontosoedge")["id"], guid("group:mystery"), "AcrPull", principal_type="Group")
    ra["properties"]["roleDefinitionId"] = ra["properties"]["roleDefinitionId"].replace(ACR_PULL, guid("role:x"))
    rows.append(ra)
    finding = check(rows, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Unknown" and guid("role:x") in finding.Message


def test_unrecognised_role_assignment_mode_is_unknown():
    rows = demo_rows()
    row(rows, "acrcontososhared")["properties"]["roleAssignmentMode"] = "SomeFutureMode"
    finding = check(rows, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Unknown" and "SomeFutureMode" in finding.Message


def test_a_group_grant_left_undecided_by_a_rejected_graph_credential_says_so():
    from tests.helpers import build_demo

    manifest = build_demo.manifest()
    rejected = "microsoftGraph: the credential was rejected: (InvalidAuthenticationToken) Access token has expired"
    manifest["coverage"]["sources"]["microsoftGraph"] = {"skipped": rejected}
    manifest["coverage"]["permissions"] = {**manifest["coverage"].get("permissions", {}), "microsoftGraph": False}
    for name in ("GroupMember.Read.All", "Application.Read.All"):
        manifest["coverage"]["permissions"].pop(name, None)
    finding = verdict(evaluate(without_graph(demo_rows()), demo_config(), manifest), RULE, "aks-orders-dr",
                      "acrcontososhared")
    assert finding.Status == "Unknown"
    assert "the credential was rejected" in finding.Message and "not queried" not in finding.Message
