"""Where a run's rows come from: a snapshot on disk, the embedded demo, or live collection, into an Inventory.

Also capture (live rows into a replayable snapshot folder) and the recorder that keeps the rows a run
evaluated for the evidence archive.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from auditors import __version__
from auditors.model import Gap, Inventory
from auditors.sources.snapshot import LoadReport, SnapshotError, iter_snapshot, normalise_row

Progress = Callable[[str], None]
MANIFEST = "manifest.json"


def demo_path() -> Path:
    """The embedded demo estate (a directory of Resource Graph rows shipped in the package)."""
    return Path(str(resources.files("auditors") / "demo"))


@dataclass
class Loaded:
    """The inventory and how it was obtained."""

    inventory: Inventory
    load: LoadReport | None = None  # snapshot and demo input
    coverage: Any = None  # resource_graph.Coverage for live collection


def read_manifest(snapshot: str | Path) -> dict | None:
    path = Path(snapshot)
    manifest = path / MANIFEST if path.is_dir() else None
    if manifest is None or not manifest.exists():
        return None
    try:
        document = orjson.loads(manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"{manifest}: unreadable manifest: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("coverage", {}), dict):
        raise SnapshotError(f"{manifest}: unreadable manifest: expected an object with a `coverage` object")
    return document


def load_snapshot(snapshot: str | Path, progress: Progress, row_filter=None) -> Loaded:
    load = LoadReport()
    progress(f"reading snapshot {snapshot}")
    manifest = read_manifest(snapshot)  # read first: a malformed manifest stops the run before any work
    rows = iter_snapshot(snapshot, load)
    inventory = Inventory.from_rows(row_filter(rows) if row_filter else rows, progress=progress)
    progress("rows per table: " + ", ".join(f"{table} {count:,}" for table, count in sorted(load.tables.items())))
    if manifest:  # a captured snapshot carries what its collection missed
        coverage = manifest.get("coverage") or {}
        try:
            inventory.gaps = [Gap.from_dict(g) for g in coverage.get("gaps") or []]
        except (AttributeError, TypeError) as exc:
            raise SnapshotError(f"{Path(snapshot) / MANIFEST}: unreadable manifest: gaps: {exc}") from None
        if coverage.get("managementGroupRoleData"):
            inventory.tenant_scope_authorization = True
    for note in (load.skipped + inventory.notes)[:5]:
        progress(f"skipped: {note}")
    if len(load.skipped) + len(inventory.notes) > 5:
        progress(f"... {len(load.skipped) + len(inventory.notes) - 5} more skipped rows")
    return Loaded(inventory, load=load)


def collect_live(collector, progress: Progress, row_filter=None) -> Loaded:
    """Rows go straight from Resource Graph pages into the inventory (through `row_filter`, if given)."""
    inventory = Inventory()

    def sink(query, rows: list[dict]) -> None:
        for row in row_filter(rows) if row_filter else rows:
            normalised = normalise_row(row)
            if normalised.get("id") and normalised["type"]:
                inventory.add(normalised)

    progress(f"collecting from Resource Graph ({collector.scope.describe()})")
    coverage = collector.collect(sink)
    inventory.finish()
    inventory.gaps = list(coverage.gaps)
    inventory.tenant_scope_authorization = coverage.authorization_above_subscriptions
    progress(coverage.summary_line())
    for gap in coverage.gaps:
        progress(f"missing: {gap.query}: {gap.reason}")
    for note in coverage.partial:
        progress(f"partial: {note}")
    return Loaded(inventory, coverage=coverage)


class RowRecorder:
    """Gzip JSON Lines copy of every row the run evaluates, for the evidence archive (streamed)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "snapshot.jsonl.gz"
        self._handle = gzip.open(self.path, "wb", compresslevel=6)  # noqa: SIM115  (closed by close())

    def rows(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            self._handle.write(orjson.dumps(row, default=str) + b"\n")
            yield row

    def close(self) -> None:
        self._handle.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def capture_snapshot(collector, out_dir: str | Path, progress: Progress | None = None) -> dict:
    """Collect live and write one JSON Lines file per query plus a manifest with hashes, for offline replay."""
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def sink(query, rows: list[dict]) -> None:
        handle = handles.get(query.name)
        if handle is None:
            handle = handles[query.name] = (out / f"{query.name}.jsonl").open("wb")
            counts[query.name] = 0
        handle.write(b"".join(orjson.dumps(row, default=str) + b"\n" for row in rows))
        counts[query.name] += len(rows)

    started = _now()
    say(f"collecting from Resource Graph ({collector.scope.describe()}) into {out}")
    try:
        coverage = collector.collect(sink)
    finally:
        for handle in handles.values():
            handle.close()
    from auditors.sources.kql import collector_queries

    files = []
    for name in sorted(counts):
        path = out / f"{name}.jsonl"
        files.append({"path": path.name, "rows": counts[name], "bytes": path.stat().st_size,
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {
        "tool": "acr-pull-auditor", "toolVersion": __version__, "kind": "resource-graph-snapshot",
        "startedAt": started, "finishedAt": _now(), "scope": collector.scope.describe(),
        "endpoint": collector.endpoint,
        "queries": {name: {"table": q.table, "text": q.text, "rows": counts.get(name, 0)}
                    for name, q in collector_queries().items()},
        "files": files, "coverage": coverage.as_dict(),
    }
    (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    say(coverage.summary_line())
    return manifest
