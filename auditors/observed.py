"""What clusters were seen to pull: kubelet pull failures classified by cause, and registries whose images ran.

Pure functions over Container Insights rows (`containerinsights/kubeevents`, `containerinsights/containerinventory`),
either as the collector's queries summarise them or as raw table rows (hand-made snapshots); no I/O, no clock:
the capture time is a parameter and the lookback window is applied against it.

Classification reads the text after `Failed to pull image "…":` (containerd and Docker spellings). Checks run in
this order; the first that matches decides:

1. Throttled: a 429 / `toomanyrequests` / kubelet `pull QPS exceeded` is about rate, whichever step hit it.
2. Forbidden: a 403 or ACR's `denied: client with IP '…' is not allowed access`, even though containerd wraps
   token failures in `failed to authorize:`.
3. Unauthorized by status: `401 Unauthorized`, `unauthorized: authentication required`. A wrong image name can also
   give the 401 (anonymous pull is tried first), so a 401 stays Unauthorized; it is never read as NotFound.
4. NameResolution: `no such host`, `server misbehaving`, a timed-out `lookup`, even inside `failed to authorize:`
   (the token request could not resolve the registry).
5. Unreachable: `i/o timeout`, `connection refused`, `connection reset by peer`, `TLS handshake timeout`, no route,
   `Client.Timeout exceeded`, proxy and TLS interception (`x509:`) errors. A bare `context deadline exceeded` is
   not: the kubelet's runtime request timeout also ends slow pulls of large images, so it proves nothing about
   reachability; it is Other.
6. Unauthorized by wording: `failed to authorize`, `authentication required`, `pull access denied`.
7. Other for a platform mismatch (`no match for platform in manifest: not found`), before NotFound.
8. NotFound: `: not found`, `code = NotFound`, `manifest unknown`, `NAME_UNKNOWN`, `404 Not Found`.
9. Other.

Image references (quoted or not) and URLs are blanked before matching: image, repository and registry names are
chosen by people and may contain any keyword (`team/notfound-app`, `unauthorized.azurecr.io/x`). A bare host name
is not blanked (`lookup HOST on …`); DNS failures are checked before the wording that such a name could mimic.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from auditors.arm import norm_id

KUBE_EVENTS = "containerinsights/kubeevents"
CONTAINER_INVENTORY = "containerinsights/containerinventory"

UNAUTHORIZED, FORBIDDEN, NAME_RESOLUTION, UNREACHABLE = "Unauthorized", "Forbidden", "NameResolution", "Unreachable"
NOT_FOUND, THROTTLED, OTHER = "NotFound", "Throttled", "Other"
CLASSES = (UNAUTHORIZED, FORBIDDEN, NAME_RESOLUTION, UNREACHABLE, NOT_FOUND, THROTTLED, OTHER)
ACCESS_CLASSES = frozenset({UNAUTHORIZED, FORBIDDEN, NAME_RESOLUTION, UNREACHABLE})
ACR_SUFFIXES = (".azurecr.io", ".azurecr.us", ".azurecr.cn")
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
SAMPLE_LIMIT = 5
STARTED_STATES = ("running", "terminated", "failed")  # ContainerInventory states that prove the image was pulled

_I = re.IGNORECASE
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (THROTTLED, re.compile(r"\b429 too many requests\b|\bstatus(?: code)?[: ]+429\b|toomanyrequests"
                           r"|too many requests|pull qps exceeded", _I)),
    (FORBIDDEN, re.compile(r"\b403 forbidden\b|\bstatus(?: code)?[: ]+403\b|denied: client with ip"
                           r"|client with ip '[^']*' is not allowed access", _I)),
    (UNAUTHORIZED, re.compile(r"\b401 unauthorized\b|\bstatus(?: code)?[: ]+401\b|\bunauthorized: ", _I)),
    (NAME_RESOLUTION, re.compile(r"no such host|server misbehaving|temporary failure in name resolution"
                                 r"|name or service not known|\blookup \S+ on \S+.*(?:i/o timeout|no answer)", _I)),
    (UNREACHABLE, re.compile(r"i/o timeout|connection refused|connection reset by peer|tls handshake timeout"
                             r"|no route to host|network is unreachable|client\.timeout exceeded|proxyconnect"
                             r"|x509: ", _I)),
    (UNAUTHORIZED, re.compile(r"failed to authorize|authentication required|pull access denied"
                              r"|requested access to the resource is denied|\bunauthorized\b", _I)),
    (OTHER, re.compile(r"no match for platform in manifest", _I)),
    (NOT_FOUND, re.compile(r": not found\b|code = notfound|manifest unknown|name_unknown|repository name not known"
                           r"|\b404 not found\b|\bnot found: ", _I)),
)
_QUOTED_REFERENCE = re.compile(r'"[^"\s]*"')
_URL = re.compile(r"https?://[^\s\"']+", _I)
_BARE_REFERENCE = re.compile(r"\b[\w-]+(?:\.[\w-]+)+(?::\d+)?/[^\s\"']*[^\s\"':,]")  # host/repo:tag, unquoted
_CLIENT_IP = re.compile(r"client with IP '([^']+)' is not allowed access", _I)
_PULL_IMAGE = re.compile(r"\bpull(?:ing)? image \"([^\"]+)\"", _I)
_PULL_FAILURE = "failed to pull image"


# -- one message -----------------------------------------------------------------------------------------------

def classify(message: str) -> tuple[str, str | None]:
    """(class, the client IP ACR reported for a Forbidden firewall denial, else None). See the module docstring
    for the classes and the order in which they are checked."""
    text = message if isinstance(message, str) else ""
    detail = _BARE_REFERENCE.sub("<ref>", _URL.sub("<url>", _QUOTED_REFERENCE.sub("<ref>", text)))
    cause = next((name for name, pattern in _RULES if pattern.search(detail)), OTHER)
    client_ip = None
    if cause == FORBIDDEN:
        found = _CLIENT_IP.search(text)
        client_ip = found.group(1) if found else None
    return cause, client_ip


def image_of_message(message: str) -> str:
    """The image reference in `Failed to pull image "…"` (or `Back-off pulling image "…"`), else ''."""
    found = _PULL_IMAGE.search(message) if isinstance(message, str) else None
    return found.group(1).strip() if found else ""


def image_registry(image: str) -> str:
    """The registry host of an image reference, lower-case: `myacr.azurecr.io/team/app:1.2` -> `myacr.azurecr.io`,
    `nginx:1.25` and `library/nginx` -> `docker.io`, `localhost:5000/x` -> `localhost:5000`; '' for ''.

    The first path component is a host when it has a dot or a port or is `localhost` (Docker's rule)."""
    reference = image.strip() if isinstance(image, str) else ""
    reference = re.sub(r"^[a-z]+://", "", reference, flags=_I).split("@", 1)[0]
    if not reference:
        return ""
    first, slash, _rest = reference.partition("/")
    if not slash or not ("." in first or ":" in first or first.lower() == "localhost"):
        return DOCKER_HUB
    host = first.lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def is_acr(registry: str) -> bool:
    """Whether a registry host is an Azure Container Registry login server (public, US Gov or China cloud)."""
    host = registry.lower().rsplit(":", 1)[0] if registry.count(":") == 1 else registry.lower()
    return host.endswith(ACR_SUFFIXES)


def inventory_image(row: dict) -> str:
    """The image reference of a ContainerInventory row: the agent splits it at the first `/` into Repository and
    Image (so Repository is the registry host, or a Docker Hub namespace, or empty)."""
    repository, image = _text(row.get("Repository")), _text(row.get("Image"))
    return f"{repository}/{image}" if repository else image


# -- times -----------------------------------------------------------------------------------------------------

def parse_time(value) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (Z, offsets, 7-digit fractions) or a datetime; None otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("z", "Z")
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # Log Analytics writes 7 fraction digits
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment else ""


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _strings(value) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def _count(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 1.0
    return min(number, MAX_COUNT) if number > 0 else 1.0  # a count no kubelet reaches is a damaged row


MAX_COUNT = 1e12


# -- aggregation -----------------------------------------------------------------------------------------------

@dataclass
class PullFailures:
    """Failed pulls of one cluster from one registry within the window."""

    cluster_id: str
    registry: str
    counts: Counter = field(default_factory=Counter)  # class -> events (the kubelet's event counts)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    namespaces: list[str] = field(default_factory=list)  # up to 5, most recent first
    pods: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    sample_message: str = ""  # the most recent message
    sample_class: str = ""
    client_ips: list[str] = field(default_factory=list)  # reported by ACR in Forbidden denials

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def access_classes(self) -> list[str]:
        """Classes that say the cluster cannot reach or may not read the registry, most events first."""
        return [c for c in self.classes if c in ACCESS_CLASSES]

    @property
    def classes(self) -> list[str]:
        return sorted(self.counts, key=lambda c: (-self.counts[c], CLASSES.index(c)))

    def to_dict(self) -> dict:
        """As a pair's evidence, which names the cluster and the registry already."""
        return {"counts": {c: int(self.counts[c]) for c in self.classes}, "firstSeen": _iso(self.first_seen),
                "lastSeen": _iso(self.last_seen), "namespaces": self.namespaces, "pods": self.pods,
                "images": self.images, "sampleMessage": self.sample_message, "sampleClass": self.sample_class,
                "clientIps": self.client_ips}


@dataclass
class OtherRegistry:
    """A registry that is not an Azure Container Registry (Docker Hub, MCR, ...), counted apart."""

    registry: str
    failed_pulls: int = 0
    classes: Counter = field(default_factory=Counter)
    clusters_failing: set[str] = field(default_factory=set)
    clusters_running: set[str] = field(default_factory=set)


@dataclass
class _Series:
    """One event series: the agent sends an event again each time its count grows, so keep the largest count."""

    cluster_id: str
    image: str
    message: str
    count: float
    first_seen: datetime | None
    last_seen: datetime
    namespaces: list[str]
    pods: list[str]


@dataclass
class ObservedPulls:
    captured_at: datetime
    lookback: timedelta
    failures: dict[tuple[str, str], PullFailures] = field(default_factory=dict)  # (cluster, ACR host) -> failures
    ran: dict[str, dict[str, datetime]] = field(default_factory=dict)  # cluster -> ACR host -> last seen running
    other_registries: dict[str, OtherRegistry] = field(default_factory=dict)
    ignored: Counter = field(default_factory=Counter)  # rows left out, by reason
    _failing_by_cluster: dict[str, set[str]] | None = field(default=None, repr=False)

    @property
    def window_start(self) -> datetime:
        return self.captured_at - self.lookback

    @classmethod
    def from_rows(cls, rows: Iterable[dict], *, captured_at: datetime,
                  lookback: timedelta = timedelta(days=1)) -> ObservedPulls:
        observed = cls(parse_time(captured_at) or datetime.now(UTC), lookback)
        series: dict[tuple[str, str, str, str], _Series] = {}
        for row in rows:
            kind = _text(row.get("type")).lower() if isinstance(row, dict) else ""
            if kind == KUBE_EVENTS:
                observed._add_event(row, series)
            elif kind == CONTAINER_INVENTORY:
                observed._add_inventory(row)
        for item in sorted(series.values(), key=lambda s: s.last_seen, reverse=True):
            observed._add_series(item)
        return observed

    # -- queries ------------------------------------------------------------------------------------------------
    def failures_for(self, cluster_id: str, registry: str) -> PullFailures | None:
        return self.failures.get((norm_id(cluster_id), registry.lower()))

    def last_ran(self, cluster_id: str, registry: str) -> datetime | None:
        return self.ran.get(norm_id(cluster_id), {}).get(registry.lower())

    def clusters(self) -> set[str]:
        return {cluster for cluster, _ in self.failures} | set(self.ran)

    def registries_of(self, cluster_id: str) -> list[str]:
        """ACR hosts the cluster ran images from or failed to pull from, in the window."""
        if self._failing_by_cluster is None:
            self._failing_by_cluster = {}
            for cluster, registry in self.failures:
                self._failing_by_cluster.setdefault(cluster, set()).add(registry)
        key = norm_id(cluster_id)
        return sorted(set(self.ran.get(key, {})) | self._failing_by_cluster.get(key, set()))

    def others_of(self, cluster_id: str) -> dict[str, dict[str, int]]:
        """Registries that are not Azure Container Registries the cluster used: host -> counts."""
        key = norm_id(cluster_id)
        return {host: {"failedPulls": other.failed_pulls if key in other.clusters_failing else 0,
                       "running": int(key in other.clusters_running)}
                for host, other in sorted(self.other_registries.items())
                if key in other.clusters_failing or key in other.clusters_running}

    # -- building -----------------------------------------------------------------------------------------------
    def _in_window(self, moment: datetime | None) -> bool:
        if moment is None:
            self.ignored["no time"] += 1
            return False
        if moment < self.window_start:
            self.ignored["older than the window"] += 1
            return False
        return True

    def _add_event(self, row: dict, series: dict) -> None:
        message = _text(row.get("Message"))
        if _PULL_FAILURE not in message.lower():
            self.ignored["not a pull failure"] += 1
            return
        cluster = norm_id(row.get("ClusterId")) or norm_id(row.get("_ResourceId"))
        image = _text(row.get("Image")) or image_of_message(message)
        last_seen = parse_time(row.get("LastSeen")) or parse_time(row.get("TimeGenerated"))
        if not cluster or not image:
            self.ignored["no cluster or image"] += 1
            return
        if not self._in_window(last_seen):
            return
        namespace, name = _text(row.get("Namespace")), _text(row.get("Name"))
        key = (cluster, namespace, name, message)
        namespaces = list(dict.fromkeys([namespace, *_strings(row.get("Namespaces"))]))
        pods = list(dict.fromkeys([name, *_strings(row.get("Pods"))]))
        item = _Series(cluster, image, message, _count(row.get("Count")), parse_time(row.get("FirstSeen")),
                       last_seen, [n for n in namespaces if n], [p for p in pods if p])
        known = series.get(key)
        if known is None:
            series[key] = item
            return
        known.count = max(known.count, item.count)
        known.first_seen = min(filter(None, (known.first_seen, item.first_seen)), default=None)
        known.last_seen = max(known.last_seen, item.last_seen)
        known.namespaces = list(dict.fromkeys(known.namespaces + item.namespaces))
        known.pods = list(dict.fromkeys(known.pods + item.pods))

    def _add_series(self, item: _Series) -> None:
        """Series arrive most recent first, so the first one of a pair gives its sample message."""
        registry = image_registry(item.image)
        cause, client_ip = classify(item.message)
        if not is_acr(registry):
            other = self.other_registries.setdefault(registry, OtherRegistry(registry))
            other.failed_pulls += int(item.count)
            other.classes[cause] += int(item.count)
            other.clusters_failing.add(item.cluster_id)
            return
        pair = self.failures.setdefault((item.cluster_id, registry), PullFailures(item.cluster_id, registry))
        pair.counts[cause] += int(item.count)
        if not pair.sample_message:
            pair.sample_message, pair.sample_class = item.message, cause
        first = item.first_seen or item.last_seen
        pair.first_seen = min(pair.first_seen, first) if pair.first_seen else first
        pair.last_seen = max(pair.last_seen, item.last_seen) if pair.last_seen else item.last_seen
        pair.namespaces = _capped(pair.namespaces, item.namespaces)
        pair.pods = _capped(pair.pods, item.pods)
        pair.images = _capped(pair.images, [item.image])
        if client_ip and client_ip not in pair.client_ips:
            pair.client_ips.append(client_ip)

    def _add_inventory(self, row: dict) -> None:
        state = _text(row.get("ContainerState")).lower()
        if state and state not in STARTED_STATES:  # Waiting: possibly stuck pulling, so no proof of a pull
            self.ignored["container not started"] += 1
            return
        cluster = norm_id(row.get("_ResourceId")) or norm_id(row.get("ClusterId"))
        registry = image_registry(inventory_image(row))
        if not cluster or not registry:
            self.ignored["no cluster or image"] += 1
            return
        seen = parse_time(row.get("TimeGenerated"))
        if not self._in_window(seen):
            return
        if not is_acr(registry):
            self.other_registries.setdefault(registry, OtherRegistry(registry)).clusters_running.add(cluster)
            return
        registries = self.ran.setdefault(cluster, {})
        registries[registry] = max(registries.get(registry, seen), seen)


def _capped(current: list[str], more: list[str]) -> list[str]:
    return list(dict.fromkeys(current + more))[:SAMPLE_LIMIT]
