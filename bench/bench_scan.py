"""Benchmark the batch engine on a seeded synthetic tenant.

    python bench/bench_scan.py [--clusters 20000] [--registries 5000] [--role-assignments 1000000]
                               [--estate DIR] [--seed 42]

Generates the estate (bench/synth_estate.py) unless --estate points at one, then runs the same path as
`python -m auditors scan --snapshot DIR`: load rows -> inventory -> evaluate -> findings.jsonl/.csv.
Prints rows/s for loading, pairs/s for evaluation and the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth_estate import generate

from auditors.engine import Evaluator
from auditors.model import Inventory
from auditors.pairing import PairsConfig
from auditors.report import Summary
from auditors.sinks.local import LocalSink
from auditors.sources.snapshot import LoadReport, iter_snapshot


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--registries", type=int, default=5_000)
    parser.add_argument("--role-assignments", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--estate", type=Path, help="existing estate directory (skips generation)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="acr-bench-"))
    estate = args.estate
    if estate is None:
        estate = work / "estate"
        started = time.perf_counter()
        counts = generate(estate, clusters=args.clusters, registries=args.registries,
                          role_assignments=args.role_assignments, subscriptions=args.subscriptions, seed=args.seed)
        print(f"generated {sum(counts.values()):,} rows in {time.perf_counter() - started:.1f}s -> {estate}")

    started = time.perf_counter()
    load = LoadReport()
    inventory = Inventory.from_rows(iter_snapshot(estate, load))
    load_seconds = time.perf_counter() - started
    memory_after_load = peak_mib()

    started = time.perf_counter()
    evaluator = Evaluator(inventory, PairsConfig(), run_id="bench", time_generated="2026-01-01T00:00:00Z")
    summary = Summary()
    sink = LocalSink(work / "out")
    for _ in summary.observe(sink.write(evaluator.run())):
        pass
    eval_seconds = time.perf_counter() - started

    print(f"inventory: {len(inventory.clusters):,} clusters, {len(inventory.registries):,} registries, "
          f"{inventory.role_assignment_count:,} role assignments, {len(inventory.subscriptions):,} subscriptions")
    print(f"load:      {load.rows:,} rows in {load_seconds:.1f}s = {load.rows / load_seconds:,.0f} rows/s "
          f"(peak RSS after load {memory_after_load:,.0f} MiB)")
    print(f"evaluate:  {evaluator.pair_count:,} pairs, {summary.findings:,} findings in {eval_seconds:.1f}s = "
          f"{evaluator.pair_count / eval_seconds:,.0f} pairs/s ({summary.findings / eval_seconds:,.0f} findings/s, "
          "including writing JSONL + CSV)")
    print(f"total:     {load_seconds + eval_seconds:.1f}s, peak RSS {peak_mib():,.0f} MiB")
    print(f"findings:  {', '.join(f'{s}={summary.total(s)}' for s in ('Pass', 'Fail', 'Unknown', 'NotApplicable'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
