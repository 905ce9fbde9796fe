"""Which registries a cluster pulls from: tag, pairs file, role assignments; unresolved declarations."""

import pytest

from auditors.pairing import (
    SOURCE_FILE,
    SOURCE_RBAC,
    SOURCE_TAG,
    PairsConfig,
    PairsFileError,
    load_pairs_file,
    pairs_for_cluster,
)
from auditors.rbac import RoleResolver
from auditors.rules import Scope, catalog
from tests.helpers import demo_config, demo_rows, evaluate, row, verdict
from tools.build_demo import assignment, guid


def pairs_of(rows, cluster_name, config=None):
    from auditors.model import Inventory
    from auditors.sources.snapshot import normalise_row

    inventory = Inventory.from_rows(normalise_row(r) for r in rows)
    cluster = next(c for c in inventory.clusters.values() if c.name == cluster_name)
    pairs = pairs_for_cluster(cluster, inventory, config or PairsConfig(), RoleResolver(inventory))
    return {(inventory.registries[p.registry_key].name if p.registry_key else p.declared): p.sources for p in pairs}


def test_tag_accepts_names_login_servers_and_ids_with_any_separator():
    rows = demo_rows()
    edge_id = row(rows, "acrcontosoedge")["id"].upper()
    row(rows, "aks-web-eastus")["tags"]["ACR-Pull-Registries"] = (
        f"acrcontosolegacy.azurecr.io,{edge_id};  acrcontosoabac\tacrcontosobasic")
    del row(rows, "aks-web-eastus")["tags"]["acr-pull-registries"]
    assert pairs_of(rows, "aks-web-eastus") == {
        "acrcontosolegacy": [SOURCE_TAG], "acrcontosoedge": [SOURCE_TAG], "acrcontosoabac": [SOURCE_TAG],
        "acrcontosobasic": [SOURCE_TAG]}


def test_sources_merge_per_pair():
    pairs = pairs_of(demo_rows(), "aks-payments-prod", demo_config())
    assert pairs == {"acrcontososhared": [SOURCE_TAG, SOURCE_RBAC], "acrcontosolegacy": [SOURCE_FILE]}


def test_inferred_from_registry_and_resource_group_scope_only():
    rows = demo_rows()
    assert pairs_of(rows, "aks-analytics") == {"acrcontosobasic": [SOURCE_RBAC]}  # registry scope
    assert pairs_of(rows, "aks-payments-staging")["acrcontososhared"] == [SOURCE_TAG, SOURCE_RBAC]  # group scope
    # a pull role at subscription or management-group scope does not imply a pair
    # AcrPull at management group mg-platform covers acrcontosoedge but does not imply a pair with it
    assert pairs_of(rows, "aks-online-web") == {"acrcontosoedge": [SOURCE_TAG], "acrcontosomissing": [SOURCE_TAG]}


def test_roles_that_cannot_grant_pull_do_not_imply_pairs():
    rows = demo_rows()
    rows.append(assignment(row(rows, "acrcontosoedge")["id"], guid("kubelet:aks-analytics"),
                           "Storage Blob Data Reader"))
    assert "acrcontosoedge" not in pairs_of(rows, "aks-analytics")


def test_abac_only_role_implies_a_pair():
    rows = demo_rows()
    rows.append(assignment(row(rows, "acrcontosoedge")["id"], guid("kubelet:aks-analytics"),
                           "Container Registry Repository Reader"))
    assert pairs_of(rows, "aks-analytics")["acrcontosoedge"] == [SOURCE_RBAC]


def test_undeclared_registry_yields_unknown_for_every_pair_rule():
    findings = evaluate(demo_rows(), demo_config())
    missing = [f for f in findings if f.RegistryName == "acrcontosomissing"]
    assert sorted(f.RuleId for f in missing) == sorted(r.meta.id for r in catalog() if r.meta.scope == Scope.PAIR)
    assert {f.Status for f in missing} == {"Unknown"}
    assert all("not in the inventory" in f.Message and f.RegistryId == "" for f in missing)


def test_ambiguous_login_server_is_unknown_not_guessed():
    rows = demo_rows()
    row(rows, "acrcontosoabac")["properties"]["loginServer"] = "acrcontosoedge.azurecr.io"
    row(rows, "aks-web-eastus")["tags"]["acr-pull-registries"] = "acrcontosoedge.azurecr.io"
    finding = verdict(evaluate(rows, PairsConfig()), "AKS-ACR-003", "aks-web-eastus", "acrcontosoedge.azurecr.io")
    assert finding.Status == "Unknown" and "ambiguous" in finding.Message


def test_pairs_file_matches_by_id_name_tag_and_subscription(tmp_path):
    rows = demo_rows()
    cluster = row(rows, "aks-web-eastus")
    path = tmp_path / "pairs.yaml"
    path.write_text(f"""
pairs:
  - clusters: {{id: "{cluster['id'].upper()}"}}
    registries: [acrcontosobasic]
  - clusters: {{name: "AKS-WEB-*", tag: "owner=team-*"}}
    registries: "acrcontosolegacy acrcontosoabac"
  - clusters: {{subscription: "{cluster['subscriptionId'][:8]}*", tag: owner}}
    registries: [acrcontososhared]
  - clusters: {{name: aks-web-eastus, tag: "owner=someone-else"}}
    registries: [acrcontosoedge]
""")
    pairs = pairs_of(rows, "aks-web-eastus", load_pairs_file(path))
    assert pairs["acrcontosobasic"] == pairs["acrcontosolegacy"] == pairs["acrcontososhared"] == [SOURCE_FILE]
    assert pairs["acrcontosoabac"] == [SOURCE_FILE]
    assert pairs["acrcontosoedge"] == [SOURCE_TAG]  # the non-matching entry added nothing


def test_pairs_file_in_json(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text('{"pairs": [{"clusters": {"name": "aks-web-*"}, "registries": ["acrcontosobasic"]}]}')
    assert "acrcontosobasic" in pairs_of(demo_rows(), "aks-web-eastus", load_pairs_file(path))


@pytest.mark.parametrize(("content", "message"), [
    ("pairs: [", "invalid YAML"),
    ("- just a list", "expected a mapping with `pairs`"),
    ("pairs:\n  - registries: [a]", "pairs[0]: `clusters` must be a mapping"),
    ("pairs:\n  - clusters: {name: x}", "pairs[0]: `registries` must list"),
    ("pairs:\n  - clusters: {color: red}\n    registries: [a]", "unknown key(s) color"),
    ("pairs: []\nprincipals: {not-a-guid: 1}", "is not a pair of GUIDs"),
    ("pairs: []\ngroups: {x: [1]}", "must be a GUID mapping"),
    ("pairs: []\nextra: 1", "unknown top-level key(s) extra"),
])
def test_bad_pairs_file_names_file_entry_and_problem(tmp_path, content, message):
    path = tmp_path / "pairs.yaml"
    path.write_text(content)
    with pytest.raises(PairsFileError) as error:
        load_pairs_file(path)
    assert message in str(error.value) and str(path) in str(error.value)
