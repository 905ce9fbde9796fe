"""Classifying kubelet pull failures and aggregating Container Insights rows per cluster and registry."""

from datetime import UTC, datetime, timedelta

import pytest

from auditors.observed import (
    ACCESS_CLASSES,
    FORBIDDEN,
    NAME_RESOLUTION,
    NOT_FOUND,
    OTHER,
    THROTTLED,
    UNAUTHORIZED,
    UNREACHABLE,
    ObservedPulls,
    classify,
    image_of_message,
    image_registry,
    inventory_image,
    is_acr,
    parse_time,
)

ACR = "contosoacr.azurecr.io"
IMAGE = f"{ACR}/team/api:1.4.2"


def containerd(image: str, detail: str, code: str = "Unknown") -> str:
    """The kubelet's Warning `Failed` message around a containerd error, as KubeEvents stores it."""
    return (f'Failed to pull image "{image}": rpc error: code = {code} desc = failed to pull and unpack image '
            f'"{image}": failed to resolve reference "{image}": {detail}')


def docker(image: str, detail: str) -> str:
    """The same from the Docker runtime (older AKS node images)."""
    return f'Failed to pull image "{image}": rpc error: code = Unknown desc = Error response from daemon: {detail}'


TOKEN_URL = f"https://{ACR}/oauth2/token?scope=repository%3Ateam%2Fapi%3Apull&service={ACR}"
MANIFEST = f"https://{ACR}/v2/team/api/manifests/1.4.2"
# (class, client IP ACR reports, message): several real-world spellings per class (facts §3.2-3.3).
MESSAGES = [
    (UNAUTHORIZED, None, containerd(IMAGE, "failed to authorize: failed to fetch oauth token: unexpected status: "
                                           "401 Unauthorized")),
    (UNAUTHORIZED, None, containerd(IMAGE, "failed to authorize: failed to fetch anonymous token: unexpected "
                                           f"status from GET request to {TOKEN_URL}: 401 Unauthorized")),
    (UNAUTHORIZED, None, docker(IMAGE, f'Get "https://{ACR}/v2/team/api/manifests/1.4.2": unauthorized: '
                                       "authentication required, visit https://aka.ms/acr/authorization for more "
                                       "information.")),
    (UNAUTHORIZED, None, containerd(IMAGE, f"unexpected status from HEAD request to {MANIFEST}: 401 Unauthorized")),
    (FORBIDDEN, None, containerd(IMAGE, "failed to authorize: failed to fetch anonymous token: unexpected status: "
                                        "403 Forbidden")),
    (FORBIDDEN, "20.51.7.19", containerd(IMAGE, f"unexpected status from HEAD request to {MANIFEST}: 403 Forbidden: "
                                                "denied: client with IP '20.51.7.19' is not allowed access. Refer "
                                                "https://aka.ms/acr/firewall to grant access.")),
    (FORBIDDEN, "52.170.3.4", docker(IMAGE, f'Head "{MANIFEST}": denied: client with IP \'52.170.3.4\' is not '
                                            "allowed access. Refer https://aka.ms/acr/firewall to grant access.")),
    (FORBIDDEN, "4.4.4.4", containerd(IMAGE, '{"errors":[{"code":"DENIED","message":"client with IP \'4.4.4.4\' is '
                                             'not allowed access. Refer https://aka.ms/acr/firewall to grant '
                                             'access."}]}')),
    (NAME_RESOLUTION, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": dial tcp: lookup {ACR} on '
                                              "168.63.129.16:53: no such host")),
    (NAME_RESOLUTION, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": dial tcp: lookup '
                                              "contosoacr.privatelink.azurecr.io on 10.0.0.10:53: server misbehaving")),
    (NAME_RESOLUTION, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": dial tcp: lookup {ACR} on '
                                              "10.0.0.10:53: read udp 10.224.0.4:45530->10.0.0.10:53: i/o timeout")),
    (NAME_RESOLUTION, None, docker(IMAGE, f'Get "https://{ACR}/v2/": dial tcp: lookup {ACR}: Temporary failure in '
                                          "name resolution")),
    (UNREACHABLE, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": dial tcp 10.20.1.4:443: '
                                          "i/o timeout")),
    (UNREACHABLE, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": dial tcp 20.62.1.8:443: '
                                          "connect: connection refused")),
    (UNREACHABLE, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": read tcp '
                                          "10.224.0.5:51234->20.62.1.8:443: read: connection reset by peer")),
    (UNREACHABLE, None, docker(IMAGE, f'Get "https://{ACR}/v2/": net/http: TLS handshake timeout')),
    (UNREACHABLE, None, docker(IMAGE, f'Get "https://{ACR}/v2/": net/http: request canceled while waiting for '
                                      "connection (Client.Timeout exceeded while awaiting headers)")),
    (UNREACHABLE, None, containerd(IMAGE, f'failed to do request: Head "{MANIFEST}": tls: failed to verify '
                                          "certificate: x509: certificate signed by unknown authority")),
    (NOT_FOUND, None, containerd(f"{ACR}/team/api:9.9.9", f"{ACR}/team/api:9.9.9: not found", code="NotFound")),
    (NOT_FOUND, None, docker(f"{ACR}/team/api:9.9.9", f"manifest for {ACR}/team/api:9.9.9 not found: manifest "
                                                      'unknown: manifest tagged by "9.9.9" is not found')),
    (NOT_FOUND, None, containerd(IMAGE, f"unexpected status from HEAD request to {MANIFEST}: 404 Not Found")),
    (NOT_FOUND, None, docker(IMAGE, "NAME_UNKNOWN: repository name not known to registry")),
    (THROTTLED, None, containerd(IMAGE, "toomanyrequests: Too many requests. Please visit "
                                        "https://aka.ms/acr/skus for more information.")),
    (THROTTLED, None, containerd("nginx:1.25", "failed to copy: httpReadSeeker: failed open: unexpected status code "
                                               "https://registry-1.docker.io/v2/library/nginx/manifests/sha256:0a1b: "
                                               "429 Too Many Requests - Server message: toomanyrequests: You have "
                                               "reached your pull rate limit.")),
    (THROTTLED, None, f'Failed to pull image "{IMAGE}": pull QPS exceeded.'),
    (OTHER, None, containerd(IMAGE, "no match for platform in manifest: not found", code="NotFound")),
    (OTHER, None, f'Failed to pull image "{IMAGE}": rpc error: code = DeadlineExceeded desc = context deadline '
                  "exceeded"),
    (OTHER, None, containerd(IMAGE, "failed to copy: read tcp: unexpected end of stream")),
]


@pytest.mark.parametrize(("expected", "client_ip", "message"), MESSAGES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(MESSAGES)])
def test_classifies_realistic_kubelet_messages(expected, client_ip, message):
    assert classify(message) == (expected, client_ip)


def test_every_class_has_several_variants():
    classes = [c for c, _, _ in MESSAGES]
    assert {c: classes.count(c) for c in set(classes)} == {
        UNAUTHORIZED: 4, FORBIDDEN: 4, NAME_RESOLUTION: 4, UNREACHABLE: 6, NOT_FOUND: 4, THROTTLED: 3, OTHER: 3}
    assert {UNAUTHORIZED, FORBIDDEN, NAME_RESOLUTION, UNREACHABLE} == ACCESS_CLASSES


@pytest.mark.parametrize(("expected", "message", "why"), [
    (FORBIDDEN, containerd(IMAGE, "failed to authorize: failed to fetch anonymous token: unexpected status: 403 "
                                  "Forbidden"), "a 403 beats containerd's `failed to authorize` wrapper"),
    (NAME_RESOLUTION, containerd(IMAGE, f'failed to authorize: failed to fetch anonymous token: Get "{TOKEN_URL}": '
                                        f"dial tcp: lookup {ACR} on 168.63.129.16:53: no such host"),
     "the token request could not resolve the registry: DNS, not credentials"),
    (UNREACHABLE, containerd(IMAGE, f'failed to authorize: failed to fetch oauth token: Post "{TOKEN_URL}": dial tcp '
                                    "10.20.1.4:443: i/o timeout"), "a transport failure inside the auth step"),
    (THROTTLED, containerd(IMAGE, "failed to authorize: failed to fetch oauth token: unexpected status: 429 Too Many "
                                  "Requests"), "a 429 is about rate whichever step hit it"),
    (UNAUTHORIZED, containerd(f"{ACR}/team/notfound:1", "failed to authorize: failed to fetch anonymous token: "
                                                        "unexpected status: 401 Unauthorized"),
     "a 401 stays Unauthorized even when the image may be misspelled (anonymous pull is tried first)"),
    (NOT_FOUND, containerd("unauthorized-registry.azurecr.io/toomanyrequests:1",
                           "unauthorized-registry.azurecr.io/toomanyrequests:1: not found", code="NotFound"),
     "keywords inside image and host names do not count"),
    (NOT_FOUND, containerd(f"{ACR}/lookup:1", f"{ACR}/lookup:1: not found", code="NotFound"),
     "a NotFound message names the host without being a DNS failure"),
    (OTHER, containerd(IMAGE, "no match for platform in manifest: not found", code="NotFound"),
     "a platform mismatch is not a missing tag"),
    (OTHER, "", "empty message"),
])
def test_precedence(expected, message, why):
    assert classify(message)[0] == expected, why


@pytest.mark.parametrize(("image", "registry"), [
    ("contosoacr.azurecr.io/team/app:1.2", "contosoacr.azurecr.io"),
    ("contosoacr.azurecr.io/app@sha256:" + "ab" * 32, "contosoacr.azurecr.io"),
    ("contosoacr.azurecr.io/app:1.0@sha256:" + "cd" * 32, "contosoacr.azurecr.io"),
    ("ContosoACR.AzureCR.io/Team/App:1", "contosoacr.azurecr.io"),
    ("nginx:1.25", "docker.io"),
    ("nginx", "docker.io"),
    ("library/nginx:1.25", "docker.io"),
    ("bitnami/redis:7", "docker.io"),
    ("docker.io/library/nginx:1.25", "docker.io"),
    ("index.docker.io/library/nginx", "docker.io"),
    ("localhost:5000/x", "localhost:5000"),
    ("localhost/x", "localhost"),
    ("mcr.microsoft.com/oss/kubernetes/coredns:v1.9.3", "mcr.microsoft.com"),
    ("govacr.azurecr.us/app:1", "govacr.azurecr.us"),
    ("  contosoacr.azurecr.io/app:1 ", "contosoacr.azurecr.io"),
    ("", ""),
])
def test_image_registry(image, registry):
    assert image_registry(image) == registry


@pytest.mark.parametrize(("registry", "acr"), [
    ("contosoacr.azurecr.io", True), ("govacr.azurecr.us", True), ("cnacr.azurecr.cn", True),
    ("contosoacr.azurecr.io:443", True), ("docker.io", False), ("mcr.microsoft.com", False),
    ("azurecr.io.evil.example", False), ("localhost:5000", False)])
def test_is_acr(registry, acr):
    assert is_acr(registry) is acr


def test_image_of_message():
    assert image_of_message(MESSAGES[0][2]) == IMAGE
    assert image_of_message(f'Back-off pulling image "{IMAGE}"') == IMAGE
    assert image_of_message("Error: ErrImagePull") == ""


def test_inventory_image_rebuilds_the_reference_the_agent_split_at_the_first_slash():
    assert inventory_image({"Repository": ACR, "Image": "team/api", "ImageTag": "1"}) == f"{ACR}/team/api"
    assert image_registry(inventory_image({"Repository": "", "Image": "nginx"})) == "docker.io"
    assert image_registry(inventory_image({"Repository": "bitnami", "Image": "redis"})) == "docker.io"


def test_parse_time_reads_log_analytics_spellings():
    assert parse_time("2026-11-29T10:00:00.1234567Z") == datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)
    assert parse_time("2026-11-29T10:00:00Z") == datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert parse_time("2026-11-29T12:00:00+02:00") == datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert parse_time("yesterday") is None and parse_time(None) is None


# -- aggregation ---------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CLUSTER = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-aks/providers/" \
          "Microsoft.ContainerService/managedClusters/aks-prod"
OTHER_CLUSTER = CLUSTER.replace("aks-prod", "aks-dev")


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def event(message: str, *, cluster: str = CLUSTER, namespace: str = "shop", pod: str = "api-7d9f", count: float = 1,
          first: float = 3, last: float = 1, generated: float | None = None, reason: str = "Failed") -> dict:
    """A raw KubeEvents row, as a hand-made snapshot holds it."""
    return {"type": "containerinsights/kubeevents", "TimeGenerated": at(last if generated is None else generated),
            "ClusterId": cluster, "ClusterName": cluster.rsplit("/", 1)[1], "Namespace": namespace, "Name": pod,
            "ObjectKind": "Pod", "Reason": reason, "Message": message, "KubeEventType": "Warning", "Count": count,
            "FirstSeen": at(first), "LastSeen": at(last), "SourceComponent": "kubelet", "_ResourceId": cluster}


def inventory(repository: str, image: str, *, cluster: str = CLUSTER, hours_ago: float = 1,
              state: str = "Running", pod: str = "web-1") -> dict:
    return {"type": "containerinsights/containerinventory", "TimeGenerated": at(hours_ago), "Repository": repository,
            "Image": image, "ImageTag": "1", "ContainerHostname": pod, "ContainerState": state, "_ResourceId": cluster}


UNAUTHORIZED_MESSAGE = MESSAGES[0][2]
FORBIDDEN_MESSAGE = MESSAGES[5][2]
DNS_MESSAGE = MESSAGES[8][2]


def observe(rows, lookback=timedelta(days=1)):
    return ObservedPulls.from_rows(rows, captured_at=NOW, lookback=lookback)


def test_counts_per_cluster_and_registry_with_the_window_applied():
    rows = [
        # One event series sent three times as its count grew: counted once, at its largest count.
        event(UNAUTHORIZED_MESSAGE, count=2, last=5), event(UNAUTHORIZED_MESSAGE, count=5, last=3),
        event(UNAUTHORIZED_MESSAGE, count=9, last=2),
        event(FORBIDDEN_MESSAGE, pod="api-8c1e", count=4, first=6, last=0.5),
        event(DNS_MESSAGE, namespace="batch", pod="job-1", count=1, last=30, first=31),  # last seen before the window
        event("Error: ErrImagePull"),  # carries no cause
        event(MESSAGES[22][2].replace(IMAGE, "nginx:1.25"), cluster=OTHER_CLUSTER, count=3),  # Docker Hub
        event(DNS_MESSAGE, cluster=OTHER_CLUSTER, count=2),
    ]
    observed = observe(rows)
    prod = observed.failures_for(CLUSTER.upper(), ACR)
    assert dict(prod.counts) == {UNAUTHORIZED: 9, FORBIDDEN: 4}
    assert prod.access_classes == [UNAUTHORIZED, FORBIDDEN] and prod.total == 13
    assert prod.first_seen == NOW - timedelta(hours=6) and prod.last_seen == NOW - timedelta(hours=0.5)
    assert prod.sample_message == FORBIDDEN_MESSAGE and prod.sample_class == FORBIDDEN  # the most recent
    assert prod.client_ips == ["20.51.7.19"] and prod.namespaces == ["shop"]
    assert prod.pods == ["api-8c1e", "api-7d9f"] and prod.images == [IMAGE]
    assert dict(observed.failures_for(OTHER_CLUSTER, ACR).counts) == {NAME_RESOLUTION: 2}
    assert set(observed.failures) == {(CLUSTER.lower(), ACR), (OTHER_CLUSTER.lower(), ACR)}
    hub = observed.other_registries["docker.io"]
    assert hub.failed_pulls == 3 and dict(hub.classes) == {THROTTLED: 3}
    assert hub.clusters_failing == {OTHER_CLUSTER.lower()}
    assert observed.ignored == {"older than the window": 1, "not a pull failure": 1}
    assert dict(observe(rows, lookback=timedelta(days=2)).failures_for(CLUSTER, ACR).counts) == {
        UNAUTHORIZED: 9, FORBIDDEN: 4, NAME_RESOLUTION: 1}


def test_samples_are_capped_at_five():
    rows = [event(UNAUTHORIZED_MESSAGE, namespace=f"ns-{i}", pod=f"pod-{i}", last=1 + i / 10) for i in range(8)]
    failures = observe(rows).failures_for(CLUSTER, ACR)
    assert failures.counts[UNAUTHORIZED] == 8
    assert failures.namespaces == [f"ns-{i}" for i in range(5)] and failures.pods == [f"pod-{i}" for i in range(5)]


def test_summarised_rows_aggregate_like_the_raw_rows_they_summarise():
    raw = [event(UNAUTHORIZED_MESSAGE, pod="api-1", count=3, first=5, last=2),
           event(UNAUTHORIZED_MESSAGE, namespace="shop-b", pod="api-2", count=4, first=4, last=1)]
    summarised = [{"type": "containerinsights/kubeevents", "TimeGenerated": at(1), "ClusterId": CLUSTER.lower(),
                   "Namespace": "shop-b", "Name": "api-2", "ObjectKind": "Pod", "Reason": "Failed",
                   "KubeEventType": "Warning", "Message": UNAUTHORIZED_MESSAGE, "Count": 7.0, "FirstSeen": at(5),
                   "LastSeen": at(1), "Image": IMAGE, "Namespaces": ["shop-b", "shop"], "Pods": ["api-2", "api-1"],
                   "EventSeries": 2}]
    from_raw, from_summary = observe(raw).failures_for(CLUSTER, ACR), observe(summarised).failures_for(CLUSTER, ACR)
    assert from_raw.to_dict() == from_summary.to_dict()


def test_registries_that_ran_with_their_last_sighting():
    rows = [inventory(ACR, "team/api", hours_ago=3), inventory(ACR, "team/web", hours_ago=1),
            inventory("otheracr.azurecr.io", "x", hours_ago=40),  # before the window
            inventory("failing.azurecr.io", "y", state="Waiting"),  # stuck pulling: no proof of a pull
            inventory("", "nginx"), inventory("mcr.microsoft.com", "oss/kubernetes/coredns", cluster=OTHER_CLUSTER),
            {**inventory(ACR, "team/api"), "ContainerState": None, "_ResourceId": OTHER_CLUSTER}]  # summarised shape
    observed = observe(rows)
    assert observed.ran == {CLUSTER.lower(): {ACR: NOW - timedelta(hours=1)},
                            OTHER_CLUSTER.lower(): {ACR: NOW - timedelta(hours=1)}}
    assert observed.last_ran(CLUSTER, ACR.upper()) == NOW - timedelta(hours=1)
    assert observed.last_ran(CLUSTER, "otheracr.azurecr.io") is None
    assert observed.other_registries["docker.io"].clusters_running == {CLUSTER.lower()}
    assert observed.other_registries["mcr.microsoft.com"].clusters_running == {OTHER_CLUSTER.lower()}
    assert observed.ignored == {"older than the window": 1, "container not started": 1}
    assert observed.clusters() == {CLUSTER.lower(), OTHER_CLUSTER.lower()}


def test_rows_without_a_time_or_cluster_are_counted_not_guessed():
    observed = observe([{**event(UNAUTHORIZED_MESSAGE), "LastSeen": None, "TimeGenerated": "not a time"},
                        {**event(UNAUTHORIZED_MESSAGE), "ClusterId": "", "_ResourceId": None},
                        {"type": "microsoft.containerservice/managedclusters", "id": CLUSTER}])
    assert observed.failures == {} and observed.ignored == {"no time": 1, "no cluster or image": 1}
