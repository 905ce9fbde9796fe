"""Microsoft Graph emulator: the snapshot's `microsoft.graph/*` rows over HTTPS on 127.0.0.1, Graph's protocol.

Served (v1.0, as direct GETs and as items of `POST /v1.0/$batch`):
- `/groups/{id}/transitiveMembers/microsoft.graph.servicePrincipal` (and the `graph.servicePrincipal` alias):
  400 `Request_UnsupportedQuery` unless `ConsistencyLevel: eventual` and `$count=true`; `$top` 1-999
  (default 100), `$select`, `@odata.count`, pages linked by an absolute `@odata.nextLink` with `$skiptoken`.
- `/groups/{id}`, `/servicePrincipals(appId='…')`, `/applications(appId='…')`, with `$select`; 404
  `Request_ResourceNotFound` in Graph's shape for what the snapshot does not hold.
- `$batch`: at most 20 requests with unique ids and relative urls (else 400); each item's own headers;
  answers in shuffled order under an outer 200; items may be 429 on their own.
- a bearer token is required (401 `InvalidAuthenticationToken`); `check_audience` also wants a JWT issued
  for this emulator or for Graph.

Snapshot rows: `microsoft.graph/serviceprincipals` (id, appId, displayName, servicePrincipalType),
`microsoft.graph/applications` (id, appId, displayName, passwordCredentials, keyCredentials) and
`microsoft.graph/groups` with `transitiveMembers` (flattened) or `members` (direct member ids: groups,
service principals, users…), whose closure is computed here, cycles included; the cast returns only ids that
are service principals. Credentials are served as stored, with `secretText: null`, `hint` (stored, else the
keyId's first three characters: the emulator knows no secret) and `customKeyIdentifier`, as Graph does.

Faults: `--throttle N` answers the first N HTTP requests (a whole `$batch` counts once) 429 `TooManyRequests`
with `Retry-After`; `--throttle-items N` does it to the first N items inside batches; `--deny-permission`
answers 403 `Authorization_RequestDenied` where that permission is needed; `--fail-group ID` answers 503 to
anything about that group; `--reset N` drops the first N connections. `GET /stats` returns the counters.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from emulators.rows import read_rows, row_type
from emulators.server import HttpsEmulator, JsonHandler

GROUP_MEMBERS_PERMISSION = "GroupMember.Read.All"
APPLICATIONS_PERMISSION = "Application.Read.All"
PERMISSIONS = (GROUP_MEMBERS_PERMISSION, APPLICATIONS_PERMISSION)
MAX_BATCH = 20
DEFAULT_TOP, MAX_TOP = 100, 999
GRAPH_AUDIENCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")

_CAST = re.compile(r"^/groups/([^/]+)/transitiveMembers/(?:microsoft\.)?graph\.servicePrincipal$", re.I)
_GROUP = re.compile(r"^/groups/([^/]+)$", re.I)
_SERVICE_PRINCIPAL = re.compile(r"^/servicePrincipals\(appId='([^']*)'\)$", re.I)
_APPLICATION = re.compile(r"^/applications\(appId='([^']*)'\)$", re.I)

Answer = tuple[int, dict, dict[str, str]]  # status, JSON body, headers


def graph_error(code: str, message: str) -> dict:
    """Graph's error shape (not ARM's): {error: {code, message, innerError: {date, request-id, …}}}."""
    return {"error": {"code": code, "message": message, "innerError": {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4())}}}


def not_found(identifier: str) -> Answer:
    return 404, graph_error("Request_ResourceNotFound", f"Resource '{identifier}' does not exist or one of its "
                                                        "queried reference-property objects are not present."), {}


@dataclass
class GraphFaults:
    throttle_requests: int = 0  # the first N HTTP requests: 429
    throttle_items: int = 0  # the first N items inside $batch bodies: 429
    reset_requests: int = 0  # the first N HTTP requests: connection dropped
    denied_permissions: set[str] = field(default_factory=set)
    failing_groups: set[str] = field(default_factory=set)  # lower-case group ids answered 503
    retry_after: int = 1


@dataclass
class GraphStats:
    requests: int = 0  # HTTP requests, /stats excepted
    batches: int = 0  # $batch requests answered 200
    items: int = 0  # requests inside those batches
    throttled: int = 0  # 429s, whole requests and items
    forbidden: int = 0
    not_found: int = 0
    errors: int = 0  # 5xx
    resets: int = 0
    per_path: Counter = field(default_factory=Counter)  # by route template, direct and in batches

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "batches": self.batches, "items": self.items,
                "throttled429": self.throttled, "forbidden403": self.forbidden, "notFound404": self.not_found,
                "errors": self.errors, "connectionResets": self.resets, "perPath": dict(self.per_path)}


def _member_ids(value: Any) -> list[str]:
    """Member references as snapshots write them: ids, or objects with an id."""
    ids = []
    for member in value if isinstance(value, list) else []:
        member_id = member.get("id") if isinstance(member, dict) else member
        if isinstance(member_id, str) and member_id:
            ids.append(member_id.lower())
    return ids


class Directory:
    """The snapshot's Graph objects, indexed the way Graph looks them up (ids and appIds are case-insensitive)."""

    def __init__(self, rows: list[dict]) -> None:
        self.service_principals: dict[str, dict] = {}
        self.service_principals_by_app: dict[str, dict] = {}
        self.applications_by_app: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        for row in rows:
            kind = row_type(row)
            if kind == "microsoft.graph/serviceprincipals" and isinstance(row.get("id"), str):
                self.service_principals[row["id"].lower()] = row
                if isinstance(row.get("appId"), str):
                    self.service_principals_by_app[row["appId"].lower()] = row
            elif kind == "microsoft.graph/applications" and isinstance(row.get("appId"), str) and row.get("id"):
                self.applications_by_app[row["appId"].lower()] = row
            elif kind == "microsoft.graph/groups" and isinstance(row.get("id"), str) and not row.get("notFound"):
                self.groups[row["id"].lower()] = row
        self._closures: dict[str, list[dict]] = {}

    def transitive_service_principals(self, group_key: str) -> list[dict]:
        """Service principals reachable through `members`/`transitiveMembers`, nested groups followed once."""
        if group_key not in self._closures:
            visited, reached, stack = {group_key}, set(), [group_key]
            while stack:
                group = self.groups[stack.pop()]
                for member in _member_ids(group.get("members")) + _member_ids(group.get("transitiveMembers")):
                    if member in self.groups and member not in visited:
                        visited.add(member)
                        stack.append(member)
                    reached.add(member)
            found = [self.service_principals[m] for m in reached if m in self.service_principals]
            self._closures[group_key] = sorted(found, key=lambda sp: sp["id"].lower())
        return self._closures[group_key]


def _served(row: dict) -> dict:
    """A stored row as Graph returns the object: no snapshot `type`; credentials with Graph's extra fields."""
    body = {k: v for k, v in row.items() if k not in ("type", "members", "transitiveMembers", "notFound")}
    if "passwordCredentials" in row:
        body["passwordCredentials"] = [
            {"customKeyIdentifier": c.get("customKeyIdentifier"), "displayName": c.get("displayName"),
             "endDateTime": c.get("endDateTime"), "hint": c.get("hint") or str(c.get("keyId") or "")[:3],
             "keyId": c.get("keyId"), "secretText": None, "startDateTime": c.get("startDateTime")}
            for c in row["passwordCredentials"] if isinstance(c, dict)]
    if "keyCredentials" in row:
        body["keyCredentials"] = [
            {"customKeyIdentifier": c.get("customKeyIdentifier"), "displayName": c.get("displayName"),
             "endDateTime": c.get("endDateTime"), "key": c.get("key"), "keyId": c.get("keyId"),
             "startDateTime": c.get("startDateTime"), "type": c.get("type"), "usage": c.get("usage")}
            for c in row["keyCredentials"] if isinstance(c, dict)]
    return body


def _project(body: dict, select: list[str] | None) -> dict:
    return {name: body.get(name) for name in select} if select else body


class Query:
    """A relative url's path and OData options; the options' names are matched case-insensitively."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.path = "/" + parts.path.lstrip("/")
        self.options = {k.lower(): v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        select = self.options.get("$select")
        self.select = [s.strip() for s in select.split(",") if s.strip()] if select else None


class GraphEmulator(HttpsEmulator):
    """Serve a snapshot's Graph rows. Use as a context manager or call start()/stop()."""

    def __init__(self, snapshot: str | Path | list[dict], *, page_size: int = MAX_TOP,
                 faults: GraphFaults | None = None, check_audience: bool = False,
                 ca_out: str | Path | None = None, port: int = 0) -> None:
        rows = snapshot if isinstance(snapshot, list) else list(read_rows(snapshot))
        self.directory = Directory(rows)
        self.page_size = max(1, min(page_size, MAX_TOP))
        self.faults = faults or GraphFaults()
        self.check_audience = check_audience
        self.stats = GraphStats()
        self._requests_seen = 0
        self._items_seen = 0
        super().__init__(ca_out=ca_out, port=port)

    # -- faults and counters --------------------------------------------------------------------------
    def request_fault(self) -> str:
        with self._lock:
            self._requests_seen += 1
            self.stats.requests += 1
            seen = self._requests_seen
            if seen <= self.faults.reset_requests:
                self.stats.resets += 1
                return "reset"
            if seen <= self.faults.reset_requests + self.faults.throttle_requests:
                self.stats.throttled += 1
                return "throttle"
        return ""

    def item_throttled(self) -> bool:
        with self._lock:
            self._items_seen += 1
            return self._items_seen <= self.faults.throttle_items

    def count(self, status: int, route: str) -> None:
        with self._lock:
            self.stats.per_path[route] += 1
            self.stats.throttled += status == 429
            self.stats.forbidden += status == 403
            self.stats.not_found += status == 404
            self.stats.errors += status >= 500

    def throttled_answer(self) -> Answer:
        return 429, graph_error("TooManyRequests", "Too many requests from Identifier:emulator under tenant "
                                                   "emulator. Please try again later."), \
            {"Retry-After": str(self.faults.retry_after)}

    def audience_problem(self, token: str) -> str:
        """'' when the token is acceptable; Graph's reason otherwise (the token itself is never kept)."""
        if not self.check_audience:
            return ""
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            audience = str(claims.get("aud") or "").rstrip("/")
        except (IndexError, ValueError, binascii.Error, AttributeError):
            return "Access token validation failure."
        if audience in (self.endpoint, *GRAPH_AUDIENCES):
            return ""
        return "Access token validation failure. Invalid audience."

    # -- one GET, direct or inside a batch ------------------------------------------------------------
    def answer(self, target: str, headers: dict[str, str]) -> tuple[Answer, str]:
        """(answer, route template) for `GET /v1.0{target}`; `headers` with lower-case names."""
        query = Query(target)
        for pattern, route, permission, handler in (
            (_CAST, "groups/{id}/transitiveMembers", GROUP_MEMBERS_PERMISSION, self._transitive_members),
            (_GROUP, "groups/{id}", GROUP_MEMBERS_PERMISSION, self._group),
            (_SERVICE_PRINCIPAL, "servicePrincipals(appId)", APPLICATIONS_PERMISSION, self._service_principal),
            (_APPLICATION, "applications(appId)", APPLICATIONS_PERMISSION, self._application),
        ):
            match = pattern.match(query.path)
            if not match:
                continue
            subject = match.group(1)
            if route.startswith("groups") and subject.lower() in self.faults.failing_groups:
                return (503, graph_error("serviceNotAvailable", "Injected failure for this group."), {}), route
            if permission in self.faults.denied_permissions:
                return (403, graph_error("Authorization_RequestDenied",
                                         "Insufficient privileges to complete the operation."), {}), route
            return handler(subject, query, headers), route
        segment = query.path.strip("/").split("/")[0] or "/"
        return (400, graph_error("BadRequest", f"Resource not found for the segment '{segment}'."), {}), "unknown"

    def _transitive_members(self, group_id: str, query: Query, headers: dict[str, str]) -> Answer:
        if headers.get("consistencylevel", "").lower() != "eventual" or \
                query.options.get("$count", "").lower() != "true":
            return 400, graph_error("Request_UnsupportedQuery", "Unsupported Query. This query needs advanced "
                                    "query capabilities: the ConsistencyLevel: eventual header and $count=true."), {}
        group_key = group_id.lower()
        if group_key not in self.directory.groups:
            return not_found(group_id)
        try:
            top = int(query.options.get("$top") or DEFAULT_TOP)
        except ValueError:
            top = 0
        if not 1 <= top <= MAX_TOP:
            return 400, graph_error("Request_BadRequest", f"Invalid page size specified: '{query.options['$top']}'."
                                                          f" Must be between 1 and {MAX_TOP} inclusive."), {}
        offset = self._offset(query.options.get("$skiptoken"), group_key)
        if offset is None:
            return 400, graph_error("Request_BadRequest", "The $skiptoken does not belong to this query."), {}
        members = self.directory.transitive_service_principals(group_key)
        size = min(top, self.page_size)
        page = [{"@odata.type": "#microsoft.graph.servicePrincipal", **_project(_served(sp), query.select)}
                for sp in members[offset:offset + size]]
        body: dict[str, Any] = {"@odata.context": f"{self.endpoint}/v1.0/$metadata#servicePrincipals",
                                "@odata.count": len(members), "value": page}
        if offset + size < len(members):
            body["@odata.nextLink"] = self._next_link(query, group_key, offset + size)
        return 200, body, {}

    def _offset(self, skip_token: str | None, group_key: str) -> int | None:
        if not skip_token:
            return 0
        try:
            token = json.loads(base64.urlsafe_b64decode(skip_token.encode()))
            return int(token["offset"]) if token["group"] == group_key else None
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None

    def _next_link(self, query: Query, group_key: str, offset: int) -> str:
        token = base64.urlsafe_b64encode(json.dumps({"group": group_key, "offset": offset}).encode()).decode()
        options = {k: v for k, v in query.options.items() if k != "$skiptoken"}
        options["$skiptoken"] = token
        text = "&".join(f"{name}={quote(value, safe=',')}" for name, value in options.items())
        return f"{self.endpoint}/v1.0{query.path}?{text}"

    def _group(self, group_id: str, query: Query, _headers: dict[str, str]) -> Answer:
        group = self.directory.groups.get(group_id.lower())
        if group is None:
            return not_found(group_id)
        return 200, _project(_served(group), query.select), {}

    def _service_principal(self, app_id: str, query: Query, _headers: dict[str, str]) -> Answer:
        row = self.directory.service_principals_by_app.get(app_id.lower())
        if row is None:
            return not_found(app_id)
        return 200, _project(_served(row), query.select), {}

    def _application(self, app_id: str, query: Query, _headers: dict[str, str]) -> Answer:
        row = self.directory.applications_by_app.get(app_id.lower())
        if row is None:
            return not_found(app_id)
        return 200, _project(_served(row), query.select), {}

    # -- $batch ---------------------------------------------------------------------------------------
    def batch(self, payload: Any) -> Answer:
        problem = _batch_problem(payload)
        if problem:
            return 400, graph_error("BadRequest", problem), {}
        responses = []
        for item in payload["requests"]:
            headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
            if self.item_throttled():
                (status, body, extra), route = self.throttled_answer(), "throttled"
            else:
                (status, body, extra), route = self.answer(item["url"], headers)
            self.count(status, route)
            responses.append({"id": item["id"], "status": status,
                              "headers": {"Content-Type": "application/json", **extra}, "body": body})
        random.shuffle(responses)
        with self._lock:
            self.stats.batches += 1
            self.stats.items += len(responses)
        return 200, {"responses": responses}, {}


def _batch_problem(payload: Any) -> str:
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        return "Invalid batch payload format: a non-empty `requests` array is required."
    if len(requests) > MAX_BATCH:
        return f"Number of batch requests ({len(requests)}) exceeds the limit of {MAX_BATCH}."
    ids = [item.get("id") if isinstance(item, dict) else None for item in requests]
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        return "Each request needs a unique, non-empty string id."
    for item in requests:
        url = item.get("url")
        if not isinstance(url, str) or "://" in url or url.lower().startswith("/v1.0"):
            return f"Invalid request url {url!r}: it must be relative to the version, e.g. /groups/{{id}}."
        if str(item.get("method", "")).upper() != "GET" or item.get("dependsOn"):
            return "The emulator answers GET requests without dependsOn only."
        if item.get("headers") is not None and not isinstance(item["headers"], dict):
            return "Request headers must be an object."
    return ""


class _Handler(JsonHandler):
    owner: GraphEmulator

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/stats":
            self.send_json(200, self.owner.stats.as_dict())
            return
        if not self._admitted():
            return
        path = self.path
        if not path.lower().startswith("/v1.0/"):
            self._reply(*not_found(path.split("?")[0]), route="unknown")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        (status, body, extra), route = self.owner.answer(path[len("/v1.0"):], headers)
        self._reply(status, body, extra, route=route)

    def do_POST(self) -> None:
        raw = self.read_body()
        if not self._admitted():
            return
        if self.path.split("?")[0].lower() != "/v1.0/$batch":
            self._reply(405, graph_error("Request_BadRequest", "The emulator accepts POST on /v1.0/$batch only."),
                        {}, route="unknown")
            return
        try:
            payload = json.loads(raw.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError):
            payload = None
        status, body, extra = self.owner.batch(payload)
        with self.owner._lock:
            self.owner.stats.per_path["$batch"] += 1
        self.send_json(status, body, extra)

    def _admitted(self) -> bool:
        """Count the request, apply request-level faults and the bearer check; False when already answered."""
        owner = self.owner
        fault = owner.request_fault()
        if fault == "reset":
            self.drop_connection()
            return False
        authorization = self.headers.get("Authorization", "")
        token = authorization[7:].strip() if authorization.startswith("Bearer ") else ""
        problem = "Access token is empty." if not token else owner.audience_problem(token)
        if problem:
            self.send_json(401, graph_error("InvalidAuthenticationToken", problem),
                           {"WWW-Authenticate": 'Bearer realm="", authorization_uri='
                                                '"https://login.microsoftonline.com/common/oauth2/authorize"'})
            return False
        if fault == "throttle":
            self.send_json(*owner.throttled_answer())
            return False
        return True

    def _reply(self, status: int, body: dict, headers: dict[str, str], *, route: str) -> None:
        self.owner.count(status, route)
        self.send_json(status, body, headers)


GraphEmulator.handler = _Handler


SERVICE, HELP = "graph", "Microsoft Graph (groups' service-principal members, appId lookups, $batch) on 127.0.0.1"


def add_arguments(parser) -> None:
    parser.add_argument("--snapshot", metavar="PATH", required=True,
                        help="file or directory holding microsoft.graph/* rows")
    parser.add_argument("--page-size", type=int, default=MAX_TOP, help="largest page served (forces paging)")
    parser.add_argument("--throttle", type=int, default=0, metavar="N",
                        help="answer the first N HTTP requests 429 (a whole $batch counts once)")
    parser.add_argument("--throttle-items", type=int, default=0, metavar="N",
                        help="answer the first N requests inside $batch bodies 429")
    parser.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="Retry-After of those 429s")
    parser.add_argument("--reset", type=int, default=0, metavar="N", help="drop the connection of the first N requests")
    parser.add_argument("--deny-permission", action="append", default=[], choices=PERMISSIONS,
                        help="answer 403 Authorization_RequestDenied where this permission is needed; repeatable")
    parser.add_argument("--fail-group", action="append", default=[], metavar="ID",
                        help="answer 503 to every request about this group; repeatable")
    parser.add_argument("--check-audience", action="store_true",
                        help="require a JWT whose aud is Graph or this emulator's URL")


def build(args) -> GraphEmulator:
    faults = GraphFaults(throttle_requests=args.throttle, throttle_items=args.throttle_items,
                         reset_requests=args.reset, denied_permissions=set(args.deny_permission),
                         failing_groups={g.lower() for g in args.fail_group}, retry_after=args.retry_after)
    return GraphEmulator(args.snapshot, page_size=args.page_size, faults=faults, check_audience=args.check_audience,
                         ca_out=args.ca_out, port=args.port)

