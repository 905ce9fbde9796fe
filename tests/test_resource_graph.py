"""Live collection with the real azure-mgmt-resourcegraph client against the HTTPS emulator."""

import json
import logging
import math
from collections import Counter

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from auditors.arm import subscription_of
from auditors.findings import read_records
from auditors.inputs import capture_snapshot, demo_path
from auditors.sources.credentials import StaticTokenCredential
from auditors.sources.kql import collector_queries
from auditors.sources.resource_graph import CollectionScope, ResourceGraphCollector
from auditors.sources.snapshot import iter_snapshot
from emulators.arg import Faults, ResourceGraphEmulator
from tests.helpers import demo_copy, run_scan
from tools.build_demo import SUB

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJleHAiOjQxMDI0NDQ4MDB9.c2VjcmV0LXNpZ25hdHVyZQ"  # a fake JWT, never to be logged
# What the collector's queries select from the demo: no management-group rows, no assignments to users.
COLLECTED_TYPES = {t for q in collector_queries().values() for t in q.types}
DEMO_ROWS = [r for r in iter_snapshot(demo_path()) if r["type"] in COLLECTED_TYPES
             and (r.get("properties") or {}).get("principalType") != "User"]


@pytest.fixture
def emulator(tmp_path):
    started = []

    def start(snapshot=None, **kwargs):
        kwargs.setdefault("quota", (1000, 5.0))
        emu = ResourceGraphEmulator(snapshot or demo_path(), ca_out=tmp_path / "ca.pem", **kwargs).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def collector(emu, **kwargs):
    kwargs.setdefault("backoff", 0.01)
    return ResourceGraphCollector(StaticTokenCredential(TOKEN), endpoint=emu.endpoint,
                                  connection_verify=str(emu.ca_path), **kwargs)


def collect(emu, **kwargs):
    rows: dict[str, list[dict]] = {}
    coverage = collector(emu, **kwargs).collect(lambda q, page: rows.setdefault(q.name, []).extend(page))
    return rows, coverage


def expected_rows(query_name):
    query = collector_queries()[query_name]
    return sorted(r["id"].lower() for r in DEMO_ROWS if r["type"] in query.types)


@pytest.mark.parametrize("page_size", [1, 2, 3, 5])
def test_every_row_over_many_pages_with_requests_at_the_lower_bound(emulator, page_size):
    emu = emulator(page_size=page_size)
    rows, coverage = collect(emu, page_size=page_size)
    for name, query in collector_queries().items():
        want = expected_rows(name)
        assert sorted(r["id"].lower() for r in rows.get(name, [])) == want, name
        assert coverage.queries[name].requests == max(1, math.ceil(len(want) / page_size)), name
        assert list(rows[name][0]) == list(query.columns)
    assert coverage.gaps == [] and coverage.total("throttled") == 0
    assert emu.stats.requests == coverage.total("requests")


def test_quota_15_per_5_seconds_is_paced_without_a_single_429(emulator):
    emu = emulator(page_size=3, quota=(15, 5.0))
    rows, coverage = collect(emu, page_size=3, concurrency=4)
    assert coverage.total("requests") > 15  # more than one quota window's worth
    assert emu.stats.throttled == 0 and coverage.total("throttled") == 0
    assert sum(len(v) for v in rows.values()) == len(DEMO_ROWS)


def test_forced_429s_wait_for_the_reset_and_recover(emulator):
    emu = emulator(faults=Faults(throttle_first=2))
    rows, coverage = collect(emu, concurrency=1)
    assert coverage.total("throttled") == 2 and coverage.gaps == []
    assert sum(len(v) for v in rows.values()) == len(DEMO_ROWS)


@pytest.mark.parametrize("faults", [Faults(fail_first=3, fail_status=500), Faults(fail_first=2, fail_status=503),
                                    Faults(reset_first=2)])
def test_server_errors_and_connection_resets_are_retried(emulator, faults):
    emu = emulator(faults=faults)
    rows, coverage = collect(emu, concurrency=1)
    assert coverage.total("retries") >= faults.fail_first + faults.reset_first
    assert coverage.gaps == []
    assert sum(len(v) for v in rows.values()) == len(DEMO_ROWS)


def test_truncated_response_is_an_error_not_silent_data_loss(emulator):
    emu = emulator(page_size=2, faults=Faults(truncate_queries={"clusters"}))
    _, coverage = collect(emu, page_size=2)
    [gap] = coverage.gaps
    assert gap.query == "clusters" and "truncated" in gap.reason


def test_a_query_that_always_fails_leaves_a_gap_and_unknown_verdicts(emulator, tmp_path):
    emu = emulator(faults=Faults(fail_queries={"role_assignments"}))
    live = run_scan(None, tmp_path / "live", collector=collector(emu, max_attempts=2),
                    pairs_file=demo_path() / "pairs.yaml")
    assert [g.query for g in live.coverage.gaps] == ["role_assignments"]
    demo = run_scan(demo_copy(tmp_path / "rg-only", sources=()), tmp_path / "demo",
                    pairs_file=demo_path() / "pairs.yaml")
    live_verdicts = {(f["FindingId"]): f for f in map(json.loads, (tmp_path / "live/findings.jsonl").open())}
    for finding in map(json.loads, (tmp_path / "demo/findings.jsonl").open()):
        ours = live_verdicts.get(finding["FindingId"])
        if ours is None:  # pairs known only from role assignments cannot be found without them
            assert finding["PairSource"] == "role-assignment"
            continue
        if finding["RuleId"] in ("AKS-ACR-001", "AKS-ACR-000"):  # the pull verdict rests on the permission
            assert ours["Status"] in ("Unknown", "Pass", "Fail" if finding["Status"] == "Fail" else "Pass")
            if ours["Status"] == "Unknown" and "could not be collected" in ours["Message"]:
                assert ours["Evidence"]["wouldFail"] is True
        else:
            assert ours["Status"] == finding["Status"], finding["RuleId"]
    assert not any(f["Status"] == "Fail" and f["RuleId"] == "AKS-ACR-001" for f in live_verdicts.values())
    assert demo.summary.total("Fail") > live.summary.total("Fail")


def test_live_scan_equals_the_demo_scan(emulator, tmp_path):
    emu = emulator(page_size=4, quota=(15, 5.0))
    pairs = demo_path() / "pairs.yaml"
    live = run_scan(None, tmp_path / "live", collector=collector(emu, page_size=4), pairs_file=pairs, run_id="r")
    run_scan(demo_copy(tmp_path / "rg-only", sources=()), tmp_path / "demo", pairs_file=pairs, run_id="r")
    assert live.coverage.total("throttled") == 0 and live.coverage.gaps == []
    assert findings_of(tmp_path / "live") == findings_of(tmp_path / "demo")


def test_live_scan_with_every_source_equals_the_scan_of_its_captured_snapshot(emulated_azure, tmp_path):
    """Resource Graph, deny assignments (Resource Manager), Microsoft Graph and Container Insights, live against
    their emulators == the captured snapshot replayed == the estate the emulators serve."""
    from datetime import UTC, datetime

    from auditors.pipeline import beyond_resource_graph
    from auditors.services import Services

    moment = datetime.now(UTC).replace(microsecond=0)
    estate = demo_copy(tmp_path / "estate", captured_at=moment)
    world = emulated_azure(estate, page_size=4)
    services = Services(world.settings(), connection_verify=str(world.bundle), clock=lambda: moment)
    pairs = demo_path() / "pairs.yaml"
    live = run_scan(None, tmp_path / "live", collector=services.resource_graph(page_size=4), pairs_file=pairs,
                    run_id="r", services=services)
    sources = live.loaded.sources
    assert sources["denyAssignments"].rows == 1 and sources["denyAssignments"].gaps == []
    assert sources["microsoftGraph"].permissions == {"GroupMember.Read.All": True, "Application.Read.All": True}
    assert sources["containerInsights"].queries == 2 and sources["containerInsights"].workspaces == 1
    manifest = capture_snapshot(services.resource_graph(page_size=4), tmp_path / "snap", None,
                                beyond_resource_graph(services))
    assert {"deny_assignments.jsonl", "microsoft_graph.jsonl", "container_insights.jsonl"} <= {
        f["path"] for f in manifest["files"]}
    run_scan(tmp_path / "snap", tmp_path / "replay", pairs_file=pairs, run_id="r")
    run_scan(estate, tmp_path / "estate-scan", pairs_file=pairs, run_id="r")
    live_findings = findings_of(tmp_path / "live")
    assert live_findings == findings_of(tmp_path / "replay") == findings_of(tmp_path / "estate-scan")
    statuses = {(f["RuleId"], f["Status"]) for f in live_findings}
    assert {("AKS-ACR-002", "Fail"), ("AKS-ACR-012", "Fail"), ("AKS-ACR-014", "Fail")} <= statuses


def findings_of(out_dir):
    records = [json.loads(line) for line in (out_dir / "findings.jsonl").open()]
    return sorted(({**r, "TimeGenerated": None, "FirstSeen": None} for r in records), key=lambda r: r["FindingId"])


def test_snapshot_capture_round_trips_to_the_same_findings(emulator, tmp_path):
    emu = emulator(page_size=5)
    manifest = capture_snapshot(collector(emu, page_size=5), tmp_path / "snap")
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {f"{name}.jsonl" for name in collector_queries()}
    import hashlib

    for name, entry in files.items():
        data = (tmp_path / "snap" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    assert manifest["queries"]["clusters"]["text"] == collector_queries()["clusters"].text
    assert manifest["coverage"]["rows"] == len(DEMO_ROWS) and manifest["toolVersion"]
    pairs = demo_path() / "pairs.yaml"
    run_scan(tmp_path / "snap", tmp_path / "replay", pairs_file=pairs, run_id="r")
    run_scan(None, tmp_path / "live", collector=collector(emu), pairs_file=pairs, run_id="r")
    assert findings_of(tmp_path / "replay") == findings_of(tmp_path / "live")


def test_snapshot_replay_keeps_the_gaps_of_its_collection(emulator, tmp_path):
    emu = emulator(faults=Faults(fail_queries={"role_assignments"}))
    capture_snapshot(collector(emu, max_attempts=1), tmp_path / "snap")
    replay = run_scan(tmp_path / "snap", tmp_path / "out", pairs_file=demo_path() / "pairs.yaml")
    assert [g.query for g in replay.inventory.gaps] == ["role_assignments"]
    assert replay.summary.counts["AKS-ACR-001"]["Fail"] == 0


def raw_query(emu, query_name, **scope):
    client = ResourceGraphClient(StaticTokenCredential(TOKEN), base_url=emu.endpoint,
                                 connection_verify=str(emu.ca_path), retry_total=0)
    request = QueryRequest(query=collector_queries()[query_name].text,
                           options=QueryRequestOptions(result_format="objectArray"), **scope)
    return client.resources(request)


def test_management_group_assignments_are_invisible_to_subscription_scope(emulator):
    emu = emulator()
    subs = list(SUB.values())
    scoped = raw_query(emu, "role_assignments", subscriptions=subs)
    tenant = raw_query(emu, "role_assignments")
    mg_rows = [r for r in tenant.data if r["properties"]["scope"].lower().startswith("/providers/")]
    assert mg_rows and not [r for r in scoped.data if r["properties"]["scope"].lower().startswith("/providers/")]
    definitions = raw_query(emu, "role_definitions", subscriptions=subs)
    assert all(r["properties"]["type"] == "CustomRole" for r in definitions.data)


def test_subscription_scope_still_collects_inherited_assignments_and_builtins(emulator, tmp_path):
    emu = emulator()
    scope = CollectionScope.parse([f"sub:{s}" for s in SUB.values()])
    rows, coverage = collect(emu, scope=scope)
    scopes = {r["properties"]["scope"] for r in rows["role_assignments"]}
    assert "/providers/Microsoft.Management/managementGroups/mg-platform" in scopes
    assert len(rows["role_assignments"]) == len(expected_rows("role_assignments"))  # no duplicates either
    assert any(r["properties"]["type"] == "BuiltInRole" for r in rows["role_definitions"])
    assert coverage.authorization_above_subscriptions
    pairs = demo_path() / "pairs.yaml"
    run_scan(None, tmp_path / "live", collector=collector(emu, scope=scope), pairs_file=pairs, run_id="r")
    run_scan(demo_copy(tmp_path / "rg-only", sources=()), tmp_path / "demo", pairs_file=pairs, run_id="r")
    assert findings_of(tmp_path / "live") == findings_of(tmp_path / "demo")


def test_management_group_scope_sees_only_its_subscriptions_plus_inherited_roles(emulator):
    emu = emulator()
    rows, _ = collect(emu, scope=CollectionScope.parse(["mg:mg-online"]))
    assert {r["subscriptionId"] for r in rows["clusters"]} == {SUB["online-web"]}
    scopes = {r["properties"]["scope"].lower() for r in rows["role_assignments"]}
    assert "/providers/microsoft.management/managementgroups/mg-contoso" in scopes  # inherited from above
    assert not [s for s in scopes if SUB["platform-shared"] in s]  # another management group's subscription


def test_more_than_1000_subscriptions_go_in_batches(emulator, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from synth_estate import generate

    generate(tmp_path / "estate", clusters=40, registries=10, role_assignments=300, subscriptions=1500, seed=3)
    snapshot = list(iter_snapshot(tmp_path / "estate"))
    subs = sorted({r["subscriptionId"] for r in snapshot if r["type"] == "microsoft.resources/subscriptions"})
    assert len(subs) == 1500
    emu = emulator(snapshot)
    rows, coverage = collect(emu, scope=CollectionScope.parse([f"sub:{s}" for s in subs]))
    assert coverage.gaps == [] and coverage.subscriptions_seen == 1500
    assert coverage.queries["clusters"].requests == 2  # 1,000 + 500 subscriptions
    assert len(rows["clusters"]) == 40


def test_tenant_subscription_limit_is_reported_as_partial_coverage(emulator):
    emu = emulator(subscription_limit=4)
    with pytest.raises(HttpResponseError) as refused:
        raw_query(emu, "clusters")  # without allowPartialScopes
    assert refused.value.status_code == 400 and "TooManySubscriptionsUnderScope" in str(refused.value)
    _, coverage = collect(emu)
    assert coverage.partial and "subscription limit" in coverage.partial[0]


def test_emulator_refuses_queries_it_does_not_know(emulator):
    emu = emulator()
    client = ResourceGraphClient(StaticTokenCredential(TOKEN), base_url=emu.endpoint,
                                 connection_verify=str(emu.ca_path), retry_total=0)
    with pytest.raises(HttpResponseError) as error:
        client.resources(QueryRequest(query="resources | take 5"))
    assert error.value.status_code == 400 and error.value.error.details[0].code == "InvalidQuery"


def test_emulator_quota_answers_429_without_retry_after(emulator):
    emu = emulator(quota=(2, 60.0))
    raw_query(emu, "clusters")
    raw_query(emu, "clusters")
    with pytest.raises(HttpResponseError) as error:
        raw_query(emu, "clusters")
    response = error.value.response
    assert response.status_code == 429 and "Retry-After" not in response.headers
    assert response.headers["x-ms-user-quota-remaining"] == "0"
    assert error.value.error.code == "RateLimiting"


def test_tokens_never_reach_logs_or_output(emulator, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    emu = emulator(page_size=3, faults=Faults(fail_first=1))
    messages = []
    run_scan(None, tmp_path / "out", collector=collector(emu, page_size=3, progress=messages.append),
             progress=messages.append)
    captured = capsys.readouterr()
    text = "\n".join([*messages, caplog.text, captured.out, captured.err,
                      (tmp_path / "out/findings.jsonl").read_text()])
    assert TOKEN not in text and "c2VjcmV0LXNpZ25hdHVyZQ" not in text
    assert Counter(r.levelname for r in caplog.records)  # the SDK did log at debug level


def test_scope_arguments():
    assert CollectionScope.parse(None).kind == "tenant"
    assert CollectionScope.parse(["mg:a", "mg:b", "mg:a"]).management_groups == ("a", "b")
    guid = "0A1B2C3D-0000-4000-8000-00000000ABCD"
    assert CollectionScope.parse([f"sub:{guid}"]).subscriptions == (guid.lower(),)
    for bad in (["rg:x"], ["mg:"], ["mg:a", f"sub:{guid}"], ["sub:not-a-guid"], ["mg:a/b"]):
        with pytest.raises(ValueError):
            CollectionScope.parse(bad)


def test_rejected_credential_stops_collection_instead_of_recording_gaps(emulator):
    from azure.core.exceptions import ClientAuthenticationError

    emu = emulator()
    rejected = ResourceGraphCollector(StaticTokenCredential(""), endpoint=emu.endpoint,
                                      connection_verify=str(emu.ca_path))
    with pytest.raises(ClientAuthenticationError, match="HTTP 401"):
        rejected.collect(lambda q, rows: None)


def test_a_subscription_batch_that_always_fails_is_reported_and_its_verdicts_are_unknown(emulator, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from synth_estate import generate

    generate(tmp_path / "estate", clusters=60, registries=20, role_assignments=400, subscriptions=1200, seed=5)
    subs = sorted({r["subscriptionId"] for r in iter_snapshot(tmp_path / "estate")
                   if r["type"] == "microsoft.resources/subscriptions"})
    failing = set(subs[1000:])  # the second batch
    emu = emulator(tmp_path / "estate", faults=Faults(fail_subscriptions={subs[1100]}))
    scope = CollectionScope.parse([f"sub:{s}" for s in subs])
    result = run_scan(None, tmp_path / "out", collector=collector(emu, scope=scope, max_attempts=2))
    gaps = result.coverage.gaps
    assert gaps and all(g.subscriptions == frozenset(failing) for g in gaps)
    assert result.coverage.subscriptions_seen == 1000
    assert "INCOMPLETE" in result.coverage.summary_line()
    findings = list(read_records(tmp_path / "out/findings.jsonl"))
    assert findings, "the healthy batch is still evaluated"
    for finding in findings:
        involved = {finding["SubscriptionId"], subscription_of(finding["RegistryId"])}
        if finding["Status"] == "Fail" and finding["RuleId"] in ("AKS-ACR-001", "AKS-ACR-005"):
            assert not involved & failing, finding["Message"]
    unresolved = [f for f in findings if f["Scope"] == "pair" and not f["RegistryId"]]
    assert all("could not be collected everywhere" in f["Message"] for f in unresolved)


def test_assignments_to_users_are_not_collected_but_groups_are(emulator):
    emu = emulator()
    rows, _ = collect(emu)
    kinds = {r["properties"]["principalType"] for r in rows["role_assignments"]}
    assert "User" not in kinds and {"Group", "ServicePrincipal"} <= kinds
    everything = [r for r in iter_snapshot(demo_path()) if r["type"] == "microsoft.authorization/roleassignments"]
    assert any(r["properties"]["principalType"] == "User" for r in everything)  # they exist, and are skipped
