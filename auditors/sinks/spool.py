"""Durable spool for rows that could not be delivered: written once, replayed before new data, then removed.

Each entry is one gzip JSON Lines object: a header line {"stream", "created", "reason", "rows"} and the
rows, each the JSON the sink would have sent. Delivery is at least once: a crash between a successful replay
and the entry's removal sends those rows again next time; every row carries RunId and FindingId, so queries
de-duplicate (see README).
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from auditors.sinks.store import ObjectMissing, ObjectStore

PREFIX = "spool/"


@dataclass
class SpoolEntry:
    name: str
    stream: str
    reason: str
    lines: list[bytes]  # one JSON object each


class Spool:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(self, stream: str, lines: list[bytes], reason: str) -> str:
        created = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{PREFIX}{created}-{uuid.uuid4().hex[:12]}.jsonl.gz"
        header = orjson.dumps({"stream": stream, "created": created, "reason": reason[:500], "rows": len(lines)})
        self.store.put(name, gzip.compress(b"\n".join([header, *lines]) + b"\n", compresslevel=6))
        return name

    def names(self) -> list[str]:
        return [o.name for o in self.store.list(PREFIX) if o.name.endswith(".jsonl.gz")]

    def read(self, name: str) -> SpoolEntry | None:
        try:
            lines = gzip.decompress(self.store.get(name)).splitlines()
        except ObjectMissing:
            return None
        header = orjson.loads(lines[0])
        return SpoolEntry(name, header["stream"], header.get("reason", ""), [line for line in lines[1:] if line])

    def remove(self, name: str) -> None:
        self.store.delete(name)

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) waiting."""
        objects = [o for o in self.store.list(PREFIX) if o.name.endswith(".jsonl.gz")]
        return len(objects), sum(o.size for o in objects)
