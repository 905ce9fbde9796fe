"""Azure Monitor Logs Ingestion emulator: HTTPS on 127.0.0.1, the real upload protocol, a store of what landed.

`POST /dataCollectionRules/{immutableId}/streams/{stream}?api-version=2023-01-01` with a bearer token and a
(usually gzip) JSON array body. Like the service it checks the DCR id and the stream, the 1 MB call limit
(413), the array shape and each declared column's type (400), drops columns the stream does not declare,
answers 204, and appends accepted rows to a JSON Lines store: {"stream": ..., "record": {...}} per line.
Faults for tests: 429 with Retry-After, 503 and dropped connections, for the first N requests or at a
rate, and streams that always fail.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from emulators.server import HttpsEmulator, JsonHandler, error_body

# The schema file the auditor generates and the infrastructure deploys: the contract this emulator enforces.
TABLES_FILE = Path(str(resources.files("auditors.sinks") / "log_analytics_tables.json"))


def load_stream_declarations(path: str | Path = TABLES_FILE) -> dict[str, dict[str, str]]:
    """Stream name -> {column: type}, as a data collection rule declares them."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return {t["stream"]: {c["name"]: c["type"] for c in t["columns"]} for t in document["tables"]}

MAX_BODY = 1024 * 1024
_PATH = re.compile(r"^/dataCollectionRules/([^/]+)/streams/([^/?]+)$")


@dataclass
class IngestionFaults:
    first: dict[str, int] = field(default_factory=dict)  # kind ("429", "503", "reset") -> first N requests
    rate: dict[str, float] = field(default_factory=dict)  # kind -> probability per request
    failing_streams: dict[str, int] = field(default_factory=dict)  # stream -> status, always
    retry_after: int = 1
    delay: float = 0.0  # seconds before answering each request (a slow service, to interrupt uploads)

    @classmethod
    def parse(cls, specs: list[str], failing_streams: list[str] | None = None) -> IngestionFaults:
        """`KIND:N` (first N requests) or `KIND:0.1` (that share of requests); KIND is 429, 503 or reset."""
        faults = cls()
        for spec in specs:
            kind, _, amount = spec.partition(":")
            if kind not in ("429", "503", "reset") or not amount:
                raise ValueError(f"--fail {spec!r}: use 429:N, 503:N or reset:N (N a count, or a rate below 1)")
            value = float(amount)
            if value < 1:
                faults.rate[kind] = value
            else:
                faults.first[kind] = int(value)
        for spec in failing_streams or []:
            stream, _, status = spec.partition(":")
            faults.failing_streams[stream] = int(status or 500)
        return faults


@dataclass
class IngestionStats:
    requests: int = 0
    accepted_requests: int = 0
    rows: int = 0
    bytes_received: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    rejected: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "acceptedRequests": self.accepted_requests, "rows": self.rows,
                "bytesReceived": self.bytes_received, "faults": dict(self.faults),
                "rejected": {str(k): v for k, v in self.rejected.items()}}


def _type_ok(kind: str, value: Any) -> bool:
    if value is None or kind == "dynamic":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "real":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "datetime":
        if not isinstance(value, str):
            return False
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return True
        except ValueError:
            return False
    return False


class LogsIngestionEmulator(HttpsEmulator):
    def __init__(self, *, dcr_id: str = "dcr-00000000000000000000000000000000", store: str | Path | None = None,
                 schema: str | Path = TABLES_FILE, faults: IngestionFaults | None = None,
                 ca_out: str | Path | None = None, port: int = 0, seed: int | None = None) -> None:
        super().__init__(ca_out=ca_out, port=port)
        self.dcr_id = dcr_id
        self.streams = load_stream_declarations(schema)
        self.store = Path(store) if store else None
        self.faults = faults or IngestionFaults()
        self.stats = IngestionStats()
        self.rows: list[tuple[str, dict]] = []  # what landed, in order (also appended to `store`)
        self._random = random.Random(seed)
        self._store_lock = threading.Lock()
        if self.store:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            self.store.touch()

    def fault(self) -> str:
        with self._lock:
            self.stats.requests += 1
            seen = self.stats.requests
            passed = 0
            for kind in ("reset", "429", "503"):
                passed += self.faults.first.get(kind, 0)
                if seen <= passed:
                    return self._count(kind)
            for kind, rate in self.faults.rate.items():
                if self._random.random() < rate:
                    return self._count(kind)
        return ""

    def _count(self, kind: str) -> str:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        return kind

    def accept(self, stream: str, records: list[dict]) -> None:
        declared = self.streams[stream]
        kept = [{k: v for k, v in record.items() if k in declared} for record in records]
        with self._store_lock:
            self.rows.extend((stream, r) for r in kept)
            if self.store:
                with self.store.open("a", encoding="utf-8") as handle:
                    for record in kept:
                        handle.write(json.dumps({"stream": stream, "record": record}) + "\n")
            self.stats.rows += len(kept)
            self.stats.accepted_requests += 1

    def landed(self, stream: str) -> list[dict]:
        with self._store_lock:
            return [record for s, record in self.rows if s == stream]


class _Handler(JsonHandler):
    owner: LogsIngestionEmulator

    def reject(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        with self.owner._lock:
            self.owner.stats.rejected[status] = self.owner.stats.rejected.get(status, 0) + 1
        self.send_json(status, error_body(code, message), headers)

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/stats":
            self.send_json(200, self.owner.stats.as_dict())
        else:
            self.reject(404, "NotFound", "Unknown path.")

    def do_POST(self) -> None:
        owner = self.owner
        raw = self.read_body()
        if owner.faults.delay:
            time.sleep(owner.faults.delay)
        with owner._lock:
            owner.stats.bytes_received += len(raw)
        fault = owner.fault()
        if fault == "reset":
            self.drop_connection()
            return
        if fault == "429":
            self.reject(429, "TooManyRequests", "Injected throttling.", {"Retry-After": str(owner.faults.retry_after)})
            return
        if fault == "503":
            self.reject(503, "ServiceUnavailable", "Injected failure.")
            return
        path, _, query = self.path.partition("?")
        match = _PATH.match(path)
        if not match:
            self.reject(404, "NotFound", "Unknown path.")
            return
        if "api-version=" not in query:
            self.reject(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
            return
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            self.reject(401, "InvalidAuthenticationToken", "Missing or malformed bearer token.")
            return
        dcr, stream = match.groups()
        if dcr != owner.dcr_id:
            self.reject(404, "DataCollectionRuleNotFound", f"Data collection rule {dcr} was not found.")
            return
        if stream not in owner.streams:
            self.reject(400, "InvalidStream", f"Stream {stream} is not declared in the data collection rule.")
            return
        if stream in owner.faults.failing_streams:
            status = owner.faults.failing_streams[stream]
            self.reject(status, "InternalServerError", "Injected permanent failure for this stream.")
            return
        if len(raw) > MAX_BODY:
            self.reject(413, "ContentLengthLimitExceeded", f"The request body is {len(raw)} bytes; the limit is 1 MB.")
            return
        try:
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding", "").lower() == "gzip" else raw
        except OSError:
            self.reject(400, "InvalidContentEncoding", "Content-Encoding says gzip but the body is not gzip.")
            return
        if len(body) > MAX_BODY:
            self.reject(413, "ContentLengthLimitExceeded", f"The uncompressed body is {len(body)} bytes; the limit "
                                                           "is 1 MB.")
            return
        try:
            records = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self.reject(400, "InvalidPayload", "The body is not valid JSON.")
            return
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            self.reject(400, "InvalidPayload", "The body must be a JSON array of objects.")
            return
        declared = owner.streams[stream]
        for index, record in enumerate(records):
            for column, kind in declared.items():
                if column in record and not _type_ok(kind, record[column]):
                    self.reject(400, "InvalidPayload", f"Record {index}: column {column} must be {kind}, got "
                                                       f"{type(record[column]).__name__}.")
                    return
        owner.accept(stream, records)
        self.send_json(204, None)


LogsIngestionEmulator.handler = _Handler


SERVICE, HELP = "ingestion", "Azure Monitor Logs Ingestion API on 127.0.0.1"


def add_arguments(parser) -> None:
    parser.add_argument("--store", metavar="FILE", help="append accepted rows here (JSON Lines)")
    parser.add_argument("--dcr", default="dcr-" + "0" * 32, help="immutable id of the emulated DCR")
    parser.add_argument("--schema", metavar="FILE", help="stream declarations (default: the package's tables file)")
    parser.add_argument("--fail", action="append", default=[], metavar="KIND:N",
                        help="429:N, 503:N or reset:N for the first N requests, or KIND:0.1 for a share; repeatable")
    parser.add_argument("--fail-stream", action="append", default=[], metavar="STREAM[:STATUS]",
                        help="always fail this stream (default status 500); repeatable")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long before answering each upload (a slow service)")


def build(args) -> LogsIngestionEmulator:
    extra = {"schema": args.schema} if args.schema else {}
    faults = IngestionFaults.parse(args.fail, args.fail_stream)
    faults.delay = max(0.0, args.delay)
    return LogsIngestionEmulator(dcr_id=args.dcr, store=args.store, faults=faults, ca_out=args.ca_out,
                                 port=args.port, **extra)
