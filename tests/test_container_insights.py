"""Container Insights collection with the real LogsQueryClient over HTTPS against the Log Analytics emulator."""

import http.client
import itertools
import json
import os
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.monitor.query import LogsQueryClient

from auditors.observed import FORBIDDEN, NAME_RESOLUTION, NOT_FOUND, UNAUTHORIZED, UNREACHABLE, ObservedPulls
from auditors.sources.container_insights import (
    CONTAINER_INVENTORY,
    GAP_QUERY,
    INSIGHTS_TYPES,
    KUBE_EVENTS,
    ContainerInsightsCollector,
    SlidingWindowPacer,
    WorkspaceTarget,
    cluster_ids_literal,
    format_lookback,
    insights_queries,
    parse_lookback,
    plan_targets,
    workspace_of,
)
from auditors.sources.credentials import StaticTokenCredential
from emulators import cli as emulator_cli
from emulators.logs import EVALUATORS, LogsFaults, LogsQueryEmulator
from tests.kql import kusto
from tests.test_observed import ACR, IMAGE, MESSAGES, NOW, at, event, inventory

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJleHAiOjQxMDI0NDQ4MDB9.bG9ncy1zaWduYXR1cmU"  # a fake JWT, never to be logged
SUB_A, SUB_B, SUB_MONITOR = ("aaaaaaaa-0000-0000-0000-00000000000a", "bbbbbbbb-0000-0000-0000-00000000000b",
                             "cccccccc-0000-0000-0000-00000000000c")
WS_SHARED = f"/subscriptions/{SUB_MONITOR}/resourceGroups/rg-monitor/providers/Microsoft.OperationalInsights/" \
            "workspaces/law-shared"
WS_TEAM = f"/subscriptions/{SUB_B}/resourceGroups/rg-team/providers/Microsoft.OperationalInsights/workspaces/law-team"
GUIDS = {WS_SHARED: "5e1f0c2a-1111-4a4a-9c9c-0123456789ab", WS_TEAM: "7a2b3c4d-2222-4b4b-8d8d-0123456789cd"}
MESSAGE = {cls: message for cls, _, message in reversed(MESSAGES)}  # the first variant of each class


def cluster_id(name: str, subscription: str = SUB_A) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/rg-{name}/providers/Microsoft.ContainerService/" \
           f"managedClusters/{name}"


def cluster_row(name: str, properties: dict, subscription: str = SUB_A) -> dict:
    return {"id": cluster_id(name, subscription), "name": name, "type": "microsoft.containerservice/managedclusters",
            "subscriptionId": subscription, "location": "westeurope", "properties": properties}


def omsagent(workspace: str, *, key: str = "omsagent", setting: str = "logAnalyticsWorkspaceResourceID",
             enabled=True) -> dict:
    return {"addonProfiles": {key: {"enabled": enabled, "config": {setting: workspace}}}}


SHARED = [f"aks-{n:02d}" for n in range(1, 7)]
CLUSTERS = [
    cluster_row("aks-01", omsagent(WS_SHARED)),
    cluster_row("aks-02", omsagent(WS_SHARED, key="omsAgent")),
    cluster_row("aks-03", omsagent(WS_SHARED.upper(), setting="logAnalyticsWorkspaceResourceId")),
    cluster_row("aks-04", omsagent(WS_SHARED.lower(), setting="loganalyticsworkspaceresourceid"), SUB_B),
    cluster_row("aks-05", {"azureMonitorProfile": {"containerInsights": {
        "enabled": True, "logAnalyticsWorkspaceResourceId": WS_SHARED}}}, SUB_B),
    cluster_row("aks-06", omsagent(WS_SHARED, enabled="true"), SUB_B),
    cluster_row("aks-team-1", omsagent(WS_TEAM), SUB_B),
    cluster_row("aks-team-2", omsagent(WS_TEAM), SUB_B),
    cluster_row("aks-plain", {"addonProfiles": {"azurepolicy": {"enabled": True}}}),
    cluster_row("aks-off", omsagent(WS_SHARED, enabled=False)),
]
WORKSPACES = [{"id": ws, "type": "Microsoft.OperationalInsights/workspaces", "name": ws.rsplit("/", 1)[1],
               "properties": {"customerId": guid}} for ws, guid in GUIDS.items()]

def cid(name: str) -> str:
    return next(c["id"] for c in CLUSTERS if c["name"] == name)


def insights_rows() -> list[dict]:
    rows = [
        # aks-01: one series re-sent as its count grew, and a second pod
        event(MESSAGE[UNAUTHORIZED], cluster=cid("aks-01"), count=2, last=6, first=7),
        event(MESSAGE[UNAUTHORIZED], cluster=cid("aks-01"), count=6, last=2, first=7),
        event(MESSAGE[UNAUTHORIZED], cluster=cid("aks-01").upper(), namespace="jobs", pod="nightly-1", count=1),
        # aks-02: a firewall denial from two egress IPs
        event(MESSAGES[5][2], cluster=cid("aks-02"), count=3),
        event(MESSAGES[6][2], cluster=cid("aks-02"), pod="api-other", count=2, last=0.5),
        event(MESSAGE[NAME_RESOLUTION], cluster=cid("aks-03"), count=4),
        event(MESSAGE[UNREACHABLE], cluster=cid("aks-04"), count=5),
        event(MESSAGE[NOT_FOUND], cluster=cid("aks-05"), count=1),
        event(MESSAGES[23][2], cluster=cid("aks-06"), count=7),  # Docker Hub rate limit: not an ACR
        # left out by the query: too old; re-sent inside the window but last seen before it; not a pull failure;
        # a Normal event; a cluster the audit did not ask for
        event(MESSAGE[UNAUTHORIZED], cluster=cid("aks-03"), last=60, first=61),
        event(MESSAGE[UNAUTHORIZED], cluster=cid("aks-04"), last=30, first=31, generated=2),
        event("Error: ErrImagePull", cluster=cid("aks-01")),
        {**event(f'Pulling image "{IMAGE}"', cluster=cid("aks-01"), reason="Pulling"), "KubeEventType": "Normal"},
        event(MESSAGE[FORBIDDEN], cluster=cluster_id("aks-unaudited")),
        event(MESSAGE[UNAUTHORIZED], cluster=cid("aks-team-1"), count=3),
    ]
    for name in [*SHARED, "aks-team-2"]:
        rows.append(inventory(ACR, "team/web", cluster=cid(name), hours_ago=2))
        rows.append(inventory("", "nginx", cluster=cid(name), hours_ago=1, pod="proxy-1"))
    rows += [inventory(ACR, "team/web", cluster=cid("aks-01"), hours_ago=0.25, pod="web-2"),
             inventory(ACR, "team/api", cluster=cid("aks-01"), state="Waiting"),  # stuck pulling
             inventory("old.azurecr.io", "x", cluster=cid("aks-02"), hours_ago=50)]
    return rows


SNAPSHOT = CLUSTERS + WORKSPACES + insights_rows() + [
    cluster_row("aks-unaudited", omsagent(WS_SHARED))]


@pytest.fixture
def emulator(tmp_path):
    started = []

    def start(snapshot=None, **faults):
        emu = LogsQueryEmulator(snapshot or SNAPSHOT, faults=LogsFaults(**faults), ca_out=tmp_path / "logs-ca.pem",
                                now=lambda: NOW).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def collector(emu, token=TOKEN, **kwargs):
    kwargs.setdefault("sleep", lambda _seconds: None)
    return ContainerInsightsCollector(StaticTokenCredential(token), endpoint=emu.endpoint,
                                      connection_verify=str(emu.ca_path), now=lambda: NOW, **kwargs)


def audited_targets(with_guids=True) -> list[WorkspaceTarget]:
    targets, _ = plan_targets(CLUSTERS, GUIDS if with_guids else None)
    return targets


def collect(emu, targets=None, **kwargs):
    rows: dict[str, list[dict]] = {kind: [] for kind in INSIGHTS_TYPES}
    messages: list[str] = []
    kwargs.setdefault("progress", messages.append)
    coverage = collector(emu, **kwargs).collect(targets if targets is not None else audited_targets(),
                                                lambda kind, batch: rows[kind].extend(batch))
    return rows, coverage, messages


# -- targets ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("properties", "expected"), [
    (omsagent(WS_SHARED), WS_SHARED),
    (omsagent(WS_SHARED, key="omsAgent", setting="logAnalyticsWorkspaceResourceId"), WS_SHARED),
    (omsagent(WS_SHARED, key="OMSAGENT", setting="LOGANALYTICSWORKSPACERESOURCEID"), WS_SHARED),
    (omsagent(WS_SHARED.lstrip("/") + "/"), WS_SHARED),
    (omsagent(WS_SHARED, enabled=False), ""),
    (omsagent(WS_SHARED, enabled="false"), ""),
    (omsagent(""), ""),
    ({"addonProfiles": {"omsagent": {"enabled": False, "config": None}}}, ""),
    ({"azureMonitorProfile": {"containerInsights": {"enabled": True, "logAnalyticsWorkspaceResourceId": WS_TEAM}}},
     WS_TEAM),
    ({"azureMonitorProfile": {"metrics": {"enabled": True}}}, ""),  # managed Prometheus: not Log Analytics
    ({}, ""),
    (None, ""),
])
def test_workspace_of(properties, expected):
    assert workspace_of(properties) == expected


def test_clusters_are_grouped_by_workspace_and_those_without_container_insights_get_no_target():
    targets, unmonitored = plan_targets(CLUSTERS, GUIDS)
    assert [(t.workspace_resource_id, t.workspace_id, len(t.cluster_ids)) for t in targets] == [
        (WS_TEAM, GUIDS[WS_TEAM], 2), (WS_SHARED, GUIDS[WS_SHARED], 6)]  # the casing first seen is kept
    assert {c.lower() for t in targets for c in t.cluster_ids} == {cid(n).lower() for n in SHARED} | {
        cid("aks-team-1").lower(), cid("aks-team-2").lower()}
    assert unmonitored == [cid("aks-off"), cid("aks-plain")]


@pytest.mark.parametrize(("text", "expected"), [
    ("P1D", timedelta(days=1)), ("PT12H", timedelta(hours=12)), ("P7D", timedelta(days=7)),
    ("p1dt6h", timedelta(days=1, hours=6)), ("P2W", timedelta(days=14)), ("PT90M", timedelta(minutes=90)),
    (" PT30S ", timedelta(seconds=30))])
def test_parse_lookback(text, expected):
    assert parse_lookback(text) == expected
    assert parse_lookback(format_lookback(expected)) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("1d", "ISO 8601"), ("P", "ISO 8601"), ("P1DT", "ISO 8601"), ("PT0S", "longer than zero"),
    ("P1M", "months and years"), ("P1Y", "months and years"), ("", "ISO 8601"), ("-P1D", "ISO 8601")])
def test_parse_lookback_refuses_with_a_clear_message(text, says):
    with pytest.raises(ValueError, match=says):
        parse_lookback(text)


def test_cluster_ids_cannot_change_the_query():
    assert cluster_ids_literal(["/subscriptions/S/x", "/subscriptions/s/X"]) == 'dynamic(["/subscriptions/s/x"])'
    with pytest.raises(ValueError):
        cluster_ids_literal(['/subscriptions/s/x"]); KubeEvents | take 1 //'])


# -- collection ------------------------------------------------------------------------------------------------

def test_one_workspace_shared_by_many_clusters_is_queried_once_per_query_file(emulator):
    emu = emulator()
    shared = [t for t in audited_targets() if t.workspace_resource_id.lower() == WS_SHARED.lower()]
    rows, coverage, _ = collect(emu, shared)
    assert len(shared[0].cluster_ids) == 6
    assert emu.stats.per_query == {"pull_failures": 1, "running_images": 1}
    assert coverage.queries == 2 and coverage.requests == 2 == emu.stats.requests
    assert coverage.gaps == [] and coverage.throttled == 0 and coverage.partial == 0
    assert {r["ClusterId"] for r in rows[KUBE_EVENTS]} == {cid(n).lower() for n in SHARED}
    assert {r["_ResourceId"] for r in rows[CONTAINER_INVENTORY]} == {cid(n).lower() for n in SHARED}
    assert all(r["type"] == KUBE_EVENTS for r in rows[KUBE_EVENTS])
    assert coverage.rows == {KUBE_EVENTS: len(rows[KUBE_EVENTS]), CONTAINER_INVENTORY: len(rows[CONTAINER_INVENTORY])}


def test_n_workspaces_cost_two_n_queries_and_rows_keep_the_snapshot_contract(emulator):
    emu = emulator()
    rows, coverage, _ = collect(emu)
    assert coverage.workspaces == 2 and coverage.clusters == 8 and coverage.queries == 4 == emu.stats.queries
    aks01 = [r for r in rows[KUBE_EVENTS] if r["ClusterId"] == cid("aks-01").lower()]
    assert len(aks01) == 1  # two pods, one series re-sent three times: one summarised row
    [row] = aks01
    assert row["Count"] == 7.0 and row["EventSeries"] == 2 and sorted(row["Pods"]) == ["api-7d9f", "nightly-1"]
    assert row["Image"] == IMAGE and row["Reason"] == "Failed" and row["KubeEventType"] == "Warning"
    assert row["LastSeen"] == at(1) and row["FirstSeen"] == at(7) and row["TimeGenerated"].endswith("Z")
    assert isinstance(row["Namespaces"], list)  # dynamic columns arrive as JSON text and are decoded
    assert [k for k in row][:1] == ["type"]
    web = [r for r in rows[CONTAINER_INVENTORY]
           if r["_ResourceId"] == cid("aks-01").lower() and r["Image"] == "team/web"]
    assert [(r["Repository"], r["ImageTag"], r["ContainerHostname"], r["TimeGenerated"]) for r in web] == [
        (ACR, "1", "web-2", at(0.25))]
    assert not [r for r in rows[CONTAINER_INVENTORY] if r["Image"] in ("team/api", "x")]  # Waiting; too old


def test_by_customer_id_and_by_arm_id_the_same_rows(emulator):
    emu = emulator()
    by_guid, _, _ = collect(emu)
    by_arm_id, coverage, _ = collect(emu, audited_targets(with_guids=False))
    assert coverage.gaps == [] and by_guid.keys() == by_arm_id.keys()
    for kind in INSIGHTS_TYPES:  # workspaces answer in any order
        assert sorted(map(json.dumps, by_guid[kind])) == sorted(map(json.dumps, by_arm_id[kind]))
    assert set(emu.stats.per_workspace) == {WS_SHARED.lower(), WS_TEAM.lower()}


def test_captured_rows_aggregate_to_the_expected_classes_and_match_the_raw_rows(emulator):
    emu = emulator()
    rows, coverage, _ = collect(emu)
    lookback = timedelta(days=1)
    observed = ObservedPulls.from_rows(rows[KUBE_EVENTS] + rows[CONTAINER_INVENTORY],
                                       captured_at=coverage.captured_at, lookback=lookback)
    assert {cluster.rsplit("/", 1)[1]: dict(f.counts) for (cluster, _), f in observed.failures.items()} == {
        "aks-01": {UNAUTHORIZED: 7}, "aks-02": {FORBIDDEN: 5}, "aks-03": {NAME_RESOLUTION: 4},
        "aks-04": {UNREACHABLE: 5}, "aks-05": {NOT_FOUND: 1}, "aks-team-1": {UNAUTHORIZED: 3}}
    assert sorted(observed.failures_for(cid("aks-02"), ACR).client_ips) == ["20.51.7.19", "52.170.3.4"]
    assert observed.other_registries["docker.io"].failed_pulls == 7
    assert observed.last_ran(cid("aks-01"), ACR) == NOW - timedelta(hours=0.25)
    assert set(observed.ran) == {cid(n).lower() for n in [*SHARED, "aks-team-2"]}
    # The service-side summary loses nothing the aggregation reads from the raw rows.
    audited = {c.lower() for t in audited_targets() for c in t.cluster_ids}
    raw = ObservedPulls.from_rows([r for r in insights_rows() if (r.get("ClusterId") or r["_ResourceId"]).lower()
                                   in audited], captured_at=NOW, lookback=lookback)
    assert set(raw.failures) == set(observed.failures) and raw.ran == observed.ran
    for key, ours in observed.failures.items():
        theirs = raw.failures[key]
        assert (ours.counts, ours.first_seen, ours.last_seen, ours.sample_message, set(ours.client_ips)) == (
            theirs.counts, theirs.first_seen, theirs.last_seen, theirs.sample_message, set(theirs.client_ips)), key
        assert set(ours.pods) == set(theirs.pods) and set(ours.namespaces) == set(theirs.namespaces), key


def test_a_throttled_workspace_waits_for_retry_after_and_recovers(emulator):
    emu = emulator(throttle_first=3, retry_after=7)
    sleeps: list[float] = []
    rows, coverage, messages = collect(emu, concurrency=1, sleep=sleeps.append)
    assert coverage.throttled == 3 == emu.stats.throttled and coverage.gaps == []
    assert coverage.requests == 4 + 3 == emu.stats.requests and coverage.queries == 4
    assert sum(1 for s in sleeps if s >= 6.9) >= 1  # the pacer held the next request until Retry-After passed
    assert len(rows[KUBE_EVENTS]) == 8
    assert sum("throttled (429)" in m for m in messages) == 3


def test_throttling_that_never_ends_is_a_gap_not_a_hang(emulator):
    emu = emulator(throttle_first=100)
    _, coverage, _ = collect(emu, concurrency=1, max_throttle_waits=2)
    assert coverage.throttled == 8 and coverage.requests == 12  # 4 queries x (1 + 2 waits)
    assert {g.reason.rsplit("): ", 1)[1] for g in coverage.gaps} == {"still throttled (429) after 2 waits"}


def test_a_partially_failing_workspace_keeps_its_data_and_records_a_gap(emulator):
    emu = emulator(partial={"law-team"})
    rows, coverage, _ = collect(emu)
    assert coverage.partial == 2 and emu.stats.partial == 2
    assert cid("aks-team-1").lower() in {r["ClusterId"] for r in rows[KUBE_EVENTS]}
    assert cid("aks-team-2").lower() in {r["_ResourceId"] for r in rows[CONTAINER_INVENTORY]}
    [gap] = coverage.gaps
    assert gap.query == GAP_QUERY and gap.types == INSIGHTS_TYPES and gap.subscriptions == {SUB_B}
    assert "law-team" in gap.reason and "aks-team-1" in gap.reason and "partial result" in gap.reason
    assert "exceeded the allowed limits" in gap.reason


def test_a_forbidden_workspace_is_a_gap_naming_its_clusters_and_the_others_are_collected(emulator):
    emu = emulator(forbid={WS_SHARED})
    rows, coverage, messages = collect(emu)
    [gap] = coverage.gaps
    assert gap.types == INSIGHTS_TYPES and gap.subscriptions == {SUB_A, SUB_B}
    assert gap.reason.startswith(f"workspace {WS_SHARED}") and "6 cluster(s)" in gap.reason
    assert all(name in gap.reason for name in SHARED)
    assert "HTTP 403 InsufficientAccessError" in gap.reason
    assert emu.stats.forbidden == 1  # the second query would fail the same way: not sent
    assert {r["ClusterId"] for r in rows[KUBE_EVENTS]} == {cid("aks-team-1").lower()}
    assert any(gap.reason in m for m in messages)
    assert gap.covers(KUBE_EVENTS, {SUB_A}) and not gap.covers(KUBE_EVENTS, {SUB_MONITOR})


def test_an_unknown_workspace_is_a_gap(emulator):
    emu = emulator(snapshot=[r for r in SNAPSHOT if r.get("id") not in (WS_TEAM,)])
    _, coverage, _ = collect(emu)
    [gap] = coverage.gaps
    assert "law-team" in gap.reason and "HTTP 404" in gap.reason and gap.types == INSIGHTS_TYPES


def test_repeated_server_errors_are_retried_then_a_gap(emulator):
    emu = emulator(fail={GUIDS[WS_TEAM]})
    sleeps: list[float] = []
    _, coverage, _ = collect(emu, max_attempts=3, backoff=0.01, sleep=sleeps.append)
    [gap] = coverage.gaps
    assert gap.types == INSIGHTS_TYPES and "HTTP 503" in gap.reason and "after 3 attempt(s)" in gap.reason
    assert emu.stats.failed == 6 and coverage.requests == 2 + 6 and len(sleeps) >= 4


def test_a_rejected_credential_stops_the_collection(emulator):
    emu = emulator()
    _, coverage, _ = collect(emu, token="  ")
    assert 1 <= coverage.requests <= 2 and emu.stats.unauthenticated == coverage.requests
    assert len(coverage.gaps) >= 2 and all("rejected the credential" in g.reason for g in coverage.gaps)


def test_a_credential_without_a_token_stops_the_collection_without_sending(emulator):
    class NoToken:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                            "credentials.\nAttempted credentials: ...")

    emu = emulator()
    coverage = ContainerInsightsCollector(NoToken(), endpoint=emu.endpoint, connection_verify=str(emu.ca_path),
                                          now=lambda: NOW, sleep=lambda _s: None).collect(
        audited_targets(), lambda kind, batch: None)
    assert emu.stats.requests == 0 and len(coverage.gaps) == 2
    assert all("the credential gave no token for Log Analytics (DefaultAzureCredential failed" in g.reason
               for g in coverage.gaps)


def test_a_refusing_endpoint_is_named_at_once_not_retried_and_every_workspace_is_a_gap(emulator):
    emu = emulator()
    endpoint, ca = emu.endpoint, str(emu.ca_path)
    emu.stop()
    sleeps: list[float] = []
    coverage = ContainerInsightsCollector(StaticTokenCredential(TOKEN), endpoint=endpoint, connection_verify=ca,
                                          now=lambda: NOW, sleep=sleeps.append, max_attempts=2, backoff=0.01).collect(
        audited_targets(), lambda kind, batch: None)
    assert sleeps == [] and coverage.requests <= 2  # the workspaces in flight when it was found, no retries
    assert sorted(g.reason.split(" (", 1)[0] for g in coverage.gaps) == [f"workspace {WS_TEAM}",
                                                                         f"workspace {WS_SHARED}"]
    assert all(g.types == INSIGHTS_TYPES and "it refuses connections" in g.reason for g in coverage.gaps)


def test_tokens_never_reach_rows_coverage_or_messages(emulator):
    emu = emulator(forbid={"law-team"}, throttle_first=1)
    rows, coverage, messages = collect(emu)
    text = json.dumps([rows, coverage.as_dict(), messages, coverage.summary_line()])
    assert TOKEN not in text and TOKEN[:20] not in text
    assert "INCOMPLETE: 1 gap(s)" in coverage.summary_line()
    assert coverage.as_dict()["capturedAt"] == "2026-11-29T12:00:00Z" and coverage.as_dict()["lookback"] == "P1D"


# -- pacing ----------------------------------------------------------------------------------------------------

def test_pacer_keeps_every_sliding_window_under_the_limit():
    clock = [0.0]
    pacer = SlidingWindowPacer(3, 30.0, sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    for _ in range(10):
        pacer.acquire()
    assert pacer.slots == [0, 0, 0, 30, 30, 30, 60, 60, 60, 90]
    pacer.pause(100)
    pacer.acquire()
    assert pacer.slots[-1] == 190


def test_collection_is_paced_below_the_queries_per_30_seconds(emulator):
    emu = emulator()
    pacing = collector(emu, max_queries_per_30s=1, concurrency=10)
    assert pacing.concurrency == 5  # the service runs at most 5 queries of a user at once
    pacing.collect(audited_targets(), lambda kind, batch: None)
    slots = sorted(pacing.pacer.slots)
    assert len(slots) == 4 and all(b - a >= 30 for a, b in itertools.pairwise(slots))
    assert pacing.pacer.waited >= 3 * 30 - 1


# -- the emulator ----------------------------------------------------------------------------------------------

def test_the_emulator_refuses_queries_that_are_not_the_auditors(emulator):
    emu = emulator()
    client = LogsQueryClient(StaticTokenCredential(TOKEN), endpoint=emu.endpoint, connection_verify=str(emu.ca_path),
                             retry_total=0)
    ours = insights_queries()["pull_failures"].render([cid("aks-01")], NOW - timedelta(days=1))
    assert client.query_workspace(GUIDS[WS_SHARED], ours, timespan=timedelta(days=1)).tables[0].rows
    for text in ("KubeEvents | take 10", ours + "\n| take 1", ours.replace('Reason == "Failed"', "true")):
        with pytest.raises(HttpResponseError) as raised:
            client.query_workspace(GUIDS[WS_SHARED], text, timespan=None)
        assert raised.value.status_code == 400
    assert emu.stats.refused == 3 and emu.stats.queries == 1


def test_the_emulator_requires_a_bearer_token(emulator):
    emu = emulator()
    context = ssl.create_default_context(cafile=str(emu.ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", emu.port, context=context, timeout=10)
    connection.request("POST", f"/v1/workspaces/{GUIDS[WS_SHARED]}/query", body=json.dumps({"query": "x"}),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 401 and json.loads(response.read())["error"]["code"] == "AuthorizationRequiredError"
    connection.close()


def test_the_emulator_is_a_discovered_service(tmp_path):
    snapshot = tmp_path / "snapshot.jsonl"
    snapshot.write_text("\n".join(json.dumps(r) for r in SNAPSHOT))
    assert "logs" in emulator_cli.services()
    args = emulator_cli.parser().parse_args(["logs", "--snapshot", str(snapshot), "--throttle", "2", "--partial",
                                             "law-team", "--forbid", WS_SHARED, "--ca-out", str(tmp_path / "ca.pem")])
    emu = emulator_cli.services()["logs"].build(args)
    assert emu.faults == LogsFaults(throttle_first=2, partial={"law-team"}, forbid={WS_SHARED})
    assert emu.estate.workspace_guids[GUIDS[WS_TEAM]] == WS_TEAM.lower()


# -- KQL -------------------------------------------------------------------------------------------------------

TABLES = {k: v for k, v in json.loads((Path(__file__).parent / "kql" / "container_insights_tables.json").read_text())
          .items() if not k.startswith("_")}
KQL_UNAVAILABLE = kusto.available()


@pytest.mark.skipif(bool(KQL_UNAVAILABLE) and not os.environ.get("CI_REQUIRE_KQL"), reason=KQL_UNAVAILABLE or "")
def test_the_queries_are_valid_kql_and_the_emulator_returns_their_columns():
    if KQL_UNAVAILABLE:
        pytest.fail(f"KQL validation required but unavailable: {KQL_UNAVAILABLE}")
    queries = insights_queries()
    texts = {name: q.text for name, q in queries.items()}
    texts |= {f"{name}-rendered": q.render([cid("aks-01"), cid("aks-02")], NOW) for name, q in queries.items()}
    texts["typo"] = queries["pull_failures"].text.replace("KubeEventType", "KubeEventKind")
    analysed = kusto.analyse(TABLES, texts)
    assert kusto.errors(analysed["typo"])
    for name in queries:
        for variant in (name, f"{name}-rendered"):
            assert kusto.errors(analysed[variant]) == [], variant
        declared = [f"{column}:{kind}" for column, kind in EVALUATORS[name][1]]
        assert analysed[name]["columns"] == declared, name
    assert {q.row_type for q in queries.values()} == set(INSIGHTS_TYPES)
