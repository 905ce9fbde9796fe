"""One scan: rows (snapshot or live Resource Graph) -> inventory -> findings -> local files + summary.

Shared by the CLI and, later, the Functions app.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from auditors import __version__
from auditors.engine import Evaluator, Progress
from auditors.model import Gap, Inventory
from auditors.pairing import PairsConfig, load_pairs_file
from auditors.report import Summary
from auditors.sinks.local import LocalSink
from auditors.sources.snapshot import LoadReport, SnapshotError, iter_snapshot, normalise_row

MANIFEST = "manifest.json"


def demo_path() -> Path:
    """The embedded demo estate (a directory of Resource Graph rows shipped in the package)."""
    return Path(str(resources.files("auditors") / "demo"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class ScanResult:
    run_id: str
    summary: Summary
    inventory: Inventory
    pairs: int
    unpaired_clusters: int
    load: LoadReport | None = None
    coverage: Any = None  # resource_graph.Coverage for live scans
    out_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def read_manifest(snapshot: str | Path) -> dict | None:
    path = Path(snapshot)
    manifest = path / MANIFEST if path.is_dir() else None
    if manifest is None or not manifest.exists():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{manifest}: unreadable manifest: {exc}") from exc


def load_snapshot(snapshot: str | Path, progress: Progress, row_filter=None) -> tuple[Inventory, LoadReport]:
    load = LoadReport()
    progress(f"reading snapshot {snapshot}")
    rows = iter_snapshot(snapshot, load)
    inventory = Inventory.from_rows(row_filter(rows) if row_filter else rows, progress=progress)
    progress("rows per table: " + ", ".join(f"{table} {count:,}" for table, count in sorted(load.tables.items())))
    manifest = read_manifest(snapshot)
    if manifest:  # a captured snapshot carries what its collection missed
        coverage = manifest.get("coverage") or {}
        inventory.gaps = [Gap.from_dict(g) for g in coverage.get("gaps") or []]
        if coverage.get("managementGroupRoleData"):
            inventory.tenant_scope_authorization = True
    for note in (load.skipped + inventory.notes)[:5]:
        progress(f"skipped: {note}")
    if len(load.skipped) + len(inventory.notes) > 5:
        progress(f"... {len(load.skipped) + len(inventory.notes) - 5} more skipped rows")
    return inventory, load


def collect_live(collector, progress: Progress, row_filter=None) -> tuple[Inventory, Any]:
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
    return inventory, coverage


def evaluate(inventory: Inventory, out_dir: str | Path, *, config: PairsConfig, run_id: str | None = None,
             progress: Progress) -> tuple[str, Summary, Evaluator, list[Path]]:
    progress(f"inventory: {len(inventory.clusters):,} clusters, {len(inventory.registries):,} registries, "
             f"{inventory.role_assignment_count:,} role assignments, {len(inventory.subscriptions):,} subscriptions")
    run_id = run_id or str(uuid.uuid4())
    evaluator = Evaluator(inventory, config, run_id=run_id, time_generated=_now(), progress=progress)
    summary = Summary()
    sink = LocalSink(out_dir)
    for _ in summary.observe(sink.write(evaluator.run())):
        pass
    return run_id, summary, evaluator, [sink.jsonl_path, sink.csv_path]


def run_scan(snapshot: str | Path | None, out_dir: str | Path, *, pairs_file: str | Path | None = None,
             run_id: str | None = None, progress: Progress | None = None, collector=None,
             row_filter=None) -> ScanResult:
    """Scan a snapshot, or collect live with `collector` when no snapshot is given. `row_filter` sees every
    row on its way into the inventory (the evidence archive records them through it)."""
    started = time.monotonic()
    say = progress or (lambda _msg: None)
    config = load_pairs_file(pairs_file) if pairs_file else PairsConfig()
    load = coverage = None
    if snapshot is not None:
        inventory, load = load_snapshot(snapshot, say, row_filter)
    else:
        inventory, coverage = collect_live(collector, say, row_filter)
    run_id, summary, evaluator, files = evaluate(inventory, out_dir, config=config, run_id=run_id, progress=say)
    return ScanResult(run_id, summary, inventory, evaluator.pair_count, evaluator.unpaired_clusters, load, coverage,
                      files, time.monotonic() - started)


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
            handle = handles[query.name] = (out / f"{query.name}.jsonl").open("w", encoding="utf-8")
            counts[query.name] = 0
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
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
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    say(coverage.summary_line())
    return manifest
