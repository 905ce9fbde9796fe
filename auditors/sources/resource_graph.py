"""Live collection from Azure Resource Graph across a tenant, management groups or subscriptions.

- Every query in `auditors/sources/queries/*.kql` is run to the last `$skipToken`; a truncated answer is
  an error, and rows are counted against `totalRecords`.
- Requests are paced by the quota headers Resource Graph returns (`x-ms-user-quota-remaining`,
  `x-ms-user-quota-resets-after`) so a normal run sees no 429; a 429 (which the SDK does not retry
  without `Retry-After`) waits for the reset plus jitter. 5xx and connection errors back off and retry.
- A query or subscription batch that still fails is recorded as a `Gap`: the run goes on, coverage says
  what is missing, and the engine turns verdicts that depended on it into Unknown.

Scope plans:
- tenant: each query once at tenant scope (`allowPartialScopes`, so a tenant past the 10,000
  subscription limit still answers; the limit-hit header is reported as partial coverage);
- management groups: each query per group batch, plus role data *above* the groups
  (`authorizationScopeFilter: AtScopeAndAbove`) for assignments inherited from parents and root;
- subscriptions: each query per batch of at most 1,000 subscriptions, plus role data at and above the
  subscriptions' management groups, which subscription-scoped queries cannot see.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from auditors.arm import PUBLIC_ARM_ENDPOINT, management_group_chain, norm_id
from auditors.model import Gap
from auditors.scopes import CollectionScope, ScopeError
from auditors.sources.connection import EndpointProblem, lasting_problem
from auditors.sources.kql import Query, collector_queries

API_VERSION = "2024-04-01"
DEFAULT_ENDPOINT = PUBLIC_ARM_ENDPOINT
SUBSCRIPTION_BATCH = 1000
MANAGEMENT_GROUP_BATCH = 10
PAGE_SIZE = 1000
Progress = Callable[[str], None]
RowSink = Callable[[Query, list[dict]], None]


@dataclass
class QueryStats:
    requests: int = 0
    pages: int = 0
    rows: int = 0
    total_records: int = 0
    retries: int = 0
    throttled: int = 0
    failed_tasks: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Coverage:
    """What a collection saw, for the run summary, the manifest and the runs table."""

    scope: str
    subscriptions_seen: int = 0
    queries: dict[str, QueryStats] = field(default_factory=dict)
    partial: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    authorization_above_subscriptions: bool = False
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(stats, name) for stats in self.queries.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "subscriptionsSeen": self.subscriptions_seen,
            "requests": self.total("requests"), "pages": self.total("pages"), "rows": self.total("rows"),
            "retries": self.total("retries"), "throttled429": self.total("throttled"),
            "seconds": round(self.seconds, 2), "partial": self.partial, "gaps": [g.to_dict() for g in self.gaps],
            "managementGroupRoleData": self.authorization_above_subscriptions,
            "queries": {name: stats.as_dict() for name, stats in self.queries.items()},
        }

    def summary_line(self) -> str:
        text = (f"coverage: {self.scope}, {self.subscriptions_seen:,} subscriptions, {len(self.queries)} queries, "
                f"{self.total('requests'):,} requests, {self.total('pages'):,} pages, {self.total('rows'):,} rows, "
                f"{self.total('retries'):,} retries, {self.total('throttled'):,} throttled (429), "
                f"{self.seconds:.1f}s")
        if self.gaps:
            text += f"; INCOMPLETE: {len(self.gaps)} query batch(es) failed"
        return text


def _seconds(hms: str | None) -> float | None:
    if not hms:
        return None
    try:
        parts = [float(p) for p in hms.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


class QuotaPacer:
    """Keeps requests inside the per-principal quota the service reports on every response.

    Resource Graph counts requests in fixed windows that start with the first request. The pacer learns the
    quota (requests per window) from `x-ms-user-quota-remaining` / `-resets-after` and never sends more than
    that many requests in any sliding window of that length (plus a margin), which no fixed window can then
    exceed, however late or out of order responses arrive. Until the first answer, one request probes alone.
    A response saying nothing remains (another client shares the principal) or a 429 pauses everyone until
    the reset.
    """

    MARGIN = 0.3

    def __init__(self, *, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 jitter: float = 0.25) -> None:
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        self._condition = threading.Condition()
        self._limit: int | None = None
        self._window = 0.0
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._inflight = 0
        self.waited = 0.0

    def acquire(self) -> None:
        with self._condition:
            while True:
                now = self._clock()
                wait = self._wait(now)
                if wait <= 0:
                    break
                self.waited += wait
                self._condition.wait(timeout=wait)
            self._sent.append(self._clock())
            self._inflight += 1

    def _wait(self, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if self._limit is None:
            return 0.0 if self._inflight == 0 else 0.05
        horizon = self._window + self.MARGIN
        while self._sent and self._sent[0] <= now - horizon:
            self._sent.popleft()
        if len(self._sent) < self._limit:
            return 0.0
        return self._sent[0] + horizon - now + random.uniform(0, self._jitter / 5)

    def release(self, headers: Any = None) -> None:
        with self._condition:
            self._inflight -= 1
            remaining = _int((headers or {}).get("x-ms-user-quota-remaining"))
            resets = _seconds((headers or {}).get("x-ms-user-quota-resets-after"))
            if remaining is not None:
                self._limit = max(self._limit or 1, remaining + 1)
                self._window = max(self._window, resets if resets is not None else 5.0)
                if remaining <= 0:
                    self._paused_until = self._clock() + (resets or 5.0) + random.uniform(0, self._jitter)
            self._condition.notify_all()

    def throttled(self, headers: Any) -> float:
        """After a 429: everyone waits for the reset; returns the wait."""
        resets = _seconds((headers or {}).get("x-ms-user-quota-resets-after"))
        wait = (resets if resets is not None else 5.0) + random.uniform(0.05, 0.05 + self._jitter)
        with self._condition:
            self._paused_until = self._clock() + wait
            if self._limit is not None:  # the quota is smaller than it looked (another client shares it)
                self._limit = max(1, self._limit - 1)
            self._condition.notify_all()
        return wait


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Task:
    query: Query
    label: str
    subscriptions: tuple[str, ...] = ()
    management_groups: tuple[str, ...] = ()
    scope_filter: str = ""
    covers: frozenset[str] = frozenset()  # subscriptions whose rows this task returns ('' = also MG/root)

    def body(self, page_size: int, skip_token: str | None) -> dict:
        options: dict[str, Any] = {"$top": page_size, "resultFormat": "objectArray"}
        if not self.subscriptions:
            options["allowPartialScopes"] = True
        if self.scope_filter:
            options["authorizationScopeFilter"] = self.scope_filter
        if skip_token:
            options["$skipToken"] = skip_token
        body: dict[str, Any] = {"query": self.query.text, "options": options}
        if self.subscriptions:
            body["subscriptions"] = list(self.subscriptions)
        if self.management_groups:
            body["managementGroups"] = list(self.management_groups)
        return body


class TaskFailed(Exception):
    pass


def _batches(items: list[str] | tuple[str, ...], size: int) -> list[tuple[str, ...]]:
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


class ResourceGraphCollector:
    """Collect every row the engine needs; hand each page to `sink` as it arrives."""

    def __init__(self, credential, *, endpoint: str = DEFAULT_ENDPOINT, scope: CollectionScope | None = None,
                 page_size: int = PAGE_SIZE, concurrency: int = 4, max_attempts: int = 5, max_throttle_waits: int = 8,
                 backoff: float = 0.5, progress: Progress | None = None, connection_verify: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from azure.mgmt.resourcegraph import ResourceGraphClient

        endpoint = endpoint.rstrip("/")
        self.endpoint = endpoint
        kwargs: dict[str, Any] = {"retry_total": 0}  # retries are ours: counted, paced and bounded
        if connection_verify:
            kwargs["connection_verify"] = connection_verify
        self.client = ResourceGraphClient(credential, base_url=endpoint,
                                          credential_scopes=[f"{endpoint}/.default"], **kwargs)
        self.scope = scope or CollectionScope()
        self.page_size = max(1, min(page_size, PAGE_SIZE))
        self.concurrency = max(1, concurrency)
        self.max_attempts = max_attempts
        self.max_throttle_waits = max_throttle_waits
        self.backoff = backoff
        self.progress = progress or (lambda _m: None)
        self.pacer = QuotaPacer(sleep=sleep)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_progress = 0.0
        self._coverage: Coverage | None = None

    # -- public ---------------------------------------------------------------------------------------
    def collect(self, sink: RowSink) -> Coverage:
        started = time.monotonic()
        queries = collector_queries()
        coverage = Coverage(self.scope.describe(), queries={name: QueryStats() for name in queries})
        self._coverage = coverage
        subscriptions: dict[str, list[str]] = {}

        def keep_subscriptions(query: Query, rows: list[dict]) -> None:
            for row in rows:
                sub = str(row.get("subscriptionId") or "").lower()
                subscriptions[sub] = management_group_chain(row.get("properties")) or []
            sink(query, rows)

        self._run(self._plan_subscriptions(queries["subscriptions"]), keep_subscriptions, coverage)
        coverage.subscriptions_seen = len(subscriptions)
        unreachable = [g for g in coverage.gaps if "connection failed" in g.reason]
        if unreachable and not subscriptions:  # the endpoint itself is down: do not wait out every query too
            for name, query in queries.items():
                if name != "subscriptions":
                    coverage.gaps.append(Gap(name, query.types, frozenset(),
                                             f"skipped: Resource Graph unreachable ({unreachable[0].reason})"))
            coverage.seconds = time.monotonic() - started
            return coverage
        self._check_scope_matched(subscriptions, coverage)
        self.progress(f"{len(subscriptions):,} subscriptions in scope ({self.scope.describe()})")
        data_queries = [q for name, q in queries.items() if name != "subscriptions"]
        self._run(self._plan_data(data_queries, subscriptions, coverage), sink, coverage)
        coverage.seconds = time.monotonic() - started
        return coverage

    def _check_scope_matched(self, subscriptions: dict[str, list[str]], coverage: Coverage) -> None:
        """A scope that names nothing the credential can see is a mistake, not an empty estate: stop (exit 2)
        rather than pass a CI gate with 0 findings."""
        failed = [g for g in coverage.gaps if g.query == "subscriptions"]
        if failed:
            refused = [g for g in failed if re.search(r"HTTP 40[034]\b", g.reason)]
            if refused and not subscriptions and self.scope.kind != "tenant":
                raise ScopeError(f"scope {self.scope.describe()}: Resource Graph refused it ({refused[0].reason}); "
                                 "check the name and that the credential can read it")
            return
        if self.scope.subscriptions:
            unseen = [s for s in self.scope.subscriptions if s not in subscriptions]
            if unseen:
                more = f" (and {len(unseen) - 1} more)" if len(unseen) > 1 else ""
                raise ScopeError(f"scope sub:{unseen[0]}{more}: no such subscription is visible to the credential; "
                                 "check the id, and that the credential has Reader on it")
        groups = self.scope.management_groups
        chains = list(subscriptions.values())
        empty = list(groups) if not subscriptions else [] if not all(chains) else [
            g for g in groups if not any(g.lower() in chain for chain in chains)]
        if empty:
            raise ScopeError(f"scope mg:{empty[0]}: no management group with this id, or no subscription under it, is "
                             "visible to the credential (give the group's id, not its display name)")

    # -- planning -------------------------------------------------------------------------------------
    def _plan_subscriptions(self, query: Query) -> list[Task]:
        if self.scope.subscriptions:
            return [Task(query, f"subscriptions {i + 1}", subscriptions=batch, covers=frozenset(batch))
                    for i, batch in enumerate(_batches(self.scope.subscriptions, SUBSCRIPTION_BATCH))]
        if self.scope.management_groups:
            return [Task(query, f"management groups {', '.join(batch)}", management_groups=batch)
                    for batch in _batches(self.scope.management_groups, MANAGEMENT_GROUP_BATCH)]
        return [Task(query, "tenant")]

    def _plan_data(self, queries: list[Query], subscriptions: dict[str, list[str]],
                   coverage: Coverage) -> list[Task]:
        tasks: list[Task] = []
        if self.scope.subscriptions:
            batches = _batches(self.scope.subscriptions, SUBSCRIPTION_BATCH)
            for query in queries:
                tasks += [Task(query, f"subscriptions batch {i + 1}/{len(batches)}", subscriptions=batch,
                               covers=frozenset(batch)) for i, batch in enumerate(batches)]
            parents = sorted({chain[0] for chain in subscriptions.values() if chain})
            coverage.authorization_above_subscriptions = bool(parents)
            if not parents:
                coverage.partial.append("no management-group ancestry for the subscriptions in scope, so role "
                                        "assignments inherited from management groups were not collected")
            for query in (q for q in queries if q.authorization):
                tasks += [Task(query, f"above management groups {', '.join(batch)}", management_groups=batch,
                               scope_filter="AtScopeAndAbove", covers=frozenset({""}))
                          for batch in _batches(parents, MANAGEMENT_GROUP_BATCH)]
            return tasks
        if self.scope.management_groups:
            coverage.authorization_above_subscriptions = True
            for query in queries:
                for batch in _batches(self.scope.management_groups, MANAGEMENT_GROUP_BATCH):
                    label = f"management groups {', '.join(batch)}"
                    tasks.append(Task(query, label, management_groups=batch))
                    if query.authorization:
                        tasks.append(Task(query, f"above {label}", management_groups=batch,
                                          scope_filter="AtScopeAndAbove", covers=frozenset({""})))
            return tasks
        coverage.authorization_above_subscriptions = True
        return [Task(query, "tenant") for query in queries]

    # -- execution ------------------------------------------------------------------------------------
    def _run(self, tasks: list[Task], sink: RowSink, coverage: Coverage) -> None:
        seen: dict[str, set[int]] = {}  # de-duplication where tasks of one query can overlap
        counts: dict[str, int] = {}
        for task in tasks:
            counts[task.query.name] = counts.get(task.query.name, 0) + 1
        for name, count in counts.items():
            if count > 1 and any(t.query.name == name and (t.management_groups or t.scope_filter) for t in tasks):
                seen[name] = set()

        def deliver(task: Task, rows: list[dict]) -> None:
            with self._lock:
                ids = seen.get(task.query.name)
                if ids is not None:
                    fresh = []
                    for row in rows:
                        key = hash(norm_id(row.get("id")))
                        if key not in ids:
                            ids.add(key)
                            fresh.append(row)
                    rows = fresh
                sink(task.query, rows)

        def run(task: Task) -> None:
            try:
                self._run_task(task, deliver, coverage.queries[task.query.name])
            except TaskFailed as exc:
                with self._lock:
                    coverage.queries[task.query.name].failed_tasks += 1
                    coverage.gaps.append(Gap(task.query.name, task.query.types, frozenset(task.covers - {""}),
                                             f"{task.label}: {exc}"))
                self.progress(f"query {task.query.name} ({task.label}) failed: {exc}")

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="arg") as pool:
            list(pool.map(run, tasks))

    def _run_task(self, task: Task, deliver: Callable[[Task, list[dict]], None], stats: QueryStats) -> None:
        skip_token: str | None = None
        rows_seen, total = 0, None
        while True:
            response = self._request(task, skip_token, stats)
            if str(response.get("resultTruncated", "false")).lower() == "true":
                raise TaskFailed(f"result truncated after {rows_seen + len(response.get('data') or [])} of "
                                 f"{response.get('totalRecords')} rows (the query must project id)")
            data = response.get("data")
            if not isinstance(data, list):
                raise TaskFailed("response has no objectArray data")
            if total is None:
                total = _int(response.get("totalRecords")) or 0
                with self._lock:
                    stats.total_records += total
            rows_seen += len(data)
            with self._lock:
                stats.pages += 1
                stats.rows += len(data)
            deliver(task, data)
            self._report(task, stats)
            skip_token = response.get("$skipToken") or response.get("skipToken")
            if not skip_token:
                break
        if total is not None and rows_seen < total:
            raise TaskFailed(f"collected {rows_seen} of {total} rows reported by totalRecords")

    def _request(self, task: Task, skip_token: str | None, stats: QueryStats) -> dict:
        body = json.dumps(task.body(self.page_size, skip_token)).encode()
        attempts, throttle_waits = 0, 0
        while True:
            self.pacer.acquire()
            headers = None
            try:
                with self._lock:
                    stats.requests += 1
                response, headers = self.client.resources(
                    body, api_version=API_VERSION, content_type="application/json",
                    cls=lambda pipeline, _deserialized, _: (
                        json.loads(pipeline.http_response.text() or "{}"), pipeline.http_response.headers),
                )
                if str(headers.get("x-ms-tenant-subscription-limit-hit", "")).lower() == "true":
                    self._limit_hit(task)
                return response
            except ClientAuthenticationError as exc:
                if exc.response is None:  # no token could be had: every query would fail the same way
                    raise
                raise ClientAuthenticationError(f"Resource Graph rejected the credential: {_describe(exc)}") \
                    from None
            except HttpResponseError as exc:
                headers = exc.response.headers if exc.response is not None else None
                status = exc.status_code or 0
                if status == 401:  # no query can succeed with this credential: stop, do not record 8 gaps
                    raise ClientAuthenticationError(f"Resource Graph rejected the credential: {_describe(exc)}") \
                        from None
                if status == 429 and throttle_waits < self.max_throttle_waits:
                    throttle_waits += 1
                    wait = self.pacer.throttled(headers)
                    with self._lock:
                        stats.throttled += 1
                        stats.retries += 1
                    self.progress(f"query {task.query.name}: throttled (429); waiting {wait:.1f}s for the quota reset")
                    self._sleep(wait)
                    continue
                attempts += 1
                if (status >= 500 or status == 429) and attempts < self.max_attempts:
                    with self._lock:
                        stats.retries += 1
                    self._sleep(self.backoff * 2 ** (attempts - 1) + random.uniform(0, self.backoff))
                    continue
                raise TaskFailed(_describe(exc)) from None
            except (ServiceRequestError, ServiceResponseError, OSError) as exc:
                problem = lasting_problem(exc)
                if problem is not None:
                    raise EndpointProblem(f"Resource Graph at {self.endpoint}: {problem}") from None
                if not isinstance(exc, ServiceRequestError | ServiceResponseError):
                    raise
                attempts += 1
                if attempts < self.max_attempts:
                    with self._lock:
                        stats.retries += 1
                    self._sleep(self.backoff * 2 ** (attempts - 1) + random.uniform(0, self.backoff))
                    continue
                raise TaskFailed(f"connection failed after {attempts} attempts: {type(exc).__name__}") from None
            finally:
                self.pacer.release(headers)

    def _limit_hit(self, task: Task) -> None:
        note = (f"Resource Graph's tenant subscription limit was hit ({task.query.name}, {task.label}): only part "
                "of the subscriptions under this scope were answered; audit per management group "
                "(--scope mg:NAME) or per subscription batch (--scope sub:ID) to cover the rest")
        with self._lock:
            if self._coverage is not None and note not in self._coverage.partial:
                self._coverage.partial.append(note)
                self.progress(f"partial: {note}")

    def _report(self, task: Task, stats: QueryStats) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 2:
            self._last_progress = now
            self.progress(f"query {task.query.name}: {stats.pages:,} pages, {stats.rows:,} rows")


def _describe(exc: HttpResponseError) -> str:
    code = getattr(getattr(exc, "error", None), "code", None) or ""
    details = ""
    error = getattr(exc, "error", None)
    for detail in getattr(error, "details", None) or []:
        details = getattr(detail, "message", "") or details
    return f"HTTP {exc.status_code} {code}: {details or exc.reason or ''}".strip()
