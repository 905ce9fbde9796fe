"""Deny assignments from Azure Resource Manager, listed per scope (Resource Graph does not hold them).

`GET {scope}/providers/Microsoft.Authorization/denyAssignments?api-version=2022-04-01` through
azure-mgmt-authorization's `deny_assignments.list_for_scope`, without `$filter`: that returns the deny
assignments at, above (management groups, root) and below (resource groups, resources) the scope
(MicrosoftDocs/azure-docs `articles/role-based-access-control/deny-assignments-rest.md`, filter table; the
2022-04-01 spec says `atScope()` narrows it to at-or-above). Listing every subscription that holds a
collected registry therefore covers the deny assignments that can apply to those registries. The same
management-group assignment comes back for every subscription below it, so rows are de-duplicated by id.

Rows are the JSON the service returned (captured per page with a `raw_response_hook`; the SDK's
`cls=` only sees deserialized models on a pager), reduced to `id`, `name`, `type`, `properties`, with the
type spelled as in snapshots. Every HTTP attempt is counted by a per-retry policy as it leaves, so a
dropped connection counts too. Retries are ours (the SDK's are off): 429 waits for `Retry-After`
(everyone pauses), 5xx and dropped connections back off up to `max_attempts`; a 403 (no
`Microsoft.Authorization/denyAssignments/read`), any other refusal or exhausted retries leave a `Gap` for
that scope's subscription; a 401 stops the collection.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import SansIOHTTPPolicy

from auditors.arm import norm_id, subscription_of
from auditors.model import Gap
from auditors.sources.connection import lasting_problem

API_VERSION = "2022-04-01"
DEFAULT_ENDPOINT = "https://management.azure.com"
QUERY_NAME = "deny_assignments"
ROW_TYPE = "microsoft.authorization/denyassignments"
READ_PERMISSION = "Microsoft.Authorization/denyAssignments/read"
MAX_THROTTLE_WAITS = 8  # 429s a single page may wait out before its scope becomes a gap
# list_for_scope never uses the client's subscription, but the client refuses to be built without one.
UNUSED_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
Progress = Callable[[str], None]
RowSink = Callable[[list[dict]], None]


@dataclass
class DenyCoverage:
    """What the deny-assignment collection saw, for the run summary and the manifest."""

    scopes: int = 0
    requests: int = 0  # HTTP attempts, including retried and dropped ones
    pages: int = 0
    rows: int = 0  # distinct deny assignments handed to the sink
    duplicates: int = 0  # rows seen again from another scope (e.g. a management group's, per subscription)
    throttled: int = 0
    retries: int = 0
    seconds: float = 0.0
    gaps: list[Gap] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"scopes": self.scopes, "requests": self.requests, "pages": self.pages, "rows": self.rows,
                "duplicates": self.duplicates, "throttled429": self.throttled, "retries": self.retries,
                "seconds": round(self.seconds, 2), "gaps": [gap.to_dict() for gap in self.gaps]}

    def summary_line(self) -> str:
        text = (f"deny assignments: {self.scopes:,} scopes, {self.requests:,} requests, {self.pages:,} pages, "
                f"{self.rows:,} rows, {self.retries:,} retries, {self.throttled:,} throttled (429), "
                f"{self.seconds:.1f}s")
        if self.gaps:
            text += f"; INCOMPLETE: {len(self.gaps)} scope(s) failed"
        return text


class ScopeFailed(Exception):
    pass


class _AttemptCounter(SansIOHTTPPolicy):
    """Counts each request as it leaves for the transport (after retry and authentication policies)."""

    def __init__(self, count: Callable[[], None]) -> None:
        self._count = count

    def on_request(self, request) -> None:
        self._count()


class DenyAssignmentCollector:
    """List deny assignments for ARM scopes; hand each page of new rows to `sink` as it arrives."""

    def __init__(self, credential, *, endpoint: str = DEFAULT_ENDPOINT, connection_verify: str | None = None,
                 concurrency: int = 4, max_attempts: int = 5, backoff: float = 0.5, progress: Progress | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from azure.mgmt.authorization import AuthorizationManagementClient

        endpoint = endpoint.rstrip("/")
        self.endpoint = endpoint
        kwargs: dict[str, Any] = {"retry_total": 0}  # retries are ours: counted, paced and bounded
        if connection_verify:
            kwargs["connection_verify"] = connection_verify
        self.client = AuthorizationManagementClient(
            credential, UNUSED_SUBSCRIPTION, api_version=API_VERSION, base_url=endpoint,
            credential_scopes=[f"{endpoint}/.default"], per_retry_policies=[_AttemptCounter(self._count_attempt)],
            **kwargs)
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.progress = progress or (lambda _message: None)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._paused_until = 0.0
        self._coverage = DenyCoverage()

    # -- public ---------------------------------------------------------------------------------------
    def collect(self, scopes: Iterable[str], sink: RowSink) -> DenyCoverage:
        started = time.monotonic()
        by_key: dict[str, str] = {}
        for scope in scopes:
            if scope.strip():
                spelled = _with_leading_slash(scope.strip())
                by_key.setdefault(norm_id(spelled), spelled)
        unique_scopes = list(by_key.values())
        coverage = self._coverage = DenyCoverage(scopes=len(unique_scopes))
        self._stopped.clear()
        seen: set[str] = set()

        def deliver(rows: list[dict]) -> None:
            with self._lock:
                fresh = []
                for row in rows:
                    key = norm_id(row["id"])
                    if key in seen:
                        coverage.duplicates += 1
                    else:
                        seen.add(key)
                        fresh.append(row)
                coverage.rows += len(fresh)
                if fresh:
                    sink(fresh)

        def run(scope: str) -> None:
            try:
                self._list_scope(scope, deliver)
            except ScopeFailed as exc:
                sub = subscription_of(scope)
                with self._lock:
                    coverage.gaps.append(Gap(QUERY_NAME, (ROW_TYPE,), frozenset({sub} if sub else ()),
                                             f"{scope}: {exc}"))
                self.progress(f"deny assignments at {scope} could not be listed: {exc}")
            except ClientAuthenticationError:
                self._stopped.set()  # no scope can succeed with this credential
                raise

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="deny") as pool:
                list(pool.map(run, unique_scopes))
        finally:
            coverage.seconds = time.monotonic() - started
        return coverage

    # -- one scope ------------------------------------------------------------------------------------
    def _list_scope(self, scope: str, deliver: RowSink) -> None:
        bodies: list[Any] = []  # the raw HTTP response of the page being fetched

        def keep_response(pipeline_response) -> None:
            bodies.append(pipeline_response.http_response)

        pages = self.client.deny_assignments.list_for_scope(scope, raw_response_hook=keep_response).by_page()
        attempts = throttle_waits = 0
        while not self._stopped.is_set():
            self._wait_while_paused()
            bodies.clear()
            try:
                next(pages)  # a failed page leaves the pager where it was: calling it again retries that page
            except StopIteration:
                return
            except ClientAuthenticationError as exc:
                if exc.response is None:  # the credential could not produce a token
                    raise
                raise ClientAuthenticationError(
                    f"Resource Manager rejected the credential listing deny assignments at {scope}: "
                    f"{_describe(exc)}") from None
            except HttpResponseError as exc:
                status = exc.status_code or 0
                if status == 429 and throttle_waits < MAX_THROTTLE_WAITS:
                    throttle_waits += 1
                    wait = self._throttled(exc)  # the wait itself happens at the top of the loop, for everyone
                    self.progress(f"deny assignments at {scope}: throttled (429); waiting {wait:.1f}s")
                    continue
                if status == 403:
                    raise ScopeFailed(f"{_describe(exc)}: the credential lacks {READ_PERMISSION} here (Reader and "
                                      "most built-in roles include it through */read)") from None
                if status >= 500 and self._retry(attempts := attempts + 1):
                    continue
                raise ScopeFailed(_describe(exc) + (f" after {attempts} attempts" if status >= 500 else "")) \
                    from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                problem = lasting_problem(exc)
                if problem is not None:
                    raise ScopeFailed(f"{self.endpoint}: {problem} (not retried)") from None
                if self._retry(attempts := attempts + 1):
                    continue
                raise ScopeFailed(f"connection failed after {attempts} attempts: {type(exc).__name__}") from None
            attempts = throttle_waits = 0
            deliver([_row(item) for item in _page_items(bodies)])
            with self._lock:
                self._coverage.pages += 1

    def _retry(self, attempts: int) -> bool:
        """Whether another attempt is allowed; if so, back off first."""
        if attempts >= self.max_attempts:
            return False
        with self._lock:
            self._coverage.retries += 1
        self._sleep(self.backoff * 2 ** (attempts - 1) + random.uniform(0, self.backoff))
        return True

    def _throttled(self, exc: HttpResponseError) -> float:
        """After a 429: every worker waits for Retry-After (Resource Manager sends it); returns the wait."""
        headers = exc.response.headers if exc.response is not None else {}
        retry_after = _retry_after_seconds(headers.get("Retry-After"))
        wait = (retry_after if retry_after is not None else 5.0) + random.uniform(0, self.backoff / 2)
        with self._lock:
            self._coverage.throttled += 1
            self._coverage.retries += 1
            self._paused_until = max(self._paused_until, time.monotonic() + wait)
        return wait

    def _wait_while_paused(self) -> None:
        with self._lock:
            remaining = self._paused_until - time.monotonic()
        if remaining > 0:
            self._sleep(remaining)

    def _count_attempt(self) -> None:
        with self._lock:
            self._coverage.requests += 1


def _with_leading_slash(scope: str) -> str:
    return scope if scope.startswith("/") else "/" + scope


def _page_items(responses: list[Any]) -> list[dict]:
    """The `value` of the page just returned, as sent (the pager only returns after a 200 that parsed)."""
    body = json.loads(responses[-1].text() or "{}")
    items = body.get("value") if isinstance(body, dict) else None
    return [item for item in items or [] if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _row(item: dict) -> dict:
    return {"id": item["id"], "name": item.get("name"), "type": ROW_TYPE, "properties": item.get("properties")}


def _retry_after_seconds(value: Any) -> float | None:
    """Retry-After as delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, parsedate_to_datetime(str(value)).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = ""
    for detail in getattr(error, "details", None) or []:
        message = getattr(detail, "message", "") or message
    message = message or getattr(error, "message", "") or exc.reason or ""
    return f"HTTP {exc.status_code} {code}: {message}".strip().rstrip(":")
