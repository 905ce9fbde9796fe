"""Command line: `python -m auditors scan | snapshot | rules | emulate arg`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading

from auditors import __version__
from auditors.pairing import PairsFileError
from auditors.report import render
from auditors.rules import RESERVED, Severity, Status, catalog
from auditors.scan import capture_snapshot, demo_path, run_scan
from auditors.sources.snapshot import SnapshotError

EXIT_OK, EXIT_FAIL_ON, EXIT_BAD_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _quota(text: str) -> tuple[int, float]:
    try:
        count, seconds = text.split("/")
        return int(count), float(seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--quota {text!r}: use REQUESTS/SECONDS, e.g. 15/5") from exc


def _add_collection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("live collection (Azure Resource Graph)")
    group.add_argument("--scope", action="append", metavar="SCOPE",
                       help="tenant (default), mg:NAME or sub:SUBSCRIPTION-ID; repeatable")
    group.add_argument("--arm-endpoint", default=os.environ.get("AZURE_ARM_ENDPOINT", "https://management.azure.com"),
                       help="Resource Manager endpoint (sovereign clouds: e.g. https://management.usgovcloudapi.net)")
    group.add_argument("--page-size", type=int, default=1000, help="rows per Resource Graph page (1-1000)")
    group.add_argument("--concurrency", type=int, default=4, help="queries in flight at most (within the quota)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m auditors", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acr-pull-auditor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="evaluate every cluster x registry pair and write findings",
                               description="Without --snapshot or --demo, collects live from Resource Graph "
                                           "(credentials: AZURE_ACCESS_TOKEN, else DefaultAzureCredential).")
    source = scan.add_mutually_exclusive_group()
    source.add_argument("--snapshot", metavar="PATH", help="JSON / JSON Lines file or directory of Resource Graph rows")
    source.add_argument("--demo", action="store_true", help="scan the embedded demo estate")
    scan.add_argument("--pairs", metavar="FILE", help="YAML or JSON file declaring cluster -> registry pairs")
    scan.add_argument("--out", metavar="DIR", default="out", help="output directory (default: ./out)")
    scan.add_argument("--fail-on", metavar="SEVERITY", type=_severity,
                      help="exit 1 when a Fail at or above this severity exists (Low, Medium, High, Critical)")
    scan.add_argument("--run-id", help="run id to stamp on findings (default: a new UUID)")
    scan.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    _add_collection_options(scan)

    snapshot = commands.add_parser("snapshot", help="collect from Resource Graph into a replayable snapshot")
    snapshot.add_argument("--out", metavar="DIR", required=True, help="directory for the JSONL files and manifest")
    snapshot.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    _add_collection_options(snapshot)

    rules = commands.add_parser("rules", help="list the rule catalog")
    rules.add_argument("--json", action="store_true", help="print the catalog as JSON")

    emulate = commands.add_parser("emulate", help="local HTTPS emulators of Azure services")
    services = emulate.add_subparsers(dest="service", required=True)
    arg = services.add_parser("arg", help="Azure Resource Graph serving a snapshot on 127.0.0.1")
    arg_source = arg.add_mutually_exclusive_group(required=True)
    arg_source.add_argument("--snapshot", metavar="PATH")
    arg_source.add_argument("--demo", action="store_true", help="serve the embedded demo estate")
    arg.add_argument("--port", type=int, default=0, help="port (default: any free port, printed)")
    arg.add_argument("--page-size", type=int, default=1000, help="largest page served (forces paging)")
    arg.add_argument("--quota", type=_quota, default=(15, 5.0), metavar="N/SECONDS",
                     help="per-principal quota window (default 15/5)")
    arg.add_argument("--ca-out", metavar="FILE", help="write the emulator's CA certificate (PEM) here")
    arg.add_argument("--subscription-limit", type=int, default=10_000,
                     help="subscriptions a tenant/MG-scope query may cover (default 10000)")
    arg.add_argument("--fail", type=int, default=0, metavar="N", help="answer the first N requests with --fail-status")
    arg.add_argument("--fail-status", type=int, default=500)
    arg.add_argument("--throttle", type=int, default=0, metavar="N", help="answer the first N requests with 429")
    arg.add_argument("--reset", type=int, default=0, metavar="N", help="drop the connection of the first N requests")
    arg.add_argument("--fail-subscription", action="append", default=[], metavar="ID",
                     help="always fail requests naming this subscription; repeatable")
    arg.add_argument("--truncate", action="append", default=[], metavar="QUERY",
                     help="answer this query (file stem) with resultTruncated; repeatable")
    arg.add_argument("--fail-query", action="append", default=[], metavar="QUERY",
                     help="always fail this query (file stem); repeatable")
    return parser


def _rules(as_json: bool) -> int:
    rules = catalog()
    if as_json:
        print(json.dumps([{**vars(r.meta), "severity": r.meta.severity.value, "scope": r.meta.scope.value,
                           "links": list(r.meta.links)} for r in rules], indent=2))
        return EXIT_OK
    print(f"{'Rule':<12} {'Severity':<9} {'Scope':<9} {'Category':<9} {'Cause':<5}  Title")
    for rule in rules:
        meta = rule.meta
        cause = str(meta.seed_cause) if meta.seed_cause else "-"
        print(f"{meta.id:<12} {meta.severity.value:<9} {meta.scope.value:<9} {meta.category:<9} {cause:<5}  "
              f"{meta.title}")
    for rule_id, text in RESERVED.items():
        print(f"{rule_id:<12} {'reserved':<9} {'pair':<9} {'':<9} {'2':<5}  {text}")
    print("\nDocs: docs/rules/<ID>.md")
    return EXIT_OK


def _progress(quiet: bool, tag: str):
    def progress(message: str) -> None:
        if not quiet:
            print(f"[{tag}] {message}", file=sys.stderr, flush=True)

    return progress


def _collector(args: argparse.Namespace, progress):
    from auditors.sources.credentials import arm_credential
    from auditors.sources.resource_graph import CollectionScope, ResourceGraphCollector

    return ResourceGraphCollector(arm_credential(), endpoint=args.arm_endpoint, scope=CollectionScope.parse(args.scope),
                                  page_size=args.page_size, concurrency=args.concurrency, progress=progress)


def _live_errors():
    from azure.core.exceptions import ClientAuthenticationError

    from auditors.sources.resource_graph import ScopeError

    return ClientAuthenticationError, ScopeError


def _scan(args: argparse.Namespace) -> int:
    progress = _progress(args.quiet, "scan")
    live = not (args.demo or args.snapshot)
    snapshot = demo_path() if args.demo else args.snapshot
    pairs = args.pairs or (demo_path() / "pairs.yaml" if args.demo else None)
    errors: tuple[type[Exception], ...] = (SnapshotError, PairsFileError)
    try:
        if live:
            errors += _live_errors()
        collector = _collector(args, progress) if live else None
        result = run_scan(snapshot, args.out, pairs_file=pairs, run_id=args.run_id, progress=progress,
                          collector=collector)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = result.summary
    print(render(summary, catalog()))
    print(f"\n{summary.findings:,} findings for {len(result.inventory.clusters):,} clusters, "
          f"{len(result.inventory.registries):,} registries and {result.pairs:,} pairs "
          f"({result.unpaired_clusters:,} clusters with no known registry) in {result.seconds:.1f}s; "
          f"run {result.run_id}")
    if result.coverage is not None:
        print(result.coverage.summary_line())
    print(f"wrote {', '.join(str(p) for p in result.out_files)}")
    if args.fail_on and summary.worst_fail and summary.worst_fail.rank >= args.fail_on.rank:
        failing = summary.total(Status.FAIL)
        print(f"--fail-on {args.fail_on.value}: {failing} Fail finding(s), worst severity {summary.worst_fail.value}",
              file=sys.stderr)
        return EXIT_FAIL_ON
    if result.inventory.gaps:
        print(f"incomplete: {len(result.inventory.gaps)} collection gap(s); affected verdicts are Unknown",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _snapshot(args: argparse.Namespace) -> int:
    progress = _progress(args.quiet, "snapshot")
    try:
        manifest = capture_snapshot(_collector(args, progress), args.out, progress)
    except _live_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = sum(f["rows"] for f in manifest["files"])
    print(f"wrote {len(manifest['files'])} files ({rows:,} rows) and manifest.json to {args.out}")
    return EXIT_INCOMPLETE if manifest["coverage"]["gaps"] else EXIT_OK


def _emulate(args: argparse.Namespace) -> int:
    from auditors.emulators.arg import Faults, ResourceGraphEmulator

    faults = Faults(fail_first=args.fail, fail_status=args.fail_status, throttle_first=args.throttle,
                    reset_first=args.reset, fail_subscriptions={s.lower() for s in args.fail_subscription},
                    truncate_queries=set(args.truncate), fail_queries=set(args.fail_query))
    try:
        emulator = ResourceGraphEmulator(demo_path() if args.demo else args.snapshot, page_size=args.page_size,
                                         quota=args.quota, faults=faults, ca_out=args.ca_out, port=args.port,
                                         subscription_limit=args.subscription_limit)
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with emulator:
        print(f"Resource Graph emulator on {emulator.endpoint} (CA: {emulator.ca_path or 'not written'}); "
              f"Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    print(json.dumps({"emulator": "arg", **emulator.stats.as_dict()}), flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "rules":
        return _rules(args.json)
    if args.command == "snapshot":
        return _snapshot(args)
    if args.command == "emulate":
        return _emulate(args)
    return _scan(args)
