"""Command line: `python -m auditors scan|rules`."""

from __future__ import annotations

import argparse
import json
import sys

from auditors import __version__
from auditors.pairing import PairsFileError
from auditors.report import render
from auditors.rules import RESERVED, Severity, Status, catalog
from auditors.scan import demo_path, run_scan
from auditors.sources.snapshot import SnapshotError

EXIT_OK, EXIT_FAIL_ON, EXIT_BAD_INPUT = 0, 1, 2


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m auditors", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acr-pull-auditor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="evaluate every cluster x registry pair and write findings")
    source = scan.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", metavar="PATH", help="JSON / JSON Lines file or directory of Resource Graph rows")
    source.add_argument("--demo", action="store_true", help="scan the embedded demo estate")
    scan.add_argument("--pairs", metavar="FILE", help="YAML or JSON file declaring cluster -> registry pairs")
    scan.add_argument("--out", metavar="DIR", default="out", help="output directory (default: ./out)")
    scan.add_argument("--fail-on", metavar="SEVERITY", type=_severity,
                      help="exit 1 when a Fail at or above this severity exists (Low, Medium, High, Critical)")
    scan.add_argument("--run-id", help="run id to stamp on findings (default: a new UUID)")
    scan.add_argument("--quiet", action="store_true", help="no progress output on stderr")

    rules = commands.add_parser("rules", help="list the rule catalog")
    rules.add_argument("--json", action="store_true", help="print the catalog as JSON")
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


def _scan(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[scan] {message}", file=sys.stderr, flush=True)

    snapshot = demo_path() if args.demo else args.snapshot
    pairs = args.pairs or (demo_path() / "pairs.yaml" if args.demo else None)
    try:
        result = run_scan(snapshot, args.out, pairs_file=pairs, run_id=args.run_id, progress=progress)
    except (SnapshotError, PairsFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = result.summary
    print(render(summary, catalog()))
    print(f"\n{summary.findings:,} findings for {len(result.inventory.clusters):,} clusters, "
          f"{len(result.inventory.registries):,} registries and {result.pairs:,} pairs "
          f"({result.unpaired_clusters:,} clusters with no known registry) in {result.seconds:.1f}s; "
          f"run {result.run_id}")
    print(f"wrote {', '.join(str(p) for p in result.out_files)}")
    if args.fail_on and summary.worst_fail and summary.worst_fail.rank >= args.fail_on.rank:
        failing = summary.total(Status.FAIL)
        print(f"--fail-on {args.fail_on.value}: {failing} Fail finding(s), worst severity {summary.worst_fail.value}",
              file=sys.stderr)
        return EXIT_FAIL_ON
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "rules":
        return _rules(args.json)
    return _scan(args)
