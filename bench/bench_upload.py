"""Benchmark delivery to Log Analytics: the project's sink against a straightforward SDK client, same run.

    python bench/bench_upload.py [--findings 500000] [--workers 4] [--repeat N]
    python bench/bench_upload.py --endpoint https://127.0.0.1:8444 --ca ca.pem   # an emulator already running

Starts the ingestion emulator in its own process (`python -m auditors emulate ingestion --port 0 --ca-out CA
--dcr DCR`, endpoint read from its first stdout line) unless --endpoint is given, then uploads the same findings
(the demo's findings repeated with distinct FindingIds, as dicts) to the findings stream twice, in turn:

- baseline: what a straightforward client writes, one `LogsIngestionClient.upload(rule_id, stream_name,
  logs=<the list of dicts>, on_error=...)`: the SDK serialises every record with json (once to size its 1 MiB
  chunks, again to build each body), gzips and sends the chunks one after another. The SDK (1.1.0) sizes a chunk
  without the ", " between records, so a full chunk can be a little over the 1 MB limit and refused with 413;
  the baseline re-sends each refused chunk in two halves (counted in its time; the refusals are printed);
- project: `LogAnalyticsSink.upload_records`: each record encoded once with orjson, bodies of at most 1,000,000
  bytes gzip-compressed and sent by a bounded pool of --workers.

Prints rows/s of each, the ratio project / baseline against its target (>= 1.5x) with PASS/MISS, and requests,
bodies and body bytes (from the emulator's /stats before and after each, and the sink's own counters). The
emulator checks every body against the 1 MB limit and the stream's schema; every row must land.
`--repeat N` alternates the two N times and prints medians (the ratio taken pair by pair).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import EmulatorProcess, Targets, get_stats, header, median, spread

from auditors.pipeline import RunRequest, run_audit
from auditors.settings import Settings
from auditors.sinks.log_analytics import LogAnalyticsSink
from auditors.sinks.spool import Spool
from auditors.sinks.store import LocalStore
from auditors.sinks.tables import FINDINGS_STREAM
from auditors.sources.credentials import StaticTokenCredential

TARGET_RATIO = 1.5


def demo_findings(work: Path) -> list[dict]:
    run_audit(Settings(out_dir=str(work / "demo")), RunRequest("demo"))
    return [json.loads(line) for line in (work / "demo" / "findings.jsonl").open()]


def baseline_upload(endpoint: str, ca: str, dcr: str, records: list[dict]) -> dict:
    from azure.monitor.ingestion import LogsIngestionClient

    client = LogsIngestionClient(endpoint=endpoint, credential=StaticTokenCredential("bench"), connection_verify=ca)
    started = time.perf_counter()
    failed = []
    client.upload(rule_id=dcr, stream_name=FINDINGS_STREAM, logs=records, on_error=failed.append)
    # The SDK sizes a chunk as the sum of its records' JSON (<= 1 MiB) but the body also holds the ", " between
    # records: a full chunk can exceed the 1 MB limit and be refused (413). Re-send such a chunk in two halves.
    for error in failed:
        logs = list(error.failed_logs)
        for half in (logs[:len(logs) // 2], logs[len(logs) // 2:]):
            client.upload(rule_id=dcr, stream_name=FINDINGS_STREAM, logs=half)
    seconds = time.perf_counter() - started
    client.close()
    return {"seconds": seconds, "refused_chunks": len(failed),
            "refused_reasons": sorted({str(getattr(e.error, "status_code", "")) for e in failed})}


def project_upload(endpoint: str, ca: str, dcr: str, records: list[dict], workers: int, spool: Path) -> dict:
    sink = LogAnalyticsSink(endpoint=endpoint, rule_id=dcr, credential=StaticTokenCredential("bench"),
                            spool=Spool(LocalStore(spool)), workers=workers, connection_verify=ca)
    started = time.perf_counter()
    stats = sink.upload_records(FINDINGS_STREAM, records)
    seconds = time.perf_counter() - started
    sink.shutdown()
    return {"seconds": seconds, "requests": stats.requests, "bodies": stats.batches, "body_bytes": stats.body_bytes,
            "spooled": stats.spooled_rows, "lost": stats.lost_rows, "throttled": stats.throttled}


def measured(run, endpoint: str, ca: str, rows: int) -> dict:
    before = get_stats(endpoint, ca)
    result = run()
    after = get_stats(endpoint, ca)
    result.update({f"emulator_{key}": after[key] - before[key]
                   for key in ("requests", "acceptedRequests", "rows", "bytesReceived")})
    result["rejected"] = {k: v - before["rejected"].get(k, 0) for k, v in after["rejected"].items()
                          if v - before["rejected"].get(k, 0)}
    result["rows_per_second"] = rows / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="alternate baseline and project this many times")
    parser.add_argument("--endpoint", help="an ingestion emulator already running (otherwise one is started in its "
                                           "own process)")
    parser.add_argument("--ca", help="its CA certificate")
    parser.add_argument("--dcr", default="dcr-" + "0" * 32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acr-upload-"))
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, work: Path) -> int:
    templates = demo_findings(work)
    records = [{**templates[i % len(templates)], "FindingId": f"{i:032x}"} for i in range(args.findings)]
    emulator = None
    if args.endpoint:
        endpoint, ca = args.endpoint, args.ca
    else:
        emulator = EmulatorProcess("ingestion", "--dcr", args.dcr, ca_out=work / "ca.pem").ready()
        endpoint, ca = emulator.endpoint, str(emulator.ca)
    print(f"{args.findings:,} findings ({len(templates)} demo findings repeated, "
          f"{sum(len(json.dumps(t)) for t in templates) / len(templates):,.0f} B each as JSON) to {endpoint} "
          f"({'its own process, pid ' + str(emulator.process.pid) if emulator else 'given'}); "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    baselines, projects = [], []
    try:
        for index in range(max(1, args.repeat)):
            spool = work / f"spool-{index}"
            baselines.append(measured(lambda: baseline_upload(endpoint, ca, args.dcr, records), endpoint, ca,
                                      len(records)))
            projects.append(measured(lambda spool=spool: project_upload(endpoint, ca, args.dcr, records, args.workers,
                                                                        spool), endpoint, ca, len(records)))
            print(f"  run {index + 1}: baseline {baselines[-1]['rows_per_second']:,.0f} rows/s, project "
                  f"{projects[-1]['rows_per_second']:,.0f} rows/s", flush=True)
    finally:
        emulator_peak = emulator.peak_mib() if emulator else float("nan")
        final = emulator.stop() if emulator else {}
    ratios = [p["rows_per_second"] / b["rows_per_second"] for p, b in zip(projects, baselines, strict=True)]
    base, project = baselines[-1], projects[-1]

    header("delivery of the same findings, same emulator process")
    for name, runs, result in (("baseline SDK list upload", baselines, base),
                               (f"project sink, {args.workers} workers", projects, project)):
        print(f"  {name:<28} {spread([r['rows_per_second'] for r in runs], '{:,.0f}')} rows/s; "
              f"{spread([r['seconds'] for r in runs])} s; {result['emulator_requests']:,} requests, "
              f"{result['emulator_acceptedRequests']:,} bodies accepted, "
              f"{result['emulator_bytesReceived'] / 2**20:,.1f} MiB sent (gzip), "
              f"{result['emulator_bytesReceived'] / max(1, result['emulator_requests']) / 1024:,.0f} KiB per body, "
              f"{result['emulator_rows']:,} rows landed" + (f", rejected {result['rejected']}" if result['rejected']
                                                            else ""))
    print(f"  baseline: {base['refused_chunks']:,} SDK chunks refused (status {', '.join(base['refused_reasons'])})"
          " and re-sent in halves")
    print(f"  project sink's own counters: {project['requests']:,} requests for {project['bodies']:,} bodies, "
          f"{project['body_bytes'] / 2**20:,.1f} MiB, {project['throttled']} throttled, {project['spooled']} spooled")
    targets = Targets()
    targets.line("rows/s project / baseline", f"{spread(ratios)}x", f">= {TARGET_RATIO:g}x",
                 median(ratios) >= TARGET_RATIO)
    landed = all(r["emulator_rows"] == len(records) for r in baselines + projects)
    targets.line("every row landed, both clients", str(landed), "True", landed)
    if final:
        print(f"  emulator on exit: {final}; its peak RSS {emulator_peak:,.0f} MiB (it keeps every landed row)")
    targets.close()
    return 0 if landed else 1


if __name__ == "__main__":
    sys.exit(main())
