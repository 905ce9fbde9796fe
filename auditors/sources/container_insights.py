"""Observed image pulls from Container Insights: what the kubelets reported and which images ran.

One query per workspace per query file (`queries/insights/*.kql`), covering every audited cluster that sends to
that workspace, through the real `LogsQueryClient`:

- Workspaces are queried by their customerId GUID (`query_workspace`) when it is known, else by their ARM id
  (`query_resource`), which is what a cluster's omsagent add-on configuration names.
- Query parameters are the two leading `let` lines of each file (`ClusterIds`, `WindowStart`), replaced with
  literals; the service's `timespan` is the same window, so TimeGenerated is pruned before the query runs.
- Limits per user (Log Analytics): at most 5 concurrent queries and 200 per 30 s. Requests are spread by a
  sliding-window pacer below `max_queries_per_30s`; the SDK's own retries are off (`retry_total=0`) so every HTTP
  attempt is paced and counted here. A 429 pauses everyone for its Retry-After; 5xx and connection errors back off.
- Nothing is dropped silently: a partial result keeps its rows and records a gap; a workspace that cannot be read
  (403, 404, repeated 5xx) is a gap naming the workspace, its clusters and the reason.

Rows go to `sink(kind, rows)` with `type` set to `containerinsights/kubeevents` or
`containerinsights/containerinventory`, columns as the queries return them (datetimes as ISO strings with Z).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache
from importlib import resources
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult

from auditors.arm import norm_id, subscription_of
from auditors.durations import format_lookback, parse_lookback  # noqa: F401  (re-exported)
from auditors.model import Gap, workspace_of
from auditors.sources.connection import lasting_problem

DEFAULT_ENDPOINT = "https://api.loganalytics.io"
KUBE_EVENTS = "containerinsights/kubeevents"
CONTAINER_INVENTORY = "containerinsights/containerinventory"
INSIGHTS_TYPES = (KUBE_EVENTS, CONTAINER_INVENTORY)
GAP_QUERY = "container_insights"
MAX_CONCURRENT_QUERIES = 5  # per user; more are queued by the service and may then be refused with 429
QUOTA_WINDOW_SECONDS = 30.0
SERVICE_QUOTA_PER_WINDOW = 200
PERMANENT_STATUSES = (400, 403, 404)
PARAMETERS = ("ClusterIds", "WindowStart")
_PARAMETER_LINE = re.compile(r"^[ \t]*let[ \t]+(\w+)[ \t]*=[^\n]*;[ \t]*$", re.M)
_UNSAFE_IN_LITERAL = re.compile(r'["\\\x00-\x1f]')
Sink = Callable[[str, list[dict]], None]
Progress = Callable[[str], None]


# -- queries ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InsightsQuery:
    """One `.kql` file: its leading `let` parameter lines are replaced by `render`; the rest is sent as written."""

    name: str
    text: str
    table: str

    @property
    def row_type(self) -> str:
        return f"containerinsights/{self.table.lower()}"

    def render(self, cluster_ids: Iterable[str], window_start: datetime) -> str:
        values = {"ClusterIds": cluster_ids_literal(cluster_ids), "WindowStart": datetime_literal(window_start)}
        return _PARAMETER_LINE.sub(lambda m: f"let {m.group(1)} = {values[m.group(1)]};", self.text)


def cluster_ids_literal(cluster_ids: Iterable[str]) -> str:
    """`dynamic([...])` of lower-case ids. ARM ids never hold quotes, backslashes or control characters; one that
    does is refused rather than escaped, so no id can change the query."""
    ids = sorted({norm_id(c) for c in cluster_ids if norm_id(c)})
    unsafe = [c for c in ids if _UNSAFE_IN_LITERAL.search(c)]
    if unsafe:
        raise ValueError(f"not an ARM resource id: {unsafe[0]!r}")
    return "dynamic([" + ", ".join(f'"{c}"' for c in ids) + "])"


def datetime_literal(moment: datetime) -> str:
    return f"datetime({iso_z(moment)})"


def _parse_query(name: str, text: str) -> InsightsQuery:
    declared = _PARAMETER_LINE.findall(text)
    if tuple(declared) != PARAMETERS:
        raise ValueError(f"insights query {name}: must start with `let` lines for {', '.join(PARAMETERS)}, "
                         f"found {declared}")
    body = _PARAMETER_LINE.sub("", text)
    table = next((line.split()[0] for line in body.splitlines()
                  if line.strip() and not line.lstrip().startswith("//")), "")
    return InsightsQuery(name, text, table)


@cache
def insights_queries() -> dict[str, InsightsQuery]:
    """The Container Insights queries by name (file stem); KubeEvents first."""
    folder = resources.files("auditors.sources") / "queries" / "insights"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".kql")), key=lambda f: f.name)
    queries = [_parse_query(f.name.removesuffix(".kql"), f.read_text(encoding="utf-8")) for f in files]
    queries.sort(key=lambda q: INSIGHTS_TYPES.index(q.row_type) if q.row_type in INSIGHTS_TYPES else 99)
    return {q.name: q for q in queries}


# -- targets ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkspaceTarget:
    workspace_resource_id: str
    workspace_id: str  # the workspace's customerId GUID if known, else ""
    cluster_ids: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.workspace_resource_id or self.workspace_id


def plan_targets(cluster_rows: Iterable[dict],
                 workspace_ids: dict[str, str] | None = None) -> tuple[list[WorkspaceTarget], list[str]]:
    """Group clusters by workspace: (one target per workspace, ids of clusters without Container Insights).
    `workspace_ids` maps a workspace ARM id to its customerId GUID where Resource Graph gave it."""
    guids = {norm_id(k): v for k, v in (workspace_ids or {}).items() if v}
    grouped: dict[str, tuple[str, list[str]]] = {}
    unmonitored: list[str] = []
    for row in cluster_rows:
        cluster_id = row.get("id") if isinstance(row, dict) else None
        if not isinstance(cluster_id, str) or not cluster_id:
            continue
        workspace = workspace_of(row.get("properties") or {})
        if not workspace:
            unmonitored.append(cluster_id)
            continue
        grouped.setdefault(norm_id(workspace), (workspace, []))[1].append(cluster_id)
    targets = [WorkspaceTarget(workspace, guids.get(key, ""), tuple(sorted(set(clusters), key=norm_id)))
               for key, (workspace, clusters) in sorted(grouped.items())]
    return targets, sorted(unmonitored, key=norm_id)


# -- lookback --------------------------------------------------------------------------------------------------

# -- values ----------------------------------------------------------------------------------------------------

def iso_z(moment: datetime) -> str:
    """UTC ISO 8601 with a Z, microseconds only when present."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _cell(value: Any, column_type: str) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    if column_type == "dynamic" and isinstance(value, str):  # the service sends dynamic values as JSON text
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def table_rows(tables: list | None, row_type: str) -> list[dict]:
    """Rows of the primary result table as dicts, with `type` first."""
    if not tables:
        return []
    table = tables[0]
    columns, types = list(table.columns), list(table.columns_types)
    return [{"type": row_type, **{name: _cell(value, kind) for name, kind, value in zip(columns, types, row,
                                                                                          strict=False)}}
            for row in table.rows]


# -- pacing ----------------------------------------------------------------------------------------------------

class SlidingWindowPacer:
    """At most `limit` requests in any `window` seconds, across threads.

    Each request is given a send slot no earlier than `window` after the slot `limit` requests before it, and
    the caller sleeps until its slot. Slots, not clock readings, are remembered, so the bound holds whatever the
    sleep function does (tests pass one that does not sleep) and however late threads wake up. `pause` (after a
    429) moves every later slot past the pause.
    """

    def __init__(self, limit: int, window: float = QUOTA_WINDOW_SECONDS, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window = max(1, limit), window
        self._sleep, self._clock = sleep, clock
        self._slots: deque[float] = deque(maxlen=self.limit)
        self._paused_until = float("-inf")
        self._lock = threading.Lock()
        self.slots: list[float] = []  # every slot handed out, for coverage and tests
        self.waited = 0.0

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._paused_until)
            if len(self._slots) == self.limit:
                slot = max(slot, self._slots[0] + self.window)
            self._slots.append(slot)
            self.slots.append(slot)
            wait = slot - now
            self.waited += max(0.0, wait)
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


def retry_after_seconds(headers: Any, default: float) -> float:
    """Seconds from `retry-after-ms`/`x-ms-retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    headers = headers or {}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        try:
            return max(0.0, float(headers.get(name)) / 1000)
        except (TypeError, ValueError):
            pass
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return default


# -- coverage --------------------------------------------------------------------------------------------------

@dataclass
class InsightsCoverage:
    """What a Container Insights collection saw, for the run summary and the snapshot manifest."""

    captured_at: datetime
    lookback: timedelta
    workspaces: int = 0
    clusters: int = 0
    queries: int = 0  # query executions: one per workspace and query file
    requests: int = 0  # HTTP attempts, retries included
    throttled: int = 0  # 429 answers
    partial: int = 0  # results that came back with a PartialError
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INSIGHTS_TYPES, 0))
    seconds: float = 0.0
    gaps: list[Gap] = field(default_factory=list)

    @property
    def window_start(self) -> datetime:
        return self.captured_at - self.lookback

    def as_dict(self) -> dict[str, Any]:
        return {
            "capturedAt": iso_z(self.captured_at), "lookback": format_lookback(self.lookback),
            "windowStart": iso_z(self.window_start), "workspaces": self.workspaces, "clusters": self.clusters,
            "queries": self.queries, "requests": self.requests, "throttled429": self.throttled,
            "partial": self.partial, "rows": dict(self.rows), "seconds": round(self.seconds, 2),
            "gaps": [g.to_dict() for g in self.gaps],
        }

    def summary_line(self) -> str:
        text = (f"container insights: {self.workspaces:,} workspaces, {self.clusters:,} clusters, "
                f"{self.queries:,} queries, {self.requests:,} requests, {self.throttled:,} throttled (429), "
                f"{self.partial:,} partial, {sum(self.rows.values()):,} rows, lookback "
                f"{format_lookback(self.lookback)} to {iso_z(self.captured_at)}, {self.seconds:.1f}s")
        if self.gaps:
            text += f"; INCOMPLETE: {len(self.gaps)} gap(s)"
        return text


class QueryFailed(Exception):
    def __init__(self, reason: str, *, workspace_unreadable: bool = False) -> None:
        super().__init__(reason)
        self.workspace_unreadable = workspace_unreadable


def describe_http_error(exc: HttpResponseError) -> str:
    """`HTTP 403 InsufficientAccessError: message`, from whatever error body the service sent."""
    code, message = "", ""
    model = getattr(exc, "model", None)
    if model is not None:
        code, message = getattr(model, "code", "") or "", getattr(model, "message", "") or ""
    if not code and exc.response is not None:
        try:
            error = (exc.response.json() or {}).get("error") or {}
            code, message = str(error.get("code") or ""), str(error.get("message") or "")
            inner = error.get("innererror") or {}
            message = str(inner.get("message") or message) if isinstance(inner, dict) else message
        except (ValueError, AttributeError):
            pass
    return f"HTTP {exc.status_code} {code}: {message or exc.reason or ''}".strip().rstrip(":")


def _cluster_names(cluster_ids: Iterable[str], limit: int = 20) -> str:
    names = [c.rstrip("/").rsplit("/", 1)[-1] for c in cluster_ids]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def workspace_gap(target: WorkspaceTarget, types: tuple[str, ...], reason: str) -> Gap:
    subscriptions = frozenset(s for s in (subscription_of(c) for c in target.cluster_ids) if s)
    return Gap(GAP_QUERY, types, subscriptions,
               f"workspace {target.label} ({len(target.cluster_ids)} cluster(s): "
               f"{_cluster_names(target.cluster_ids)}): {reason}")


# -- collection ------------------------------------------------------------------------------------------------

class ContainerInsightsCollector:
    """Collect pull-failure events and running images for the clusters of each workspace target."""

    def __init__(self, credential, *, endpoint: str = DEFAULT_ENDPOINT, lookback: timedelta = timedelta(days=1),
                 connection_verify: str | None = None, concurrency: int = 4, max_queries_per_30s: int = 150,
                 progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], datetime] | None = None, max_attempts: int = 4, max_throttle_waits: int = 6,
                 backoff: float = 1.0, default_retry_after: float = 5.0) -> None:
        if lookback <= timedelta(0):
            raise ValueError("lookback must be longer than zero")
        kwargs: dict[str, Any] = {"retry_total": 0}  # retries are ours: paced, counted and bounded
        if connection_verify:
            kwargs["connection_verify"] = connection_verify
        self.endpoint = endpoint.rstrip("/")
        self.client = LogsQueryClient(credential, endpoint=self.endpoint, **kwargs)
        self.lookback = lookback
        self.concurrency = max(1, min(concurrency, MAX_CONCURRENT_QUERIES))
        self.pacer = SlidingWindowPacer(min(max(1, max_queries_per_30s), SERVICE_QUOTA_PER_WINDOW), sleep=sleep)
        self.progress = progress or (lambda _message: None)
        self.max_attempts = max(1, max_attempts)
        self.max_throttle_waits = max(0, max_throttle_waits)
        self.backoff = backoff
        self.default_retry_after = default_retry_after
        self._sleep = sleep
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._credential_rejected = ""

    def collect(self, targets: Iterable[WorkspaceTarget], sink: Sink) -> InsightsCoverage:
        started = time.monotonic()
        captured_at = self._now().astimezone(UTC).replace(microsecond=0)
        targets = merge_targets(targets)
        coverage = InsightsCoverage(captured_at, self.lookback, workspaces=len(targets),
                                    clusters=len({norm_id(c) for t in targets for c in t.cluster_ids}))

        def deliver(kind: str, rows: list[dict]) -> None:
            with self._lock:
                coverage.rows[kind] = coverage.rows.get(kind, 0) + len(rows)
                if rows:
                    sink(kind, rows)

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="insights") as pool:
            list(pool.map(lambda target: self._collect_workspace(target, deliver, coverage), targets))
        coverage.seconds = time.monotonic() - started
        return coverage

    def _collect_workspace(self, target: WorkspaceTarget, deliver: Sink, coverage: InsightsCoverage) -> None:
        failures: list[tuple[str, str]] = []  # (row type, reason)
        queries = list(insights_queries().values())
        for index, query in enumerate(queries):
            if self._credential_rejected:
                failures += [(q.row_type, f"skipped: {self._credential_rejected}") for q in queries[index:]]
                break
            try:
                rows, partial_error = self._run(target, query, coverage)
            except QueryFailed as exc:
                if exc.workspace_unreadable:  # the other query would fail the same way: do not spend it
                    failures += [(q.row_type, str(exc)) for q in queries[index:]]
                    break
                failures.append((query.row_type, str(exc)))
                continue
            deliver(query.row_type, rows)
            if partial_error:
                failures.append((query.row_type, f"partial result, rows may be missing ({partial_error})"))
        for gap in _gaps_of(target, failures):
            with self._lock:
                coverage.gaps.append(gap)
            self.progress(f"container insights: {gap.reason}")

    def _run(self, target: WorkspaceTarget, query: InsightsQuery,
             coverage: InsightsCoverage) -> tuple[list[dict], str]:
        text = query.render(target.cluster_ids, coverage.window_start)
        timespan = (coverage.window_start, coverage.captured_at)
        with self._lock:
            coverage.queries += 1
        result = self._execute(target, text, timespan, coverage)
        if isinstance(result, LogsQueryPartialResult):
            with self._lock:
                coverage.partial += 1
            return table_rows(result.partial_data, query.row_type), _describe_partial(result.partial_error)
        return table_rows(result.tables, query.row_type), ""

    def _execute(self, target: WorkspaceTarget, text: str, timespan: tuple[datetime, datetime],
                 coverage: InsightsCoverage):
        attempts, throttle_waits = 0, 0
        while True:
            self.pacer.acquire()
            with self._lock:
                coverage.requests += 1
            try:
                if target.workspace_id:
                    return self.client.query_workspace(target.workspace_id, text, timespan=timespan)
                return self.client.query_resource(target.workspace_resource_id, text, timespan=timespan)
            except HttpResponseError as exc:
                if exc.response is None:  # nothing was sent: this is how the SDK reports a credential failure
                    first_line = (str(exc).splitlines() or [""])[0][:300]
                    raise self._stop_all(f"the credential gave no token for Log Analytics ({first_line})") from None
                status = exc.status_code or 0
                if status == 401:
                    raise self._stop_all(f"Log Analytics rejected the credential ({describe_http_error(exc)})") \
                        from None
                if status == 429 and throttle_waits < self.max_throttle_waits:
                    throttle_waits += 1
                    wait = retry_after_seconds(exc.response.headers if exc.response is not None else None,
                                               self.default_retry_after * throttle_waits)
                    with self._lock:
                        coverage.throttled += 1
                    self.pacer.pause(wait)
                    self.progress(f"container insights: throttled (429) on {target.label}; waiting {wait:.1f}s")
                    continue
                if status in PERMANENT_STATUSES:
                    raise QueryFailed(describe_http_error(exc), workspace_unreadable=status != 400) from None
                attempts += 1
                if status >= 500 and attempts < self.max_attempts:
                    self._sleep(self._backoff(attempts))
                    continue
                if status == 429:
                    raise QueryFailed(f"still throttled (429) after {throttle_waits} waits") from None
                raise QueryFailed(f"{describe_http_error(exc)} after {attempts} attempt(s)") from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                problem = lasting_problem(exc)
                if problem is not None:  # no workspace can be read through this endpoint
                    raise self._stop_all(f"the Log Analytics query endpoint: {problem} (not retried)") from None
                attempts += 1
                if attempts < self.max_attempts:
                    self._sleep(self._backoff(attempts))
                    continue
                raise QueryFailed(f"connection failed after {attempts} attempts ({type(exc).__name__})") from None

    def _stop_all(self, reason: str) -> QueryFailed:
        """No workspace can be read without a credential: the remaining queries are skipped, each with a gap."""
        self._credential_rejected = reason
        return QueryFailed(reason, workspace_unreadable=True)

    def _backoff(self, attempt: int) -> float:
        return self.backoff * 2 ** (attempt - 1) + random.uniform(0, self.backoff)


def _describe_partial(error: Any) -> str:
    """`PartialError: <the innermost message the service gave>`; the top-level message is generic."""
    if error is None:
        return "PartialError"
    code = getattr(error, "code", "") or "PartialError"
    message = getattr(error, "message", "") or ""
    for detail in getattr(error, "details", None) or []:
        message = _innermost_message(detail) or message
    return f"{code}: {message}".rstrip(": ")


def _innermost_message(detail: Any) -> str:
    """Error details are mappings (dicts or SDK models) that may nest `innererror`s; the deepest message wins."""
    message = ""
    while isinstance(detail, Mapping):
        message = str(detail.get("message") or message)
        detail = detail.get("innererror")
    return message


def _gaps_of(target: WorkspaceTarget, failures: list[tuple[str, str]]) -> list[Gap]:
    """One gap per distinct reason, naming every row type it cost (a workspace-wide failure: both types)."""
    by_reason: dict[str, list[str]] = {}
    for row_type, reason in failures:
        by_reason.setdefault(reason, []).append(row_type)
    return [workspace_gap(target, tuple(dict.fromkeys(types)), reason) for reason, types in by_reason.items()]


def merge_targets(targets: Iterable[WorkspaceTarget]) -> list[WorkspaceTarget]:
    """One target per workspace (ARM ids compared case-insensitively), its clusters united, none empty."""
    merged: dict[str, WorkspaceTarget] = {}
    for target in targets:
        key = norm_id(target.workspace_resource_id) or target.workspace_id.lower()
        if not key:
            continue
        known = merged.get(key)
        clusters = {norm_id(c): c for c in (*(known.cluster_ids if known else ()), *target.cluster_ids) if c}
        merged[key] = WorkspaceTarget(target.workspace_resource_id or (known.workspace_resource_id if known else ""),
                                      target.workspace_id or (known.workspace_id if known else ""),
                                      tuple(clusters[k] for k in sorted(clusters)))
    return [t for t in merged.values() if t.cluster_ids]
