"""Reports (auditors/reports): counts, grouping by resource id, derived pair verdicts, caps, escaping, files."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tracemalloc
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from auditors.reports import FILE_NAMES, read_findings, write_reports
from auditors.reports.data import (
    EXEMPTED,
    MAX_ENTRIES_PER_OWNER,
    MAX_MATRIX_CLUSTERS,
    MAX_MATRIX_REGISTRIES,
    MAX_WORST_PAIRS,
    NO_OWNER,
    NOT_PAIRED,
    ReportData,
)
from auditors.reports.html import render_html
from auditors.reports.markdown import md, render_markdown
from auditors.rules import catalog

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
DEMO_FAILING_PAIRS = {("aks-web-eastus", "acrcontosoedge"), ("aks-ml-training", "acrcontosoabac"),
                      ("aks-orders-prod", "acrcontososhared"), ("aks-analytics", "acrcontosobasic"),
                      ("aks-payments-staging", "acrcontososhared")}


def demo_run_record(findings: list[dict], **overrides) -> dict:
    counts = Counter(f["Status"] for f in findings)
    return {"RunId": findings[0]["RunId"], "StartTime": "2026-11-29T00:00:00Z", "EndTime": "2026-11-29T00:00:02Z",
            "RunStatus": "Succeeded", "Source": "demo", "Scope": "snapshot", "SubscriptionsSeen": 6,
            "FindingCount": len(findings), "PassCount": counts["Pass"], "FailCount": counts["Fail"],
            "UnknownCount": counts["Unknown"], "NotApplicableCount": counts["NotApplicable"],
            "Coverage": {"source": "demo", "rows": 73, "gaps": []}, "Errors": [], "ToolVersion": "0.1.0",
            "RuleCatalogVersion": "test", **overrides}


@pytest.fixture(scope="module")
def demo_findings_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-scan")
    subprocess.run([sys.executable, "-m", "auditors", "scan", "--demo", "--out", str(out), "--quiet"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return out / "findings.jsonl"


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
    rows = [i for i, axis in enumerate(data.matrix.clusters)
            if axis.ref.name == cluster and axis.ref.resource_group == group]
    columns = [i for i, axis in enumerate(data.matrix.registries) if axis.ref.name == registry]
    assert len(rows) == 1 and len(columns) == 1, (cluster, group, registry)
    return data.matrix.cells[rows[0]][columns[0]]


# --- the demo estate -----------------------------------------------------------------------------------------


def test_demo_counts_come_from_every_finding(demo_findings):
    data = build(demo_findings, demo_run_record(demo_findings))
    view = data.overview
    assert view.findings == len(demo_findings)
    assert view.findings_by_status == {s: sum(f["Status"] == s for f in demo_findings)
                                       for s in ("Pass", "Fail", "Unknown", "NotApplicable")}
    assert view.clusters == len({f["ClusterId"].lower() for f in demo_findings if f["ClusterId"]})
    assert view.registries == len({f["RegistryId"].lower() for f in demo_findings if f["RegistryId"]})
    assert view.registries_not_in_inventory == 1  # acrcontosomissing, declared by tag
    pairs = {(f["ClusterId"].lower(), f["RegistryId"].lower() or f["RegistryName"]) for f in demo_findings
             if f["Scope"] == "pair"}
    assert view.pairs == len(pairs)
    assert view.pairs_fail + view.pairs_unknown + view.pairs_pass + view.pairs_exempted == view.pairs
    rules = {row.rule: row for row in data.rules}
    for rule_id, counts in Counter((f["RuleId"], f["Status"]) for f in demo_findings).items():
        assert rules[rule_id[0]].counts[rule_id[1]] == counts


def test_demo_failing_pairs_and_root_causes(demo_findings):
    data = build(demo_findings)
    failing = {(p.cluster.name, p.registry.name) for p in data.worst_pairs if p.verdict == "Fail"}
    assert failing == DEMO_FAILING_PAIRS
    assert data.overview.pairs_fail == len(DEMO_FAILING_PAIRS)
    assert data.overview.clusters_that_cannot_pull == len({cluster for cluster, _ in DEMO_FAILING_PAIRS})
    web = pair_rows(data)[("aks-web-eastus", "rg-aks-web-eastus", "acrcontosoedge")]
    # both the route and the permission fail; the route comes first on a pull's path
    assert web.root_cause == "AKS-ACR-003" and "No network route" in web.root_cause_message
    assert {c.rule for c in web.checks} == {"AKS-ACR-001", "AKS-ACR-003"}
    assert web.advisories == ["AKS-ACR-008"]
    # a deleted kubelet identity (cluster scope) stops every pull of that cluster, though the pair rules pass
    analytics = pair_rows(data)[("aks-analytics", "rg-aks-analytics", "acrcontosobasic")]
    assert analytics.root_cause == "AKS-ACR-005" and "no longer exists" in analytics.root_cause_message
    # a cross-region pull is slower, not blocked: only the wildcard custom role keeps this pair from Pass
    cross_region = pair_rows(data)[("aks-orders-prod", "rg-aks-orders-prod", "acrcontosoedge")]
    assert matrix_cell(data, "aks-orders-prod", "rg-aks-orders-prod", "acrcontosoedge") == "Unknown"
    assert cross_region.advisories == ["AKS-ACR-008"]
    missing = pair_rows(data)[("aks-online-web", "rg-aks-online-web", "acrcontosomissing")]
    assert missing.verdict == "Unknown" and not missing.registry.in_inventory


def test_demo_owners_list_failures_with_fix_commands(demo_findings):
    data = build(demo_findings)
    owners = {o.owner: o for o in data.owners}
    expected = Counter(f["RegistryOwner" if f["Scope"] == "registry" else "Owner"] or NO_OWNER
                       for f in demo_findings if f["Status"] == "Fail")
    assert {name: o.fail for name, o in owners.items() if o.fail} == dict(expected)
    web_fix = [e for e in owners["team-web"].entries if e.rule == "AKS-ACR-001" and e.status == "Fail"]
    assert len(web_fix) == 1 and "az role assignment create" in web_fix[0].remediation
    statuses = [e.status for e in owners["team-web"].entries]
    assert statuses == sorted(statuses, key=lambda s: s != "Fail")  # Fail before Unknown


def test_write_reports_from_the_demo_file(demo_findings_path, demo_findings, tmp_path):
    run = demo_run_record(demo_findings)
    written = write_reports(demo_findings_path, run, tmp_path / "out")
    assert [p.name for p in written] == ["report.html", "report.md", "summary.json"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["overview"]["pairsFail"] == len(DEMO_FAILING_PAIRS)
    assert summary["run"]["runId"] == run["RunId"]
    assert len(summary["worstPairs"]) == summary["overview"]["pairsFail"] + summary["overview"]["pairsUnknown"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"{len(DEMO_FAILING_PAIRS)} of {summary['overview']['pairs']}</strong>" in html
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"**{len(DEMO_FAILING_PAIRS)} of {summary['overview']['pairs']} cluster → registry pairs" in markdown
    assert "| aks-web-eastus (rg-aks-web-eastus) | acrcontosoedge (rg-acrcontosoedge) | Fail | AKS-ACR-003:" in markdown
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
    assert [c.rule for c in rows[("aks-5", "rg", "acrx")].checks] == ["AKS-ACR-003", "AKS-ACR-001"]
    assert ("aks-3", "rg", "acrx") not in rows
    assert (data.overview.pairs_fail, data.overview.pairs_unknown, data.overview.pairs_pass) == (3, 1, 1)
    assert data.overview.verdict_source == "derived"
    # Fail pairs first, then Unknown
    assert [p.verdict for p in data.worst_pairs] == ["Fail", "Fail", "Fail", "Unknown"]


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
    assert all(len(p.checks) == 2 and p.root_cause_message == "AKS-ACR-003 Fail"
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
    assert len(re.findall(r"(?<!\\)\|", row)) == 5  # the table's own four columns only
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


def test_html_is_well_formed_and_accessible(demo_findings):
    findings = [*demo_findings, finding("AKS-ACR-001", "Fail", Exempted=True, ExemptionId="EX-1", Change="New")]
    html = render_html(build(findings, demo_run_record(demo_findings)))
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
    pairs += [("ink", "band"), ("muted", "band"), ("muted", "fail-bg"), ("link", "band")]
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
    with pytest.raises(ValueError, match=r"findings.jsonl:2: not a JSON record"):
        list(read_findings(source))


def test_summary_json_is_plain_data():
    data = build([finding("AKS-ACR-001", "Fail", Change="New", Exempted=False)], {"NewCount": 1})
    summary = data.to_json()
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {"run", "overview", "worstPairs", "worstPairsLeftOut", "matrix", "owners", "rules",
                            "coverage", "changes", "exemptions", "caps"}
    assert summary["worstPairs"][0]["cluster"]["resourceGroup"] == "rg-a"
    assert summary["matrix"]["cells"] == [["Fail"]]
