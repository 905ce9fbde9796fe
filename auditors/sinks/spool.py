"""Durable spool for rows that could not be delivered: written once, replayed before new data, then removed.

Each entry is one gzip JSON Lines object: a header line {"stream", "created", "reason", "rows"} and the
rows. Delivery is at least once: a crash between a successful replay and the entry's removal sends those
rows again next time; every row carries RunId and FindingId, so queries de-duplicate (see README).
"""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from auditors.sinks.store import ObjectMissing, ObjectStore

PREFIX = "spool/"


@dataclass
class SpoolEntry:
    name: str
    stream: str
    reason: str
    rows: list[dict]


class Spool:
    def __init__(self, store: ObjectStore, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.store = store
        self.max_bytes = max_bytes

    def put(self, stream: str, rows: list[dict], reason: str) -> str:
        created = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{PREFIX}{created}-{uuid.uuid4().hex[:12]}.jsonl.gz"
        header = {"stream": stream, "created": created, "reason": reason[:500], "rows": len(rows)}
        lines = [json.dumps(header)] + [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows]
        self.store.put(name, gzip.compress(("\n".join(lines) + "\n").encode()))
        return name

    def names(self) -> list[str]:
        return [o.name for o in self.store.list(PREFIX) if o.name.endswith(".jsonl.gz")]

    def read(self, name: str) -> SpoolEntry | None:
        try:
            lines = gzip.decompress(self.store.get(name)).decode().splitlines()
        except ObjectMissing:
            return None
        header = json.loads(lines[0])
        return SpoolEntry(name, header["stream"], header.get("reason", ""), [json.loads(x) for x in lines[1:] if x])

    def remove(self, name: str) -> None:
        self.store.delete(name)

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) waiting."""
        objects = [o for o in self.store.list(PREFIX) if o.name.endswith(".jsonl.gz")]
        return len(objects), sum(o.size for o in objects)
