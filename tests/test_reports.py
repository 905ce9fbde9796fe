"""Reports (auditors/reports): counts, grouping by resource id, pair verdicts (AKS-ACR-000 rows, else derived in
the same order), observed pulls, exemptions, changes, controls, caps, escaping, files."""

from __future__ import annotations

import gzip
import json
import os
import re
import tracemalloc
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from auditors.reports import FILE_NAMES, read_findings, write_reports
from auditors.reports.data import (
    BLOCKING_RULES,
    EXEMPTED,
    MAX_ENTRIES_PER_OWNER,
    MAX_MATRIX_CLUSTERS,
    MAX_MATRIX_REGISTRIES,
    MAX_WORST_PAIRS,
    NO_OWNER,
    NOT_PAIRED,
    STAGES,
    ReportData,
)
from auditors.reports.html import render_html
from auditors.reports.markdown import md, render_markdown
from auditors.rules import catalog
from auditors.rules.pull_verdict import BLOCKING as PULL_VERDICT_BLOCKING

PULL_ORDER = tuple(rule for rule, _ in PULL_VERDICT_BLOCKING)  # the order AKS-ACR-000 itself uses

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"

# Every pair of the demo estate (tools/build_demo.py, scanned with auditors/demo/exemptions.yaml): its pull verdict
# and root cause, as the builder's comments say each resource is there to produce. The root cause is the first check
# that fails in the order a pull meets them (identity 005/012, permission 001, network 003, DNS 004, observed 002),
# else the first that is Unknown.
DEMO_PAIRS = {
    # private endpoint via the peered hub, zone linked, direct AcrPull: every pair rule passes
    ("aks-payments-prod", "acrcontososhared"): ("Pass", ""),
    # the legacy registry (pairs file: env=prod) allows anonymous pull, and its images run on the cluster
    ("aks-payments-prod", "acrcontosolegacy"): ("Pass", ""),
    # the service principal's secret expires in ten days: AKS-ACR-014 warns, it does not stop a pull; the cluster
    # sends no Container Insights data, which blocks nothing
    ("aks-legacy-reports", "acrcontosolegacy"): ("Pass", ""),
    # kubelet identity deleted (AKS-ACR-005), paired only by its role assignment; 401s observed
    ("aks-analytics", "acrcontosobasic"): ("Fail", "AKS-ACR-005"),
    # every credential of the service principal expired (AKS-ACR-012)
    ("aks-legacy-billing", "acrcontosolegacy"): ("Fail", "AKS-ACR-012"),
    # no role and an egress IP outside the firewall (001 and 003 Fail): permission comes before the network
    ("aks-web-eastus", "acrcontosoedge"): ("Fail", "AKS-ACR-001"),
    # AcrPull at the platform management group, taken away by a deny assignment on the registry's resource group
    ("aks-online-web", "acrcontosoedge"): ("Fail", "AKS-ACR-001"),
    # AcrPull on an ABAC registry is not honoured; its identity (outside the snapshot) is only Unknown
    ("aks-ml-training", "acrcontosoabac"): ("Fail", "AKS-ACR-001"),
    # its service principal, found through Microsoft Graph by appId, holds no role on the ABAC registry
    ("aks-batch-dev", "acrcontosoabac"): ("Fail", "AKS-ACR-001"),
    # peering to the hub Disconnected and public access disabled (AKS-ACR-003); timeouts observed
    ("aks-payments-staging", "acrcontososhared"): ("Fail", "AKS-ACR-003"),
    # vnet-orders has no privatelink.azurecr.io link (AKS-ACR-004); the wildcard custom role leaves 001 Unknown
    ("aks-orders-prod", "acrcontososhared"): ("Fail", "AKS-ACR-004"),
    # configuration grants pull (an ABAC condition: orders/ only), yet billing/ pulls get 401: observed (AKS-ACR-002)
    ("aks-orders-prod", "acrcontosoabac"): ("Fail", "AKS-ACR-002"),
    # only the wildcard custom role could grant pull (001 Unknown); the other region does not block
    ("aks-orders-prod", "acrcontosoedge"): ("Unknown", "AKS-ACR-001"),
    # pull through the acr-readers group (resolved in Graph); custom DNS servers (004 Unknown)
    ("aks-orders-dr", "acrcontososhared"): ("Unknown", "AKS-ACR-004"),
    # paired by an image seen running; the kubelet identity lives outside the snapshot (005 Unknown)
    ("aks-ml-training", "acrcontosolegacy"): ("Unknown", "AKS-ACR-005"),
    # declared by tag with a typo: not in the inventory, so no check names a root cause
    ("aks-online-web", "acrcontosomissing"): ("Unknown", ""),
}
DEMO_FAILING_PAIRS = {pair for pair, (verdict, _) in DEMO_PAIRS.items() if verdict == "Fail"}
# Container Insights rows of the demo: one access failure of each class (pair -> class, failed pulls).
DEMO_OBSERVED_ACCESS = {("aks-web-eastus", "acrcontosoedge"): ("Forbidden", 14),
                        ("aks-analytics", "acrcontosobasic"): ("Unauthorized", 22),
                        ("aks-orders-prod", "acrcontosoabac"): ("Unauthorized", 6),
                        ("aks-orders-prod", "acrcontososhared"): ("NameResolution", 9),
                        ("aks-payments-staging", "acrcontososhared"): ("Unreachable", 11)}
DEMO_EXEMPTIONS = ROOT / "auditors" / "demo" / "exemptions.yaml"


def scan_demo(out: Path, exemptions: bool = True) -> tuple[Path, dict]:
    """What `python -m auditors scan --demo --exemptions auditors/demo/exemptions.yaml --out OUT` writes, and the run
    record the CLI passes to write_reports."""
    from auditors.pipeline import RunRequest, run_audit
    from auditors.settings import Settings

    settings = Settings(out_dir=str(out), exemptions_file=str(DEMO_EXEMPTIONS) if exemptions else "")
    outcome = run_audit(settings, RunRequest("demo"))
    assert outcome.error is None, outcome.error
    return out / "findings.jsonl", json.loads(json.dumps(outcome.record.to_record()))


@pytest.fixture(scope="module")
def demo_scan(tmp_path_factory) -> tuple[Path, dict]:
    return scan_demo(tmp_path_factory.mktemp("demo-scan"))


@pytest.fixture(scope="module")
def demo_findings_path(demo_scan) -> Path:
    return demo_scan[0]


@pytest.fixture(scope="module")
def demo_run(demo_scan) -> dict:
    return demo_scan[1]


@pytest.fixture(scope="module")
def demo_findings(demo_findings_path) -> list[dict]:
    return list(read_findings(demo_findings_path))


def cluster_id(name: str, group: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{CLUSTER_TYPE}/{name}"


def registry_id(name: str, group: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{REGISTRY_TYPE}/{name}"


def finding(rule: str, status: str, *, scope: str = "pair", cluster: tuple[str, str] = ("aks-a", "rg-a"),
            registry: tuple[str, str] = ("acrx", "rg-x"), owner: str = "team-a", registry_owner: str = "team-r",
            message: str = "", remediation: str = "", severity: str = "High", **extra) -> dict:
    record = {"RunId": "run-1", "RuleId": rule, "RuleTitle": f"title of {rule}", "Severity": severity,
              "Category": "Test", "Status": status, "Scope": scope, "ClusterId": "", "ClusterName": "",
              "RegistryId": "", "RegistryName": "", "ResourceGroup": "", "Owner": owner,
              "RegistryOwner": registry_owner, "Message": message or f"{rule} {status}",
              "Remediation": remediation, "Evidence": {}}
    if scope in ("cluster", "pair"):
        record.update(ClusterId=cluster_id(*cluster), ClusterName=cluster[0], ResourceGroup=cluster[1])
    if scope in ("registry", "pair"):
        record.update(RegistryId=registry_id(*registry), RegistryName=registry[0])
    if scope == "registry":
        record.update(ResourceGroup=registry[1], Owner=registry_owner)
    record.update(extra)
    return record


def build(findings: list[dict], run: dict | None = None) -> ReportData:
    return ReportData.build(findings, run or {}, catalog())


def pair_rows(data: ReportData) -> dict[tuple[str, str, str], object]:
    return {(p.cluster.name, p.cluster.resource_group, p.registry.name): p for p in data.worst_pairs}


def matrix_cell(data: ReportData, cluster: str, group: str, registry: str) -> str:
    return _matrix_at(data, cluster, group, registry, data.matrix.cells)


def matrix_cause(data: ReportData, cluster: str, group: str, registry: str) -> str:
    return _matrix_at(data, cluster, group, registry, data.matrix.causes)


def _matrix_at(data: ReportData, cluster: str, group: str, registry: str, grid: list[list[str]]) -> str:
    rows = [i for i, axis in enumerate(data.matrix.clusters)
            if axis.ref.name == cluster and axis.ref.resource_group == group]
    columns = [i for i, axis in enumerate(data.matrix.registries) if axis.ref.name == registry]
    assert len(rows) == 1 and len(columns) == 1, (cluster, group, registry)
    return grid[rows[0]][columns[0]]


def demo_verdicts(data: ReportData) -> dict[tuple[str, str], tuple[str, str]]:
    """(cluster, registry) -> (verdict, root cause) of every demo pair, from the matrix (all of it fits)."""
    assert not data.matrix.clusters_left_out and not data.matrix.registries_left_out
    return {(c.ref.name, r.ref.name): (cell, cause)
            for c, cells, causes in zip(data.matrix.clusters, data.matrix.cells, data.matrix.causes, strict=True)
            for r, cell, cause in zip(data.matrix.registries, cells, causes, strict=True) if cell != NOT_PAIRED}


# --- the demo estate -----------------------------------------------------------------------------------------


def test_demo_counts_come_from_every_finding(demo_findings, demo_run):
    data = build(demo_findings, demo_run)
    view = data.overview
    assert view.findings == len(demo_findings)
    exempted = [f for f in demo_findings if f["Exempted"]]
    assert view.findings_exempted == len(exempted) == demo_run["ExemptedCount"]
    # an exempted finding is counted once, as exempted, not under its status
    assert view.findings_by_status == {s: sum(f["Status"] == s and not f["Exempted"] for f in demo_findings)
                                       for s in ("Pass", "Fail", "Unknown", "NotApplicable")}
    assert view.clusters == len({f["ClusterId"].lower() for f in demo_findings if f["ClusterId"]})
    assert view.registries == len({f["RegistryId"].lower() for f in demo_findings if f["RegistryId"]})
    assert view.registries_not_in_inventory == 1  # acrcontosomissing, declared by tag
    pairs = {(f["ClusterId"].lower(), f["RegistryId"].lower() or f["RegistryName"]) for f in demo_findings
             if f["Scope"] == "pair"}
    assert view.pairs == len(pairs) == len(DEMO_PAIRS)
    assert view.pairs_fail + view.pairs_unknown + view.pairs_pass + view.pairs_exempted == view.pairs
    rules = {row.rule: row for row in data.rules}
    for (rule_id, status), count in Counter((f["RuleId"], f["Status"]) for f in demo_findings
                                            if not f["Exempted"]).items():
        assert rules[rule_id].counts[status] == count
    assert rules["AKS-ACR-006"].exempted == 1  # EX-0042: aks-batch-dev's service principal
    # the run record's FindingCount leaves the exempted finding out; the report says nothing is missing
    assert demo_run["FindingCount"] + demo_run["ExemptedCount"] == len(demo_findings)
    assert "Findings in the run record" not in render_html(data)


def test_demo_pull_verdicts_and_root_causes_come_from_the_verdict_rows(demo_findings, demo_run):
    data = build(demo_findings, demo_run)
    assert data.overview.verdict_source == "AKS-ACR-000"
    assert demo_verdicts(data) == DEMO_PAIRS
    view = data.overview
    assert (view.pairs_fail, view.pairs_unknown, view.pairs_pass, view.pairs_exempted) == (9, 4, 3, 0)
    assert view.clusters_that_cannot_pull == len({cluster for cluster, _ in DEMO_FAILING_PAIRS})
    failing = {(p.cluster.name, p.registry.name) for p in data.worst_pairs if p.verdict == "Fail"}
    assert failing == DEMO_FAILING_PAIRS
    assert [p.verdict for p in data.worst_pairs] == ["Fail"] * 9 + ["Unknown"] * 4
    rows = pair_rows(data)
    web = rows[("aks-web-eastus", "rg-aks-web-eastus", "acrcontosoedge")]
    # permission before network: the missing role is the root cause, the firewall fails too
    assert (web.root_cause, web.root_cause_stage) == ("AKS-ACR-001", "permission")
    assert web.root_cause_message.startswith("The kubelet identity holds no role granting pull")  # no lead-in
    assert [(c.rule, c.status) for c in web.checks] == [("AKS-ACR-001", "Fail"), ("AKS-ACR-003", "Fail"),
                                                          ("AKS-ACR-002", "Fail")]
    assert web.advisories == ["AKS-ACR-008"]  # cross-region: slower, not blocked
    assert web.observed.classes == {"Forbidden": 14} and web.observed.client_ips == ["52.170.8.10"]
    # a deleted kubelet identity (cluster scope) stops every pull of that cluster, though the pair rules pass
    analytics = rows[("aks-analytics", "rg-aks-analytics", "acrcontosobasic")]
    assert analytics.root_cause == "AKS-ACR-005" and "no longer exists" in analytics.root_cause_message
    billing = rows[("aks-legacy-billing", "rg-aks-legacy-billing", "acrcontosolegacy")]
    assert billing.root_cause == "AKS-ACR-012" and "expired" in billing.root_cause_message
    assert billing.observed is None  # no Container Insights on that cluster
    # the deny assignment: permission is the root cause; the firewall route is only Unknown
    online = rows[("aks-online-web", "rg-aks-online-web", "acrcontosoedge")]
    assert "Deny assignment" in online.root_cause_message
    assert [(c.rule, c.status) for c in online.checks] == [("AKS-ACR-001", "Fail"), ("AKS-ACR-003", "Unknown")]
    missing = rows[("aks-online-web", "rg-aks-online-web", "acrcontosomissing")]
    assert missing.verdict == "Unknown" and not missing.registry.in_inventory
    assert "not in the inventory" in missing.root_cause_message
    # how many pairs each check stops, in the order a pull meets them
    causes = {(row.rule, row.stage): (row.fail, row.unknown) for row in data.root_causes}
    assert [row.rule for row in data.root_causes][:6] == list(PULL_ORDER)
    assert causes == {("AKS-ACR-005", "identity"): (1, 1), ("AKS-ACR-012", "identity"): (1, 0),
                      ("AKS-ACR-001", "permission"): (4, 1), ("AKS-ACR-003", "network"): (1, 0),
                      ("AKS-ACR-004", "DNS"): (1, 1), ("AKS-ACR-002", "observed failures"): (1, 0), ("", ""): (0, 1)}


def test_demo_verdicts_derived_without_verdict_rows_agree(demo_findings):
    """Findings files of older runs have no AKS-ACR-000 rows: the derived verdicts follow the same order and set."""
    older = [f for f in demo_findings if f["RuleId"] != "AKS-ACR-000"]
    data = build(older)
    assert data.overview.verdict_source == "derived"
    derived = demo_verdicts(data)
    # the declared registry that is not in the inventory has no verdict row to name its cause: the first
    # undecided check is named instead
    assert derived.pop(("aks-online-web", "acrcontosomissing")) == ("Unknown", "AKS-ACR-001")
    assert derived == {pair: verdict for pair, verdict in DEMO_PAIRS.items()
                       if pair != ("aks-online-web", "acrcontosomissing")}
    # AKS-ACR-002 is Unknown where a cluster sends no Container Insights data: that blocks nothing
    assert {f["Status"] for f in older if f["RuleId"] == "AKS-ACR-002" and f["ClusterName"] == "aks-legacy-reports"} \
        == {"Unknown"}
    assert derived[("aks-legacy-reports", "acrcontosolegacy")] == ("Pass", "")


def test_demo_observed_pull_failures(demo_findings, demo_run):
    data = build(demo_findings, demo_run)
    observed = data.observed
    assert observed is not None
    listed = {(item.cluster.name, item.registry.name): item for item in observed.listed}
    assert set(listed) == set(DEMO_OBSERVED_ACCESS)
    for pair, (name, count) in DEMO_OBSERVED_ACCESS.items():
        assert listed[pair].observed.classes == {name: count} and listed[pair].verdict == "Fail"
    assert [item.observed.failed_pulls for item in observed.listed] == sorted(
        (count for _, count in DEMO_OBSERVED_ACCESS.values()), reverse=True)
    assert observed.pairs_with_access_failures == data.overview.pairs_with_observed_access_failures == 5
    # a tag that does not exist and registry throttling are failed pulls, not access problems
    assert observed.failed_pulls_by_class == {"Unauthorized": 28, "Forbidden": 14, "NameResolution": 9,
                                              "Unreachable": 11, "NotFound": 3, "Throttled": 4}
    assert observed.pairs_with_failures == 7
    # the two legacy service-principal clusters send no Container Insights data (and the missing registry
    # cannot be observed)
    assert observed.pairs_not_observed == 3
    assert observed.pairs_observed + observed.pairs_not_observed == len(DEMO_PAIRS)
    # the throttled pair is Unknown for another reason (custom DNS); its throttling shows, but does not decide
    dr = pair_rows(data)[("aks-orders-dr", "rg-aks-orders-dr", "acrcontososhared")]
    assert dr.observed.classes == {"Throttled": 4} and dr.observed.access_classes == []
    assert dr.root_cause == "AKS-ACR-004"
    html = render_html(data)
    assert "14 Forbidden" in html and "ACR refused 52.170.8.10" in html
    assert "22 Unauthorized" in render_markdown(data)


def test_demo_exemptions(demo_findings, demo_run):
    data = build(demo_findings, demo_run)
    exemptions = data.exemptions
    assert exemptions is not None and exemptions.states_from == "run record"
    # EX-0042 (in force until 2027-03-31) exempts aks-batch-dev's service principal; EX-0017 expired on 2026-11-15
    assert (exemptions.active, exemptions.expiring, exemptions.expired, exemptions.stale) == (1, 0, 1, 0)
    entries = {entry.id: entry for entry in exemptions.entries}
    assert [entry.id for entry in exemptions.entries] == ["EX-0017", "EX-0042"]  # expired first
    assert entries["EX-0017"].states == ["expired"] and entries["EX-0017"].expires_on == "2026-11-15"
    assert entries["EX-0017"].rules == ["AKS-ACR-007"] and entries["EX-0017"].exempted_here == 0
    assert entries["EX-0042"].states == ["active"] and entries["EX-0042"].expires_on == "2027-03-31"
    assert (entries["EX-0042"].ticket, entries["EX-0042"].exempted_here, entries["EX-0042"].matched) == (
        "CHG-1234", 1, 1)
    assert [(f.rule, f.resource, f.exemption_id) for f in exemptions.listed] == [
        ("AKS-ACR-006", "aks-batch-dev (rg-aks-batch-dev)", "EX-0042")]
    assert exemptions.exempted_findings == 1 and exemptions.exempted_by_status == {"Fail": 1}
    # exempted findings are counted apart: not among the owner's failures
    owners = {o.owner: o for o in data.owners}
    assert (owners["team-batch"].exempted, any(e.rule == "AKS-ACR-006" for e in owners["team-batch"].entries)) == (
        1, False)
    # the expired exemption exempts nothing: the edge registry's admin user counts again, and AKS-ACR-013 fails
    edge_admin = [f for f in demo_findings if f["RuleId"] == "AKS-ACR-007" and f["RegistryName"] == "acrcontosoedge"]
    assert [(f["Status"], f["Exempted"]) for f in edge_admin] == [("Fail", False)]
    assert any(e.rule == "AKS-ACR-007" for e in owners["edge-team"].entries)
    rule_013 = next(r for r in data.rules if r.rule == "AKS-ACR-013")
    assert (rule_013.counts["Fail"], rule_013.counts["Pass"]) == (1, 1)
    # without a run record (python -m auditors report --findings FILE) the states come from AKS-ACR-013
    alone = build(demo_findings).exemptions
    assert alone.states_from == "findings"
    assert [(e.id, e.states) for e in alone.entries] == [("EX-0017", ["expired"]), ("EX-0042", ["active"])]
    assert (alone.active, alone.expiring, alone.expired, alone.stale) == (1, 0, 1, 0)
    html = render_html(data)
    assert "✗ </span>expired</span>" in html and "✓ </span>in force</span>" in html
    assert "CHG-0999" in html and "The nightly batch cluster stays on its service principal" in html
    assert "Exemptions: 1 in force, 0 expiring within 14 days, 1 expired (EX-0017), 0 stale." in render_markdown(data)


def test_demo_controls(demo_findings, demo_run):
    data = build(demo_findings, demo_run)
    expected: dict[str, Counter] = {}
    for f in demo_findings:
        for control in f["Controls"]:
            expected.setdefault(control, Counter())["Exempted" if f["Exempted"] else f["Status"]] += 1
    rows = {row.control: row for row in data.controls}
    assert set(rows) == set(expected) and data.controls_left_out == 0
    for control, counts in expected.items():
        row = rows[control]
        assert row.counts == {s: counts[s] for s in ("Pass", "Fail", "Unknown", "NotApplicable")}, control
        assert row.exempted == counts["Exempted"]
        assert row.status == ("Fail" if counts["Fail"] else "Unknown" if counts["Unknown"] else "Pass")
    # the rules that provide evidence for a control, from the catalog's own mapping
    for rule in catalog():
        for control in rule.meta.controls:
            if control in rows:
                assert rule.meta.id in rows[control].rules
    # the exempted service-principal finding counts apart under its controls
    assert rows["PSRule:Azure.AKS.ManagedIdentity"].exempted == 1
    # grouped by framework, numbers in numeric order
    order = [row.control for row in data.controls]
    frameworks = [control.split(":")[0] for control in order]
    assert frameworks == sorted(frameworks, key=str.lower)
    assert order.index("MCSB:NS-2") < order.index("MCSB:NS-10")
    html = render_html(data)
    assert '<th scope="row" class="id">MCSB:PA-7</th>' in html


NEWLY_FAILING, FIXED = ("aks-web-eastus", "acrcontosoedge"), ("aks-payments-prod", "acrcontososhared")


def with_changes(findings: list[dict]) -> list[dict]:
    """The demo as a second run would see it: the web cluster lost its pull since the last run (its failing
    findings are New), the payments cluster's pair was fixed (its findings Changed to Pass), nothing else moved."""
    changed = []
    for f in findings:
        pair = (f["ClusterName"], f["RegistryName"])
        if pair == NEWLY_FAILING and f["Status"] in ("Fail", "Unknown"):
            change, since = "New", "2026-11-29T06:00:00Z"
        elif pair == FIXED and f["Status"] == "Pass":
            change, since = "Changed", "2026-11-29T06:00:00Z"
        else:
            change, since = "Unchanged", "2026-11-01T06:00:00Z"
        changed.append({**f, "Change": change, "FirstSeen": since})
    return changed


def test_demo_changes_since_the_last_run(demo_findings, demo_run):
    findings = with_changes(demo_findings)
    data = build(findings, {**demo_run, "NewCount": 5, "FixedCount": 6})
    changes = data.changes
    assert changes is not None and (changes.new_count, changes.fixed_count) == (5, 6)
    # counted as the run record counts them: every finding, the pair verdicts (AKS-ACR-000) too
    new = [f for f in findings if f["Change"] == "New"]
    fixed = [f for f in findings if f["Change"] == "Changed"]
    assert changes.new_failures == len(new) and {f.rule for f in changes.new_failure_list} == {
        f["RuleId"] for f in new}
    assert changes.fixed == len(fixed) and {f.rule for f in changes.fixed_list} == {f["RuleId"] for f in fixed}
    assert (changes.pairs_newly_failing, changes.pairs_fixed) == (1, 1)
    assert changes.by_change == dict(Counter(f["Change"] for f in findings))
    web = pair_rows(data)[("aks-web-eastus", "rg-aks-web-eastus", "acrcontosoedge")]
    assert web.change == "New"
    assert all(p.change == "Unchanged" for p in data.worst_pairs if p is not web)
    html = render_html(data)
    assert '<span class="badge">new since the last run</span>' in html
    assert html.count('<span class="badge">') == 1
    assert "Passing since the last run" in html and "first seen 2026-11-29T06:00:00Z" in html
    assert (f"Since the last run: 5 new findings, 6 fixed, {len(new)} new failures; pairs: 1 newly cannot pull, "
            "1 can pull again.") in render_markdown(data)
    assert "| Fail (new) | AKS-ACR-001:" in render_markdown(data)
    # the demo scanned into a fresh folder is a first run: every finding is New, which the report says once
    # rather than listing every failure as new
    first = build(demo_findings, demo_run)
    assert {f["Change"] for f in demo_findings} == {"New"} and first.changes.first_run
    assert first.changes.new_failures == demo_run["NewCount"] == sum(
        f["Status"] in ("Fail", "Unknown") and not f["Exempted"] for f in demo_findings)
    html = render_html(first)
    assert "No previous run to compare with: every one of the 157 findings is New" in html
    assert '<span class="badge">' not in html
    assert "Since the last run: no previous run to compare with (every finding is New)." in render_markdown(first)
    assert "(new)" not in render_markdown(first)


def test_changes_between_two_real_runs(tmp_path):
    """The demo scanned twice into one folder, the second time with its exemptions file: the second run compares
    with the first. Only the exemptions' own findings are new, and of them only the expired one is a problem."""
    out = tmp_path / "scan"
    scan_demo(out, exemptions=False)
    findings_path, run = scan_demo(out)
    findings = list(read_findings(findings_path))
    data = build(findings, run)
    changes = data.changes
    assert changes is not None and not changes.first_run
    new = {(f["RuleId"], f["Status"], f["Evidence"]["exemptionId"]) for f in findings if f["Change"] == "New"}
    assert new == {("AKS-ACR-013", "Fail", "EX-0017"), ("AKS-ACR-013", "Pass", "EX-0042")}
    assert changes.new_failures == run["NewCount"] == 1
    assert [(f.rule, f.status) for f in changes.new_failure_list] == [("AKS-ACR-013", "Fail")]
    # exempting aks-batch-dev's service principal did not change its status: not a change
    assert changes.by_change == {"New": 2, "Unchanged": len(findings) - 2}
    assert (changes.fixed, run["FixedCount"], changes.pairs_newly_failing, changes.pairs_fixed) == (0, 0, 0, 0)
    html = render_html(data)
    assert "New failures (Fail or Unknown)" in html and '<span class="badge">' not in html
    assert "Since the last run: 1 new findings, 0 fixed, 1 new failures." in render_markdown(data)


def test_demo_owners_list_failures_with_fix_commands(demo_findings):
    data = build(demo_findings)
    owners = {o.owner: o for o in data.owners}
    # owners list the checks (not the AKS-ACR-000 verdicts they add up to); exempted findings are counted apart
    counted = [f for f in demo_findings if f["Status"] == "Fail" and f["RuleId"] != "AKS-ACR-000"]
    expected = Counter(f["RegistryOwner" if f["Scope"] == "registry" else "Owner"] or NO_OWNER
                       for f in counted if not f["Exempted"])
    assert {name: o.fail for name, o in owners.items() if o.fail} == dict(expected)
    assert {name: o.exempted for name, o in owners.items() if o.exempted} == {"team-batch": 1}
    web_fix = [e for e in owners["team-web"].entries if e.rule == "AKS-ACR-001" and e.status == "Fail"]
    # both of team-web's clusters fail permission on the edge registry: no role, and a deny assignment
    assert {e.cluster for e in web_fix} == {"aks-web-eastus (rg-aks-web-eastus)", "aks-online-web (rg-aks-online-web)"}
    assert any("az role assignment create" in e.remediation for e in web_fix)
    statuses = [e.status for e in owners["team-web"].entries]
    assert statuses == sorted(statuses, key=lambda s: s != "Fail")  # Fail before Unknown


def test_write_reports_from_the_demo_file(demo_findings_path, demo_findings, demo_run, tmp_path):
    written = write_reports(demo_findings_path, demo_run, tmp_path / "out")
    assert [p.name for p in written] == ["report.html", "report.md", "summary.json"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["overview"]["pairsFail"] == len(DEMO_FAILING_PAIRS)
    assert summary["run"]["runId"] == demo_run["RunId"]
    assert len(summary["worstPairs"]) == summary["overview"]["pairsFail"] + summary["overview"]["pairsUnknown"]
    assert summary["exemptions"]["expired"] == 1 and summary["observed"]["pairsWithAccessFailures"] == 5
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"{len(DEMO_FAILING_PAIRS)} of {summary['overview']['pairs']}</strong>" in html
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"**{len(DEMO_FAILING_PAIRS)} of {summary['overview']['pairs']} cluster → registry pairs" in markdown
    assert ("| aks-web-eastus (rg-aks-web-eastus) | acrcontosoedge (rg-acrcontosoedge) | Fail | AKS-ACR-001: The "
            "kubelet identity holds no role") in markdown
    assert ("Root causes of the pairs that cannot pull, in the order a pull meets them: 1 identity (AKS-ACR-005), "
            "1 identity (AKS-ACR-012), 4 permission (AKS-ACR-001), 1 network (AKS-ACR-003), 1 DNS (AKS-ACR-004), "
            "1 observed failures (AKS-ACR-002).") in markdown
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


# --- synthetic estates ---------------------------------------------------------------------------------------


def test_same_named_clusters_are_told_apart_by_id():
    findings = [finding("AKS-ACR-001", "Fail", cluster=("aks-prod", "rg-east")),
                finding("AKS-ACR-003", "Pass", cluster=("aks-prod", "rg-east")),
                finding("AKS-ACR-001", "Pass", cluster=("aks-prod", "rg-west")),
                finding("AKS-ACR-003", "Pass", cluster=("aks-prod", "rg-west"))]
    # the same cluster id in another case (Resource Graph lower-cases some ids) is the same cluster
    findings.append({**finding("AKS-ACR-008", "Pass", cluster=("aks-prod", "rg-west")),
                     "ClusterId": cluster_id("aks-prod", "rg-west").lower()})
    data = build(findings)
    assert data.overview.clusters == 2 and data.overview.pairs == 2
    assert (data.overview.pairs_fail, data.overview.pairs_pass) == (1, 1)
    assert matrix_cell(data, "aks-prod", "rg-east", "acrx") == "Fail"
    assert matrix_cell(data, "aks-prod", "rg-west", "acrx") == "Pass"
    html = render_html(data)
    assert html.count('<span class="name">aks-prod</span><span class="sub">rg-east</span>') == 2  # matrix, pair list
    assert '<span class="name">aks-prod</span><span class="sub">rg-west</span>' in html


def test_derived_pair_verdict_from_blocking_checks():
    def pair(rule: str, status: str, cluster: str, **extra) -> dict:
        return finding(rule, status, cluster=(cluster, "rg"), **extra)

    findings = [
        # route fails: Fail, root cause 003
        pair("AKS-ACR-001", "Pass", "aks-1"), pair("AKS-ACR-003", "Fail", "aks-1"),
        pair("AKS-ACR-004", "NotApplicable", "aks-1"),
        # permission undecided: Unknown
        pair("AKS-ACR-001", "Unknown", "aks-2"), pair("AKS-ACR-003", "Pass", "aks-2"),
        # only the region rule fails: the pair pulls, with an advisory
        pair("AKS-ACR-001", "Pass", "aks-3"), pair("AKS-ACR-008", "Fail", "aks-3"),
        # cluster-wide: pull identity gone (its pair rows come before the cluster row)
        pair("AKS-ACR-001", "Pass", "aks-4"),
        pair("AKS-ACR-005", "Fail", "aks-4", scope="cluster", message="identity deleted"),
        # Fail beats Unknown
        pair("AKS-ACR-001", "Fail", "aks-5"), pair("AKS-ACR-003", "Unknown", "aks-5"),
        # ... even an Unknown earlier on a pull's path
        pair("AKS-ACR-001", "Unknown", "aks-6"), pair("AKS-ACR-003", "Fail", "aks-6"),
    ]
    data = build(findings)
    assert matrix_cell(data, "aks-1", "rg", "acrx") == "Fail"
    assert matrix_cell(data, "aks-2", "rg", "acrx") == "Unknown"
    assert matrix_cell(data, "aks-3", "rg", "acrx") == "Pass"
    assert matrix_cell(data, "aks-4", "rg", "acrx") == "Fail"
    assert matrix_cell(data, "aks-5", "rg", "acrx") == "Fail"
    rows = pair_rows(data)
    assert rows[("aks-1", "rg", "acrx")].root_cause == "AKS-ACR-003"
    assert rows[("aks-2", "rg", "acrx")].root_cause == "AKS-ACR-001"
    assert rows[("aks-4", "rg", "acrx")].root_cause == "AKS-ACR-005"
    assert rows[("aks-4", "rg", "acrx")].root_cause_message == "identity deleted"
    assert rows[("aks-5", "rg", "acrx")].root_cause == "AKS-ACR-001"
    # the root cause first, then the other checks in the order a pull meets them
    assert [c.rule for c in rows[("aks-5", "rg", "acrx")].checks] == ["AKS-ACR-001", "AKS-ACR-003"]
    assert (rows[("aks-6", "rg", "acrx")].verdict, rows[("aks-6", "rg", "acrx")].root_cause) == ("Fail", "AKS-ACR-003")
    assert [c.rule for c in rows[("aks-6", "rg", "acrx")].checks] == ["AKS-ACR-003", "AKS-ACR-001"]
    assert ("aks-3", "rg", "acrx") not in rows
    assert (data.overview.pairs_fail, data.overview.pairs_unknown, data.overview.pairs_pass) == (4, 1, 1)
    assert data.overview.verdict_source == "derived"
    # Fail pairs first, then Unknown
    assert [p.verdict for p in data.worst_pairs] == ["Fail", "Fail", "Fail", "Fail", "Unknown"]


def test_the_derived_order_is_the_pull_verdict_rules_order():
    assert BLOCKING_RULES == PULL_ORDER
    assert {rule for rule, on_cluster in PULL_VERDICT_BLOCKING if on_cluster} == {"AKS-ACR-005", "AKS-ACR-012"}
    assert set(STAGES) == set(BLOCKING_RULES)


@pytest.mark.parametrize(("failing", "root"), [
    # identity before permission before network before DNS before what was observed
    (("AKS-ACR-005", "AKS-ACR-012", "AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-004", "AKS-ACR-002"), "AKS-ACR-005"),
    (("AKS-ACR-012", "AKS-ACR-001"), "AKS-ACR-012"),
    (("AKS-ACR-001", "AKS-ACR-003"), "AKS-ACR-001"),
    (("AKS-ACR-003", "AKS-ACR-004"), "AKS-ACR-003"),
    (("AKS-ACR-004", "AKS-ACR-002"), "AKS-ACR-004"),
    (("AKS-ACR-002",), "AKS-ACR-002"),
])
def test_derived_root_cause_is_the_first_failure_on_a_pulls_path(failing, root):
    cluster_rules = {rule for rule, on_cluster in PULL_VERDICT_BLOCKING if on_cluster}
    findings = []
    # rows arrive in an order unlike a pull's (the last check first), and cluster rows after the pair rows
    for rule in reversed(PULL_ORDER):
        status = "Fail" if rule in failing else "Pass"
        evidence = {"failures": {"counts": {"Unauthorized": 3}}, "classes": {"Unauthorized": 3}} \
            if rule == "AKS-ACR-002" and status == "Fail" else {}
        if rule not in cluster_rules:
            findings.append(finding(rule, status, Evidence=evidence))
    findings += [finding(rule, "Fail" if rule in failing else "Pass", scope="cluster") for rule in cluster_rules]
    row = build(findings).worst_pairs[0]
    assert (row.verdict, row.root_cause, row.root_cause_stage) == ("Fail", root, STAGES[root])
    assert [c.rule for c in row.checks] == [root, *(r for r in PULL_ORDER if r in failing and r != root)]


def test_observed_failures_block_only_where_container_insights_data_exists():
    def pair(cluster: str, *rows: tuple[str, str, dict]) -> list[dict]:
        return [finding(rule, status, cluster=(cluster, "rg"), Evidence=evidence) for rule, status, evidence in rows]

    no_data = {"workspace": ""}  # the cluster sends no Container Insights data
    partly_read = {"classes": {"Forbidden": 2}, "failures": {"counts": {"Forbidden": 2}, "lastSeen": "2026-11-29",
                                                             "clientIps": ["203.0.113.9"], "namespaces": ["web"]}}
    not_access = {"classes": {"NotFound": 3}, "failures": {"counts": {"NotFound": 3}}}
    findings = [
        *pair("aks-1", ("AKS-ACR-001", "Pass", {}), ("AKS-ACR-002", "Unknown", no_data)),
        *pair("aks-2", ("AKS-ACR-001", "Pass", {}), ("AKS-ACR-002", "Unknown", partly_read)),
        *pair("aks-3", ("AKS-ACR-001", "Pass", {}), ("AKS-ACR-002", "NotApplicable", not_access)),
        *pair("aks-4", ("AKS-ACR-001", "Unknown", {}), ("AKS-ACR-002", "Fail", partly_read)),
    ]
    data = build(findings)
    assert matrix_cell(data, "aks-1", "rg", "acrx") == "Pass"  # nothing observed, nothing blocks
    assert (matrix_cell(data, "aks-2", "rg", "acrx"), matrix_cause(data, "aks-2", "rg", "acrx")) == (
        "Unknown", "AKS-ACR-002")
    assert matrix_cell(data, "aks-3", "rg", "acrx") == "Pass"  # a missing tag is not an access failure
    assert (matrix_cell(data, "aks-4", "rg", "acrx"), matrix_cause(data, "aks-4", "rg", "acrx")) == (
        "Fail", "AKS-ACR-002")
    observed = data.observed
    assert (observed.pairs_observed, observed.pairs_not_observed) == (3, 1)
    assert (observed.pairs_with_failures, observed.pairs_with_access_failures) == (3, 2)
    assert observed.failed_pulls_by_class == {"Forbidden": 4, "NotFound": 3}
    assert observed.pairs_by_class == {"Forbidden": 2, "NotFound": 1}
    row = pair_rows(data)[("aks-4", "rg", "acrx")]
    assert (row.observed.classes, row.observed.client_ips, row.observed.namespaces) == (
        {"Forbidden": 2}, ["203.0.113.9"], ["web"])
    assert build([finding("AKS-ACR-001", "Fail")]).observed is None
    assert "No Container Insights data in these findings" in render_html(build([finding("AKS-ACR-001", "Fail")]))


def test_pair_verdict_rows_are_used_when_present():
    verdict = {"checks": [{"rule": "AKS-ACR-001", "status": "Fail", "message": "no AcrPull"},
                          {"rule": "AKS-ACR-003", "status": "Pass", "message": "route ok"}],
               "rootCause": "AKS-ACR-001"}
    findings = [
        finding("AKS-ACR-000", "Fail", cluster=("aks-1", "rg"), message="No pull permission: no AcrPull",
                Evidence=verdict),
        # a verdict row overrides what the individual rows would give
        finding("AKS-ACR-003", "Fail", cluster=("aks-2", "rg")),
        finding("AKS-ACR-000", "Pass", cluster=("aks-2", "rg"), Evidence={"checks": [], "rootCause": ""}),
        # as read back from findings.csv, Evidence is a JSON string
        finding("AKS-ACR-000", "Unknown", cluster=("aks-3", "rg"), message="Route unknown", Evidence=json.dumps(
            {"checks": [{"rule": "AKS-ACR-003", "status": "Unknown", "message": "egress IPs unknown"}],
             "rootCause": "AKS-ACR-003"})),
    ]
    data = build(findings)
    assert matrix_cell(data, "aks-1", "rg", "acrx") == "Fail"
    assert matrix_cell(data, "aks-2", "rg", "acrx") == "Pass"
    assert data.overview.verdict_source == "AKS-ACR-000"
    row = pair_rows(data)[("aks-1", "rg", "acrx")]
    assert (row.root_cause, row.root_cause_message) == ("AKS-ACR-001", "No pull permission: no AcrPull")
    assert [(c.rule, c.status, c.message) for c in row.checks] == [("AKS-ACR-001", "Fail", "no AcrPull")]
    assert row.verdict_source == "AKS-ACR-000"
    from_csv = pair_rows(data)[("aks-3", "rg", "acrx")]
    assert (from_csv.verdict, from_csv.root_cause, from_csv.checks[0].message) == (
        "Unknown", "AKS-ACR-003", "egress IPs unknown")
    # the verdict row is not a second thing to fix: owners list the checks
    assert all(e.rule != "AKS-ACR-000" for o in data.owners for e in o.entries)
    assert "AKS-ACR-000" in {r.rule for r in data.rules}  # counted in the rule table though not in the catalog


def test_exempted_findings_are_counted_apart():
    findings = [
        finding("AKS-ACR-001", "Fail", cluster=("aks-1", "rg"), Exempted=True, ExemptionId="EX-42",
                ExemptionExpiresOn="2027-01-31"),
        finding("AKS-ACR-003", "Pass", cluster=("aks-1", "rg"), Exempted=False),
        finding("AKS-ACR-001", "Fail", cluster=("aks-2", "rg"), Exempted=False),
        finding("AKS-ACR-007", "Fail", scope="registry", Exempted="true", ExemptionId="EX-7"),
    ]
    run = {"Exemptions": {"active": 2, "expiring": [{"id": "EX-42", "expiresOn": "2027-01-31"}],
                          "expired": [], "stale": ["EX-9 <b>"]}}
    data = build(findings, run)
    assert (data.overview.pairs_fail, data.overview.pairs_exempted, data.overview.pairs_pass) == (1, 1, 0)
    assert matrix_cell(data, "aks-1", "rg", "acrx") == EXEMPTED
    assert [p.cluster.name for p in data.worst_pairs] == ["aks-2"]
    rule_001 = next(r for r in data.rules if r.rule == "AKS-ACR-001")
    assert (rule_001.counts["Fail"], rule_001.exempted) == (1, 1)
    assert data.overview.findings_by_status["Fail"] == 1 and data.overview.findings_exempted == 2
    owners = {o.owner: o for o in data.owners}
    assert (owners["team-a"].fail, owners["team-a"].exempted, len(owners["team-a"].entries)) == (1, 1, 1)
    assert (owners["team-r"].fail, owners["team-r"].exempted, owners["team-r"].entries) == (0, 1, [])
    assert data.exemptions is not None and data.exemptions.active == 2
    assert {item.exemption_id for item in data.exemptions.listed} == {"EX-42", "EX-7"}
    html = render_html(data)
    assert "EX-42" in html and "2027-01-31" in html and "EX-9 &lt;b&gt;" in html
    assert "⊘ </span>Exempted" in html
    # without exemption fields there is no exemptions data
    assert build([finding("AKS-ACR-001", "Fail")]).exemptions is None


def exemption_finding(identifier: str, status: str, expires_on: str, matched: int = 1) -> dict:
    """An AKS-ACR-013 finding as the exemption rule writes it."""
    return {**finding("AKS-ACR-013", status, scope="exemption", severity="Medium", owner="secops@example.com"),
            "ResourceId": identifier, "TimeGenerated": "2026-11-29T06:00:00Z",
            "Evidence": {"exemptionId": identifier, "rules": ["AKS-ACR-006"], "approvedBy": "secops@example.com",
                         "expiresOn": expires_on, "ticket": f"CHG-{identifier}", "justification": "migration",
                         "matchedFindings": matched}}


def test_exemption_states_from_the_run_record():
    findings = [finding("AKS-ACR-006", "Fail", scope="cluster", Exempted=True, ExemptionId="EX-1",
                        ExemptionExpiresOn="2027-03-31"),
                exemption_finding("EX-1", "Pass", "2027-03-31"), exemption_finding("EX-2", "Pass", "2026-12-05"),
                exemption_finding("EX-3", "Pass", "2027-01-31", matched=0),
                exemption_finding("EX-9", "Fail", "2026-11-01")]
    run = {"ExemptedCount": 1, "Exemptions": {
        "active": ["EX-1", "EX-2", "EX-3"], "expiring": [{"id": "EX-2", "expiresOn": "2026-12-05"}],
        "expired": [{"id": "EX-9", "expiresOn": "2026-11-01"}], "stale": ["EX-3"]}}
    exemptions = build(findings, run).exemptions
    assert (exemptions.active, exemptions.expiring, exemptions.expired, exemptions.stale) == (3, 1, 1, 1)
    assert exemptions.states_from == "run record"
    # the ones that need attention first: expired, expiring, stale, then those simply in force
    assert [(e.id, e.states) for e in exemptions.entries] == [
        ("EX-9", ["expired"]), ("EX-2", ["active", "expiring"]), ("EX-3", ["active", "stale"]), ("EX-1", ["active"])]
    assert [e.exempted_here for e in exemptions.entries] == [0, 0, 0, 1]
    assert exemptions.entries[1].ticket == "CHG-EX-2" and exemptions.entries[2].matched == 0
    html = render_html(build(findings, run))
    assert "in force; expires within 14 days" in html and "in force; stale: matched no finding" in html
    assert "States come from the run record." in html
    markdown = render_markdown(build(findings, run))
    assert ("Exemptions: 3 in force, 1 expiring within 14 days (EX-2 (2026-12-05)), 1 expired (EX-9), 1 stale (EX-3). "
            "Exempted findings (counted apart): 1.") in markdown


def test_exemption_states_from_the_findings_alone():
    """`python -m auditors report --findings FILE` may have no run record: AKS-ACR-013 says what the file held."""
    findings = [exemption_finding("EX-2", "Pass", "2026-12-05"), exemption_finding("EX-4", "Pass", "2026-12-13"),
                exemption_finding("EX-5", "Pass", "2026-12-14"), exemption_finding("EX-3", "Pass", "2027-01-31", 0),
                exemption_finding("EX-9", "Fail", "2026-11-01")]
    exemptions = build(findings).exemptions
    assert exemptions.states_from == "findings"
    states = {e.id: e.states for e in exemptions.entries}
    # expiring: within 14 days (inclusive) of the findings' date, as the run would have counted it
    assert states == {"EX-2": ["active", "expiring"], "EX-4": ["active", "expiring"], "EX-5": ["active"],
                      "EX-3": ["active", "stale"], "EX-9": ["expired"]}
    assert (exemptions.active, exemptions.expiring, exemptions.expired, exemptions.stale) == (4, 2, 1, 1)
    assert "No run record: states are read from" in render_html(build(findings))


def test_run_record_facts_evidence_chain_and_permissions():
    findings = [finding("AKS-ACR-001", "Fail"), finding("AKS-ACR-006", "Fail", scope="cluster", Exempted=True)]
    run = {"RunId": "r-7", "FindingCount": 1, "ExemptedCount": 1, "EvidenceLocation": "https://x.example/evidence/r-7",
           "ManifestSha256": "ab" * 32, "PreviousManifestSha256": "cd" * 32, "ChainPosition": 7,
           "ExemptionsSha256": "ef" * 32,
           "Permissions": {"GroupMember.Read.All": False, "containerInsights": True, "denyAssignments": None}}
    data = build(findings, run)
    assert (data.run.manifest_sha256, data.run.chain_position) == ("ab" * 32, 7)
    assert data.coverage.permissions == run["Permissions"]
    html = render_html(data)
    assert "Findings in the run record" not in html  # 1 counted plus 1 exempted is what the report read
    assert "ab" * 32 in html and "cd" * 32 in html and "ef" * 32 in html
    assert "<dt>Position in the evidence chain</dt><dd>7</dd>" in html
    assert "<dt>GroupMember.Read.All</dt><dd>not granted" in html and "<dt>containerInsights</dt><dd>granted" in html
    assert "<dt>denyAssignments</dt><dd>not checked" in html
    short = build(findings, {**run, "FindingCount": 5})
    assert "5 and 1 exempted (this report read 2:" in render_html(short)


def test_changes_when_present():
    findings = [finding("AKS-ACR-001", "Fail", cluster=("aks-1", "rg"), Change="New", FirstSeen="2026-11-28"),
                finding("AKS-ACR-001", "Fail", cluster=("aks-2", "rg"), Change="Unchanged", FirstSeen="2026-10-01"),
                finding("AKS-ACR-003", "Pass", cluster=("aks-2", "rg"), Change="Changed")]
    data = build(findings, {"NewCount": 1, "FixedCount": 4})
    assert data.changes is not None
    assert (data.changes.new_count, data.changes.fixed_count, data.changes.new_failures) == (1, 4, 1)
    assert data.changes.by_change == {"New": 1, "Unchanged": 1, "Changed": 1}
    assert [f.resource for f in data.changes.new_failure_list] == ["aks-1 (rg) → acrx (rg-x)"]
    html = render_html(data)
    assert "New failures" in html and "first seen 2026-11-28" in html
    assert "Since the last run: 1 new findings, 4 fixed, 1 new failures." in render_markdown(data)
    assert build([finding("AKS-ACR-001", "Fail")]).changes is None
    assert "No change tracking" in render_html(build([finding("AKS-ACR-001", "Fail")]))


def test_controls_are_shown_per_rule_and_finding():
    data = build([finding("AKS-ACR-001", "Fail", Controls=["CIS-5.1", "ISO-A.9"]),
                  finding("AKS-ACR-003", "Fail", Controls="NIST-AC-3")])
    by_rule = {r.rule: r.controls for r in data.rules}
    assert by_rule["AKS-ACR-001"] == ["CIS-5.1", "ISO-A.9"] and by_rule["AKS-ACR-003"] == ["NIST-AC-3"]
    assert "controls CIS-5.1, ISO-A.9" in render_html(data)


def test_per_control_table():
    findings = [finding("AKS-ACR-001", "Fail", Controls=["MCSB:PA-7", "NIST:AC-3"]),
                finding("AKS-ACR-001", "Pass", cluster=("aks-b", "rg"), Controls=["MCSB:PA-7", "NIST:AC-3"]),
                finding("AKS-ACR-003", "Unknown", Controls=["MCSB:NS-2", "MCSB:NS-2"]),  # named twice: counted once
                finding("AKS-ACR-003", "Pass", cluster=("aks-b", "rg"), Controls='["MCSB:NS-2", "MCSB:NS-10"]'),
                finding("AKS-ACR-006", "Fail", scope="cluster", Exempted=True, Controls="MCSB:IM-3, NIST:IA-5"),
                finding("AKS-ACR-004", "NotApplicable", Controls=["MCSB:NS-10"])]
    data = build(findings)
    rows = {row.control: row for row in data.controls}
    assert [row.control for row in data.controls] == ["MCSB:IM-3", "MCSB:NS-2", "MCSB:NS-10", "MCSB:PA-7",
                                                      "NIST:AC-3", "NIST:IA-5"]
    assert (rows["MCSB:PA-7"].status, rows["MCSB:PA-7"].counts["Fail"], rows["MCSB:PA-7"].counts["Pass"]) == (
        "Fail", 1, 1)
    assert (rows["MCSB:NS-2"].status, rows["MCSB:NS-2"].counts["Unknown"], rows["MCSB:NS-2"].counts["Pass"]) == (
        "Unknown", 1, 1)
    assert (rows["MCSB:NS-10"].status, rows["MCSB:NS-10"].rules) == ("Pass", ["AKS-ACR-003", "AKS-ACR-004"])
    # an exempted failure is counted apart: the control is not failing because of it, but it says it is waived
    assert (rows["MCSB:IM-3"].status, rows["MCSB:IM-3"].exempted, rows["MCSB:IM-3"].counts["Fail"]) == (
        "Exempted", 1, 0)
    html = render_html(data)
    assert "2 of 6 controls have failing findings; 1 more have findings that could not be decided." in html
    assert "These findings name no compliance controls" in render_html(build([finding("AKS-ACR-001", "Fail")]))


def test_run_facts_coverage_gaps_and_errors_are_reported():
    run = {"RunId": "r-1", "RunStatus": "Incomplete", "FindingCount": 99, "Scope": "mg:platform",
           "Coverage": {"scope": "mg:platform", "subscriptionsSeen": 12, "requests": 40, "rows": 5000,
                        "gaps": [{"query": "role_assignments", "reason": "HTTP 403 <Forbidden>",
                                  "subscriptions": ["sub-1"]}]},
           "Errors": ["spool holds 600 MB & more"]}
    data = build([finding("AKS-ACR-001", "Fail")], run)
    assert data.run.finding_count_reported == 99 and data.run.findings_read == 1
    html = render_html(data)
    assert "role_assignments" in html and "HTTP 403 &lt;Forbidden&gt;" in html
    assert "spool holds 600 MB &amp; more" in html
    assert "Findings in the run record" in html and "(this report read 1:" in html
    markdown = render_markdown(data)
    assert "Coverage: scope mg:platform, 12 subscriptions, 40 requests, 5,000 rows, 1 gaps, 1 errors." in markdown


def test_an_empty_run_renders():
    data = build([], {})
    assert data.overview.pairs == 0 and data.worst_pairs == [] and data.owners == []
    html = render_html(data)
    assert "No cluster → registry pairs were found." in html and "No Fail or Unknown findings." in html
    assert render_markdown(data).startswith("## ACR pull audit")


# --- caps ----------------------------------------------------------------------------------------------------


def test_caps_keep_the_worst_and_say_how_many_more():
    clusters, registries = 80, 50
    findings = []
    for c in range(clusters):
        for r in range(registries):
            # one cluster row is worse than all others: two failing checks per pair
            status = "Fail" if (c + r) % 2 == 0 or c == 77 else "Unknown"
            findings.append(finding("AKS-ACR-001", status, cluster=(f"aks-{c:02}", "rg"),
                                    registry=(f"acr{r:02}", "rg-acr"), remediation="az fix"))
            if c == 77:
                findings.append(finding("AKS-ACR-003", "Fail", cluster=(f"aks-{c:02}", "rg"),
                                        registry=(f"acr{r:02}", "rg-acr")))
    data = build(findings)
    total = clusters * registries
    failing = sum(1 for f in findings if f["RuleId"] == "AKS-ACR-001" and f["Status"] == "Fail")
    assert (data.overview.pairs, data.overview.pairs_fail) == (total, failing)
    assert len(data.worst_pairs) == MAX_WORST_PAIRS and data.worst_pairs_left_out == total - MAX_WORST_PAIRS
    # worst first: the pairs with two failing checks, with their messages kept
    assert {p.cluster.name for p in data.worst_pairs[:registries]} == {"aks-77"}
    # permission comes before the network on a pull's path
    assert all(len(p.checks) == 2 and p.root_cause_message == "AKS-ACR-001 Fail"
               for p in data.worst_pairs[:registries])
    assert [p.verdict for p in data.worst_pairs] == ["Fail"] * MAX_WORST_PAIRS
    matrix = data.matrix
    assert len(matrix.clusters) == MAX_MATRIX_CLUSTERS and len(matrix.registries) == MAX_MATRIX_REGISTRIES
    assert all(len(row) == MAX_MATRIX_REGISTRIES for row in matrix.cells)
    assert matrix.clusters_left_out == clusters - MAX_MATRIX_CLUSTERS
    assert matrix.registries_left_out == registries - MAX_MATRIX_REGISTRIES
    assert matrix.clusters[0].ref.name == "aks-77"
    shown = sum(row.count("Fail") for row in matrix.cells)
    assert shown + matrix.failing_pairs_left_out == failing
    owner = data.owners[0]
    assert len(owner.entries) == MAX_ENTRIES_PER_OWNER
    assert owner.entries_left_out == len(findings) - MAX_ENTRIES_PER_OWNER
    assert all(e.status == "Fail" for e in owner.entries)
    html = render_html(data)
    assert f"… and {total - MAX_WORST_PAIRS:,} more pairs" in html
    assert f"… and {len(findings) - MAX_ENTRIES_PER_OWNER:,} more findings for this owner" in html
    assert (f"Not shown: {clusters - MAX_MATRIX_CLUSTERS} more clusters and {registries - MAX_MATRIX_REGISTRIES} "
            f"more registries (holding {matrix.failing_pairs_left_out:,} failing") in html
    markdown = render_markdown(data)
    assert f"… and {total - 10:,} more pairs" in markdown
    assert markdown.count("\n- Fail ") == 5 and f"- … and {len(findings) - 5:,} more" in markdown


def test_memory_stays_bounded_on_a_large_estate():
    pairs = 10_000
    filler = "x" * 3000

    def findings():
        for index in range(pairs):
            for rule in ("AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-008"):
                # every record's text is its own string, as records parsed from a file would be
                yield finding(rule, "Fail", cluster=(f"aks-{index % 500}", "rg"), registry=(f"acr{index}", "rg-acr"),
                              owner=f"team-{index % 7}", message=f"{index} {rule} {filler}",
                              remediation=f"az {index} {filler}")

    tracemalloc.start()
    try:
        data = build(findings())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.overview.pairs == pairs and data.overview.findings == 3 * pairs
    # keeping every message and fix would take 3 * 10,000 * 6 KB = 180 MB
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


# --- escaping ------------------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter = Counter()
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        self.attributes += [(tag, name, value or "") for name, value in attrs]


def hostile_findings() -> list[dict]:
    return [
        finding("AKS-ACR-001", "Fail", cluster=(HOSTILE, "rg-<b>"), owner=f'{HOSTILE}<img src=x onerror=alert(1)>',
                message="</pre></code><iframe src=//evil.example>", remediation="az x --name '</code></pre><script>'",
                Controls=["<svg onload=alert(1)>"]),
        finding("AKS-ACR-007", "Fail", scope="registry", registry=('acr"><a href=javascript:alert(1)>', "rg"),
                registry_owner="\" onmouseover=\"alert(1)"),
    ]


def test_tenant_values_are_escaped_in_html():
    html = render_html(build(hostile_findings(), {"RunId": HOSTILE, "Errors": [HOSTILE]}))
    parser = _Tags()
    parser.feed(html)
    assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "a", "header", "h1", "h2", "h3",
                                "h4", "p", "nav", "ul", "li", "main", "section", "dl", "dt", "dd", "div", "table",
                                "caption", "thead", "tbody", "tr", "th", "td", "span", "strong", "article", "pre",
                                "code", "footer", "br"}
    assert parser.tags["script"] == 0 and parser.tags["img"] == 0 and parser.tags["iframe"] == 0
    assert not [a for a in parser.attributes if a[1].startswith("on")]
    assert not [a for a in parser.attributes if a[1] == "href" and "javascript" in a[2]]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "az x --name &#x27;&lt;/code&gt;&lt;/pre&gt;&lt;script&gt;&#x27;" in html


def test_tenant_values_are_escaped_in_markdown():
    markdown = render_markdown(build([*hostile_findings(), finding(
        "AKS-ACR-003", "Fail", cluster=("aks|a`b`*c*_d_[e](f)", "rg"), message="line one\nline two | `x`")]))
    assert "<script" not in markdown and "<img" not in markdown and "<iframe" not in markdown
    assert "&lt;script>" in markdown
    row = next(line for line in markdown.splitlines() if "aks\\|a" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 6  # the table's own five columns only
    assert "aks\\|a\\`b\\`\\*c\\*\\_d\\_\\[e\\](f)" in row
    assert not re.search(r"(?<!\\)`", markdown)
    assert "line one line two \\| \\`x\\`" in markdown


def test_markdown_escape_function():
    assert md("a|b") == "a\\|b"
    assert md("<b>&") == "&lt;b>&amp;"
    assert md("`x`") == "\\`x\\`"
    assert md("# h\n- item") == "\\# h - item"
    assert md(None) == ""


# --- the HTML's structure ------------------------------------------------------------------------------------


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.headings: list[int] = []
        self.ids: Counter = Counter()
        self.hrefs: list[str] = []
        self.tags: Counter = Counter()
        self.tables: list[dict] = []
        self.th_without_scope = 0
        self.lang = ""
        self.title = ""
        self.errors: list[str] = []

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags[tag] += 1
        if tag == "html":
            self.lang = attributes.get("lang") or ""
        if "id" in attributes:
            self.ids[attributes["id"]] += 1
        if tag == "a" and attributes.get("href"):
            self.hrefs.append(attributes["href"])
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "table":
            self.tables.append({"caption": False})
        if tag == "caption" and self.stack and self.stack[-1] == "table":
            self.tables[-1]["caption"] = True
        if tag == "th" and attributes.get("scope") not in ("col", "row"):
            self.th_without_scope += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "title":
            self.title += data


def test_html_is_well_formed_and_accessible(demo_findings, demo_run):
    findings = [*with_changes(demo_findings),
                finding("AKS-ACR-001", "Fail", Exempted=True, ExemptionId="EX-1", Change="New")]
    html = render_html(build(findings, demo_run))
    page = _Structure()
    page.feed(html)
    assert html.startswith("<!DOCTYPE html>")
    assert page.errors == [] and page.stack == []
    assert page.lang == "en" and page.title.startswith("ACR pull audit")
    for landmark in ("header", "nav", "main", "footer"):
        assert page.tags[landmark] == 1, landmark
    assert page.headings[0] == 1 and page.headings.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(page.headings, page.headings[1:], strict=False)), page.headings
    assert page.tables and all(t["caption"] for t in page.tables) and page.th_without_scope == 0
    assert [name for name, count in page.ids.items() if count > 1] == []
    assert all(href[1:] in page.ids for href in page.hrefs if href.startswith("#"))
    assert html.index('class="skip-link" href="#main"') < html.index("<nav")
    assert "@media print" in html and "nav.sections, .skip-link { display: none; }" in html
    assert 'a[href^="http"]::after { content: " (" attr(href) ")"' in html
    # status in words, not colour alone: each matrix cell says what it is
    cells = re.findall(r'<td class="(fail|pass|unknown|exempted|none)">(.*?)</td>', html)
    assert cells and all(
        (css == "none" and "not a pair" in text) or (css != "none" and css.capitalize() in text) for css, text in cells)
    assert NOT_PAIRED == ""


def _luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_status_colours_have_sufficient_contrast():
    from auditors.reports.html import _CSS

    colours = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6})", _CSS))
    pairs = [(f"{s}-ink", f"{s}-bg") for s in ("fail", "pass", "unknown", "exempt")]
    # muted text also sits on the matrix cells' backgrounds (root causes)
    pairs += [("ink", "band"), ("muted", "band"), ("link", "band")]
    pairs += [("muted", f"{s}-bg") for s in ("fail", "pass", "unknown", "exempt")]
    for ink, background in pairs:
        lighter, darker = sorted((_luminance(colours[ink]), _luminance(colours[background])), reverse=True)
        assert (lighter + 0.05) / (darker + 0.05) >= 4.5, (ink, background)


# --- files ---------------------------------------------------------------------------------------------------


def test_write_reports_formats_gzip_and_atomic_replace(tmp_path):
    source = tmp_path / "findings.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(finding("AKS-ACR-001", "Fail")) + "\n\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("old")
    assert write_reports(source, {}, out, formats=("md",)) == [out / "report.md"]
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # no temp file left, nothing else written
    assert "**1 of 1 cluster → registry pairs cannot pull**" in (out / "report.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "report.md").stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError, match="unknown report format"):
        write_reports([], {}, out, formats=("pdf",))
    assert set(FILE_NAMES) == {"html", "md", "json"}


def test_read_findings_names_the_bad_line(tmp_path):
    source = tmp_path / "findings.jsonl"
    source.write_text(json.dumps(finding("AKS-ACR-001", "Fail")) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"findings.jsonl:2: not a JSON finding"):
        list(read_findings(source))


def test_summary_json_is_plain_data():
    data = build([finding("AKS-ACR-001", "Fail", Change="New", Exempted=False)], {"NewCount": 1})
    summary = data.to_json()
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {"run", "overview", "rootCauses", "worstPairs", "worstPairsLeftOut", "matrix", "observed",
                            "owners", "rules", "controls", "controlsLeftOut", "coverage", "changes", "exemptions",
                            "caps"}
    assert summary["worstPairs"][0]["cluster"]["resourceGroup"] == "rg-a"
    assert summary["matrix"]["cells"] == [["Fail"]]


def test_an_exemption_check_left_unknown_is_not_shown_in_force(demo_findings):
    """Without a run record the states come from AKS-ACR-013; one the engine left Unknown (a rule error, data
    missing) was not decided, so the report does not call the exemption in force, unless it exempted findings."""
    undecided = [dict(f, Status="Unknown") if f["RuleId"] == "AKS-ACR-013" and f["Status"] == "Pass" else f
                 for f in demo_findings]
    still_exempting = {entry.id: entry for entry in build(undecided).exemptions.entries}
    assert still_exempting["EX-0042"].states == ["active"]  # it exempted a finding in that run: it was in force
    data = build([dict(f, Exempted=False, ExemptionId="") for f in undecided])
    entries = {entry.id: entry for entry in data.exemptions.entries}
    assert entries["EX-0042"].states == ["undecided"]
    assert data.exemptions.active == 0
    assert "undecided: the exemption check gave no verdict" in render_html(data)
