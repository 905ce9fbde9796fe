"""acr-pull-auditor: can every AKS cluster pull from the registries it uses, and if not, why.

Commands: scan (demo, snapshot or live), run (what the Functions timer runs), snapshot (capture live data),
evidence (list, export, verify archived runs), rules (the catalog), emulate (Resource Graph or Logs Ingestion
emulators on 127.0.0.1)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from auditors import __version__
from auditors.report import render
from auditors.rules import RESERVED, Severity, Status, catalog
from auditors.scan import capture_snapshot

EXIT_OK, EXIT_FAIL_ON, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_FAILED = 0, 1, 2, 3, 4


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


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
    scan.add_argument("--sink", choices=("local", "log-analytics"), default=None,
                      help="local files only (default), or also Log Analytics (settings from the environment)")
    scan.add_argument("--evidence", action="store_true", default=None,
                      help="write the evidence archive (on by default with --sink log-analytics)")
    _add_collection_options(scan)

    run = commands.add_parser("run", help="what the Functions timer runs: everything from environment settings")
    run.add_argument("--quiet", action="store_true", help="no progress output on stderr")

    evidence = commands.add_parser("evidence", help="list, export and verify archived runs")
    actions = evidence.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="archived runs, oldest first")
    export = actions.add_parser("export", help="zip of runs for auditors: manifest, findings CSV, summaries")
    verify = actions.add_parser("verify", help="recompute every hash; exit 1 on any missing or modified object")
    for action in (listing, export, verify):
        action.add_argument("--from", dest="date_from", type=_date, metavar="YYYY-MM-DD")
        action.add_argument("--to", dest="date_to", type=_date, metavar="YYYY-MM-DD")
    for action in (export, verify):
        action.add_argument("--run", metavar="RUN_ID", help="one run instead of a date range")
    export.add_argument("--out", metavar="FILE.zip", required=True)

    snapshot = commands.add_parser("snapshot", help="collect from Resource Graph into a replayable snapshot")
    snapshot.add_argument("--out", metavar="DIR", required=True, help="directory for the JSONL files and manifest")
    snapshot.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    _add_collection_options(snapshot)

    rules = commands.add_parser("rules", help="list the rule catalog")
    rules.add_argument("--json", action="store_true", help="print the catalog as JSON")

    commands.add_parser("emulate", help="local HTTPS emulators of Azure services (python -m auditors emulate -h)",
                        add_help=False, prefix_chars="\0")
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


def _collector(args: argparse.Namespace, settings, progress):
    from auditors.run import collector_from_settings

    return collector_from_settings(settings, progress, page_size=args.page_size, concurrency=args.concurrency)


def _live_errors():
    from azure.core.exceptions import ClientAuthenticationError

    from auditors.sources.resource_graph import ScopeError

    return ClientAuthenticationError, ScopeError


def _report(outcome, args_fail_on=None) -> int:
    """Print the summary of a finished run and choose the exit code."""
    from auditors.run import FAILED, INPUT_ERRORS

    record, result = outcome.record, outcome.scan
    if result is None:
        print(f"error: {outcome.error}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(outcome.error, INPUT_ERRORS) else EXIT_FAILED
    summary = result.summary
    print(render(summary, catalog()))
    print(f"\n{summary.findings:,} findings for {len(result.inventory.clusters):,} clusters, "
          f"{len(result.inventory.registries):,} registries and {result.pairs:,} pairs "
          f"({result.unpaired_clusters:,} clusters with no known registry) in {result.seconds:.1f}s; "
          f"run {result.run_id}")
    if result.coverage is not None:
        print(result.coverage.summary_line())
    print(f"wrote {', '.join(str(p) for p in result.out_files)}")
    for name, stats in outcome.uploads.items():
        print(f"log analytics ({name}): {stats.rows:,} rows in {stats.requests:,} requests, "
              f"{stats.spooled_rows:,} spooled for the next run")
    if record.get("EvidenceLocation"):
        print(f"evidence: {record['EvidenceLocation']}")
    for error in record["Errors"]:
        print(f"problem: {error}", file=sys.stderr)
    if args_fail_on and summary.worst_fail and summary.worst_fail.rank >= args_fail_on.rank:
        failing = summary.total(Status.FAIL)
        print(f"--fail-on {args_fail_on.value}: {failing} Fail finding(s), worst severity {summary.worst_fail.value}",
              file=sys.stderr)
        return EXIT_FAIL_ON
    if record["RunStatus"] == FAILED:
        return EXIT_FAILED
    if result.inventory.gaps or record["RunStatus"] != "Succeeded":
        print(f"incomplete: run {record['RunStatus']}; {len(result.inventory.gaps)} collection gap(s), "
              f"{record['SpoolPending']} spool entries waiting", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _settings(**overrides):
    from auditors.settings import Settings

    return Settings.from_env(**overrides)


def _scan(args: argparse.Namespace) -> int:
    from auditors.run import run_audit
    from auditors.settings import SettingsError

    progress = _progress(args.quiet, "scan")
    live = not (args.demo or args.snapshot)
    try:
        settings = _settings(sink=args.sink, evidence=args.evidence, out_dir=args.out, pairs_file=args.pairs,
                             arm_endpoint=args.arm_endpoint, scope=tuple(args.scope) if args.scope else None)
        collector = _collector(args, settings, progress) if live else None
    except (SettingsError, *_live_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    outcome = run_audit(settings, snapshot=args.snapshot, demo=args.demo, collector=collector, run_id=args.run_id,
                        progress=progress)
    return _report(outcome, args.fail_on)


def _run(args: argparse.Namespace) -> int:
    from auditors.run import execute
    from auditors.settings import SettingsError

    try:
        outcome = execute(_progress(args.quiet, "run"))
    except (SettingsError, *_live_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return _report(outcome)


def _evidence(args: argparse.Namespace) -> int:
    from auditors.settings import SettingsError
    from auditors.sinks.evidence import EvidenceArchive

    try:
        settings = _settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    archive = EvidenceArchive(settings.store(settings.evidence_container))
    if getattr(args, "run", None):
        found = archive.find(args.run)
        if found is None:
            print(f"error: run {args.run} is not in {archive.store.location()}", file=sys.stderr)
            return EXIT_BAD_INPUT
        runs = [found]
    else:
        runs = archive.runs(args.date_from, args.date_to)
    if args.action == "list":
        for run in runs:
            manifest = archive.manifest(run)
            print(f"{run.day}  {run.run_id}  {manifest.get('runStatus', ''):<10}  {manifest.get('scope', '')}  "
                  f"{archive.store.location(run.prefix)}")
        print(f"{len(runs)} run(s) in {archive.store.location()}", file=sys.stderr)
        return EXIT_OK
    if not runs:
        print("error: no archived runs match", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.action == "export":
        path = archive.export(runs, Path(args.out))
        print(f"wrote {path} ({len(runs)} run(s))")
        return EXIT_OK
    problems = [problem for run in runs for problem in archive.verify(run)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"verified {len(runs)} run(s): {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'intact'}")
    return EXIT_FAIL_ON if problems else EXIT_OK


def _snapshot(args: argparse.Namespace) -> int:
    from auditors.settings import SettingsError

    progress = _progress(args.quiet, "snapshot")
    try:
        settings = _settings(arm_endpoint=args.arm_endpoint, scope=tuple(args.scope) if args.scope else None)
        manifest = capture_snapshot(_collector(args, settings, progress), args.out, progress)
    except (SettingsError, *_live_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = sum(f["rows"] for f in manifest["files"])
    print(f"wrote {len(manifest['files'])} files ({rows:,} rows) and manifest.json to {args.out}")
    return EXIT_INCOMPLETE if manifest["coverage"]["gaps"] else EXIT_OK


def _emulate(argv: list[str]) -> int:
    try:
        from emulators.cli import main as emulate
    except ImportError as exc:
        print(f"error: the emulators are not installed ({exc.name} is missing): "
              "pip install 'acr-pull-auditor[emulators]'", file=sys.stderr)
        return EXIT_BAD_INPUT
    return emulate(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulate"]:
        return _emulate(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "rules":
        return _rules(args.json)
    if args.command == "snapshot":
        return _snapshot(args)
    if args.command == "run":
        return _run(args)
    if args.command == "evidence":
        return _evidence(args)
    return _scan(args)
