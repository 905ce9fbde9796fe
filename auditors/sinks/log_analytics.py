"""Findings and run records to Log Analytics through the Logs Ingestion API, without losing rows.

- Records are cut into request bodies of at most 1,000,000 bytes of JSON (the service allows 1 MB per call;
  the SDK's own chunker can exceed it slightly), each sent by `LogsIngestionClient.upload` (gzip).
- The SDK sends chunks one after another, so batches go through a bounded thread pool; a limiter on every
  HTTP attempt keeps the run under the per-DCR limits (12,000 requests and 2 GB a minute). The SDK's retry
  policy honours `Retry-After` on 429 and retries 5xx and dropped connections.
- Any field over the service's 64 KB limit is cut with an explicit marker; the full value stays in the
  evidence archive (findings.jsonl.gz).
- Batches that still fail reach `on_error` and are spooled durably; `replay_spool` delivers them at the
  start of the next run, before new data.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from auditors.sinks.spool import Spool

FIELD_LIMIT = 64 * 1024
BODY_LIMIT = 1_000_000
MARKER = "…[truncated by acr-pull-auditor: {size} bytes; the full value is in the evidence archive]"


def fit_fields(record: dict) -> dict:
    """The record with every field that exceeds 64 KB cut to fit, with an explicit marker."""
    fitted = None
    for key, value in record.items():
        if isinstance(value, str):
            size = len(value.encode())
            if size > FIELD_LIMIT:
                marker = MARKER.format(size=size)
                keep = FIELD_LIMIT - len(marker.encode()) - 16
                cut = value.encode()[:keep].decode(errors="ignore")
                (fitted := fitted or dict(record))[key] = cut + marker
        elif isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            size = len(text.encode())
            if size > FIELD_LIMIT:
                preview = text.encode()[:FIELD_LIMIT // 4].decode(errors="ignore")
                (fitted := fitted or dict(record))[key] = {
                    "truncated": True, "originalBytes": size, "note": MARKER.format(size=size), "preview": preview}
    return fitted or record


def batches(records: Iterable[dict], limit: int = BODY_LIMIT) -> Iterator[list[dict]]:
    """Lists of records whose JSON array, serialised as the SDK does (`json.dumps` defaults), stays within
    `limit` bytes."""
    batch: list[dict] = []
    size = 2
    for record in records:
        length = len(json.dumps(record)) + 2
        if batch and size + length > limit:
            yield batch
            batch, size = [], 2
        batch.append(record)
        size += length
    if batch:
        yield batch


def _transient(error: Exception) -> bool:
    """Worth another try: a dropped connection, throttling or a server error (not a 4xx about the data)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return True
    return isinstance(error, HttpResponseError) and (error.status_code == 429 or (error.status_code or 0) >= 500)


class DcrLimiter:
    """Sliding one-minute budget of requests and bytes per data collection rule."""

    def __init__(self, requests_per_minute: int = 12_000, bytes_per_minute: int = 2 * 1024**3,
                 window: float = 60.0) -> None:
        self.requests_per_minute, self.bytes_per_minute, self.window = requests_per_minute, bytes_per_minute, window
        self._sent: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self._condition = threading.Condition()
        self.waited = 0.0

    def acquire(self, size: int) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._sent and self._sent[0][0] <= now - self.window:
                    self._bytes -= self._sent.popleft()[1]
                if len(self._sent) < self.requests_per_minute and (
                        not self._sent or self._bytes + size <= self.bytes_per_minute):
                    break
                wait = max(0.01, self._sent[0][0] + self.window - now)
                self.waited += wait
                self._condition.wait(timeout=wait)
            self._sent.append((time.monotonic(), size))
            self._bytes += size

    def hook(self, pipeline_request) -> None:
        body = pipeline_request.http_request.body
        self.acquire(len(body) if isinstance(body, bytes | bytearray) else 0)


@dataclass
class UploadStats:
    rows: int = 0
    batches: int = 0
    requests: int = 0
    throttled: int = 0
    failed_batches: int = 0
    spooled_rows: int = 0
    truncated_fields: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "errors"} | {"errors": self.errors[:20]}


class LogAnalyticsSink:
    def __init__(self, *, endpoint: str, rule_id: str, credential, spool: Spool, workers: int = 4,
                 limiter: DcrLimiter | None = None, audience: str = "https://monitor.azure.com",
                 retry_total: int = 5, retry_backoff_factor: float = 0.5, connection_verify: str | None = None,
                 attempts: int = 3) -> None:
        from azure.monitor.ingestion import LogsIngestionClient

        self.rule_id = rule_id
        self.spool = spool
        self.workers = max(1, workers)
        self.limiter = limiter or DcrLimiter()
        self.attempts = max(1, attempts)  # our own retries on top of the SDK's, e.g. for dropped connections
        self.backoff = retry_backoff_factor
        self._lock = threading.Lock()
        self._stats: UploadStats | None = None
        kwargs = {"connection_verify": connection_verify} if connection_verify else {}
        self.client = LogsIngestionClient(
            endpoint=endpoint, credential=credential, credential_scopes=[f"{audience.rstrip('/')}/.default"],
            retry_total=retry_total, retry_backoff_factor=retry_backoff_factor, retry_backoff_max=30,
            raw_request_hook=self.limiter.hook, raw_response_hook=self._observe, **kwargs)

    def _observe(self, pipeline_response) -> None:
        stats = self._stats
        if stats is not None:
            with self._lock:
                stats.requests += 1
                stats.throttled += pipeline_response.http_response.status_code == 429

    def upload(self, stream: str, records: Iterable[dict], stats: UploadStats | None = None) -> UploadStats:
        """Send every record; what still fails after the SDK's retries is spooled. Returns the counts."""
        stats = stats or UploadStats()
        self._stats = stats
        started = time.monotonic()

        def fitted() -> Iterator[dict]:
            for record in records:
                result = fit_fields(record)
                if result is not record:
                    stats.truncated_fields += 1
                yield result

        def spool(failure) -> None:
            name = self.spool.put(stream, failure.failed_logs, f"{type(failure.error).__name__}: {failure.error}")
            with self._lock:
                stats.failed_batches += 1
                stats.spooled_rows += len(failure.failed_logs)
                stats.errors.append(f"{stream}: {len(failure.failed_logs)} rows spooled to {name}: "
                                    f"{str(failure.error)[:200]}")

        def send(batch: list[dict]) -> None:
            rows, attempt = batch, 0
            while rows:
                failures: list = []
                self.client.upload(rule_id=self.rule_id, stream_name=stream, logs=rows, on_error=failures.append)
                if not failures:
                    return
                attempt += 1
                if attempt >= self.attempts or not all(_transient(f.error) for f in failures):
                    for failure in failures:
                        spool(failure)
                    return
                time.sleep(self.backoff * 2 ** (attempt - 1))
                rows = [row for failure in failures for row in failure.failed_logs]

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ingest") as pool:
            pending = deque()
            for batch in batches(fitted()):
                stats.rows += len(batch)
                stats.batches += 1
                pending.append(pool.submit(send, batch))
                while len(pending) > self.workers * 2:  # bounded memory: wait for the oldest batches
                    pending.popleft().result()
            for future in pending:
                future.result()
        stats.seconds += time.monotonic() - started
        return stats

    def replay_spool(self, progress=None) -> UploadStats:
        """Deliver spooled batches before new data; an entry is removed only after it was delivered."""
        stats = UploadStats()
        for name in self.spool.names():
            entry = self.spool.read(name)
            if entry is None:
                continue
            attempt = UploadStats()
            self.upload(entry.stream, entry.rows, attempt)
            stats.rows += attempt.rows
            stats.requests += attempt.requests
            stats.spooled_rows += attempt.spooled_rows
            stats.errors += attempt.errors
            # Rows that failed again were written to a new entry by upload(); this one is done either way.
            self.spool.remove(name)
            if progress:
                progress(f"replayed spool entry {name}: {len(entry.rows)} rows to {entry.stream}"
                         + (f", {attempt.spooled_rows} failed again and were re-spooled" if attempt.spooled_rows
                            else ""))
        return stats
