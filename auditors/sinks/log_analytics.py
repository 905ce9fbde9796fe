"""Findings and run records to Log Analytics through the Logs Ingestion API, without losing rows.

- Rows arrive already encoded (one JSON object each); bodies are those bytes joined into a JSON array of at
  most 1,000,000 bytes (the service allows 1 MB per call), gzip-compressed here and sent as a stream by
  `LogsIngestionClient.upload`, so nothing is serialised twice.
- The SDK sends one body at a time, so bodies go through a bounded thread pool; a limiter on every HTTP
  attempt keeps the run under the per-DCR limits (12,000 requests and 2 GB a minute). The SDK's retry
  policy honours `Retry-After` on 429 and retries 5xx; dropped connections get our own retries too.
- Any field over the service's 64 KB limit is cut with an explicit marker; the full value stays in the
  evidence archive (findings.jsonl.gz).
- Bodies that still fail are spooled durably; `replay_spool` delivers them at the start of the next run,
  before new data.
- Write-ahead: with a run id, each chunk of findings is written to the spool *before* it is sent and removed
  once every body of it was accepted (or re-spooled); a run row saying the run was interrupted is spooled at
  the start and removed once the real one is delivered. A run killed at any point leaves what it had not
  delivered in the spool, and the next run delivers it (see auditors/sinks/spool.py).
"""

from __future__ import annotations

import gzip
import io
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

from auditors.findings import EncodedFinding
from auditors.sinks.base import SinkStats
from auditors.sinks.spool import Heartbeat, Spool, SpoolEntryUnreadable
from auditors.sources.connection import lasting_problem

WRITE_AHEAD_ROWS = 20_000  # findings per write-ahead chunk (about 16 MB of JSON)
FIELD_LIMIT = 64 * 1024
BODY_LIMIT = 1_000_000
GZIP_LEVEL = 5
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
            text = orjson.dumps(value)
            if len(text) > FIELD_LIMIT:
                preview = text[:FIELD_LIMIT // 4].decode(errors="ignore")
                (fitted := fitted or dict(record))[key] = {
                    "truncated": True, "originalBytes": len(text), "note": MARKER.format(size=len(text)),
                    "preview": preview}
    return fitted or record


def fitted_line(line: bytes) -> tuple[bytes, bool]:
    """The row's JSON with oversized fields cut; only rows longer than the field limit can need it."""
    if len(line) <= FIELD_LIMIT:
        return line, False
    record = orjson.loads(line)
    fitted = fit_fields(record)
    return (line, False) if fitted is record else (orjson.dumps(fitted), True)


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


def _body_size(body) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, io.BytesIO):
        return body.getbuffer().nbytes
    return 0


@dataclass
class UploadStats:
    rows: int = 0
    batches: int = 0
    requests: int = 0
    throttled: int = 0
    failed_batches: int = 0
    spooled_rows: int = 0
    lost_rows: int = 0  # neither delivered nor spooled (the service and the storage both down)
    quarantined: int = 0
    truncated_fields: int = 0
    body_bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "errors"} | {"errors": self.errors[:20]}

    def add(self, other: UploadStats) -> None:
        for name, value in vars(other).items():
            if name == "errors":
                self.errors += value
            else:
                setattr(self, name, getattr(self, name) + value)


class _Channel:
    """Rows of one stream on their way out: gathered into bodies, each body sent by the pool."""

    def __init__(self, sink: LogAnalyticsSink, stream: str, stats: UploadStats) -> None:
        self.sink, self.stream, self.stats = sink, stream, stats
        self._lines: list[bytes] = []
        self._size = 2  # the brackets
        self._pending: deque[Future] = deque()
        self._started = time.monotonic()

    def add(self, line: bytes) -> None:
        line, cut = fitted_line(line)
        self.stats.truncated_fields += cut
        if self._lines and self._size + len(line) + 1 > BODY_LIMIT:
            self._submit()
        self._lines.append(line)
        self._size += len(line) + 1
        self.stats.rows += 1

    def _submit(self) -> None:
        lines, self._lines, self._size = self._lines, [], 2
        self.stats.batches += 1
        self._pending.append(self.sink.pool.submit(self.sink.send, self.stream, lines, self.stats))
        while len(self._pending) > self.sink.workers * 2:  # bounded memory: wait for the oldest bodies
            self._pending.popleft().result()

    def drain(self) -> None:
        """Send what is gathered and wait until every body was accepted or spooled."""
        if self._lines:
            self._submit()
        while self._pending:
            self._pending.popleft().result()

    def finish(self) -> UploadStats:
        self.drain()
        self.stats.seconds += time.monotonic() - self._started
        return self.stats


class LogAnalyticsSink:
    """The findings stream as a FindingSink, plus any stream's records (run rows, spool replay)."""

    name = "log-analytics"

    def __init__(self, *, endpoint: str, rule_id: str, credential, spool: Spool, stream: str = "",
                 workers: int = 4, limiter: DcrLimiter | None = None, audience: str = "https://monitor.azure.com",
                 retry_total: int = 5, retry_backoff_factor: float = 0.5, connection_verify: str | None = None,
                 attempts: int = 3, run_id: str = "", write_ahead_rows: int = WRITE_AHEAD_ROWS) -> None:
        """`run_id`: write ahead (see the module's doc) and keep this run marked alive in the spool."""
        from azure.monitor.ingestion import LogsIngestionClient

        self.rule_id = rule_id
        self.spool = spool
        self.workers = max(1, workers)
        self.limiter = limiter or DcrLimiter()
        self.attempts = max(1, attempts)  # our own retries on top of the SDK's, e.g. for dropped connections
        self.backoff = retry_backoff_factor
        self._lock = threading.Lock()
        self._current = threading.local()  # the stats the HTTP attempts of this thread's body count into
        kwargs = {"connection_verify": connection_verify} if connection_verify else {}
        self.client = LogsIngestionClient(
            endpoint=endpoint, credential=credential, credential_scopes=[f"{audience.rstrip('/')}/.default"],
            retry_total=retry_total, retry_backoff_factor=retry_backoff_factor, retry_backoff_max=30,
            raw_request_hook=self._on_request, raw_response_hook=self._on_response, **kwargs)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ingest")
        self.findings_stats = UploadStats()
        self._findings = _Channel(self, stream, self.findings_stats) if stream else None
        self.run_id, self.write_ahead_rows = run_id, max(1, write_ahead_rows)
        self._ahead: list[bytes] = []  # findings not yet in the write-ahead log
        self._heartbeat = Heartbeat(spool, run_id) if run_id else None

    # -- counting every HTTP attempt (also those whose connection drops) -------------------------------------
    def _on_request(self, pipeline_request) -> None:
        self.limiter.acquire(_body_size(pipeline_request.http_request.body))
        stats = getattr(self._current, "stats", None)
        if stats is not None:
            with self._lock:
                stats.requests += 1

    def _on_response(self, pipeline_response) -> None:
        stats = getattr(self._current, "stats", None)
        if stats is not None and pipeline_response.http_response.status_code == 429:
            with self._lock:
                stats.throttled += 1

    # -- sending ---------------------------------------------------------------------------------------------
    def send(self, stream: str, lines: list[bytes], stats: UploadStats) -> None:
        """One body: sent with retries; what still fails is spooled (never dropped)."""
        body = gzip.compress(b"[" + b",".join(lines) + b"]", compresslevel=GZIP_LEVEL)
        with self._lock:
            stats.body_bytes += len(body)
        attempt = 0
        while True:
            try:
                self._current.stats = stats
                self.client.upload(rule_id=self.rule_id, stream_name=stream, logs=io.BytesIO(body))
                return
            except Exception as error:
                attempt += 1
                if attempt < self.attempts and _transient(error) and lasting_problem(error) is None:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                self._spool(stream, lines, error, stats)
                return

    def _spool(self, stream: str, lines: list[bytes], error: Exception, stats: UploadStats) -> None:
        why = lasting_problem(error) or " ".join(str(error).split())[:200]
        try:
            name = self.spool.put(stream, lines, f"{type(error).__name__}: {error}")
        except Exception as spool_error:  # nowhere to keep them: say so, never raise from a worker
            with self._lock:
                stats.failed_batches += 1
                stats.lost_rows += len(lines)
                stats.errors.append(f"{stream}: {len(lines)} rows neither delivered ({why}) nor spooled "
                                    f"({type(spool_error).__name__}: {spool_error})")
            return
        with self._lock:
            stats.failed_batches += 1
            stats.spooled_rows += len(lines)
            stats.errors.append(f"{stream}: {len(lines)} rows spooled to {name}: {why}")

    # -- FindingSink -----------------------------------------------------------------------------------------
    def write(self, batch: list[EncodedFinding]) -> None:
        if not self.run_id:
            for encoded in batch:
                self._findings.add(encoded.line)
            return
        self._ahead += [encoded.line for encoded in batch]
        while len(self._ahead) >= self.write_ahead_rows:
            self._send_ahead()

    def _send_ahead(self) -> None:
        """Write the next chunk of gathered findings (at most `write_ahead_rows`) to the spool, send it, then
        remove it from the spool."""
        lines, self._ahead = self._ahead[:self.write_ahead_rows], self._ahead[self.write_ahead_rows:]
        if not lines:
            return
        channel = self._findings
        try:
            entry = self.spool.put(channel.stream, lines, f"write-ahead: run {self.run_id}", owner=self.run_id)
        except Exception as exc:  # storage is down: send anyway, and say the rows had no safety net
            entry = ""
            self.findings_stats.errors.append(f"write-ahead log unavailable ({type(exc).__name__}: "
                                              f"{str(exc)[:200]}); {len(lines)} rows sent without it")
        for line in lines:
            channel.add(line)
        channel.drain()
        if entry:
            self._remove(entry, self.findings_stats)

    def _remove(self, entry: str, stats: UploadStats) -> None:
        """Remove a delivered entry; if storage refuses, the rows have landed anyway: say so and go on."""
        try:
            self.spool.remove(entry)
        except Exception as exc:
            stats.errors.append(f"spool entry {entry} could not be removed from the spool ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); its rows landed and may be delivered again by a later run")

    def close(self) -> SinkStats:
        while self.run_id and self._ahead:
            self._send_ahead()
        if self._heartbeat is not None and self._heartbeat.error:  # other runs may have taken this one for dead
            self.findings_stats.errors.append(f"the run's heartbeat could not be written ({self._heartbeat.error}); "
                                              "a concurrent run may deliver its write-ahead entries a second time")
        stats = self._findings.finish()
        return SinkStats(self.name, rows=stats.rows, bytes=stats.body_bytes, errors=list(stats.errors),
                         detail={"upload": stats.as_dict()})

    def abort(self) -> None:
        """Bodies already handed to the pool finish (or are spooled); nothing more is sent."""
        self._ahead = []
        if self._findings is not None:
            self._findings._lines = []
            self._findings.finish()

    # -- the run row, written ahead ------------------------------------------------------------------------
    def expect_run_row(self, stream: str, interrupted: dict) -> str:
        """Spool the row that says this run was interrupted; `deliver_run_row` replaces it with the real one.
        Returns the entry's name ('' when the spool cannot be written)."""
        try:
            return self.spool.put(stream, [orjson.dumps(interrupted, default=str)], "write-ahead: run row",
                                  owner=self.run_id or "unknown")
        except Exception:
            return ""

    def deliver_run_row(self, stream: str, record: dict, expected: str) -> UploadStats:
        stats = self.upload_records(stream, [record])
        if expected:  # delivered or spooled: the interrupted row must not follow it
            self._remove(expected, stats)
        return stats

    # -- other streams ---------------------------------------------------------------------------------------
    def upload_records(self, stream: str, records: Iterable[dict]) -> UploadStats:
        channel = _Channel(self, stream, UploadStats())
        for record in records:
            channel.add(orjson.dumps(record))
        return channel.finish()

    def replay_spool(self, progress=None) -> UploadStats:
        """Deliver spooled entries before new data: failed deliveries, and what runs that died wrote ahead. An
        entry is removed only after it was delivered (or its rows failed again and went into a new entry); the
        write-ahead entries of a run that is still alive are left to it; an unreadable entry is quarantined."""
        total = UploadStats()
        for name in self.spool.names():
            owner = self.spool.owner(name)
            if owner and (owner == self.run_id or self.spool.is_live(owner)):
                continue
            if not self.spool.claim(name, self.run_id):
                continue  # another run is delivering it
            try:
                entry = self.spool.read(name)
            except SpoolEntryUnreadable as exc:
                where = self.spool.quarantine(name, str(exc))
                total.quarantined += 1
                total.errors.append(f"spool entry {name} is unreadable ({exc}): quarantined at {where}")
                self.spool.release(name)
                continue
            if entry is None:
                self.spool.release(name)
                continue
            channel = _Channel(self, entry.stream, UploadStats())
            for line in entry.lines:
                channel.add(line)
            attempt = channel.finish()
            total.add(attempt)
            self.spool.remove(name)
            self.spool.release(name)
            if owner:
                self.spool.end(owner)  # a dead run's last heartbeat
            if progress:
                origin = f" (written ahead by run {owner}, which did not finish)" if owner else ""
                progress(f"replayed spool entry {name}{origin}: {len(entry.lines)} rows to {entry.stream}"
                         + (f", {attempt.spooled_rows} failed again and were re-spooled" if attempt.spooled_rows
                            else ""))
        return total

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
        if self._heartbeat is not None:
            self._heartbeat.stop()
