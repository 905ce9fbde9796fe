"""Benchmark `scan --snapshot` against plain parsing of the same files, on a seeded synthetic tenant.

    python bench/bench_scan.py [--estate DIR] [--clusters 20000] [--registries 5000]
                               [--role-assignments 1000000] [--subscriptions 2000] [--seed 42]
                               [--repeat N] [--growth] [--work DIR] [--keep]

Generates the estate with bench/synth_estate.py (into --work) unless --estate points at one, then, each in a
fresh interpreter so the figures are separable:

- baseline: orjson parse-and-iterate of every file of the estate (each JSON Lines row and manifest.json), then
  the same parse holding every row in a list, for the memory those parsed rows take (RSS growth);
- scan: `auditors.pipeline.run_audit(Settings(out_dir=OUT), RunRequest("snapshot", snapshot=ESTATE))`, exactly
  what `python -m auditors scan --snapshot ESTATE --out OUT` runs (OUT fresh each time, so there is no previous
  run to compare with); the snapshot load (`load_snapshot`: rows into the inventory) and the evaluate-and-deliver
  stage are timed by wrapping those two calls of the pipeline, nothing else changes.

The scan runs as a user gets it (`--workers 0`: one process per CPU for loading the large role-assignment file and
for evaluating; see auditors/workers.py); `--one-process-too` also scans with `--workers 1` in every round and
prints how much the processes gain. Memory counts the run's own process plus its largest worker (pages they share
counted twice).

Prints scan and load time against the parse baseline, the scan's CPU time (user + system, every process) against
the parse's with its microseconds per finding (no target; it moves with the machine too), peak memory
against the parsed rows, findings size, AKS-ACR-001 verdicts with the Unknown share and its top reasons,
AKS-ACR-000 pair verdicts and AKS-ACR-002 statuses, each against its target with PASS/MISS. `--repeat N`
alternates baseline and scan N times and prints medians (ratios are taken pair by pair). `--growth` also scans
the estate generated at 1/8, 1/4 and 1/2 of every size (N times each, the median kept) and prints rows ->
seconds, seconds per million rows and MiB, the exponent between neighbouring sizes, and the growth exponent: the
least-squares slope of log seconds over log rows.
Imports are outside every timing (the scan child reports its import time separately).
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import (
    Targets,
    header,
    make_estate,
    median,
    peak_mib,
    report_child,
    rss_mib,
    run_child,
    scaled,
    spread,
    unknown_reasons,
)

SCRIPT = Path(__file__).resolve()
TARGET_SCAN_RATIO = 5.0
TARGET_LOAD_RATIO = 3.0
TARGET_MEMORY_RATIO = 0.5
TARGET_BYTES_PER_FINDING = 1024
TARGET_UNKNOWN_SHARE = 0.01
TARGET_GROWTH_EXPONENT = 1.2  # seconds ~ rows^k across the sizes; 1.0 is linear
FRACTIONS = (8, 4, 2, 1)  # 1/8, 1/4, 1/2, 1x


# -- children (each in its own interpreter) ---------------------------------------------------------------------

def child_baseline(estate: Path) -> dict:
    import orjson

    files = sorted(p for p in estate.iterdir() if p.suffix in (".jsonl", ".json") and p.is_file())
    loads = orjson.loads

    def rows_of(path: Path):
        with path.open("rb") as handle:
            if path.suffix == ".json":
                document = loads(handle.read())
                yield from document if isinstance(document, list) else [document]
                return
            for line in handle:
                if line.strip():
                    yield loads(line)

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    rows = fields = 0
    for path in files:
        counted = path.suffix == ".jsonl"  # manifest.json is parsed too, but it is no row
        for row in rows_of(path):  # parse and iterate, nothing kept
            rows += counted
            fields += len(row)
    stream_seconds, stream_cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started

    before = rss_mib()
    started = time.perf_counter()
    held = [row for path in files for row in rows_of(path)]
    for row in held:
        fields += len(row)
    hold_seconds = time.perf_counter() - started
    held_mib = rss_mib() - before
    return {"rows": rows, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "seconds": stream_seconds, "cpu_seconds": stream_cpu, "hold_seconds": hold_seconds, "held_mib": held_mib,
            "peak_mib": peak_mib(), "fields": fields}


def child_scan(estate: Path, out: Path, workers: int) -> dict:
    started = time.perf_counter()
    from auditors import pipeline
    from auditors.pipeline import RunRequest, run_audit
    from auditors.settings import Settings

    import_seconds = time.perf_counter() - started
    timings: dict[str, float] = {}
    real_load, real_deliver = pipeline.load_snapshot, pipeline.evaluate_and_deliver

    def timed_load(*args, **kwargs):
        began = time.perf_counter()
        loaded = real_load(*args, **kwargs)
        timings["load"] = time.perf_counter() - began
        timings["load_end"] = time.perf_counter()
        timings["peak_after_load_mib"] = peak_mib()
        return loaded

    def timed_deliver(*args, **kwargs):
        began = time.perf_counter()
        timings["prepare"] = began - timings.get("load_end", began)  # evaluator, previous run, sinks
        delivered = real_deliver(*args, **kwargs)
        timings["evaluate_deliver"] = time.perf_counter() - began
        return delivered

    pipeline.load_snapshot, pipeline.evaluate_and_deliver = timed_load, timed_deliver
    began, cpu_began = time.perf_counter(), _cpu_seconds()
    outcome = run_audit(Settings(out_dir=str(out), workers=workers), RunRequest("snapshot", snapshot=estate))
    total, cpu = time.perf_counter() - began, _cpu_seconds() - cpu_began
    summary = outcome.summary
    counts = {rule: dict(c) for rule, c in summary.counts.items()} if summary else {}
    findings = out / "findings.jsonl"
    return {"seconds": total, "cpu_seconds": cpu, "import_seconds": import_seconds, "load_seconds": timings.get("load"),
            "prepare_seconds": timings.get("prepare"), "evaluate_deliver_seconds": timings.get("evaluate_deliver"),
            "peak_mib": peak_mib(), "peak_after_load_mib": timings.get("peak_after_load_mib"),
            "workers_peak_mib": peak_mib(resource.RUSAGE_CHILDREN), "processes": outcome.processes,
            "rows": outcome.loaded.load.rows if outcome.loaded and outcome.loaded.load else 0,
            "status": outcome.status, "errors": outcome.record.Errors[:5],
            "findings": summary.findings if summary else 0,
            "findings_bytes": findings.stat().st_size if findings.exists() else 0, "counts": counts,
            "pairs": outcome.pairs, "pair_verdicts": dict(summary.pair_counts()) if summary else {},
            "clusters": len(outcome.inventory.clusters), "registries": len(outcome.inventory.registries)}


def _cpu_seconds() -> float:
    """User and system time of this process and of the workers it has waited for."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


# -- the parent ---------------------------------------------------------------------------------------------------

def scan_once(estate: Path, work: Path, tag: str, keep_findings: bool, workers: int = 0) -> tuple[dict, Counter]:
    out = work / f"out-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    result = run_child(SCRIPT, ["scan", str(estate), str(out), str(workers)])
    reasons = unknown_reasons(out / "findings.jsonl") if keep_findings else Counter()
    shutil.rmtree(out, ignore_errors=True)
    return result, reasons


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        report_child(child_baseline(Path(rest[0])) if kind == "baseline" else
                     child_scan(Path(rest[0]), Path(rest[1]), int(rest[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estate", type=Path, help="existing estate directory (skips generation; --growth then "
                                                    "generates the fractions from the size options)")
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--registries", type=int, default=5_000)
    parser.add_argument("--role-assignments", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="alternate baseline and scan this many times")
    parser.add_argument("--growth", action="store_true", help="also scan 1/8, 1/4 and 1/2 of the estate")
    parser.add_argument("--workers", type=int, default=0, help="AUDIT_WORKERS of the scan (default 0: one process "
                                                               "per CPU, as a user gets it)")
    parser.add_argument("--one-process-too", action="store_true",
                        help="also scan with workers=1 in each round, and print that beside (no target)")
    parser.add_argument("--work", type=Path, help="folder for generated estates and outputs (default: a temporary "
                                                  "one, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the generated estates")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="acr-bench-scan-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        estate = args.estate or make_estate(work, scaled(args, 1), args.seed)
        return report(args, work, estate)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def report(args, work: Path, estate: Path) -> int:
    print(f"estate {estate}; python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    baselines, scans, singles, reasons = [], [], [], Counter()
    for index in range(max(1, args.repeat)):
        baselines.append(run_child(SCRIPT, ["baseline", str(estate)]))
        last = index == max(1, args.repeat) - 1
        scan, found = scan_once(estate, work, "full", keep_findings=last, workers=args.workers)
        scans.append(scan)
        reasons = found or reasons
        single = ""
        if args.one_process_too:
            singles.append(scan_once(estate, work, "one", keep_findings=False, workers=1)[0])
            single = f"; one process: scan {singles[-1]['seconds']:.2f}s (load {singles[-1]['load_seconds']:.2f}s)"
        print(f"  run {index + 1}: parse {baselines[-1]['seconds']:.2f}s, scan {scan['seconds']:.2f}s "
              f"(load {scan['load_seconds']:.2f}s) in {scan['processes']} process(es), peak {scan['peak_mib']:.0f} "
              f"MiB + {scan['workers_peak_mib']:.0f} MiB in the largest worker{single}", flush=True)
    base, scan = baselines[-1], scans[-1]
    if scan["status"] != "Succeeded":
        print(f"scan status {scan['status']}: {scan['errors']}")

    header("input")
    print(f"  {base['files']} files, {base['bytes'] / 2**20:,.0f} MiB, {base['rows']:,} rows parsed by the baseline; "
          f"{scan['rows']:,} rows loaded by the scan")
    print(f"  {scan['clusters']:,} clusters, {scan['registries']:,} registries, {scan['pairs']:,} pairs")

    header("time and memory")
    targets = Targets()
    parse_s = [b["seconds"] for b in baselines]
    scan_s = [s["seconds"] for s in scans]
    load_s = [s["load_seconds"] for s in scans]
    scan_ratio = [s / b for s, b in zip(scan_s, parse_s, strict=True)]
    load_ratio = [s / b for s, b in zip(load_s, parse_s, strict=True)]
    held = [b["held_mib"] for b in baselines]
    peaks = [_memory(s) for s in scans]  # every process of the scan, the pages they share counted twice
    memory_ratio = [p / h for p, h in zip(peaks, held, strict=True)]
    rate = median([b["rows"] for b in baselines]) / median(parse_s)
    holding = spread([b["hold_seconds"] for b in baselines])
    print(f"  baseline parse-and-iterate {spread(parse_s)} s ({rate:,.0f} rows/s); holding every parsed row "
          f"{holding} s, "
          f"{spread(held, '{:,.0f}')} MiB")
    print(f"  scan stages (median): load {median(load_s):.2f}s, evaluator and sinks ready "
          f"{median([s['prepare_seconds'] or 0 for s in scans]):.2f}s, evaluate and write "
          f"{median([s['evaluate_deliver_seconds'] or 0 for s in scans]):.2f}s; imports "
          f"{median([s['import_seconds'] for s in scans]):.2f}s (not counted); peak after load "
          f"{median([s['peak_after_load_mib'] or 0 for s in scans]):,.0f} MiB")
    targets.line("scan seconds / parse seconds", f"{spread(scan_s)} s = {median(scan_ratio):.2f}x",
                 f"<= {TARGET_SCAN_RATIO:g}x", median(scan_ratio) <= TARGET_SCAN_RATIO)
    targets.line("load seconds / parse seconds", f"{spread(load_s)} s = {median(load_ratio):.2f}x",
                 f"<= {TARGET_LOAD_RATIO:g}x", median(load_ratio) <= TARGET_LOAD_RATIO)
    targets.line("scan peak RSS (run + largest worker) / parsed rows",
                 f"{spread(peaks, '{:,.0f}')} MiB = {median(memory_ratio):.2f}x",
                 f"<= {TARGET_MEMORY_RATIO:g}x", median(memory_ratio) <= TARGET_MEMORY_RATIO)
    if singles:
        single_s = [s["seconds"] for s in singles]
        single_ratio = [s / b for s, b in zip(single_s, parse_s, strict=True)]
        print(f"  in one process (workers=1, same rounds): scan {spread(single_s)} s = {median(single_ratio):.2f}x "
              f"the parse, load {median([s['load_seconds'] for s in singles]):.2f}s, evaluate and write "
              f"{median([s['evaluate_deliver_seconds'] or 0 for s in singles]):.2f}s, peak "
              f"{median([s['peak_mib'] for s in singles]):,.0f} MiB; {scans[-1]['processes']} processes: "
              f"{median(single_s) / median(scan_s):.2f}x faster")
    cpu = [s["cpu_seconds"] / b["cpu_seconds"] for s, b in zip(scans, baselines, strict=True)]
    print(f"  CPU (user + system, summed over every process): scan "
          f"{spread([s['cpu_seconds'] for s in scans])} s = {median(cpu):.2f}x the parse's "
          f"{spread([b['cpu_seconds'] for b in baselines])} s; "
          f"{median([s['cpu_seconds'] for s in scans]) / max(1, scan['findings']) * 1e6:.0f} µs per finding")
    per_finding = scan["findings_bytes"] / max(1, scan["findings"])
    targets.line("bytes per finding (findings.jsonl)",
                 f"{scan['findings']:,} findings, {per_finding:,.0f} B", f"<= {TARGET_BYTES_PER_FINDING} B",
                 per_finding <= TARGET_BYTES_PER_FINDING)

    header("verdicts")
    pull = Counter(scan["counts"].get("AKS-ACR-001", {}))
    decided = sum(pull.values())
    share = pull["Unknown"] / decided if decided else 0.0
    targets.line("AKS-ACR-001 Unknown share",
                 f"{pull['Unknown']:,} of {decided:,} = {share:.2%}", f"<= {TARGET_UNKNOWN_SHARE:.0%}",
                 share <= TARGET_UNKNOWN_SHARE)
    print(f"  AKS-ACR-001 (pull permission): Pass {pull['Pass']:,}, Fail {pull['Fail']:,}, Unknown {pull['Unknown']:,}"
          + (f", NotApplicable {pull['NotApplicable']:,}" if pull["NotApplicable"] else ""))
    if reasons:
        print("  top AKS-ACR-001 Unknown reasons (message prefix, names and ids masked):")
        for reason, count in reasons.most_common(8):
            print(f"    {count:>7,}  {reason}")
    verdicts = Counter(scan["pair_verdicts"])
    print(f"  AKS-ACR-000 pair verdicts: {sum(verdicts.values()):,} pairs: can pull {verdicts['Pass']:,}, cannot pull "
          f"{verdicts['Fail']:,}, undecided {verdicts['Unknown']:,}")
    observed = Counter(scan["counts"].get("AKS-ACR-002", {}))
    print("  AKS-ACR-002 (observed pulls): " + ", ".join(f"{s} {observed[s]:,}" for s in
                                                         ("Pass", "Fail", "Unknown", "NotApplicable")))

    if args.growth:  # the 1x row: the scan of median time
        growth(args, work, estate, sorted(scans, key=lambda s: s["seconds"])[(len(scans) - 1) // 2], targets)
    targets.close()
    return 0 if scan["status"] == "Succeeded" else 1


def _memory(result: dict) -> float:
    return result["peak_mib"] + result["workers_peak_mib"]


def growth(args, work: Path, estate: Path, full: dict, targets: Targets) -> None:
    repeat = max(1, args.repeat)
    header(f"growth (every size option scaled; median of {repeat} scan(s) each; the 1x row is the median above)")
    rows = []
    for divisor in FRACTIONS:
        if divisor == 1:
            result = full
        else:
            smaller = make_estate(work, scaled(args, divisor), args.seed)
            runs = [scan_once(smaller, work, f"1-{divisor}", False)[0] for _ in range(repeat)]
            result = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
        rows.append((divisor, result))
    print(f"  {'size':>5} {'rows':>11} {'seconds':>9} {'s per M rows':>13} {'peak MiB':>9} {'time exp':>9} "
          f"{'memory exp':>11}  (peak: the run's process plus its largest worker; processes as chosen by default)")
    previous = None
    for divisor, result in rows:
        time_exp = memory_exp = ""
        if previous is not None:
            grown = math.log(result["rows"] / previous["rows"])
            time_exp = f"{math.log(result['seconds'] / previous['seconds']) / grown:.2f}"
            memory_exp = f"{math.log(_memory(result) / _memory(previous)) / grown:.2f}"
        print(f"  {'1/' + str(divisor) if divisor > 1 else '1':>5} {result['rows']:>11,} {result['seconds']:>9.2f} "
              f"{result['seconds'] / (result['rows'] / 1e6):>13.2f} {_memory(result):>9,.0f} {time_exp:>9} "
              f"{memory_exp:>11}")
        previous = result
    # The slope of log(seconds) over log(rows) across all sizes (least squares): one noisy run moves a step's
    # exponent a lot (on a shared machine a step can read 0.8 or 1.3), the slope much less.
    xs = [math.log(result["rows"]) for _, result in rows]
    ys = [math.log(result["seconds"]) for _, result in rows]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / \
        sum((x - mean_x) ** 2 for x in xs)
    targets.line("growth exponent of scan time (1/8 to 1x)", f"{slope:.2f}", f"<= {TARGET_GROWTH_EXPONENT:g}",
                 slope <= TARGET_GROWTH_EXPONENT)


if __name__ == "__main__":
    sys.exit(main())
