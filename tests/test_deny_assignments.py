"""Deny assignments with the real azure-mgmt-authorization client against the emulator's Resource Manager endpoint."""

import hashlib
import json
import logging
import math
import time

import pytest
import requests
import trustme
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from auditors.sources.credentials import StaticTokenCredential
from auditors.sources.deny_assignments import ROW_TYPE, DenyAssignmentCollector
from auditors.sources.kql import collector_queries
from emulators import cli as emulator_cli
from emulators.arg import Faults, ResourceGraphEmulator

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJleHAiOjQxMDI0NDQ4MDB9.ZGVueS1zZWNyZXQtc2lnbmF0dXJl"  # a fake JWT, never to be logged
TENANT_ROOT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUB_ONLINE = "11111111-1111-1111-1111-111111111111"  # under mg-online < mg-contoso < tenant root
SUB_PLATFORM = "22222222-2222-2222-2222-222222222222"  # under mg-platform < mg-contoso < tenant root
SUB_OTHER = "33333333-3333-3333-3333-333333333333"  # under mg-other < tenant root
EVERYONE = "00000000-0000-0000-0000-000000000000"
PULLER_SP = "8f0b1c2d-3e4f-4a5b-9c6d-7e8f9a0b1c2d"
REGISTRY = (f"/subscriptions/{SUB_ONLINE}/resourceGroups/rg-acr"
            "/providers/Microsoft.ContainerRegistry/registries/acronline")
MG = "/providers/Microsoft.Management/managementGroups/"


def subscription_row(sub, name, chain):
    return {"id": f"/subscriptions/{sub}", "name": name, "type": "microsoft.resources/subscriptions",
            "subscriptionId": sub, "tenantId": TENANT_ROOT,
            "properties": {"state": "Enabled", "managementGroupAncestorsChain": [
                {"name": group, "displayName": group} for group in chain]}}


def permission(actions=(), not_actions=(), data_actions=(), not_data_actions=()):
    return {"actions": list(actions), "notActions": list(not_actions), "dataActions": list(data_actions),
            "notDataActions": list(not_data_actions), "condition": None, "conditionVersion": None}


def deny(name, scope, *, permissions, principals=None, exclude=(), child_scopes=True, description=""):
    digest = hashlib.sha256(name.encode()).hexdigest()
    guid = f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
    return {
        "id": f"{scope.rstrip('/')}/providers/Microsoft.Authorization/denyAssignments/{guid}",
        "name": guid,
        "type": ROW_TYPE,
        "properties": {
            "denyAssignmentName": name, "description": description, "scope": scope,
            "doNotApplyToChildScopes": not child_scopes, "permissions": permissions,
            "principals": principals or [{"id": EVERYONE, "type": "SystemDefined", "displayName": "Everyone"}],
            "excludePrincipals": list(exclude), "isSystemProtected": True, "condition": None,
            "conditionVersion": None, "createdOn": "2026-01-05T10:00:00.0000000Z",
            "updatedOn": "2026-01-05T10:00:00.0000000Z", "createdBy": None, "updatedBy": None,
        },
    }


DENIES = {
    "registry-data": deny("deny pull except the cluster", REGISTRY, description="Managed application lock",
                          permissions=[permission(["*"], ["*/read"], ["Microsoft.ContainerRegistry/registries/*"])],
                          exclude=[{"id": PULLER_SP, "type": "ServicePrincipal", "displayName": "aks-puller"}]),
    "group-only-here": deny("resource group, not children", f"/subscriptions/{SUB_ONLINE}/resourceGroups/rg-acr",
                            permissions=[permission(["*/delete"])], child_scopes=False,
                            principals=[{"id": "4c3b2a19-0000-4000-8000-00000000abcd", "type": "Group",
                                         "displayName": "platform-operators"}]),
    "stack-online": deny("Deny assignment for deployment stack 'platform'", f"/subscriptions/{SUB_ONLINE}",
                         permissions=[permission(["*/write", "*/delete"],
                                                 ["*/read", "Microsoft.Authorization/locks/delete"])]),
    "mg-contoso": deny("contoso guard", MG + "mg-contoso", permissions=[permission(["*/delete"])]),
    "mg-online": deny("online guard", MG + "mg-online", permissions=[permission(["*/delete"])]),
    "mg-platform": deny("platform guard", MG + "mg-platform", permissions=[permission(["*/delete"])]),
    "root": deny("root guard", "/", permissions=[permission(["Microsoft.Authorization/*/delete"])]),
    "platform-group": deny("platform rg", f"/subscriptions/{SUB_PLATFORM}/resourceGroups/rg-platform",
                           permissions=[permission(["*/write"])]),
    "other-sub": deny("other", f"/subscriptions/{SUB_OTHER}", permissions=[permission(["*/write"])]),
}
# What each subscription's listing (no filter) returns: at, above and below it.
VISIBLE = {
    SUB_ONLINE: {"registry-data", "group-only-here", "stack-online", "mg-contoso", "mg-online", "root"},
    SUB_PLATFORM: {"mg-contoso", "mg-platform", "root", "platform-group"},
    SUB_OTHER: {"other-sub", "root"},
}
SUBSCRIPTIONS = [subscription_row(SUB_ONLINE, "online", ["mg-online", "mg-contoso", TENANT_ROOT]),
                 subscription_row(SUB_PLATFORM, "platform", ["mg-platform", "mg-contoso", TENANT_ROOT]),
                 subscription_row(SUB_OTHER, "other", ["mg-other", TENANT_ROOT])]


def snapshot_rows():
    rows = [*SUBSCRIPTIONS, *DENIES.values()]
    # As Resource Graph exports it: extra columns and ARM's type spelling, which the emulator must not mind.
    as_exported = dict(DENIES["platform-group"], type="Microsoft.Authorization/denyAssignments",
                       subscriptionId=SUB_PLATFORM, tenantId=TENANT_ROOT, resourceGroup="rg-platform")
    return [as_exported if row is DENIES["platform-group"] else row for row in rows]


def expected(*keys):
    return sorted((DENIES[k] for k in keys), key=lambda r: r["id"].lower())


def names(rows):
    by_id = {r["id"].lower(): key for key, r in DENIES.items()}
    return {by_id[r["id"].lower()] for r in rows}


@pytest.fixture
def emulator(tmp_path):
    started = []
    snapshot = tmp_path / "snapshot.jsonl"
    snapshot.write_text("\n".join(json.dumps(row) for row in snapshot_rows()))

    def start(**kwargs):
        emu = ResourceGraphEmulator(snapshot, ca_out=tmp_path / "ca.pem", **kwargs).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def collector(emu, credential=None, **kwargs):
    kwargs.setdefault("backoff", 0.01)
    return DenyAssignmentCollector(credential or StaticTokenCredential(TOKEN), endpoint=emu.endpoint,
                                   connection_verify=str(emu.ca_path), **kwargs)


def collect(emu, subscriptions, **kwargs):
    pages: list[list[dict]] = []
    coverage = collector(emu, **kwargs).collect([f"/subscriptions/{s}" for s in subscriptions], pages.append)
    return [row for page in pages for row in page], coverage


def sdk_client(emu, **kwargs):
    return AuthorizationManagementClient(StaticTokenCredential(TOKEN), SUB_ONLINE, base_url=emu.endpoint,
                                         connection_verify=str(emu.ca_path), retry_total=0, **kwargs)


# -- rows, visibility, filters ---------------------------------------------------------------------------------

def test_rows_are_what_resource_manager_returned_in_arm_shape_once_each(emulator):
    emu = emulator(deny_page_size=2)
    rows, coverage = collect(emu, [SUB_ONLINE, SUB_PLATFORM])
    assert sorted(rows, key=lambda r: r["id"].lower()) == expected(*VISIBLE[SUB_ONLINE] | VISIBLE[SUB_PLATFORM])
    assert coverage.duplicates == 2  # mg-contoso and root come back for both subscriptions
    assert coverage.rows == len(rows) == len(VISIBLE[SUB_ONLINE] | VISIBLE[SUB_PLATFORM])
    registry_deny = next(r for r in rows if r["properties"]["scope"] == REGISTRY)
    assert registry_deny["properties"]["principals"][0] == {"id": EVERYONE, "type": "SystemDefined",
                                                            "displayName": "Everyone"}
    assert registry_deny["properties"]["excludePrincipals"][0]["id"] == PULLER_SP
    assert registry_deny["properties"]["permissions"][0]["dataActions"] == ["Microsoft.ContainerRegistry/registries/*"]
    assert "condition" in registry_deny["properties"]["permissions"][0]  # nulls survive, unlike SDK models
    group_deny = next(r for r in rows if r["properties"]["denyAssignmentName"] == "resource group, not children")
    assert group_deny["properties"]["doNotApplyToChildScopes"] is True
    assert coverage.gaps == [] and coverage.throttled == 0 and coverage.retries == 0


@pytest.mark.parametrize("subscription", [SUB_ONLINE, SUB_PLATFORM, SUB_OTHER])
def test_a_subscription_sees_its_own_its_ancestors_and_its_descendants_deny_assignments(emulator, subscription):
    emu = emulator()
    rows, _ = collect(emu, [subscription])
    assert names(rows) == VISIBLE[subscription]


def test_another_subscriptions_resource_group_and_management_group_stay_invisible(emulator):
    emu = emulator()
    rows, _ = collect(emu, [SUB_ONLINE])
    assert not {"platform-group", "mg-platform", "other-sub"} & names(rows)
    assert {"mg-contoso", "mg-online", "root"} <= names(rows)


def test_at_scope_filter_is_sent_percent_encoded_and_returns_at_and_above_only(emulator):
    emu = emulator(deny_page_size=2)
    urls = []
    client = sdk_client(emu)
    listing = client.deny_assignments.list_for_scope(f"/subscriptions/{SUB_ONLINE}", filter="atScope()",
                                                     raw_request_hook=lambda request: urls.append(
                                                         request.http_request.url))
    at_and_above = [d.as_dict() for d in listing]
    assert {d["name"] for d in at_and_above} == {DENIES[k]["name"] for k in ("stack-online", "mg-online",
                                                                             "mg-contoso", "root")}
    assert urls[0].endswith("/denyAssignments?api-version=2022-04-01&$filter=atScope%28%29")
    assert len(urls) == 2  # four rows, two per page: the filter is kept on the next link
    at_registry = client.deny_assignments.list_for_scope(REGISTRY, filter="atScope()")
    assert {d.name for d in at_registry} == {DENIES[k]["name"] for k in (
        "registry-data", "group-only-here", "stack-online", "mg-online", "mg-contoso", "root")}


def test_management_group_listing_reaches_subscriptions_and_groups_below_it(emulator):
    emu = emulator()
    client = sdk_client(emu)
    below = {d.name for d in client.deny_assignments.list_for_scope(MG + "mg-contoso")}
    want = VISIBLE[SUB_ONLINE] | VISIBLE[SUB_PLATFORM]  # root above; child groups and their subscriptions below
    assert below == {DENIES[k]["name"] for k in want}
    only_above = {d.name for d in client.deny_assignments.list_for_scope(MG + "mg-contoso", filter="atScope()")}
    assert only_above == {DENIES["mg-contoso"]["name"], DENIES["root"]["name"]}


def test_sdk_models_and_older_api_version_agree_with_the_rows(emulator):
    emu = emulator()
    preview = sdk_client(emu, api_version="2018-07-01-preview").deny_assignments
    rows, _ = collect(emu, [SUB_OTHER])
    listed = {d.id.lower(): d for d in preview.list_for_scope(f"/subscriptions/{SUB_OTHER}")}
    assert set(listed) == {r["id"].lower() for r in rows}
    for row in rows:
        model = listed[row["id"].lower()]
        assert model.deny_assignment_name == row["properties"]["denyAssignmentName"]
        assert model.permissions[0].not_actions == row["properties"]["permissions"][0]["notActions"]


def test_emulator_refuses_unknown_api_versions_and_filters(emulator):
    emu = emulator()
    url = f"{emu.endpoint}/subscriptions/{SUB_ONLINE}/providers/Microsoft.Authorization/denyAssignments"
    headers = {"Authorization": "Bearer x"}
    old = requests.get(url, params={"api-version": "2015-07-01"}, headers=headers, verify=str(emu.ca_path))
    assert old.status_code == 400 and old.json()["error"]["code"] == "InvalidApiVersionParameter"
    missing = requests.get(url, headers=headers, verify=str(emu.ca_path))
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"
    unsupported = requests.get(url, params={"api-version": "2022-04-01", "$filter": "principalId eq 'x'"},
                               headers=headers, verify=str(emu.ca_path))
    assert unsupported.status_code == 400
    root = requests.get(f"{emu.endpoint}/providers/Microsoft.Authorization/denyAssignments",
                        params={"api-version": "2022-04-01", "$filter": "atScope()"}, headers=headers,
                        verify=str(emu.ca_path))
    assert [d["name"] for d in root.json()["value"]] == [DENIES["root"]["name"]]
    assert root.json()["value"][0]["type"] == "Microsoft.Authorization/denyAssignments"


# -- paging, pacing and failures ------------------------------------------------------------------------------

@pytest.mark.parametrize("page_size", [1, 2, 4])
def test_every_page_is_followed_and_every_request_counted(emulator, page_size):
    emu = emulator(deny_page_size=page_size)
    rows, coverage = collect(emu, [SUB_ONLINE, SUB_PLATFORM, SUB_OTHER], concurrency=2)
    pages = sum(math.ceil(len(VISIBLE[s]) / page_size) for s in VISIBLE)
    assert coverage.pages == pages == emu.stats.deny_pages
    assert coverage.requests == pages == emu.stats.deny_requests
    assert names(rows) == set().union(*VISIBLE.values())
    assert emu.stats.requests == 0  # nothing went to Resource Graph


def test_throttling_waits_for_retry_after_and_recovers(emulator):
    emu = emulator(deny_page_size=2, faults=Faults(throttle_first=2))
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        time.sleep(seconds)

    rows, coverage = collect(emu, [SUB_ONLINE], concurrency=1, sleep=sleep)
    assert names(rows) == VISIBLE[SUB_ONLINE] and coverage.gaps == []
    assert coverage.throttled == 2 == emu.stats.deny_throttled
    assert len(waits) == 2 and all(0.9 <= w <= 1.1 for w in waits)  # Retry-After: 1, plus a little jitter
    assert coverage.seconds >= 1.8
    assert coverage.requests == emu.stats.deny_requests == coverage.pages + 2


def test_a_dropped_connection_is_counted_and_retried(emulator):
    emu = emulator(deny_page_size=3, faults=Faults(reset_first=1))
    rows, coverage = collect(emu, [SUB_ONLINE], concurrency=1)
    assert names(rows) == VISIBLE[SUB_ONLINE] and coverage.gaps == []
    assert emu.stats.deny_resets == 1 and coverage.retries == 1
    assert coverage.requests == emu.stats.deny_requests == coverage.pages + 1


def test_a_failing_scope_becomes_a_gap_and_the_others_still_arrive(emulator):
    failing = f"/subscriptions/{SUB_PLATFORM}"
    emu = emulator(faults=Faults(fail_scopes={failing.upper()}))
    rows, coverage = collect(emu, [SUB_ONLINE, SUB_PLATFORM], max_attempts=3)
    assert names(rows) == VISIBLE[SUB_ONLINE]
    [gap] = coverage.gaps
    assert gap.query == "deny_assignments" and gap.types == (ROW_TYPE,) and gap.subscriptions == {SUB_PLATFORM}
    assert gap.reason.startswith(failing) and "HTTP 500" in gap.reason and "after 3 attempts" in gap.reason
    assert gap.covers(ROW_TYPE, {SUB_PLATFORM}) and not gap.covers(ROW_TYPE, {SUB_ONLINE})
    assert emu.stats.deny_per_scope[failing] == 3 and coverage.retries == 2
    assert "INCOMPLETE: 1 scope(s) failed" in coverage.summary_line()
    assert coverage.as_dict()["gaps"] == [gap.to_dict()]


def test_missing_read_permission_is_a_gap_naming_it_not_retried(emulator):
    emu = emulator(faults=Faults(forbid_deny_assignments=True))
    rows, coverage = collect(emu, [SUB_ONLINE, SUB_PLATFORM])
    assert rows == []
    assert sorted(sub for g in coverage.gaps for sub in g.subscriptions) == [SUB_ONLINE, SUB_PLATFORM]
    for gap in coverage.gaps:
        assert "HTTP 403 AuthorizationFailed" in gap.reason
        assert "lacks Microsoft.Authorization/denyAssignments/read" in gap.reason
    assert coverage.requests == emu.stats.deny_forbidden == 2 and coverage.retries == 0


def test_a_management_group_scope_that_fails_leaves_a_gap_for_every_subscription(emulator):
    emu = emulator(faults=Faults(fail_scopes={MG + "mg-contoso"}))
    coverage = collector(emu, max_attempts=1).collect([MG + "mg-contoso"], lambda rows: None)
    [gap] = coverage.gaps
    assert gap.subscriptions == frozenset() and gap.covers(ROW_TYPE, {SUB_OTHER})


def test_rejected_credential_raises_instead_of_recording_gaps(emulator):
    emu = emulator()
    rejected = collector(emu, credential=StaticTokenCredential(""))
    with pytest.raises(ClientAuthenticationError, match="HTTP 401 AuthenticationFailed") as error:
        rejected.collect([f"/subscriptions/{s}" for s in VISIBLE], lambda rows: None)
    assert "deny assignments" in str(error.value)
    assert emu.stats.deny_requests <= len(VISIBLE)  # no retries of a 401


def test_an_untrusted_certificate_is_not_retried(emulator, tmp_path):
    emu = emulator()
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    untrusting = DenyAssignmentCollector(StaticTokenCredential(TOKEN), endpoint=emu.endpoint,
                                         connection_verify=str(stranger), backoff=0.01)
    coverage = untrusting.collect([f"/subscriptions/{SUB_ONLINE}"], lambda rows: None)
    [gap] = coverage.gaps
    assert "certificate" in gap.reason and coverage.retries == 0 and coverage.requests == 1
    assert emu.stats.deny_requests == 0


def test_tokens_never_reach_logs_rows_or_messages(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emu = emulator(deny_page_size=1, faults=Faults(fail_scopes={f"/subscriptions/{SUB_PLATFORM}"}, throttle_first=1))
    messages = []
    rows, coverage = collect(emu, [SUB_ONLINE, SUB_PLATFORM], progress=messages.append, max_attempts=2,
                             sleep=lambda _seconds: None)
    text = "\n".join([*messages, caplog.text, json.dumps(rows), json.dumps(coverage.as_dict()),
                      coverage.summary_line()])
    assert messages and caplog.records  # there was something to leak into
    assert TOKEN not in text and "ZGVueS1zZWNyZXQtc2lnbmF0dXJl" not in text


# -- the emulator still serves Resource Graph; its command line ---------------------------------------------

def test_the_same_server_still_answers_resource_graph(emulator):
    emu = emulator(faults=Faults(throttle_first=1))
    collect(emu, [SUB_ONLINE], sleep=lambda _s: None)  # the deny listing's throttle is its own
    client = ResourceGraphClient(StaticTokenCredential(TOKEN), base_url=emu.endpoint,
                                 connection_verify=str(emu.ca_path), retry_total=0)
    with pytest.raises(HttpResponseError, match="RateLimiting"):
        client.resources(QueryRequest(query=collector_queries()["subscriptions"].text,
                                      options=QueryRequestOptions(result_format="objectArray")))
    answer = client.resources(QueryRequest(query=collector_queries()["subscriptions"].text,
                                           options=QueryRequestOptions(result_format="objectArray")))
    assert sorted(r["subscriptionId"] for r in answer.data) == sorted(VISIBLE)
    assert emu.stats.requests == 2 and emu.stats.deny_throttled == 1
    assert emu.stats.as_dict()["denyAssignments"]["requests"] == emu.stats.deny_requests > 0


def test_command_line_flags_configure_the_deny_endpoint(tmp_path):
    snapshot = tmp_path / "snapshot.jsonl"
    snapshot.write_text("\n".join(json.dumps(row) for row in snapshot_rows()))
    args = emulator_cli.parser().parse_args([
        "arg", "--snapshot", str(snapshot), "--deny-page-size", "3", "--forbid-deny-assignments",
        "--fail-deny-scope", f"/subscriptions/{SUB_ONLINE.upper()}", "--fail-deny-scope", MG + "mg-Other"])
    emu = emulator_cli.services()["arg"].build(args)
    assert emu.deny_page_size == 3 and emu.faults.forbid_deny_assignments
    assert emu.faults.fail_scopes == {f"/subscriptions/{SUB_ONLINE}", (MG + "mg-other").lower()}
    assert emulator_cli.parser().parse_args(["arg", "--demo"]).forbid_deny_assignments is False


def test_each_scope_is_listed_once_however_it_is_spelled(emulator):
    emu = emulator()
    coverage = collector(emu).collect([f"/subscriptions/{SUB_OTHER}", f"subscriptions/{SUB_OTHER.upper()}/", " "],
                                      lambda rows: None)
    assert coverage.scopes == 1 and emu.stats.deny_requests == 1 and coverage.rows == len(VISIBLE[SUB_OTHER])
