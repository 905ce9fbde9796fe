"""Azure Resource Graph emulator: serves a snapshot over HTTPS on 127.0.0.1 with the real protocol.

`POST /providers/Microsoft.ResourceGraph/resources` takes the service's request body (`query`,
`subscriptions`, `managementGroups`, `options` with `$top`, `$skipToken`, `resultFormat`,
`allowPartialScopes`, `authorizationScopeFilter`) and answers `objectArray` pages with `totalRecords`,
`count`, `resultTruncated` and `$skipToken`, plus the per-principal quota headers. Over quota it sends
429 `RateLimiting` without `Retry-After`, as the service does. It answers only the collector's own
queries (recognised by their text) and refuses anything else with 400 `InvalidQuery`.

Scope semantics follow the service: a subscription-scoped query sees only rows of those subscriptions
(no management-group role assignments, no built-in role definitions); a management-group query sees
what is at and below the group (or at and above it with `authorizationScopeFilter: AtScopeAndAbove`).
The same server answers Resource Manager's deny-assignment listing (Resource Graph does not hold deny
assignments): `GET {scope}/providers/Microsoft.Authorization/denyAssignments?api-version=2022-04-01` for the
root, a management group, a subscription, a resource group or a resource, serving the snapshot's
`microsoft.authorization/denyassignments` rows in ARM's shape (`{"value": [...], "nextLink": <absolute URL>}`).
Without `$filter` it returns what is at, above and below the scope; with `$filter=atScope()` only what is at
and above it (MicrosoftDocs/azure-docs role-based-access-control/deny-assignments-rest.md). Above a
subscription are its management groups (the snapshot's `managementGroupAncestorsChain`) and the root. These
requests do not draw on the Resource Graph quota (ARM throttles them separately); a throttled one gets 429
`TooManyRequests` with `Retry-After`, as Resource Manager sends it.

`GET /stats` returns request counters; they are also printed on exit.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from auditors.arm import MG_PREFIX, ROOT_SCOPE, management_group_chain, norm_id, subscription_of
from auditors.sources.kql import Query, collector_queries, normalise
from emulators.rows import read_rows, row_type
from emulators.server import HttpsEmulator, JsonHandler, error_body

RESOURCES_PATH = "/providers/microsoft.resourcegraph/resources"
MAX_TOP = 1000
MAX_SUBSCRIPTIONS = 1000
SCOPE_FILTERS = ("AtScopeAndBelow", "AtScopeAndAbove", "AtScopeExact", "AtScopeAboveAndBelow")
DENY_TYPE = "microsoft.authorization/denyassignments"
DENY_PATH_SUFFIX = "/providers/microsoft.authorization/denyassignments"
DENY_API_VERSIONS = ("2022-04-01", "2018-07-01-preview")
DENY_PERMISSION = "Microsoft.Authorization/denyAssignments/read"
RESOURCE_GRAPH, DENY_ASSIGNMENTS = "resourceGraph", "denyAssignments"  # the endpoints, for per-endpoint faults


@dataclass
class Faults:
    """Injected failures, for tests. The first-N counts apply to each endpoint's own requests: `throttle_first=2`
    throttles the first two Resource Graph queries and, separately, the first two deny-assignment listings."""

    fail_first: int = 0
    fail_status: int = 500
    throttle_first: int = 0
    reset_first: int = 0
    fail_subscriptions: set[str] = field(default_factory=set)  # any request naming one of these: 500
    truncate_queries: set[str] = field(default_factory=set)  # answer resultTruncated "true"
    fail_queries: set[str] = field(default_factory=set)  # always answer 500 to these queries (file stems)
    fail_scopes: set[str] = field(default_factory=set)  # deny-assignment listings at these scopes: always 500
    forbid_deny_assignments: bool = False  # the caller lacks Microsoft.Authorization/denyAssignments/read: 403


@dataclass
class Stats:
    requests: int = 0
    pages: int = 0
    rows: int = 0
    throttled: int = 0
    errors: int = 0
    resets: int = 0
    per_query: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # The deny-assignment listing (Resource Manager); the fields above count Resource Graph only.
    deny_requests: int = 0
    deny_pages: int = 0
    deny_rows: int = 0
    deny_throttled: int = 0
    deny_errors: int = 0
    deny_forbidden: int = 0
    deny_resets: int = 0
    deny_per_scope: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "pages": self.pages, "rows": self.rows, "throttled429": self.throttled,
                "errors": self.errors, "connectionResets": self.resets, "perQuery": dict(self.per_query),
                "denyAssignments": {
                    "requests": self.deny_requests, "pages": self.deny_pages, "rows": self.deny_rows,
                    "throttled429": self.deny_throttled, "errors": self.deny_errors,
                    "forbidden403": self.deny_forbidden, "connectionResets": self.deny_resets,
                    "perScope": dict(self.deny_per_scope)}}


class Quota:
    """Fixed-window quota per principal, as Resource Graph reports it."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def take(self, principal: str) -> tuple[bool, int, float]:
        """(allowed, remaining after this request, seconds until the window resets)."""
        with self._lock:
            now = time.monotonic()
            start, used = self._windows.get(principal, (now, 0))
            if now - start >= self.window:
                start, used = now, 0
            allowed = used < self.limit
            used += 1 if allowed else 0
            self._windows[principal] = (start, used)
            return allowed, self.limit - used, max(0.0, self.window - (now - start))


def _hms(seconds: float) -> str:
    whole = int(seconds + 0.999)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Estate:
    """The snapshot, indexed for scope filtering."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows_by_type: dict[str, list[dict]] = defaultdict(list)
        self.ancestors: dict[str, list[str]] = {}  # subscription -> management groups, nearest first
        self.mg_ancestors: dict[str, list[str]] = {}  # management group -> its ancestors, nearest first
        for row in rows:
            if not isinstance(row.get("id"), str):
                continue
            kind = row_type(row)
            self.rows_by_type[kind].append(row)
            if kind == "microsoft.resources/subscriptions":
                chain = management_group_chain(row.get("properties")) or []
                sub = (row.get("subscriptionId") or subscription_of(row["id"])).lower()
                self.ancestors[sub] = chain
                for index, mg in enumerate(chain):
                    self.mg_ancestors.setdefault(mg, chain[index + 1:])
        for typed in self.rows_by_type.values():
            typed.sort(key=lambda r: norm_id(r["id"]))

    @property
    def subscriptions(self) -> list[str]:
        return sorted(self.ancestors)

    def subscriptions_under(self, groups: list[str]) -> set[str]:
        return {s for s, chain in self.ancestors.items() if any(g in chain for g in groups)}

    def scope_and_ancestors(self, scope: str) -> list[str]:
        """A normalised scope and every scope above it, nearest first: (child) resources, resource group,
        subscription, its management groups, root."""
        if scope == ROOT_SCOPE:
            return [ROOT_SCOPE]
        if scope.startswith(MG_PREFIX):
            group = scope[len(MG_PREFIX):]
            return [scope, *(MG_PREFIX + a for a in self.mg_ancestors.get(group, [])), ROOT_SCOPE]
        parts = scope.strip("/").split("/")
        prefixes = ["/" + "/".join(parts[:end]) for end in range(2, len(parts) + 1, 2)
                    if parts[end - 2] != "providers"]  # `.../providers/{namespace}` is not a scope
        groups = self.ancestors.get(subscription_of(scope), [])
        return [*reversed(prefixes), *(MG_PREFIX + g for g in groups), ROOT_SCOPE]

    def is_below(self, scope: str, listing_scope: str) -> bool:
        """Whether `scope` lies strictly below `listing_scope` (both normalised)."""
        if scope == listing_scope:
            return False
        if listing_scope == ROOT_SCOPE:
            return True
        if listing_scope.startswith(MG_PREFIX):
            group = listing_scope[len(MG_PREFIX):]
            if scope.startswith(MG_PREFIX):
                return group in self.mg_ancestors.get(scope[len(MG_PREFIX):], [])
            return group in self.ancestors.get(subscription_of(scope), [])
        return scope.startswith(listing_scope + "/")


def _row_subscription(row: dict) -> str:
    return str(row.get("subscriptionId") or subscription_of(row["id"])).lower()


def _principal_type(row: dict) -> str:
    properties = row.get("properties")
    return str(properties.get("principalType") or "").lower() if isinstance(properties, dict) else ""


def _authorization_scope(row: dict) -> str:
    """The scope an authorization row lives at: the assignment's scope, or where a definition is defined."""
    properties = row.get("properties") if isinstance(row.get("properties"), dict) else {}
    scope = properties.get("scope") if row_type(row).endswith("roleassignments") else None
    if isinstance(scope, str) and scope:
        return norm_id(scope)
    key = norm_id(row["id"])
    head = key.split("/providers/microsoft.authorization/")[0]
    return head or "/"


def _deny_scope(row: dict) -> str:
    """Where a deny assignment lives: `properties.scope`, else the part of its id before the provider."""
    properties = row.get("properties") if isinstance(row.get("properties"), dict) else {}
    scope = properties.get("scope")
    if isinstance(scope, str) and scope.strip():
        return norm_id(scope)
    return norm_id(row["id"]).split("/providers/microsoft.authorization/")[0] or ROOT_SCOPE


def deny_listing_scope(path: str) -> str | None:
    """The normalised scope of a deny-assignment listing path, or None when the path is not one."""
    key = norm_id("/" + "/".join(part for part in path.split("/") if part))
    if not key.endswith(DENY_PATH_SUFFIX):
        return None
    scope = key[:-len(DENY_PATH_SUFFIX)] or ROOT_SCOPE
    if scope == ROOT_SCOPE or scope.startswith("/subscriptions/") or (
            scope.startswith(MG_PREFIX) and "/" not in scope[len(MG_PREFIX):]):
        return scope
    return None


class Request:
    """One parsed query request and the visibility rules its scope implies."""

    def __init__(self, body: dict, estate: Estate, subscription_limit: int) -> None:
        options = body.get("options") or {}
        self.subscriptions = [str(s).lower() for s in body.get("subscriptions") or []]
        self.groups = [str(g).lower() for g in body.get("managementGroups") or []]
        self.top = options.get("$top")
        self.skip_token = options.get("$skipToken")
        self.result_format = options.get("resultFormat", "objectArray")
        self.partial = bool(options.get("allowPartialScopes", False))
        self.scope_filter = options.get("authorizationScopeFilter") or "AtScopeAndBelow"
        self.estate = estate
        self.limit_hit = False
        if self.subscriptions:
            self.visible_subscriptions = set(self.subscriptions)
        else:
            candidates = estate.subscriptions_under(self.groups) if self.groups else set(estate.subscriptions)
            if len(candidates) > subscription_limit:
                self.limit_hit = True
                candidates = set(sorted(candidates)[:subscription_limit])
            self.visible_subscriptions = candidates

    def fingerprint(self, query: Query) -> str:
        text = json.dumps([query.name, sorted(self.subscriptions), sorted(self.groups), self.scope_filter])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def visible(self, row: dict, query: Query) -> bool:
        if not query.authorization:
            return _row_subscription(row) in self.visible_subscriptions
        scope = _authorization_scope(row)
        sub = subscription_of(scope)
        if not self.subscriptions and not self.groups:
            return sub in self.visible_subscriptions if sub else True
        if self.subscriptions:
            return self._subscription_view(scope, sub)
        return self._group_view(scope, sub, row)

    def _subscription_view(self, scope: str, sub: str) -> bool:
        if self.scope_filter == "AtScopeAndBelow":
            return sub in self.visible_subscriptions
        if self.scope_filter == "AtScopeExact":
            return scope in {f"/subscriptions/{s}" for s in self.subscriptions}
        above = {f"/subscriptions/{s}" for s in self.subscriptions} | {"/"}
        above |= {MG_PREFIX + m for s in self.subscriptions for m in self.estate.ancestors.get(s, [])}
        if self.scope_filter == "AtScopeAndAbove":
            return scope in above
        return scope in above or sub in self.visible_subscriptions

    def _group_view(self, scope: str, sub: str, row: dict) -> bool:
        groups = set(self.groups)
        below = (sub in self.visible_subscriptions) if sub else (
            scope.startswith(MG_PREFIX) and (scope[len(MG_PREFIX):] in groups or any(
                g in self.estate.mg_ancestors.get(scope[len(MG_PREFIX):], []) for g in groups)))
        if row_type(row).endswith("roledefinitions") and scope == "/":
            below = True  # built-in role definitions are visible to management-group queries
        above = scope == "/" or (scope.startswith(MG_PREFIX) and scope[len(MG_PREFIX):] in (
            groups | {a for g in groups for a in self.estate.mg_ancestors.get(g, [])}))
        exact = scope in {MG_PREFIX + g for g in groups}
        return {"AtScopeAndBelow": below, "AtScopeAndAbove": above, "AtScopeExact": exact,
                "AtScopeAboveAndBelow": above or below}[self.scope_filter]


class ResourceGraphEmulator(HttpsEmulator):
    """Serve a snapshot as Azure Resource Graph. Use as a context manager or call start()/stop()."""

    def __init__(self, snapshot: str | Path | list[dict], *, page_size: int = MAX_TOP,
                 quota: tuple[int, float] = (15, 5.0),
                 faults: Faults | None = None, ca_out: str | Path | None = None, port: int = 0,
                 subscription_limit: int = 10_000, deny_page_size: int = 10) -> None:
        rows = snapshot if isinstance(snapshot, list) else list(read_rows(snapshot))
        self.estate = Estate(rows)
        gc.freeze()  # millions of long-lived rows: keep the cyclic collector from rescanning them on every page
        self.page_size = max(1, min(page_size, MAX_TOP))
        self.deny_page_size = max(1, deny_page_size)
        self.quota = Quota(*quota)
        self.faults = faults or Faults()
        self.stats = Stats()
        self.subscription_limit = subscription_limit
        self.queries = {normalise(q.text): q for q in collector_queries().values()}
        super().__init__(ca_out=ca_out, port=port)
        self._seen: dict[str, int] = defaultdict(int)
        self._results: dict[str, list[dict]] = {}

    # -- protocol -------------------------------------------------------------------------------------
    def next_fault(self, endpoint: str = RESOURCE_GRAPH) -> str:
        with self._lock:
            self._seen[endpoint] += 1
            seen = self._seen[endpoint]
        if seen <= self.faults.reset_first:
            return "reset"
        if seen <= self.faults.reset_first + self.faults.throttle_first:
            return "throttle"
        if seen <= self.faults.reset_first + self.faults.throttle_first + self.faults.fail_first:
            return "fail"
        return ""

    def answer(self, body: dict, principal: str) -> tuple[int, dict, dict[str, str]]:
        allowed, remaining, resets = self.quota.take(principal)
        headers = {"x-ms-user-quota-remaining": str(max(0, remaining)),
                   "x-ms-user-quota-resets-after": _hms(resets)}
        if not allowed:
            self.stats.throttled += 1
            return 429, _error("RateLimiting", "Client application has been throttled and should not attempt to "
                                               "repeat the request until an amount of time has elapsed. Please see "
                                               "https://aka.ms/resourcegraph-throttling for help."), headers
        query = self.queries.get(normalise(str(body.get("query") or "")))
        if query is None:
            return 400, _error("InvalidQuery", "Query is invalid. The emulator answers only the collector's own "
                                               "queries (auditors/sources/queries/*.kql)."), headers
        request = Request(body, self.estate, self.subscription_limit)
        problem = self._invalid(request)
        if problem:
            return 400, problem, headers
        if self.faults.fail_subscriptions & set(request.subscriptions) or query.name in self.faults.fail_queries:
            self.stats.errors += 1
            return 500, _error("InternalServerError", "Injected failure for this query or subscription batch."), headers
        if request.limit_hit:
            if not request.partial:
                return 400, _error("TooManySubscriptionsUnderScope",
                                   f"More than {self.subscription_limit} subscriptions are under the query scope; "
                                   "set allowPartialScopes or query subscriptions in batches."), headers
            headers["x-ms-tenant-subscription-limit-hit"] = "true"
        return self._page(query, request, headers)

    def _invalid(self, request: Request) -> dict | None:
        if request.result_format != "objectArray":
            return _error("BadRequest", "The emulator serves resultFormat objectArray only.")
        if len(request.subscriptions) > MAX_SUBSCRIPTIONS:
            return _error("BadRequest", f"At most {MAX_SUBSCRIPTIONS} subscriptions may be given per request.")
        if request.scope_filter not in SCOPE_FILTERS:
            return _error("BadRequest", f"Unknown authorizationScopeFilter {request.scope_filter!r}.")
        top = request.top
        if top is not None and (not isinstance(top, int) or not 1 <= top <= MAX_TOP):
            return _error("BadRequest", f"$top must be between 1 and {MAX_TOP}.")
        return None

    def _visible_rows(self, query: Query, request: Request, fingerprint: str) -> list[dict]:
        """Rows a query sees in its scope, sorted by id; kept for the following pages of the same query."""
        with self._lock:
            cached = self._results.get(fingerprint)
        if cached is None:
            excluded = set(query.excluded_principal_types)
            cached = [row for kind in query.types for row in self.estate.rows_by_type.get(kind, ())
                      if request.visible(row, query) and not (excluded and _principal_type(row) in excluded)]
            cached.sort(key=lambda r: norm_id(r["id"]))
            with self._lock:
                if len(self._results) >= 32:
                    self._results.pop(next(iter(self._results)))
                self._results[fingerprint] = cached
        return cached

    def _page(self, query: Query, request: Request, headers: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        offset = 0
        fingerprint = request.fingerprint(query)
        rows = self._visible_rows(query, request, fingerprint)
        if request.skip_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(request.skip_token.encode()))
                offset = int(token["offset"])
                valid = token["scope"] == fingerprint
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                return 400, _error("BadRequest", "The $skipToken does not belong to this query and scope."), headers
        size = min(request.top or MAX_TOP, self.page_size)
        page = rows[offset:offset + size]
        truncated = query.name in self.faults.truncate_queries and len(rows) > len(page)
        body: dict[str, Any] = {
            "totalRecords": len(rows), "count": len(page), "resultTruncated": "true" if truncated else "false",
            "data": [{c: row.get(c) for c in query.columns} for row in page], "facets": [],
        }
        if not truncated and offset + size < len(rows):
            body["$skipToken"] = base64.urlsafe_b64encode(json.dumps(
                {"offset": offset + size, "scope": fingerprint}).encode()).decode()
        with self._lock:
            self.stats.pages += 1
            self.stats.rows += len(page)
            self.stats.per_query[query.name] += 1
        return 200, body, headers

    # -- Resource Manager: deny assignments ---------------------------------------------------------------
    def answer_deny(self, path: str, scope: str, query: dict[str, list[str]]) -> tuple[int, dict, dict[str, str]]:
        """One deny-assignment listing page, after the transport-level faults and authentication."""
        api_version = (query.get("api-version") or [""])[0]
        if not api_version:
            return 400, _error("MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests."), {}
        if api_version not in DENY_API_VERSIONS:
            return 400, _error("InvalidApiVersionParameter",
                               f"The api-version '{api_version}' is invalid. The supported versions are "
                               f"'{', '.join(DENY_API_VERSIONS)}'."), {}
        if self.faults.forbid_deny_assignments:
            with self._lock:
                self.stats.deny_forbidden += 1
            return 403, _error("AuthorizationFailed",
                               f"The client does not have authorization to perform action '{DENY_PERMISSION}' "
                               f"over scope '{scope}' or the scope is invalid. If access was recently granted, "
                               "please refresh your credentials."), {}
        if scope in {norm_id(s) for s in self.faults.fail_scopes}:
            with self._lock:
                self.stats.deny_errors += 1
            return 500, _error("InternalServerError", "Injected failure for this scope."), {}
        text_filter = (query.get("$filter") or [""])[0]
        compact = "".join(text_filter.split()).lower()
        if compact not in ("", "atscope()"):
            return 400, _error("BadRequest", f"The emulator answers no $filter or atScope(), not {text_filter!r}."), {}
        at_and_above = compact == "atscope()"
        rows = self._visible_deny_rows(scope, at_and_above)
        offset = 0
        fingerprint = hashlib.sha256(json.dumps([scope, at_and_above]).encode()).hexdigest()[:16]
        skip_token = (query.get("$skipToken") or [""])[0]
        if skip_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(skip_token.encode()))
                offset = int(token["offset"])
                valid = token["scope"] == fingerprint
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                return 400, _error("BadRequest", "The $skipToken does not belong to this scope and filter."), {}
        page = rows[offset:offset + self.deny_page_size]
        body: dict[str, Any] = {"value": [_arm_deny_assignment(row) for row in page]}
        if offset + len(page) < len(rows):
            params = {"api-version": api_version}
            if text_filter:
                params["$filter"] = text_filter
            params["$skipToken"] = base64.urlsafe_b64encode(json.dumps(
                {"offset": offset + len(page), "scope": fingerprint}).encode()).decode()
            body["nextLink"] = f"{self.endpoint}{path}?{urlencode(params, quote_via=quote, safe='$')}"
        with self._lock:
            self.stats.deny_pages += 1
            self.stats.deny_rows += len(page)
        return 200, body, {}

    def _visible_deny_rows(self, scope: str, at_and_above: bool) -> list[dict]:
        above = set(self.estate.scope_and_ancestors(scope))
        visible = []
        for row in self.estate.rows_by_type.get(DENY_TYPE, ()):
            where = _deny_scope(row)
            if where in above or (not at_and_above and self.estate.is_below(where, scope)):
                visible.append(row)
        return visible


def _arm_deny_assignment(row: dict) -> dict:
    """A snapshot row as Resource Manager returns it: no Resource Graph columns, ARM's type spelling."""
    return {"properties": row.get("properties"), "id": row["id"], "type": "Microsoft.Authorization/denyAssignments",
            "name": row.get("name")}


_error = error_body


class _Handler(JsonHandler):
    owner: ResourceGraphEmulator

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/stats":
            self.send_json(200, self.owner.stats.as_dict())
            return
        path = "/" + "/".join(part for part in path.split("/") if part)
        scope = deny_listing_scope(path)
        if scope is None:
            self.send_json(404, _error("NotFound", "Unknown path."))
            return
        self._list_deny_assignments(path, scope)

    def _list_deny_assignments(self, path: str, scope: str) -> None:
        owner = self.owner
        with owner._lock:
            owner.stats.deny_requests += 1
            owner.stats.deny_per_scope[scope] += 1
        fault = owner.next_fault(DENY_ASSIGNMENTS)
        if fault == "reset":
            with owner._lock:
                owner.stats.deny_resets += 1
            self.drop_connection()
            return
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            self.send_json(401, _error("AuthenticationFailed", "Missing or malformed bearer token."))
            return
        if fault == "throttle":
            with owner._lock:
                owner.stats.deny_throttled += 1
            self.send_json(429, _error("TooManyRequests", "Injected throttling."),
                           {"Retry-After": "1", "x-ms-ratelimit-remaining-subscription-reads": "0"})
            return
        if fault == "fail":
            with owner._lock:
                owner.stats.deny_errors += 1
            self.send_json(owner.faults.fail_status, _error("ServiceUnavailable", "Injected failure."))
            return
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        status, payload, headers = owner.answer_deny(path, scope, query)
        self.send_json(status, payload, headers)

    def do_POST(self) -> None:
        owner = self.owner
        raw = self.read_body()
        if self.path.split("?")[0].lower() != RESOURCES_PATH:
            self.send_json(404, _error("NotFound", "Unknown path."))
            return
        with owner._lock:
            owner.stats.requests += 1
        fault = owner.next_fault()
        if fault == "reset":
            with owner._lock:
                owner.stats.resets += 1
            self.drop_connection()
            return
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            self.send_json(401, _error("AuthenticationFailed", "Missing or malformed bearer token."))
            return
        principal = hashlib.sha256(authorization.encode()).hexdigest()  # never keep the token itself
        if fault == "throttle":
            owner.stats.throttled += 1
            self.send_json(429, _error("RateLimiting", "Injected throttling."),
                           {"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:01"})
            return
        if fault == "fail":
            owner.stats.errors += 1
            self.send_json(owner.faults.fail_status, _error("ServiceUnavailable", "Injected failure."))
            return
        try:
            body = json.loads(raw.decode("utf-8") or "{}")
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise ValueError("body must be a JSON object with a `query` string")
        except (ValueError, UnicodeDecodeError) as exc:
            self.send_json(400, _error("BadRequest", f"Request body is not valid: {exc}"))
            return
        status, payload, headers = owner.answer(body, principal)
        self.send_json(status, payload, headers)


ResourceGraphEmulator.handler = _Handler


SERVICE = "arg"
HELP = "Azure Resource Graph (and Resource Manager's deny-assignment listing) serving a snapshot on 127.0.0.1"


def _quota(text: str) -> tuple[int, float]:
    try:
        count, seconds = text.split("/")
        return int(count), float(seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--quota {text!r}: use REQUESTS/SECONDS, e.g. 15/5") from exc


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", metavar="PATH")
    source.add_argument("--demo", action="store_true", help="serve the embedded demo estate")
    parser.add_argument("--page-size", type=int, default=1000, help="largest page served (forces paging)")
    parser.add_argument("--quota", type=_quota, default=(15, 5.0), metavar="N/SECONDS",
                        help="per-principal quota window (default 15/5)")
    parser.add_argument("--subscription-limit", type=int, default=10_000,
                        help="subscriptions a tenant/MG-scope query may cover (default 10000)")
    parser.add_argument("--fail", type=int, default=0, metavar="N",
                        help="answer the first N requests with --fail-status (counted per endpoint)")
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--throttle", type=int, default=0, metavar="N",
                        help="answer the first N requests with 429 (counted per endpoint: Resource Graph, deny "
                             "assignments)")
    parser.add_argument("--reset", type=int, default=0, metavar="N",
                        help="drop the connection of the first N requests (counted per endpoint)")
    parser.add_argument("--fail-subscription", action="append", default=[], metavar="ID",
                        help="always fail requests naming this subscription; repeatable")
    parser.add_argument("--truncate", action="append", default=[], metavar="QUERY",
                        help="answer this query (file stem) with resultTruncated; repeatable")
    parser.add_argument("--fail-query", action="append", default=[], metavar="QUERY",
                        help="always fail this query (file stem); repeatable")
    parser.add_argument("--deny-page-size", type=int, default=10,
                        help="deny assignments per page of the Resource Manager listing (default 10)")
    parser.add_argument("--fail-deny-scope", action="append", default=[], metavar="SCOPE",
                        help="always answer 500 to deny-assignment listings at this ARM scope; repeatable")
    parser.add_argument("--forbid-deny-assignments", action="store_true",
                        help="answer every deny-assignment listing 403 AuthorizationFailed (no "
                             f"{DENY_PERMISSION})")


def build(args) -> ResourceGraphEmulator:
    faults = Faults(fail_first=args.fail, fail_status=args.fail_status, throttle_first=args.throttle,
                    reset_first=args.reset, fail_subscriptions={s.lower() for s in args.fail_subscription},
                    truncate_queries=set(args.truncate), fail_queries=set(args.fail_query),
                    fail_scopes={norm_id(s) for s in args.fail_deny_scope},
                    forbid_deny_assignments=args.forbid_deny_assignments)
    snapshot = Path(str(resources.files("auditors") / "demo")) if args.demo else args.snapshot
    return ResourceGraphEmulator(snapshot, page_size=args.page_size, quota=args.quota, faults=faults,
                                 ca_out=args.ca_out, port=args.port, subscription_limit=args.subscription_limit,
                                 deny_page_size=args.deny_page_size)
