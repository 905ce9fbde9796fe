"""One scan: snapshot -> inventory -> findings -> local files + summary. Shared by the CLI and the app."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from auditors.engine import Evaluator, Progress
from auditors.model import Inventory
from auditors.pairing import PairsConfig, load_pairs_file
from auditors.report import Summary
from auditors.sinks.local import LocalSink
from auditors.sources.snapshot import LoadReport, iter_snapshot


def demo_path() -> Path:
    """The embedded demo estate (a directory of Resource Graph rows shipped in the package)."""
    return Path(str(resources.files("auditors") / "demo"))


@dataclass
class ScanResult:
    run_id: str
    summary: Summary
    inventory: Inventory
    load: LoadReport
    pairs: int
    unpaired_clusters: int
    out_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def run_scan(snapshot: str | Path, out_dir: str | Path, *, pairs_file: str | Path | None = None,
             run_id: str | None = None, progress: Progress | None = None) -> ScanResult:
    started = time.monotonic()
    say = progress or (lambda _msg: None)
    config = load_pairs_file(pairs_file) if pairs_file else PairsConfig()
    load = LoadReport()
    say(f"reading snapshot {snapshot}")
    inventory = Inventory.from_rows(iter_snapshot(snapshot, load), progress=say)
    say(f"read {load.rows:,} rows from {load.files} file(s): {len(inventory.clusters):,} clusters, "
        f"{len(inventory.registries):,} registries, {inventory.role_assignment_count:,} role assignments, "
        f"{len(inventory.subscriptions):,} subscriptions")
    for note in (load.skipped + inventory.notes)[:5]:
        say(f"skipped: {note}")
    if len(load.skipped) + len(inventory.notes) > 5:
        say(f"... {len(load.skipped) + len(inventory.notes) - 5} more skipped rows")
    run_id = run_id or str(uuid.uuid4())
    evaluator = Evaluator(inventory, config, run_id=run_id,
                          time_generated=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                          progress=say)
    summary = Summary()
    sink = LocalSink(out_dir)
    for _ in summary.observe(sink.write(evaluator.run())):
        pass
    return ScanResult(run_id, summary, inventory, load, evaluator.pair_count, evaluator.unpaired_clusters,
                      [sink.jsonl_path, sink.csv_path], time.monotonic() - started)
