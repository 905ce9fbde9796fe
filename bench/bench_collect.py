"""Benchmark live collection: the real Resource Graph client against the emulator under a quota.

    python bench/bench_collect.py --demo
    python bench/bench_collect.py [--clusters 20000 --registries 5000 --role-assignments 1000000] [--estate DIR]
                                  [--quota 15/5] [--page-size 1000] [--concurrency 4]

Prints requests, pages, rows, 429s and wall time, and per query the requests against the lower bound
ceil(rows / page size). Resource Graph only, collector and emulator in this process; bench/bench_sources.py runs
every source (Resource Graph, deny assignments, Microsoft Graph, Container Insights) through the emulators, each
in its own process, with `python -m auditors snapshot` as the real CLI runs it.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth_estate import generate

from auditors.inputs import demo_path
from auditors.sources.credentials import StaticTokenCredential
from auditors.sources.resource_graph import ResourceGraphCollector
from emulators.arg import ResourceGraphEmulator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--estate", type=Path)
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--registries", type=int, default=5_000)
    parser.add_argument("--role-assignments", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=2_000)
    parser.add_argument("--quota", default="15/5")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    estate = demo_path() if args.demo else args.estate
    if estate is None:
        estate = Path(tempfile.mkdtemp(prefix="acr-collect-")) / "estate"
        generate(estate, clusters=args.clusters, registries=args.registries,
                 role_assignments=args.role_assignments, subscriptions=args.subscriptions)
    count, seconds = args.quota.split("/")
    started = time.perf_counter()
    emulator = ResourceGraphEmulator(estate, page_size=args.page_size, quota=(int(count), float(seconds)),
                                     ca_out=Path(tempfile.mkdtemp()) / "ca.pem")
    print(f"emulator loaded {estate} in {time.perf_counter() - started:.1f}s")
    rows_per_query: dict[str, int] = {}

    def sink(query, rows):
        rows_per_query[query.name] = rows_per_query.get(query.name, 0) + len(rows)

    with emulator:
        collector = ResourceGraphCollector(StaticTokenCredential("bench-token"), endpoint=emulator.endpoint,
                                           connection_verify=str(emulator.ca_path), page_size=args.page_size,
                                           concurrency=args.concurrency,
                                           progress=lambda m: print(f"  {m}", file=sys.stderr))
        coverage = collector.collect(sink)
    print(coverage.summary_line())
    print(f"emulator: {emulator.stats.as_dict()}")
    print(f"{'query':<18} {'rows':>10} {'requests':>9} {'lower bound':>12}")
    for name, stats in coverage.queries.items():
        bound = max(1, math.ceil(stats.rows / args.page_size))
        print(f"{name:<18} {stats.rows:>10,} {stats.requests:>9,} {bound:>12,}")
    print(f"pacing wait {collector.pacer.waited:.1f}s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB (emulator and collector together)")
    return 0 if not coverage.gaps else 3


if __name__ == "__main__":
    sys.exit(main())
