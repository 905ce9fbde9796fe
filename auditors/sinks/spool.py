"""Durable spool: the write-ahead log of Log Analytics delivery, and rows that could not be delivered.

Each entry is one gzip JSON Lines object: a header line {"stream", "created", "reason", "rows"} and the rows,
each the JSON the sink sends. Two kinds of entries share the folder:

- **write-ahead** entries (`…-wal-<run id>.jsonl.gz`): a run writes each chunk of its findings (and, at its start,
  a run row saying it was interrupted) here *before* sending it, and removes the entry once the service accepted
  every row of it. A run that is killed leaves them behind; the next run delivers them. While their run is alive
  (it refreshes `spool/live/<run id>/<epoch ms>` every few seconds), no other run touches them.
- **failed** entries: bodies the service kept refusing; delivered at the start of the next run, before new data.

A run takes an entry with a create-only claim (`spool/claims/<entry>`), so two runs never deliver the same
entry at once. An entry that cannot be read moves to `spool/quarantine/` (with the reason beside it) instead of
blocking every later run. Delivery is at least once: a crash between delivery and removal sends those rows again;
every row carries RunId and FindingId, so queries de-duplicate (see README).
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from auditors.sinks.store import ObjectExists, ObjectMissing, ObjectStore, UnsafeObjectName

PREFIX = "spool/"
QUARANTINE, LIVE, CLAIMS = f"{PREFIX}quarantine/", f"{PREFIX}live/", f"{PREFIX}claims/"
SUFFIX = ".jsonl.gz"
WRITE_AHEAD = "-wal-"
STALE_AFTER = 300.0  # seconds without a heartbeat after which a run is taken for dead
HEARTBEAT_EVERY = 20.0


class SpoolEntryUnreadable(ValueError):
    """A spool entry that cannot be read (truncated, not gzip, no header); it is quarantined."""


@dataclass
class SpoolEntry:
    name: str
    stream: str
    reason: str
    lines: list[bytes]  # one JSON object each


class Spool:
    def __init__(self, store: ObjectStore, *, stale_after: float = STALE_AFTER,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.stale_after = stale_after
        self.clock = clock

    # -- entries -----------------------------------------------------------------------------------------
    def put(self, stream: str, lines: list[bytes], reason: str, *, owner: str = "") -> str:
        """A new entry; `owner` (a run id) makes it a write-ahead entry of that run."""
        created = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{PREFIX}{created}-{uuid.uuid4().hex[:12]}{WRITE_AHEAD + owner if owner else ''}{SUFFIX}"
        header = orjson.dumps({"stream": stream, "created": created, "reason": reason[:500], "rows": len(lines)})
        # A write-ahead entry lives only until its rows land, and is written on the run's main thread: compress
        # it fast; failed-delivery entries may stay longer and get the usual level.
        level = 1 if owner else 6
        self.store.put(name, gzip.compress(b"\n".join([header, *lines]) + b"\n", compresslevel=level))
        return name

    def names(self) -> list[str]:
        """Entries waiting, oldest first (quarantined entries, claims and heartbeats are not entries)."""
        return [o.name for o in self.store.list(PREFIX)
                if o.name.endswith(SUFFIX) and "/" not in o.name[len(PREFIX):]]

    @staticmethod
    def owner(name: str) -> str:
        """The run whose write-ahead entry this is, or '' for a failed-delivery entry."""
        return name[:-len(SUFFIX)].partition(WRITE_AHEAD)[2] if WRITE_AHEAD in name else ""

    def read(self, name: str) -> SpoolEntry | None:
        """The entry, or None when another run already delivered and removed it."""
        try:
            data = self.store.get(name)
        except ObjectMissing:
            return None
        try:
            lines = gzip.decompress(data).splitlines()
            header = orjson.loads(lines[0])
            stream = header["stream"]
            if not isinstance(stream, str) or not stream:
                raise ValueError("the header names no stream")
        except (OSError, EOFError, zlib.error, IndexError, KeyError, TypeError, ValueError) as exc:
            raise SpoolEntryUnreadable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        return SpoolEntry(name, stream, str(header.get("reason", "")), [line for line in lines[1:] if line])

    def remove(self, name: str) -> None:
        self.store.delete(name)

    def quarantine(self, name: str, why: str) -> str:
        """Move an unreadable entry aside, with the reason beside it; returns where it went."""
        moved = QUARANTINE + name[len(PREFIX):]
        try:
            data = self.store.get(name)
        except (ObjectMissing, UnsafeObjectName, OSError):
            data = b""
        for target, content in ((moved, data), (moved + ".reason.txt", why.encode())):
            with contextlib.suppress(ObjectExists):
                self.store.put(target, content)
        self.store.delete(name)
        return self.store.location(moved)

    def quarantined(self) -> int:
        return sum(1 for o in self.store.list(QUARANTINE) if o.name.endswith(SUFFIX))

    def usage(self, exclude: frozenset[str] = frozenset()) -> tuple[int, int]:
        """(entries, bytes) waiting for a later run: failed deliveries and what dead runs wrote ahead, leaving
        out `exclude` (the caller's own entries) and the write-ahead entries of runs still at work."""
        live: dict[str, bool] = {}
        names = {name for name in self.names() if name not in exclude and not (
            (owner := self.owner(name)) and live.setdefault(owner, self.is_live(owner)))}
        objects = [o for o in self.store.list(PREFIX) if o.name in names]
        return len(objects), sum(o.size for o in objects)

    # -- claims: one run delivers an entry at a time ---------------------------------------------------------
    def claim(self, name: str, run_id: str) -> bool:
        claim = CLAIMS + name[len(PREFIX):]
        record = orjson.dumps({"runId": run_id, "at": self.clock()})
        try:
            self.store.put(claim, record)
            return True
        except ObjectExists:
            pass
        try:  # a claim left by a run that died takes no lock: take it over
            held = orjson.loads(self.store.get(claim))
            if self.clock() - float(held.get("at", 0)) < self.stale_after and self.is_live(str(held.get("runId"))):
                return False
        except (ObjectMissing, ValueError, TypeError, AttributeError):
            pass
        self.store.delete(claim)
        try:
            self.store.put(claim, record)
            return True
        except ObjectExists:
            return False

    def release(self, name: str) -> None:
        self.store.delete(CLAIMS + name[len(PREFIX):])

    # -- liveness of runs --------------------------------------------------------------------------------------
    def beat(self, run_id: str) -> None:
        folder = f"{LIVE}{run_id}/"
        self.store.put(f"{folder}{int(self.clock() * 1000):015d}-{uuid.uuid4().hex[:6]}", b"")
        for old in self.store.list(folder)[:-1]:
            self.store.delete(old.name)

    def is_live(self, run_id: str) -> bool:
        if not run_id:
            return False
        beats = self.store.list(f"{LIVE}{run_id}/")
        if not beats:
            return False
        try:
            last = int(beats[-1].name.rsplit("/", 1)[-1].split("-", 1)[0]) / 1000
        except ValueError:
            return False
        return self.clock() - last < self.stale_after

    def end(self, run_id: str) -> None:
        for beat in self.store.list(f"{LIVE}{run_id}/"):
            self.store.delete(beat.name)


class Heartbeat:
    """Keeps a run marked alive while it runs (a daemon thread), so other runs leave its entries alone."""

    def __init__(self, spool: Spool, run_id: str) -> None:
        # Often enough that a live run never looks stale to another.
        self.spool, self.run_id, self.every = spool, run_id, max(0.5, min(HEARTBEAT_EVERY, spool.stale_after / 4))
        self._stop = threading.Event()
        self.error = ""
        try:
            spool.beat(run_id)
        except Exception as exc:  # storage down: the run goes on; its write-ahead entries cannot be written either
            self.error = f"{type(exc).__name__}: {exc}"
        self._thread = threading.Thread(target=self._run, name="spool-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.spool.beat(self.run_id)
            except Exception as exc:  # storage trouble: the entries are still there; say so once
                self.error = self.error or f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.spool.end(self.run_id)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
