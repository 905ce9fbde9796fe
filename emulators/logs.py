"""Log Analytics query API emulator: Container Insights tables of a snapshot, over HTTPS on 127.0.0.1.

Speaks what `azure.monitor.query.LogsQueryClient` sends: `POST /v1/workspaces/{customerId}/query` and
`POST /v1/{armResourceId}/query` (a workspace id: that workspace; a cluster id: that cluster's rows, as a
resource-context query), body `{"query", "timespan", "workspaces"}` with `timespan` as the SDK writes it
(`PT3600.0S`, `start/end`, `start/PT…S` or null) and a bearer token. `$batch` is not served (the collector does
not batch). Answers `{"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}], "rows": [[…]]}]}`
with datetimes as text with seven fraction digits and a Z, and dynamic values as JSON text, as the
service sends them.

It answers only the auditor's own queries (`auditors/sources/queries/insights/*.kql`, recognised by their text
once the leading `let ClusterIds`/`let WindowStart` lines are set aside) and evaluates them itself over the
snapshot's `containerinsights/kubeevents` and `containerinsights/containerinventory` rows; anything else is
refused with 400. A row belongs to the workspace its cluster (`ClusterId`, else `_ResourceId`) sends to, read
from the snapshot's AKS cluster rows (omsagent add-on or azureMonitorProfile.containerInsights, any key casing);
workspace rows (`microsoft.operationalinsights/workspaces`) give the customerId GUIDs.

It also answers the auditor's runs-table query (`auditors/sinks/queries/verify_runs.kql`, which `evidence verify
--workspace` sends) on one more workspace (`runs_workspace`, a customerId GUID) from a JSON Lines store of landed
rows, as the ingestion emulator writes it with `--store` (`{"stream": ..., "record": {...}}` per line, read at each
query, so rows that land later are seen). A line's `receivedAt`, when present, is the row's ingestion time, else
its TimeGenerated; rows are returned in the file's order, which is the order they landed.

Faults for tests: 429 with Retry-After for the first N query requests, 200 with a PartialError for some
workspaces, 403 for others, 503 always for others. `GET /stats` returns counters; they are printed on exit.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditors.sinks.evidence import verify_runs_query
from auditors.sinks.tables import RUNS_STREAM
from auditors.sources.container_insights import insights_queries
from auditors.sources.kql import normalise
from emulators.rows import read_rows, row_type
from emulators.server import HttpsEmulator, JsonHandler

T_CLUSTER = "microsoft.containerservice/managedclusters"
T_WORKSPACE = "microsoft.operationalinsights/workspaces"
T_KUBE_EVENTS = "containerinsights/kubeevents"
T_CONTAINER_INVENTORY = "containerinsights/containerinventory"
_PARAMETERS = re.compile(r"^let ClusterIds = dynamic\((?P<ids>.*?)\); let WindowStart = datetime\((?P<start>[^)]*)\); ")
_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PULLED_IMAGE = re.compile(r'Failed to pull image "([^"]+)"')
STARTED_STATES = ("Running", "Terminated", "Failed")


def la_error(code: str, message: str, *, inner: dict | None = None) -> dict:
    """The query API's error shape: {error: {code, message, correlationId, innererror?}}."""
    error: dict[str, Any] = {"code": code, "message": message, "correlationId": str(uuid.uuid4())}
    if inner:
        error["innererror"] = inner
    return {"error": error}


# -- the snapshot ----------------------------------------------------------------------------------------------

def _lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


def cluster_workspace(cluster_row: dict) -> str:
    """The workspace (lower-case ARM id) a cluster row's Container Insights sends to; '' if none."""
    properties = _lower_keys(cluster_row.get("properties") or {})
    addon = ((properties.get("addonprofiles") or {}).get("omsagent")) or {}
    insights = ((properties.get("azuremonitorprofile") or {}).get("containerinsights")) or {}
    candidates = [(addon, (addon.get("config") or {}).get("loganalyticsworkspaceresourceid")),
                  (insights, insights.get("loganalyticsworkspaceresourceid"))]
    for profile, workspace in candidates:
        if str(profile.get("enabled", True)).lower() == "false" or not isinstance(workspace, str):
            continue
        workspace = workspace.strip().strip("/").lower()
        if workspace:
            return "/" + workspace
    return ""


def _key(value: Any) -> str:
    return value.strip().rstrip("/").lower() if isinstance(value, str) else ""


class Estate:
    """Container Insights rows by workspace, and how clusters and GUIDs map to workspaces."""

    def __init__(self, rows: list[dict]) -> None:
        self.cluster_workspace: dict[str, str] = {}
        self.workspace_guids: dict[str, str] = {}  # customerId (lower) -> workspace ARM id (lower)
        self.workspaces: set[str] = set()
        data: list[tuple[str, dict]] = []
        for row in rows:
            kind = row_type(row)
            if kind == T_CLUSTER and isinstance(row.get("id"), str):
                workspace = cluster_workspace(row)
                if workspace:
                    self.cluster_workspace[_key(row["id"])] = workspace
                    self.workspaces.add(workspace)
            elif kind == T_WORKSPACE and isinstance(row.get("id"), str):
                self.workspaces.add(_key(row["id"]))
                guid = _key(_lower_keys(row.get("properties") or {}).get("customerid"))
                if guid:
                    self.workspace_guids[guid] = _key(row["id"])
            elif kind in (T_KUBE_EVENTS, T_CONTAINER_INVENTORY):
                data.append((kind, row))
        self.rows: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))  # ws -> table -> rows
        self.cluster_rows: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for kind, row in data:
            cluster = _key(row.get("ClusterId")) or _key(row.get("_ResourceId"))
            self.cluster_rows[cluster][kind].append(row)
            workspace = self.cluster_workspace.get(cluster)
            if workspace:
                self.rows[workspace][kind].append(row)


# -- request values --------------------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_timespan(text: Any, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The service's `timespan`: a duration back from now, `start/end` or `start/duration`; None: unbounded."""
    if text is None or text == "":
        return None, None
    if not isinstance(text, str):
        raise ValueError("timespan must be a string")
    if "/" not in text:
        return now - _duration(text), now
    first, second = text.split("/", 1)
    start = parse_time(first)
    if start is None:
        raise ValueError(f"timespan start is not a datetime: {first!r}")
    end = parse_time(second) if not second.upper().startswith("P") else start + _duration(second)
    if end is None:
        raise ValueError(f"timespan end is not a datetime or duration: {second!r}")
    return start, end


def parse_parameters(query_text: str) -> tuple[str, list[str], datetime] | None:
    """(normalised body, cluster ids, window start) of a query in the auditor's parameter form, else None."""
    text = normalise(query_text)
    match = _PARAMETERS.match(text)
    if not match:
        return None
    try:
        ids = json.loads(match.group("ids"))
    except ValueError:
        return None
    start = parse_time(match.group("start"))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or start is None:
        return None
    return text[match.end():], [i.lower() for i in ids], start


def known_queries() -> dict[str, str]:
    """Normalised body of each auditor query -> its name: the wire contract, read from the .kql files."""
    bodies = {}
    for name, query in insights_queries().items():
        text = normalise(query.text)
        match = re.match(r"^let ClusterIds = [^;]*; let WindowStart = [^;]*; ", text)
        bodies[text[match.end():] if match else text] = name
    return bodies


# -- evaluating the two queries --------------------------------------------------------------------------------

def _s(row: dict, column: str) -> str:
    value = row.get(column)
    return value if isinstance(value, str) else ""


def _real(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _within(moment: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    if start is None and end is None:
        return True
    return moment is not None and (start is None or moment >= start) and (end is None or moment <= end)


def _max(values) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _min(values) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


PULL_FAILURE_COLUMNS = (("TimeGenerated", "datetime"), ("ClusterId", "string"), ("Namespace", "string"),
                        ("Name", "string"), ("ObjectKind", "string"), ("Reason", "string"),
                        ("KubeEventType", "string"), ("Message", "string"), ("Count", "real"),
                        ("FirstSeen", "datetime"), ("LastSeen", "datetime"), ("Image", "string"),
                        ("Namespaces", "dynamic"), ("Pods", "dynamic"), ("EventSeries", "long"))
RUNNING_IMAGE_COLUMNS = (("TimeGenerated", "datetime"), ("_ResourceId", "string"), ("Repository", "string"),
                         ("Image", "string"), ("ImageTag", "string"), ("ContainerHostname", "string"))


def pull_failures(rows: list[dict], cluster_ids: set[str], window_start: datetime,
                  span: tuple[datetime | None, datetime | None]) -> list[dict]:
    """pull_failures.kql, step by step."""
    series: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        generated = parse_time(row.get("TimeGenerated"))
        last_seen = parse_time(row.get("LastSeen"))
        if not (_within(generated, *span) and _s(row, "KubeEventType") == "Warning" and _s(row, "Reason") == "Failed"
                and "failed to pull image" in _s(row, "Message").lower()
                and _s(row, "ClusterId").lower() in cluster_ids):
            continue
        if (last_seen or generated) is None or (last_seen or generated) < window_start:
            continue
        key = (_s(row, "ClusterId").lower(), _s(row, "Namespace"), _s(row, "Name"), _s(row, "ObjectKind"),
               _s(row, "Message"))
        series[key].append(row)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for (cluster, namespace, name, kind, message), members in series.items():
        pulled = _PULLED_IMAGE.search(message)
        one = {"ClusterId": cluster, "Namespace": namespace, "Name": name, "ObjectKind": kind, "Message": message,
               "Count": _max(_real(r.get("Count")) for r in members),
               "FirstSeen": _min(parse_time(r.get("FirstSeen")) for r in members),
               "LastSeen": _max(parse_time(r.get("LastSeen")) for r in members),
               "TimeGenerated": _max(parse_time(r.get("TimeGenerated")) for r in members),
               "Image": pulled.group(1) if pulled else ""}
        groups[(cluster, one["Image"], _GUID.sub("<guid>", message))].append(one)
    result = []
    for (cluster, image, _signature), members in groups.items():
        latest = max(members, key=lambda m: m["LastSeen"] or datetime.min.replace(tzinfo=UTC))
        counts = [m["Count"] for m in members if m["Count"] is not None]
        result.append({
            "TimeGenerated": _max(m["TimeGenerated"] for m in members), "ClusterId": cluster,
            "Namespace": latest["Namespace"], "Name": latest["Name"], "ObjectKind": latest["ObjectKind"],
            "Reason": "Failed", "KubeEventType": "Warning", "Message": latest["Message"],
            "Count": sum(counts) if counts else None, "FirstSeen": _min(m["FirstSeen"] for m in members),
            "LastSeen": latest["LastSeen"], "Image": image,
            "Namespaces": list(dict.fromkeys(m["Namespace"] for m in members))[:5],
            "Pods": list(dict.fromkeys(m["Name"] for m in members))[:5], "EventSeries": len(members)})
    result.sort(key=lambda r: (r["ClusterId"], r["Image"], -(r["LastSeen"].timestamp() if r["LastSeen"] else 0)))
    return result


def running_images(rows: list[dict], cluster_ids: set[str], window_start: datetime,
                   span: tuple[datetime | None, datetime | None]) -> list[dict]:
    """running_images.kql, step by step."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        generated = parse_time(row.get("TimeGenerated"))
        if not (_within(generated, *span) and generated is not None and generated >= window_start
                and _s(row, "_ResourceId").lower() in cluster_ids and _s(row, "ContainerState") in STARTED_STATES):
            continue
        key = (_s(row, "_ResourceId").lower(), _s(row, "Repository"), _s(row, "Image"), _s(row, "ImageTag"))
        known = latest.get(key)
        if known is None or generated > known["TimeGenerated"]:
            latest[key] = {"TimeGenerated": generated, "_ResourceId": key[0], "Repository": key[1], "Image": key[2],
                           "ImageTag": key[3], "ContainerHostname": _s(row, "ContainerHostname")}
    return [latest[k] for k in sorted(latest)]


RUN_ROW_COLUMNS = (("IngestedAt", "datetime"), ("TimeGenerated", "datetime"), ("RunId", "string"),
                   ("StartTime", "datetime"), ("Scope", "string"), ("RunStatus", "string"),
                   ("ManifestSha256", "string"), ("PreviousManifestSha256", "string"), ("ChainPosition", "long"))
VERIFY_RUNS = "verify_runs"
DEFAULT_RUNS_WORKSPACE = "00000000-0000-4000-8000-00000000a0d1"


def run_rows(store: Path, span: tuple[datetime | None, datetime | None]) -> list[dict]:
    """verify_runs.kql over the landed rows: run rows with a manifest hash, TimeGenerated in the timespan."""
    if not store.exists():
        return []
    result = []
    for line in store.read_text(encoding="utf-8").splitlines():
        try:
            landed = json.loads(line)
        except ValueError:
            continue
        record = landed.get("record") if isinstance(landed, dict) else None
        if landed.get("stream") != RUNS_STREAM or not isinstance(record, dict) or not _s(record, "ManifestSha256"):
            continue
        generated = parse_time(record.get("TimeGenerated"))
        if not _within(generated, *span):
            continue
        position = record.get("ChainPosition")
        result.append({
            "IngestedAt": parse_time(landed.get("receivedAt")) or generated, "TimeGenerated": generated,
            "RunId": _s(record, "RunId"), "StartTime": parse_time(record.get("StartTime")),
            "Scope": _s(record, "Scope"), "RunStatus": _s(record, "RunStatus"),
            "ManifestSha256": _s(record, "ManifestSha256"),
            "PreviousManifestSha256": _s(record, "PreviousManifestSha256"),
            "ChainPosition": position if isinstance(position, int) and not isinstance(position, bool) else None})
    return result


EVALUATORS = {
    "pull_failures": (T_KUBE_EVENTS, PULL_FAILURE_COLUMNS, pull_failures),
    "running_images": (T_CONTAINER_INVENTORY, RUNNING_IMAGE_COLUMNS, running_images),
}


def wire_value(value: Any, column_type: str) -> Any:
    """A cell as the service writes it: datetimes with seven fraction digits and Z, dynamic values as JSON text."""
    if value is None:
        return None
    if column_type == "datetime":
        return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond:06d}0Z"
    if column_type == "dynamic":
        return json.dumps(value)
    return value


def primary_table(columns: tuple[tuple[str, str], ...], rows: list[dict]) -> dict:
    return {"name": "PrimaryResult", "columns": [{"name": n, "type": t} for n, t in columns],
            "rows": [[wire_value(row.get(n), t) for n, t in columns] for row in rows]}


# -- the emulator ----------------------------------------------------------------------------------------------

@dataclass
class LogsFaults:
    """Injected failures. Workspaces are named by ARM id, customerId GUID or name (case-insensitive)."""

    throttle_first: int = 0  # the first N query requests: 429 with Retry-After
    retry_after: int = 1
    partial: set[str] = field(default_factory=set)  # 200 with the rows and a PartialError
    forbid: set[str] = field(default_factory=set)  # 403 InsufficientAccessError
    fail: set[str] = field(default_factory=set)  # 503, always


@dataclass
class LogsStats:
    requests: int = 0
    queries: int = 0  # answered with rows (complete or partial)
    rows: int = 0
    throttled: int = 0
    partial: int = 0
    forbidden: int = 0
    refused: int = 0  # 400: not one of the auditor's queries, or a malformed body
    not_found: int = 0
    failed: int = 0
    unauthenticated: int = 0
    per_workspace: Counter = field(default_factory=Counter)
    per_query: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "queries": self.queries, "rows": self.rows, "throttled429": self.throttled,
                "partial": self.partial, "forbidden403": self.forbidden, "refused400": self.refused,
                "notFound404": self.not_found, "failed5xx": self.failed, "unauthenticated401": self.unauthenticated,
                "perWorkspace": dict(self.per_workspace), "perQuery": dict(self.per_query)}


@dataclass(frozen=True)
class Scope:
    workspace: str  # lower-case ARM id of the workspace, or '' for a resource-context query on a cluster
    guid: str
    cluster: str = ""

    @property
    def label(self) -> str:
        return self.workspace or self.cluster


class LogsQueryEmulator(HttpsEmulator):
    """Serve a snapshot's Container Insights rows as the Log Analytics query API."""

    def __init__(self, snapshot: str | Path | list[dict], *, faults: LogsFaults | None = None,
                 ca_out: str | Path | None = None, port: int = 0, now=None, runs_store: str | Path | None = None,
                 runs_workspace: str = DEFAULT_RUNS_WORKSPACE) -> None:
        rows = snapshot if isinstance(snapshot, list) else list(read_rows(snapshot))
        self.estate = Estate(rows)
        self.faults = faults or LogsFaults()
        self.stats = LogsStats()
        self.queries = known_queries()
        self.runs_store = Path(runs_store) if runs_store else None
        self.runs_workspace = runs_workspace.lower()
        self.runs_query = normalise(verify_runs_query())
        self._now = now or (lambda: datetime.now(UTC))
        self._throttles_left = self.faults.throttle_first
        super().__init__(ca_out=ca_out, port=port)

    def scope_of(self, path: str) -> Scope | None:
        """The workspace or cluster a query path addresses, or None when unknown (404)."""
        lowered = path.rstrip("/").lower()
        if not lowered.startswith("/v1/") or not lowered.endswith("/query"):
            return None
        target = lowered[len("/v1"):-len("/query")]
        if target.startswith("/workspaces/") and target.count("/") == 2:
            guid = target.rsplit("/", 1)[1]
            if self.runs_store is not None and guid == self.runs_workspace:
                return Scope(f"runs:{guid}", guid)
            workspace = self.estate.workspace_guids.get(guid)
            return Scope(workspace, guid) if workspace else None
        if target.startswith("/subscriptions/"):
            if f"/providers/{T_WORKSPACE}/" in target and target in self.estate.workspaces:
                guid = next((g for g, w in self.estate.workspace_guids.items() if w == target), "")
                return Scope(target, guid)
            known = target in self.estate.cluster_workspace or target in self.estate.cluster_rows
            if f"/providers/{T_CLUSTER}/" in target and known:
                return Scope("", "", cluster=target)
        return None

    def _named(self, names: set[str], scope: Scope) -> bool:
        workspace = scope.workspace
        return bool({n.lower().rstrip("/") for n in names} & {workspace, scope.guid, workspace.rsplit("/", 1)[-1]}
                    - {""})

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        scope = self.scope_of(path)
        if scope is None:
            self._count("not_found")
            return 404, la_error("PathNotFoundError" if "/workspaces/" in path.lower() else "ResourceNotFoundError",
                                 f"The requested path does not exist: {path}"), {}
        with self._lock:
            throttle = self._throttles_left > 0
            self._throttles_left -= 1 if throttle else 0
        if throttle:
            self._count("throttled")
            return 429, la_error("ThrottledError", "Too many requests. Please retry after the time in Retry-After."), \
                {"Retry-After": str(self.faults.retry_after)}
        if self._named(self.faults.forbid, scope):
            self._count("forbidden")
            return 403, la_error("InsufficientAccessError", "The provided credentials have insufficient access to "
                                 "perform the requested operation"), {}
        if self._named(self.faults.fail, scope):
            self._count("failed")
            return 503, la_error("ServiceUnavailableError", "The service is temporarily unavailable."), {}
        return self._query(scope, body)

    def _query(self, scope: Scope, body: dict) -> tuple[int, dict, dict[str, str]]:
        if normalise(str(body.get("query") or "")) == self.runs_query:
            return self._runs_query(scope, body)
        parsed = parse_parameters(str(body.get("query") or ""))
        name = self.queries.get(parsed[0]) if parsed else None
        if parsed is None or name is None:
            self._count("refused")
            return 400, la_error("BadArgumentError", "The request had some invalid properties", inner={
                "code": "SemanticError", "message": "The emulator answers only the auditor's own queries "
                                                    "(auditors/sources/queries/insights/*.kql)."}), {}
        if body.get("workspaces"):
            self._count("refused")
            return 400, la_error("BadArgumentError", "The emulator does not query additional workspaces."), {}
        try:
            span = parse_timespan(body.get("timespan"), self._now())
        except ValueError as exc:
            self._count("refused")
            return 400, la_error("BadArgumentError", f"Invalid timespan: {exc}"), {}
        _, cluster_ids, window_start = parsed
        table, columns, evaluate = EVALUATORS[name]
        rows_of = self.estate.cluster_rows[scope.cluster] if scope.cluster else self.estate.rows[scope.workspace]
        result = evaluate(rows_of.get(table, []), set(cluster_ids), window_start, span)
        payload: dict[str, Any] = {"tables": [primary_table(columns, result)]}
        partial = self._named(self.faults.partial, scope)
        if partial:
            payload["error"] = {"code": "PartialError", "message": "There were some errors when processing your "
                                "query.", "details": [{"code": "EngineError", "message": "Something went wrong "
                                "processing your query on the server.", "innererror": {"code": "-2133196797",
                                "message": "Query execution has exceeded the allowed limits (injected)."}}]}
        with self._lock:
            self.stats.queries += 1
            self.stats.rows += len(result)
            self.stats.partial += 1 if partial else 0
            self.stats.per_workspace[scope.label] += 1
            self.stats.per_query[name] += 1
        return 200, payload, {}

    def _runs_query(self, scope: Scope, body: dict) -> tuple[int, dict, dict[str, str]]:
        if self.runs_store is None or scope.workspace != f"runs:{self.runs_workspace}":
            self._count("refused")
            return 400, la_error("BadArgumentError", "The request had some invalid properties", inner={
                "code": "SemanticError", "message": "'AcrPullAuditRuns_CL' could not be resolved to a table "
                                                    "(the runs table is served on the runs workspace only)."}), {}
        try:
            span = parse_timespan(body.get("timespan"), self._now())
        except ValueError as exc:
            self._count("refused")
            return 400, la_error("BadArgumentError", f"Invalid timespan: {exc}"), {}
        result = run_rows(self.runs_store, span)
        with self._lock:
            self.stats.queries += 1
            self.stats.rows += len(result)
            self.stats.per_workspace[scope.label] += 1
            self.stats.per_query[VERIFY_RUNS] += 1
        return 200, {"tables": [primary_table(RUN_ROW_COLUMNS, result)]}, {}

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)


class _Handler(JsonHandler):
    owner: LogsQueryEmulator

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/stats":
            self.send_json(200, self.owner.stats.as_dict())
        else:
            self.send_json(404, la_error("PathNotFoundError", "Unknown path."))

    def do_POST(self) -> None:
        owner = self.owner
        raw = self.read_body()
        with owner._lock:
            owner.stats.requests += 1
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            owner._count("unauthenticated")
            self.send_json(401, la_error("AuthorizationRequiredError", "Valid authentication was not provided"))
            return
        try:
            body = json.loads(raw.decode("utf-8") or "{}")
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise ValueError("body must be a JSON object with a `query` string")
        except (ValueError, UnicodeDecodeError) as exc:
            owner._count("refused")
            self.send_json(400, la_error("BadArgumentError", f"Request body is not valid: {exc}"))
            return
        status, payload, headers = owner.answer(self.path.split("?")[0], body)
        self.send_json(status, payload, headers)


LogsQueryEmulator.handler = _Handler


SERVICE, HELP = "logs", "Log Analytics query API over a snapshot's Container Insights rows on 127.0.0.1"


def add_arguments(parser) -> None:
    parser.add_argument("--snapshot", metavar="PATH",
                        help="snapshot with containerinsights/* rows and the AKS cluster rows that map them")
    parser.add_argument("--runs-store", metavar="FILE",
                        help="JSON Lines of landed rows (the ingestion emulator's --store): answer the runs-table "
                             "query of `evidence verify --workspace` from its run rows")
    parser.add_argument("--runs-workspace", metavar="GUID", default=DEFAULT_RUNS_WORKSPACE,
                        help=f"workspace id (customerId) that holds the runs table (default {DEFAULT_RUNS_WORKSPACE})")
    parser.add_argument("--throttle", type=int, default=0, metavar="N",
                        help="answer the first N query requests with 429 and Retry-After")
    parser.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="Retry-After of those 429s")
    parser.add_argument("--partial", action="append", default=[], metavar="WORKSPACE",
                        help="answer this workspace (ARM id, GUID or name) with a PartialError; repeatable")
    parser.add_argument("--forbid", action="append", default=[], metavar="WORKSPACE",
                        help="answer this workspace with 403; repeatable")
    parser.add_argument("--fail", action="append", default=[], metavar="WORKSPACE",
                        help="answer this workspace with 503, always; repeatable")


def build(args) -> LogsQueryEmulator:
    faults = LogsFaults(throttle_first=args.throttle, retry_after=args.retry_after, partial=set(args.partial),
                        forbid=set(args.forbid), fail=set(args.fail))
    if not args.snapshot and not args.runs_store:
        raise ValueError("give --snapshot, --runs-store or both")
    return LogsQueryEmulator(args.snapshot or [], faults=faults, ca_out=args.ca_out, port=args.port,
                             runs_store=args.runs_store, runs_workspace=args.runs_workspace)
