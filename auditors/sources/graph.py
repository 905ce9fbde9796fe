"""Microsoft Graph: the service principals a group holds (transitively) and what a cluster's appId stands for.

Why REST on azure-core and not msgraph-sdk: msgraph-sdk 1.65 installs 392 MB in 16,741 files plus seven kiota
packages and takes 0.22-0.30 s just to import, for what is here four GET shapes sent inside JSON `$batch`
requests; the azure-core pipeline the project already ships gives bearer auth, request ids and TLS, and
keeping retries in our hands (the SDK retries 429/503/504 on its own) lets them be counted and bounded.

Calls, all `GET`s inside `POST /v1.0/$batch` (at most 20 per batch, at most `concurrency` batches in flight):
- per group: `/groups/{id}?$select=id,displayName` (its name, same batch; left out if unreadable) and
  `/groups/{id}/transitiveMembers/microsoft.graph.servicePrincipal?$count=true&$select=…&$top=999` with
  `ConsistencyLevel: eventual`, which the cast requires together with `$count`. Every `@odata.nextLink` goes
  back as the relative url of an item in a later batch, so twenty pages cost one request; a nextLink that
  does not point at the configured endpoint is not followed, so the bearer token never goes anywhere else.
- per appId: `/servicePrincipals(appId='…')` and, when it exists, `/applications(appId='…')` for the
  credentials' dates; only keyId, displayName, start/end (and type/usage of keys) are kept, never `hint`,
  `secretText`, `customKeyIdentifier` or `key`.

Failures: a 429 (whole batch or one item) waits its `Retry-After` (capped) and every sender pauses with it;
5xx and dropped connections back off and retry up to `max_attempts`, then become a gap; a 403 means the
permission is not granted: it is not retried, and no further call needing it is sent; 401 raises
ClientAuthenticationError; a certificate that does not verify is not transient: nothing more is sent.

Rows (to `sink(kind, rows)` as they are resolved, always from the thread that called collect(); the same
shapes are accepted from hand-made snapshots):
- "serviceprincipals": `{type, id, appId, displayName, servicePrincipalType}`, each at most once;
  an appId that does not exist: `{type, id: None, appId, notFound: True}`.
- "groups": `{type, id, displayName, transitiveMembers: [sp object ids]}`; `transitiveMembers` absent means
  not resolved (see the gaps); a deleted group: `{type, id, notFound: True}`.
- "applications": `{type, id, appId, displayName, passwordCredentials, keyCredentials}`; no application
  object in this tenant (a managed identity, another tenant's app): `{type, appId, notFound: True}`.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RequestIdPolicy, UserAgentPolicy
from azure.core.rest import HttpRequest

from auditors import __version__
from auditors.sources.connection import lasting_problem

DEFAULT_ENDPOINT = "https://graph.microsoft.com"
GROUP_MEMBERS_PERMISSION = "GroupMember.Read.All"
APPLICATIONS_PERMISSION = "Application.Read.All"
BATCH_LIMIT = 20
MAX_THROTTLE_WAITS = 8  # 429s one call may wait out before it becomes a gap
SERVICE_PRINCIPAL_TYPE = "microsoft.graph/serviceprincipals"
GROUP_TYPE = "microsoft.graph/groups"
APPLICATION_TYPE = "microsoft.graph/applications"
SERVICE_PRINCIPAL_FIELDS = ("id", "appId", "displayName", "servicePrincipalType")
PASSWORD_CREDENTIAL_FIELDS = ("keyId", "displayName", "startDateTime", "endDateTime")
KEY_CREDENTIAL_FIELDS = (*PASSWORD_CREDENTIAL_FIELDS, "type", "usage")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

Progress = Callable[[str], None]
RowSink = Callable[[str, list[dict]], None]


@dataclass
class GraphCoverage:
    """What a Graph collection did and could not do."""

    requests: int = 0  # HTTP attempts, including throttled batches and dropped connections
    batches: int = 0  # `$batch` replies received (outer 200)
    items: int = 0  # requests inside those batches, retried ones included
    throttled: int = 0  # 429 answers: whole batches and single items
    retries: int = 0  # items sent again after a 429, a 5xx or a failed connection
    seconds: float = 0.0
    permissions: dict[str, bool | None] = field(default_factory=lambda: {
        GROUP_MEMBERS_PERMISSION: None, APPLICATIONS_PERMISSION: None})
    gaps: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: {"groups": 0, "serviceprincipals": 0, "applications": 0})

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "batches": self.batches, "items": self.items,
                "throttled429": self.throttled, "retries": self.retries, "seconds": round(self.seconds, 2),
                "permissions": dict(self.permissions), "gaps": list(self.gaps), "rows": dict(self.rows)}

    def summary_line(self) -> str:
        granted = {True: "granted", False: "NOT GRANTED", None: "not used"}
        permissions = ", ".join(f"{name} {granted[value]}" for name, value in self.permissions.items())
        text = (f"graph: {self.rows['groups']:,} groups, {self.rows['serviceprincipals']:,} service principals, "
                f"{self.rows['applications']:,} applications; {self.requests:,} requests ({self.batches:,} "
                f"batches), {self.retries:,} retries, {self.throttled:,} throttled (429), {self.seconds:.1f}s; "
                f"{permissions}")
        if self.gaps:
            text += f"; INCOMPLETE: {len(self.gaps)} gap(s)"
        return text


@dataclass(eq=False)
class _Call:
    """One GET inside a batch; `attempts` and `throttle_waits` belong to whichever worker holds it."""

    kind: str  # "group", "members", "servicePrincipal" or "application"
    subject: str  # the group id or appId it is about
    url: str  # relative to /v1.0
    permission: str
    attempts: int = 0
    throttle_waits: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"ConsistencyLevel": "eventual"} if self.kind == "members" else {}


@dataclass
class _Reply:
    """A status with headers (lower-case names) and JSON body, or status 0 and `problem` when none came."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict = field(default_factory=dict)
    problem: str = ""
    fatal: bool = False  # nothing more can be sent (the endpoint's certificate does not verify, or it is down)
    unreachable: bool = False  # the connection failed (retried; if it keeps failing, the endpoint is down)

    @property
    def transient(self) -> bool:
        return self.status >= 500 or (self.status == 0 and not self.fatal)

    def describe(self) -> str:
        if self.status == 0:
            return self.problem
        error = self.body.get("error") if isinstance(self.body.get("error"), dict) else {}
        code = error.get("code") or ""
        return f"HTTP {self.status} {code}".strip()


@dataclass
class _Outcome:
    call: _Call
    reply: _Reply
    problem: str = ""  # set when the call failed for good


def _group_calls(group_id: str) -> list[_Call]:
    return [
        _Call("group", group_id, f"/groups/{group_id}?$select=id,displayName", GROUP_MEMBERS_PERMISSION),
        _Call("members", group_id, f"/groups/{group_id}/transitiveMembers/microsoft.graph.servicePrincipal"
              f"?$count=true&$select={','.join(SERVICE_PRINCIPAL_FIELDS)}&$top=999", GROUP_MEMBERS_PERMISSION),
    ]


def _service_principal_call(app_id: str) -> _Call:
    return _Call("servicePrincipal", app_id, f"/servicePrincipals(appId='{app_id}')"
                 f"?$select={','.join(SERVICE_PRINCIPAL_FIELDS)}", APPLICATIONS_PERMISSION)


def _application_call(app_id: str) -> _Call:
    return _Call("application", app_id, f"/applications(appId='{app_id}')"
                 "?$select=id,appId,displayName,passwordCredentials,keyCredentials", APPLICATIONS_PERMISSION)


def _service_principal_row(item: dict) -> dict:
    return {"type": SERVICE_PRINCIPAL_TYPE, **{name: item.get(name) for name in SERVICE_PRINCIPAL_FIELDS}}


def _credentials(values: Any, fields: tuple[str, ...]) -> list[dict]:
    """Only what says when a credential expires: the secret-bearing fields are never copied."""
    return [{name: value.get(name) for name in fields} for value in values or [] if isinstance(value, dict)]


def _application_row(body: dict, app_id: str) -> dict:
    return {"type": APPLICATION_TYPE, "id": body.get("id"), "appId": body.get("appId") or app_id,
            "displayName": body.get("displayName"),
            "passwordCredentials": _credentials(body.get("passwordCredentials"), PASSWORD_CREDENTIAL_FIELDS),
            "keyCredentials": _credentials(body.get("keyCredentials"), KEY_CREDENTIAL_FIELDS)}


@dataclass
class _Group:
    id: str
    display_name: str | None = None
    members: dict[str, None] = field(default_factory=dict)  # ordered set of SP object ids
    open_calls: int = 2  # its name, and its member listing (all pages)
    members_read: bool = False
    not_found: bool = False


class _Collection:
    """The state of one collect() call; touched only by the scheduling thread."""

    def __init__(self, sink: RowSink, coverage: GraphCoverage, endpoint: str, progress: Progress) -> None:
        self.sink, self.coverage, self.progress = sink, coverage, progress
        self.version_root = f"{endpoint}/v1.0/"
        self.groups: dict[str, _Group] = {}
        self.emitted_service_principals: set[str] = set()
        self.blocked: dict[str, dict[str, set[str]]] = {}  # reason -> {"groups"/"appIds": subjects}
        self.stopped = ""  # why nothing more is sent

    # -- input ----------------------------------------------------------------------------------------
    def first_calls(self, group_ids: Iterable[str], app_ids: Iterable[str]) -> list[_Call]:
        calls: list[_Call] = []
        for group_id in self._object_ids(group_ids, "group"):
            self.groups[group_id.lower()] = _Group(group_id)
            calls += _group_calls(group_id)
        calls += [_service_principal_call(app_id) for app_id in self._object_ids(app_ids, "appId")]
        return calls

    def _object_ids(self, values: Iterable[str], label: str) -> list[str]:
        """De-duplicated GUIDs; anything else would change the url it is pasted into, so it is refused."""
        unique: dict[str, str] = {}
        for value in values:
            text = str(value or "").strip()
            if not _GUID.match(text):
                self.gap(f"{label} {text!r}: not a GUID; not looked up")
                continue
            unique.setdefault(text.lower(), text)
        return list(unique.values())

    # -- outcomes -------------------------------------------------------------------------------------
    def blocked_reason(self, call: _Call) -> str:
        if self.stopped:
            return self.stopped
        if self.coverage.permissions.get(call.permission) is False:
            return _denied(call.permission)
        return ""

    def block(self, call: _Call, reason: str) -> None:
        subjects = self.blocked.setdefault(reason, {"groups": set(), "appIds": set()})
        subjects["groups" if call.kind in ("group", "members") else "appIds"].add(call.subject.lower())
        if call.kind in ("group", "members"):
            self._close_group_call(self.groups[call.subject.lower()])

    def absorb(self, outcome: _Outcome) -> list[_Call]:
        """Record one finished call; returns the calls it leads to."""
        call, reply = outcome.call, outcome.reply
        if reply.fatal:
            self.stopped = self.stopped or outcome.problem
            self.block(call, self.stopped)
            return []
        if reply.status == 403:
            self.coverage.permissions[call.permission] = False
            self.block(call, _denied(call.permission))
            return []
        if reply.status == 200 and self.coverage.permissions[call.permission] is None:
            self.coverage.permissions[call.permission] = True
        handler = {"group": self._group, "members": self._members, "servicePrincipal": self._service_principal,
                   "application": self._application}[call.kind]
        return handler(outcome)

    def _group(self, outcome: _Outcome) -> list[_Call]:
        group = self.groups[outcome.call.subject.lower()]
        if outcome.reply.status == 200:
            group.display_name = outcome.reply.body.get("displayName")
        elif outcome.reply.status == 404:
            group.not_found = True
        self._close_group_call(group)
        return []

    def _members(self, outcome: _Outcome) -> list[_Call]:
        call, reply = outcome.call, outcome.reply
        group = self.groups[call.subject.lower()]
        if reply.status == 404:
            group.not_found = True
        elif outcome.problem:
            self.gap(f"group {group.id}: {outcome.problem}")
        else:
            fresh = []
            for item in reply.body.get("value") or []:
                if isinstance(item, dict) and item.get("id"):
                    group.members[item["id"]] = None
                    fresh.append(item)
            self._emit_service_principals(fresh)
            next_link = reply.body.get("@odata.nextLink")
            if next_link:
                if next_link.lower().startswith(self.version_root.lower()):
                    call.url = next_link[len(self.version_root) - 1:]
                    call.attempts = call.throttle_waits = 0
                    return [call]
                self.gap(f"group {group.id}: nextLink leaves {self.version_root} ({urlsplit(next_link).netloc}); "
                         "not followed")
            else:
                group.members_read = True
        self._close_group_call(group)
        return []

    def _service_principal(self, outcome: _Outcome) -> list[_Call]:
        app_id, reply = outcome.call.subject, outcome.reply
        if reply.status == 404:
            self._emit("serviceprincipals", [{"type": SERVICE_PRINCIPAL_TYPE, "id": None, "appId": app_id,
                                              "notFound": True}])
        elif outcome.problem:
            self.gap(f"appId {app_id}: {outcome.problem}")
        else:
            self._emit_service_principals([reply.body])
            return [_application_call(app_id)]
        return []

    def _application(self, outcome: _Outcome) -> list[_Call]:
        app_id, reply = outcome.call.subject, outcome.reply
        if reply.status == 404:
            self._emit("applications", [{"type": APPLICATION_TYPE, "appId": app_id, "notFound": True}])
        elif outcome.problem:
            self.gap(f"appId {app_id} application: {outcome.problem}")
        else:
            self._emit("applications", [_application_row(reply.body, app_id)])
        return []

    # -- rows -----------------------------------------------------------------------------------------
    def _close_group_call(self, group: _Group) -> None:
        group.open_calls -= 1
        if group.open_calls:
            return
        row: dict[str, Any] = {"type": GROUP_TYPE, "id": group.id}
        if group.not_found:
            row["notFound"] = True
        else:
            if group.display_name is not None:
                row["displayName"] = group.display_name
            if group.members_read:
                row["transitiveMembers"] = list(group.members)
        self._emit("groups", [row])

    def _emit_service_principals(self, items: list[dict]) -> None:
        rows = []
        for item in items:
            key = str(item.get("id") or "").lower()
            if key and key not in self.emitted_service_principals:
                self.emitted_service_principals.add(key)
                rows.append(_service_principal_row(item))
        if rows:
            self._emit("serviceprincipals", rows)

    def _emit(self, kind: str, rows: list[dict]) -> None:
        self.coverage.rows[kind] += len(rows)
        self.sink(kind, rows)

    def gap(self, text: str) -> None:
        self.coverage.gaps.append(text)
        self.progress(f"graph gap: {text}")

    def finish(self) -> None:
        for reason, subjects in self.blocked.items():
            parts = []
            if subjects["groups"]:
                parts.append(f"transitive members of {len(subjects['groups'])} group(s) not read")
            if subjects["appIds"]:
                parts.append(f"{len(subjects['appIds'])} appId(s) not looked up")
            self.gap(f"{reason}: {'; '.join(parts)}")


def _denied(permission: str) -> str:
    return f"{permission} not granted (HTTP 403 Authorization_RequestDenied)"


class GraphCollector:
    """Resolve groups' transitive service-principal members and service principals' appIds through Graph."""

    def __init__(self, credential, *, endpoint: str = DEFAULT_ENDPOINT, connection_verify: str | None = None,
                 concurrency: int = 4, max_attempts: int = 5, backoff: float = 0.5, max_throttle_wait: float = 120,
                 progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.scope = f"{self.endpoint}/.default"  # national clouds: the token's audience is their own host
        transport: dict[str, Any] = {"connection_timeout": 30, "read_timeout": 120}
        if connection_verify:
            transport["connection_verify"] = connection_verify
        # No RetryPolicy: retries are ours, counted, bounded and shared with the throttling pause.
        self._client = PipelineClient(self.endpoint, policies=[
            RequestIdPolicy(), UserAgentPolicy(user_agent=f"acr-pull-auditor/{__version__}"),
            BearerTokenCredentialPolicy(credential, self.scope)], **transport)
        self._batch_url = f"{self.endpoint}/v1.0/$batch"
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_throttle_wait = max_throttle_wait
        self.progress = progress or (lambda _message: None)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._honoured = threading.local()
        self._coverage = GraphCoverage()

    # -- public ---------------------------------------------------------------------------------------
    def collect(self, group_ids: Iterable[str], app_ids: Iterable[str], sink: RowSink) -> GraphCoverage:
        started = time.monotonic()
        coverage = self._coverage = GraphCoverage()
        collection = _Collection(sink, coverage, self.endpoint, self.progress)
        queue = deque(collection.first_calls(group_ids, app_ids))
        self.progress(f"graph: {len(collection.groups):,} group(s) and "
                      f"{sum(c.kind == 'servicePrincipal' for c in queue):,} appId(s) to resolve at {self.endpoint}")
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="graph") as pool:
            in_flight: set[Future] = set()
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < self.concurrency:
                        batch = self._next_batch(queue, collection)
                        if batch:
                            in_flight.add(pool.submit(self._resolve, batch))
                    if not in_flight:
                        continue
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        for outcome in future.result():
                            queue.extend(collection.absorb(outcome))
            finally:
                for future in in_flight:
                    future.cancel()
        collection.finish()
        coverage.seconds = time.monotonic() - started
        return coverage  # the caller reports coverage.summary_line(), as for the other sources

    # -- scheduling -----------------------------------------------------------------------------------
    def _next_batch(self, queue: deque[_Call], collection: _Collection) -> list[_Call]:
        """Up to 20 calls that may still be sent; the others are recorded as blocked on the way."""
        batch: list[_Call] = []
        while queue and len(batch) < BATCH_LIMIT:
            call = queue.popleft()
            reason = collection.blocked_reason(call)
            if reason:
                collection.block(call, reason)
            else:
                batch.append(call)
        return batch

    def _resolve(self, calls: list[_Call]) -> list[_Outcome]:
        """Send `calls` in one batch, then re-send the ones that may succeed later, until each is settled."""
        outcomes: list[_Outcome] = []
        pending = calls
        while pending:
            self._wait_out_pause()
            retry: list[_Call] = []
            throttle_wait = backoff_wait = 0.0
            for call, reply in zip(pending, self._post_batch(pending), strict=True):
                if reply.status == 401:
                    raise ClientAuthenticationError(_rejected(reply, self.scope))
                if reply.status == 429 and call.throttle_waits < MAX_THROTTLE_WAITS:
                    call.throttle_waits += 1
                    throttle_wait = max(throttle_wait, self._retry_after(reply, call.throttle_waits))
                    retry.append(call)
                elif reply.status == 429:
                    outcomes.append(_Outcome(call, reply, f"{reply.describe()} after {call.throttle_waits + 1} "
                                                          "attempts"))
                elif reply.transient and call.attempts + 1 < self.max_attempts:
                    call.attempts += 1
                    backoff_wait = max(backoff_wait, self._backoff(call.attempts))
                    retry.append(call)
                elif reply.transient:
                    outcomes.append(self._exhausted(call, reply))
                else:
                    outcomes.append(_Outcome(call, reply, _final_problem(reply)))
            with self._lock:
                self._coverage.retries += len(retry)
            if throttle_wait:
                self._pause(max(throttle_wait, backoff_wait))
            elif backoff_wait:
                self._sleep(backoff_wait)
            pending = retry
        return outcomes

    def _exhausted(self, call: _Call, reply: _Reply) -> _Outcome:
        problem = f"{reply.describe()} after {call.attempts + 1} attempts"
        if reply.unreachable:  # the endpoint stayed unreachable: every other call would wait just as long
            reply = _Reply(0, problem=f"Microsoft Graph unreachable: {problem}", fatal=True)
            problem = reply.problem
        return _Outcome(call, reply, problem)

    # -- HTTP -----------------------------------------------------------------------------------------
    def _post_batch(self, calls: list[_Call]) -> list[_Reply]:
        """One `$batch` request; a reply per call, in the order of `calls` (the service answers in any order)."""
        requests = []
        for number, call in enumerate(calls, 1):
            item: dict[str, Any] = {"id": str(number), "method": "GET", "url": call.url}
            if call.headers:
                item["headers"] = call.headers
            requests.append(item)
        with self._lock:
            self._coverage.requests += 1
        try:
            response = self._client.send_request(HttpRequest("POST", self._batch_url, json={"requests": requests}))
        except (ServiceRequestError, ServiceResponseError) as exc:
            return [self._connection_failure(exc)] * len(calls)
        headers = {name.lower(): value for name, value in response.headers.items()}
        body = _json_object(response)
        if response.status_code != 200:
            with self._lock:
                self._coverage.throttled += response.status_code == 429
            return [_Reply(response.status_code, headers, body)] * len(calls)
        answers = {str(a.get("id")): a for a in body.get("responses") or [] if isinstance(a, dict)}
        replies = [_item_reply(answers.get(str(number))) for number in range(1, len(calls) + 1)]
        with self._lock:
            self._coverage.batches += 1
            self._coverage.items += len(calls)
            self._coverage.throttled += sum(reply.status == 429 for reply in replies)
        return replies

    def _connection_failure(self, exc: Exception) -> _Reply:
        problem = lasting_problem(exc)
        if problem:
            return _Reply(0, problem=f"{urlsplit(self.endpoint).netloc}: {problem}; not retried", fatal=True)
        return _Reply(0, problem=f"connection failed ({type(exc).__name__})", unreachable=True)

    # -- pacing ---------------------------------------------------------------------------------------
    def _retry_after(self, reply: _Reply, throttle_waits: int) -> float:
        try:
            seconds = float(reply.headers.get("retry-after", ""))
        except ValueError:  # absent, or an HTTP date: Graph sends seconds
            seconds = self._backoff(throttle_waits)
        return min(max(seconds, 0.0), self.max_throttle_wait)

    def _backoff(self, attempt: int) -> float:
        return self.backoff * 2 ** (attempt - 1) + random.uniform(0, self.backoff)

    def _pause(self, seconds: float) -> None:
        """Graph throttles the app in the tenant, not one request: every sender waits."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _wait_out_pause(self) -> None:
        with self._lock:
            until = self._paused_until
        if until > getattr(self._honoured, "until", 0.0):
            self._honoured.until = until  # each sending thread waits out a pause once
            remaining = until - time.monotonic()
            if remaining > 0:
                self._sleep(remaining)


def _item_reply(answer: dict | None) -> _Reply:
    if answer is None:
        return _Reply(0, problem="no answer for this item in the $batch reply")
    headers = answer.get("headers") if isinstance(answer.get("headers"), dict) else {}
    body = answer.get("body") if isinstance(answer.get("body"), dict) else {}
    try:
        status = int(answer.get("status") or 0)
    except (TypeError, ValueError):
        status = 0
    return _Reply(status, {str(k).lower(): str(v) for k, v in headers.items()}, body,
                  problem="" if status else "unreadable item status in the $batch reply")


def _json_object(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _final_problem(reply: _Reply) -> str:
    """Why a call that is not retried failed; '' when its answer is an answer (found, not found, denied)."""
    if reply.fatal:
        return reply.problem
    return "" if reply.status in (200, 403, 404) else _with_message(reply)


def _with_message(reply: _Reply) -> str:
    error = reply.body.get("error") if isinstance(reply.body.get("error"), dict) else {}
    message = str(error.get("message") or "")[:200]
    return f"{reply.describe()}: {message}" if message else reply.describe()


def _rejected(reply: _Reply, scope: str) -> str:
    return (f"Microsoft Graph rejected the credential ({_with_message(reply)}); the token must be issued for "
            f"{scope} to an identity in this tenant")
