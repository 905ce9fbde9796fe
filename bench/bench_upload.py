"""Benchmark delivery to Log Analytics: the real LogsIngestionClient against the ingestion emulator.

    python bench/bench_upload.py [--findings 500000] [--workers 4]
    python bench/bench_upload.py --endpoint https://127.0.0.1:8444 --ca ca.pem   # emulator in its own process:
        python -m auditors emulate ingestion --port 8444 --ca-out ca.pem

Findings are shaped like the engine's (a demo finding repeated with distinct ids). Prints rows/s,
requests and bodies; the emulator checks every body against the 1 MB limit and the stream schema.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditors.pipeline import RunRequest, run_audit
from auditors.settings import Settings
from auditors.sinks.log_analytics import LogAnalyticsSink
from auditors.sinks.spool import Spool
from auditors.sinks.store import LocalStore
from auditors.sinks.tables import FINDINGS_STREAM
from auditors.sources.credentials import StaticTokenCredential
from emulators.ingestion import LogsIngestionEmulator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--endpoint", help="an emulator already running (otherwise one starts in this process)")
    parser.add_argument("--ca", help="its CA certificate")
    parser.add_argument("--dcr", default="dcr-" + "0" * 32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acr-upload-"))
    run_audit(Settings(out_dir=str(work / "demo")), RunRequest("demo"))
    templates = [json.loads(line) for line in (work / "demo" / "findings.jsonl").open()]

    def findings():
        for i in range(args.findings):
            yield {**templates[i % len(templates)], "FindingId": f"{i:032x}"}

    emulator = None
    if not args.endpoint:
        emulator = LogsIngestionEmulator(dcr_id=args.dcr, ca_out=work / "ca.pem").start()
    endpoint = args.endpoint or emulator.endpoint
    sink = LogAnalyticsSink(endpoint=endpoint, rule_id=args.dcr, credential=StaticTokenCredential("bench"),
                            spool=Spool(LocalStore(work / "spool")), workers=args.workers,
                            connection_verify=args.ca or str(emulator.ca_path))
    started = time.perf_counter()
    stats = sink.upload_records(FINDINGS_STREAM, findings())
    seconds = time.perf_counter() - started
    if emulator is not None:
        emulator.stop()
    landed = stats.rows - stats.spooled_rows
    print(f"{stats.rows:,} findings in {seconds:.1f}s = {stats.rows / seconds:,.0f} rows/s with {args.workers} "
          f"workers; {stats.requests:,} requests for {stats.batches:,} bodies, {stats.spooled_rows:,} spooled, "
          f"{landed:,} delivered")
    return 0 if landed == stats.rows else 1


if __name__ == "__main__":
    sys.exit(main())
