"""The Microsoft Graph source: the real GraphCollector over HTTPS against the Graph emulator."""

import base64
import http.client
import json
import logging
import ssl
import threading

import pytest
import trustme
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from auditors.sources.credentials import StaticTokenCredential
from auditors.sources.graph import GraphCollector
from emulators import cli
from emulators.graph import GraphEmulator, GraphFaults

SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZQ"


def jwt(audience: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'typ': 'JWT'})}.{part({'aud': audience, 'exp': 4102444800})}.{SIGNATURE}"


TOKEN = jwt("https://graph.microsoft.com")  # a fake token, never to be logged


def guid(kind: int, number: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{number:012x}"


SP_DEEP, SP_DIRECT, SP_LONE, SP_CYCLE, SP_CLUSTER, SP_MI = (guid(1, n) for n in range(1, 7))
APP_DEEP, APP_CLUSTER, APP_MI, APP_GONE = guid(2, 1), guid(2, 5), guid(2, 6), guid(2, 99)
OUTER, MIDDLE, INNER, LOOP_A, LOOP_B, FLAT, GONE = (guid(3, n) for n in (1, 2, 3, 4, 5, 6, 99))
USER_1, USER_2 = guid(9, 1), guid(9, 2)
SECRET_TEXT, HINT, CUSTOM_KEY_ID, CERTIFICATE = "s3cr3t-value-never-served", "Zq8", "Y3VzdG9tLWtleQ", "MIIC-pub-key"


def service_principal(object_id: str, app_id: str, name: str, kind: str = "Application") -> dict:
    return {"type": "microsoft.graph/serviceprincipals", "id": object_id, "appId": app_id, "displayName": name,
            "servicePrincipalType": kind}


def group(object_id: str, name: str, **members) -> dict:
    return {"type": "microsoft.graph/groups", "id": object_id, "displayName": name, **members}


DIRECTORY = [
    service_principal(SP_DEEP, APP_DEEP, "deep"),
    service_principal(SP_DIRECT, guid(2, 2), "direct"),
    service_principal(SP_LONE, guid(2, 3), "lone"),
    service_principal(SP_CYCLE, guid(2, 4), "cycle"),
    service_principal(SP_CLUSTER, APP_CLUSTER, "aks-cluster-sp"),
    service_principal(SP_MI, APP_MI, "kubelet-identity", "ManagedIdentity"),
    group(OUTER, "acr-pullers", members=[MIDDLE, SP_DIRECT, USER_1]),
    group(MIDDLE, "platform", members=[INNER]),
    group(INNER, "team", members=[SP_DEEP, USER_2]),
    group(LOOP_A, "loop-a", members=[LOOP_B, SP_CYCLE]),
    group(LOOP_B, "loop-b", members=[LOOP_A]),
    group(FLAT, "flattened", transitiveMembers=[SP_LONE, USER_1]),
    {"type": "microsoft.graph/applications", "id": guid(4, 5), "appId": APP_CLUSTER, "displayName": "aks-cluster-sp",
     "passwordCredentials": [{"keyId": guid(5, 1), "displayName": "rotated", "startDateTime": "2025-01-01T00:00:00Z",
                              "endDateTime": "2026-01-01T10:20:30.1234567Z", "hint": HINT, "secretText": SECRET_TEXT,
                              "customKeyIdentifier": CUSTOM_KEY_ID}],
     "keyCredentials": [{"keyId": guid(5, 2), "displayName": "CN=aks", "startDateTime": "2025-02-01T00:00:00Z",
                         "endDateTime": "2027-02-01T00:00:00Z", "type": "AsymmetricX509Cert", "usage": "Verify",
                         "key": CERTIFICATE, "customKeyIdentifier": CUSTOM_KEY_ID}]},
]
EXPECTED_MEMBERS = {OUTER: {SP_DEEP, SP_DIRECT}, MIDDLE: {SP_DEEP}, INNER: {SP_DEEP}, LOOP_A: {SP_CYCLE},
                    LOOP_B: {SP_CYCLE}, FLAT: {SP_LONE}}


def many_groups(count: int = 25, per_group: int = 5, pool: int = 40) -> tuple[list[dict], dict[str, set[str]]]:
    """`count` groups, each with `per_group` of `pool` service principals (shared between groups)."""
    principals = [service_principal(guid(6, n), guid(7, n), f"sp-{n}") for n in range(pool)]
    groups, expected = [], {}
    for index in range(count):
        members = [principals[(index + k) % pool]["id"] for k in range(per_group)]
        groups.append(group(guid(8, index), f"group-{index}", members=[*members, guid(9, 100 + index)]))
        expected[guid(8, index)] = set(members)
    return principals + groups, expected


@pytest.fixture
def emulator(tmp_path):
    started = []

    def start(rows=None, *, built=None, **kwargs):
        if built is None:
            snapshot = tmp_path / f"graph-{len(started)}.json"
            snapshot.write_text(json.dumps(DIRECTORY if rows is None else rows))
            built = GraphEmulator(snapshot, ca_out=tmp_path / f"ca-{len(started)}.pem", **kwargs)
        started.append(built.start())
        return built

    yield start
    for emu in started:  # stop() waits out serve_forever's 0.5 s poll: let that happen behind the next tests
        threading.Thread(target=emu.stop, daemon=True).start()


def collector(emu, credential=None, **kwargs) -> GraphCollector:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("sleep", lambda _seconds: None)
    kwargs.setdefault("endpoint", emu.endpoint)
    kwargs.setdefault("connection_verify", str(emu.ca_path))
    return GraphCollector(credential or StaticTokenCredential(TOKEN), **kwargs)


def collect(emu, groups=(), apps=(), **kwargs):
    rows: dict[str, list[dict]] = {"groups": [], "serviceprincipals": [], "applications": []}

    def sink(kind, batch):
        assert all(row["type"] == f"microsoft.graph/{kind}" for row in batch)
        rows[kind].extend(batch)

    coverage = collector(emu, **kwargs).collect(groups, apps, sink)
    return rows, coverage


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["id"]: row for row in rows}


def members(rows: dict[str, list[dict]]) -> dict[str, set[str]]:
    return {row["id"]: set(row["transitiveMembers"]) for row in rows["groups"] if "transitiveMembers" in row}


def raw(emu, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    """One request with no client library in between (to see what the emulator refuses)."""
    context = ssl.create_default_context(cafile=str(emu.ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", emu.port, context=context, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=data, headers={"Authorization": f"Bearer {TOKEN}",
                                                         "Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    payload = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, payload


CAST = "/groups/{}/transitiveMembers/microsoft.graph.servicePrincipal?$count=true&$select=id,appId"


# -- membership ---------------------------------------------------------------------------------------
def test_nested_groups_resolve_to_their_transitive_service_principals_and_nothing_else(emulator):
    emu = emulator()
    rows, coverage = collect(emu, groups=list(EXPECTED_MEMBERS), apps=[APP_DEEP])
    assert members(rows) == EXPECTED_MEMBERS  # three levels deep, cycles, flattened lists; users never
    assert SP_DEEP in members(rows)[OUTER] and SP_LONE not in members(rows)[OUTER]
    assert by_id(rows["groups"])[OUTER]["displayName"] == "acr-pullers"
    sp_ids = [row["id"] for row in rows["serviceprincipals"]]
    assert sorted(sp_ids) == sorted({SP_DEEP, SP_DIRECT, SP_LONE, SP_CYCLE})  # each once, though seen 4 times
    assert by_id(rows["serviceprincipals"])[SP_DEEP] == {
        "type": "microsoft.graph/serviceprincipals", "id": SP_DEEP, "appId": APP_DEEP, "displayName": "deep",
        "servicePrincipalType": "Application"}
    assert coverage.gaps == [] and coverage.permissions == {"GroupMember.Read.All": True,
                                                            "Application.Read.All": True}
    assert emu.stats.per_path["$batch"] == emu.stats.requests == coverage.requests  # no GET outside $batch


def test_more_than_20_groups_over_many_pages_take_several_batches(emulator):
    directory, expected = many_groups(count=25, per_group=5)
    emu = emulator(directory, page_size=2)
    rows, coverage = collect(emu, groups=list(expected))
    assert members(rows) == expected
    assert emu.stats.per_path["groups/{id}/transitiveMembers"] == 25 * 3  # 5 members in pages of 2
    assert coverage.batches == emu.stats.batches >= 5  # 100 items, at most 20 per batch
    assert coverage.items == emu.stats.items == 100 and coverage.requests == emu.stats.requests
    assert len(rows["serviceprincipals"]) == len({sp for group in expected.values() for sp in group})
    assert coverage.gaps == []


def test_collected_rows_serve_again_as_a_snapshot(emulator):
    first, _ = collect(emulator(), groups=list(EXPECTED_MEMBERS), apps=[APP_CLUSTER, APP_MI])
    replayed = [row for kind in first.values() for row in kind]
    again, coverage = collect(emulator(replayed, page_size=1), groups=list(EXPECTED_MEMBERS),
                              apps=[APP_CLUSTER, APP_MI])
    assert coverage.gaps == []
    for kind in first:
        assert sorted(map(json.dumps, again[kind])) == sorted(map(json.dumps, first[kind])), kind


# -- throttling, failures -----------------------------------------------------------------------------
def test_throttled_batch_items_wait_retry_after_and_recover(emulator):
    emu = emulator(faults=GraphFaults(throttle_items=3, retry_after=1))
    waits: list[float] = []
    rows, coverage = collect(emu, groups=list(EXPECTED_MEMBERS), apps=[APP_CLUSTER], sleep=waits.append)
    assert members(rows) == EXPECTED_MEMBERS and coverage.gaps == []
    assert coverage.throttled == emu.stats.throttled == 3 and coverage.retries == 3
    assert waits and all(0.9 <= w <= 1.0 for w in waits)  # Retry-After: 1


def test_throttled_whole_batches_wait_and_recover(emulator):
    emu = emulator(faults=GraphFaults(throttle_requests=2, retry_after=1))
    waits: list[float] = []
    rows, coverage = collect(emu, groups=list(EXPECTED_MEMBERS), concurrency=1, sleep=waits.append)
    assert members(rows) == EXPECTED_MEMBERS and coverage.gaps == []
    assert coverage.throttled == emu.stats.throttled == 2
    assert coverage.requests == emu.stats.requests == coverage.batches + 2
    assert len(waits) == 2 and sum(waits) >= 1.9


def test_retry_after_is_capped_by_max_throttle_wait(emulator):
    emu = emulator(faults=GraphFaults(throttle_requests=1, retry_after=300))
    waits: list[float] = []
    rows, coverage = collect(emu, groups=[OUTER], max_throttle_wait=0.5, sleep=waits.append)
    assert members(rows) == {OUTER: EXPECTED_MEMBERS[OUTER]} and coverage.throttled == 1
    assert len(waits) == 1 and 0.4 < waits[0] <= 0.5


def test_a_failing_group_becomes_a_gap_after_bounded_retries_and_the_rest_resolves(emulator):
    emu = emulator(faults=GraphFaults(failing_groups={OUTER}))
    rows, coverage = collect(emu, groups=list(EXPECTED_MEMBERS), max_attempts=3)
    assert coverage.gaps == [f"group {OUTER}: HTTP 503 serviceNotAvailable after 3 attempts"]
    assert by_id(rows["groups"])[OUTER] == {"type": "microsoft.graph/groups", "id": OUTER}  # not resolved
    assert members(rows) == {g: m for g, m in EXPECTED_MEMBERS.items() if g != OUTER}
    assert emu.stats.errors == 2 * 3  # its name and its members, three attempts each
    assert coverage.retries == 2 * 2


def test_dropped_connections_are_retried_and_counted(emulator):
    emu = emulator(faults=GraphFaults(reset_requests=2))
    rows, coverage = collect(emu, groups=list(EXPECTED_MEMBERS), concurrency=1)
    assert members(rows) == EXPECTED_MEMBERS and coverage.gaps == []
    assert coverage.requests == emu.stats.requests == coverage.batches + 2


def test_an_untrusted_certificate_is_not_retried(emulator, tmp_path):
    emu = emulator()
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    waits: list[float] = []
    rows, coverage = collect(emu, groups=[OUTER, INNER], apps=[APP_CLUSTER], sleep=waits.append,
                             connection_verify=str(tmp_path / "other-ca.pem"))
    assert coverage.requests == 1 and emu.stats.requests == 0 and waits == []
    [gap] = coverage.gaps
    assert "certificate" in gap and "2 group(s)" in gap and "1 appId(s)" in gap
    assert rows["groups"] and not any("transitiveMembers" in row for row in rows["groups"])


# -- permissions --------------------------------------------------------------------------------------
def test_missing_group_member_permission_stops_group_calls_but_not_lookups(emulator):
    directory, expected = many_groups(count=25)
    emu = emulator([*DIRECTORY, *directory], faults=GraphFaults(denied_permissions={"GroupMember.Read.All"}))
    rows, coverage = collect(emu, groups=list(expected), apps=[APP_CLUSTER], concurrency=1)
    assert len(rows["groups"]) == 25
    assert not any("transitiveMembers" in row or "displayName" in row for row in rows["groups"])
    assert coverage.permissions == {"GroupMember.Read.All": False, "Application.Read.All": True}
    assert emu.stats.forbidden == 20  # the first batch; the 30 group calls after it were never sent
    assert by_id(rows["serviceprincipals"])[SP_CLUSTER]["appId"] == APP_CLUSTER
    assert [row["appId"] for row in rows["applications"]] == [APP_CLUSTER]
    [gap] = coverage.gaps
    assert "GroupMember.Read.All not granted" in gap and "25 group(s)" in gap


def test_missing_application_permission_leaves_lookups_unresolved_and_groups_resolved(emulator):
    emu = emulator(faults=GraphFaults(denied_permissions={"Application.Read.All"}))
    rows, coverage = collect(emu, groups=list(EXPECTED_MEMBERS), apps=[APP_CLUSTER, APP_MI, APP_GONE])
    assert members(rows) == EXPECTED_MEMBERS
    assert coverage.permissions == {"GroupMember.Read.All": True, "Application.Read.All": False}
    assert rows["applications"] == [] and SP_CLUSTER not in by_id(rows["serviceprincipals"])
    assert not any(row.get("notFound") for row in rows["serviceprincipals"])  # unknown is not "does not exist"
    assert "applications(appId)" not in emu.stats.per_path
    [gap] = coverage.gaps
    assert "Application.Read.All not granted" in gap and "3 appId(s)" in gap


# -- lookups ------------------------------------------------------------------------------------------
def test_deleted_service_principal_and_deleted_group_are_recorded_as_not_found(emulator):
    emu = emulator()
    rows, coverage = collect(emu, groups=[GONE, INNER], apps=[APP_GONE])
    assert {"type": "microsoft.graph/groups", "id": GONE, "notFound": True} in rows["groups"]
    assert {"type": "microsoft.graph/serviceprincipals", "id": None, "appId": APP_GONE,
            "notFound": True} in rows["serviceprincipals"]
    assert rows["applications"] == [] and "applications(appId)" not in emu.stats.per_path
    assert coverage.gaps == []


def test_application_credentials_keep_their_dates_and_never_secret_material(emulator):
    emu = emulator()
    rows, _ = collect(emu, apps=[APP_CLUSTER])
    [application] = rows["applications"]
    assert application["passwordCredentials"] == [
        {"keyId": guid(5, 1), "displayName": "rotated", "startDateTime": "2025-01-01T00:00:00Z",
         "endDateTime": "2026-01-01T10:20:30.1234567Z"}]
    assert application["keyCredentials"] == [
        {"keyId": guid(5, 2), "displayName": "CN=aks", "startDateTime": "2025-02-01T00:00:00Z",
         "endDateTime": "2027-02-01T00:00:00Z", "type": "AsymmetricX509Cert", "usage": "Verify"}]
    served = raw(emu, "GET", f"/v1.0/applications(appId='{APP_CLUSTER}')")[1]
    assert served["passwordCredentials"][0]["hint"] == HINT and served["keyCredentials"][0]["key"] == CERTIFICATE
    text = json.dumps(rows)
    for material in (SECRET_TEXT, HINT, CUSTOM_KEY_ID, CERTIFICATE, "secretText", "hint", '"key"'):
        assert material not in text


def test_managed_identity_has_a_service_principal_but_no_application(emulator):
    emu = emulator()
    rows, coverage = collect(emu, apps=[APP_MI])
    assert [row["servicePrincipalType"] for row in rows["serviceprincipals"]] == ["ManagedIdentity"]
    assert rows["applications"] == [{"type": "microsoft.graph/applications", "appId": APP_MI, "notFound": True}]
    assert coverage.permissions["Application.Read.All"] is True and coverage.gaps == []


def test_ids_that_are_not_guids_are_never_pasted_into_a_url(emulator):
    emu = emulator()
    rows, coverage = collect(emu, groups=["../applications", INNER], apps=["x') or 1 eq 1 or ('"])
    assert members(rows) == {INNER: {SP_DEEP}}
    assert len(coverage.gaps) == 2 and all("not a GUID" in gap for gap in coverage.gaps)
    assert set(emu.stats.per_path) == {"$batch", "groups/{id}", "groups/{id}/transitiveMembers"}


# -- credential ---------------------------------------------------------------------------------------
class AudienceCredential:
    """Issues a token for whatever scope is asked, and remembers the scopes."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_kwargs) -> AccessToken:
        self.scopes += scopes
        return AccessToken(jwt(scopes[0].removesuffix("/.default")), 4102444800)


def test_the_token_is_requested_for_the_configured_endpoint(emulator):
    emu = emulator(check_audience=True)
    credential = AudienceCredential()
    rows, coverage = collect(emu, groups=[INNER], credential=credential, endpoint=emu.endpoint + "/")
    assert set(credential.scopes) == {f"{emu.endpoint}/.default"}
    assert members(rows) == {INNER: {SP_DEEP}} and coverage.gaps == []


def test_a_rejected_credential_raises_without_the_token(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emu = emulator(check_audience=True)
    token = jwt("https://management.azure.com")  # a token for the wrong API
    messages: list[str] = []
    with pytest.raises(ClientAuthenticationError) as rejected:
        collect(emu, groups=[OUTER], apps=[APP_CLUSTER], credential=StaticTokenCredential(token),
                progress=messages.append)
    text = str(rejected.value)
    assert "401" in text and "InvalidAuthenticationToken" in text and "Invalid audience" in text
    for where in (text, repr(rejected.value), caplog.text, "\n".join(messages)):
        assert token not in where and SIGNATURE not in where


# -- the emulator's protocol --------------------------------------------------------------------------
def test_emulator_refuses_the_cast_without_consistency_level_and_count(emulator):
    emu = emulator()
    path = "/v1.0" + CAST.format(OUTER)
    status, body = raw(emu, "GET", path)
    assert status == 400 and body["error"]["code"] == "Request_UnsupportedQuery"
    status, _ = raw(emu, "GET", path.replace("$count=true&", ""), headers={"ConsistencyLevel": "eventual"})
    assert status == 400
    status, body = raw(emu, "GET", path.replace("microsoft.graph.", "graph."), headers={"ConsistencyLevel": "eventual"})
    assert status == 200 and body["@odata.count"] == 2 and {m["id"] for m in body["value"]} == {SP_DEEP, SP_DIRECT}
    item = {"id": "1", "method": "GET", "url": CAST.format(OUTER)}
    status, body = raw(emu, "POST", "/v1.0/$batch", {"requests": [item]},
                       headers={"ConsistencyLevel": "eventual"})  # on the batch, not on the item: not enough
    assert status == 200 and body["responses"][0]["status"] == 400


def test_emulator_pages_with_absolute_next_links_and_graph_404s(emulator):
    emu = emulator(page_size=1)
    status, body = raw(emu, "GET", "/v1.0" + CAST.format(OUTER) + "&$top=999", headers={"ConsistencyLevel": "eventual"})
    assert status == 200 and len(body["value"]) == 1 and body["@odata.count"] == 2
    assert body["@odata.nextLink"].startswith(f"{emu.endpoint}/v1.0/groups/{OUTER}/") and "$skiptoken=" in body[
        "@odata.nextLink"]
    status, body = raw(emu, "GET", "/v1.0" + CAST.format(GONE), headers={"ConsistencyLevel": "eventual"})
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}


def test_emulator_batch_limits(emulator):
    emu = emulator()
    item = {"method": "GET", "url": f"/groups/{OUTER}"}
    assert raw(emu, "POST", "/v1.0/$batch", {"requests": [{**item, "id": str(n)} for n in range(21)]})[0] == 400
    assert raw(emu, "POST", "/v1.0/$batch", {"requests": [{**item, "id": "1"}, {**item, "id": "1"}]})[0] == 400
    absolute = {**item, "id": "1", "url": f"{emu.endpoint}/v1.0/groups/{OUTER}"}
    assert raw(emu, "POST", "/v1.0/$batch", {"requests": [absolute]})[0] == 400
    status, body = raw(emu, "POST", "/v1.0/$batch", {"requests": [{**item, "id": str(n)} for n in range(20)]})
    assert status == 200 and sorted(int(r["id"]) for r in body["responses"]) == list(range(20))
    assert raw(emu, "GET", f"/v1.0/groups/{OUTER}", headers={"Authorization": "Bearer "})[0] == 401


def test_emulator_command_line_builds_the_faults(emulator, tmp_path):
    snapshot = tmp_path / "directory.json"
    snapshot.write_text(json.dumps(DIRECTORY))
    args = cli.parser().parse_args(["graph", "--snapshot", str(snapshot), "--ca-out", str(tmp_path / "ca.pem"),
                                    "--throttle", "1", "--page-size", "1",
                                    "--deny-permission", "Application.Read.All", "--fail-group", LOOP_A.upper()])
    emu = emulator(built=cli.services()["graph"].build(args))
    rows, coverage = collect(emu, groups=[OUTER, LOOP_A], apps=[APP_CLUSTER], max_attempts=2)
    assert members(rows) == {OUTER: EXPECTED_MEMBERS[OUTER]}
    assert emu.stats.per_path["groups/{id}/transitiveMembers"] == 2 + 2  # OUTER in two pages; LOOP_A twice
    assert coverage.throttled == 1 and coverage.permissions["Application.Read.All"] is False
    assert any(gap.startswith(f"group {LOOP_A}: HTTP 503") for gap in coverage.gaps)
