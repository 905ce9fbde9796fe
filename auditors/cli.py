"""acr-pull-auditor: can every AKS cluster pull from the registries it uses, and if not, why.

Commands: scan (demo, snapshot or live), run (what the Functions timer runs), snapshot (capture live data),
evidence (list, export, verify archived runs), rules (the catalog), emulate (local emulators of the Azure
services, on 127.0.0.1)."""

from __future__ import annotations

import argparse
import json
import sys

from auditors import __version__

EXIT_OK, EXIT_FAIL_ON, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_FAILED = 0, 1, 2, 3, 4


def _severity(text: str):
    from auditors.rules import Severity

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


def _run_id(text: str) -> str:
    from auditors.sinks.evidence import InvalidRunId, check_run_id

    try:
        return check_run_id(text)
    except InvalidRunId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bounded(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _add_collection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("live collection (Azure Resource Graph)")
    group.add_argument("--scope", action="append", metavar="SCOPE",
                       help="tenant (default), mg:NAME or sub:SUBSCRIPTION-ID; repeatable (AUDIT_SCOPE)")
    group.add_argument("--arm-endpoint", metavar="URL",
                       help="Resource Manager endpoint for sovereign clouds, e.g. https://management.usgovcloudapi.net "
                            "(AZURE_ARM_ENDPOINT; default the public cloud)")
    group.add_argument("--page-size", type=_bounded(1, 1000), default=1000,
                       help="rows per Resource Graph page (1-1000)")
    group.add_argument("--concurrency", type=_bounded(1, 16), default=4,
                       help="queries in flight at most, within the quota (1-16)")


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
    scan.add_argument("--out", metavar="DIR", help="output directory (AUDIT_OUT_DIR; default ./out)")
    scan.add_argument("--fail-on", metavar="SEVERITY", type=_severity,
                      help="exit 1 when a Fail at or above this severity exists (Low, Medium, High, Critical)")
    scan.add_argument("--run-id", type=_run_id, help="run id to stamp on findings (default: a new UUID)")
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
    from auditors.evidence_commands import add_arguments as add_evidence_arguments

    add_evidence_arguments(export, verify)

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
    from auditors.rules import RESERVED, catalog, catalog_document

    if as_json:
        print(json.dumps(catalog_document(), indent=2))
        return EXIT_OK
    print(f"{'Rule':<12} {'Severity':<9} {'Scope':<9} {'Category':<9} {'Cause':<5}  Title")
    for rule in catalog():
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


def _report(outcome, fail_on=None) -> int:
    """Print the summary of a finished run and choose the exit code."""
    from auditors.pipeline import FAILED, INPUT_ERRORS
    from auditors.report import render
    from auditors.rules import Status, catalog

    record = outcome.record
    if outcome.error is not None:
        print(f"error: {outcome.error}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(outcome.error, INPUT_ERRORS) else EXIT_FAILED
    summary, inventory = outcome.summary, outcome.loaded.inventory
    print(render(summary, catalog()))
    print(f"\n{summary.findings:,} findings for {len(inventory.clusters):,} clusters, "
          f"{len(inventory.registries):,} registries and {outcome.pairs:,} pairs "
          f"({outcome.unpaired_clusters:,} clusters with no known registry) in {outcome.seconds:.1f}s; "
          f"run {outcome.run.run_id}")
    if outcome.loaded.coverage is not None:
        print(outcome.loaded.coverage.summary_line())
    if outcome.out_files:
        print(f"wrote {', '.join(str(p) for p in outcome.out_files)}")
    if outcome.replayed is not None and outcome.replayed.rows:
        print(f"log analytics (spool replay): {outcome.replayed.rows:,} rows, "
              f"{outcome.replayed.spooled_rows:,} spooled again")
    remote = outcome.delivered.get("log-analytics")
    if remote is not None:
        upload = remote.detail.get("upload", {})
        print(f"log analytics (findings): {upload.get('rows', 0):,} rows in {upload.get('requests', 0):,} requests, "
              f"{upload.get('spooled_rows', 0):,} spooled for the next run")
    if record.EvidenceLocation:
        print(f"evidence: {record.EvidenceLocation}")
    for error in record.Errors:
        print(f"problem: {error}", file=sys.stderr)
    if fail_on and summary.worst_fail and summary.worst_fail.rank >= fail_on.rank:
        failing = summary.total(Status.FAIL)
        print(f"--fail-on {fail_on.value}: {failing} Fail finding(s), worst severity {summary.worst_fail.value}",
              file=sys.stderr)
        return EXIT_FAIL_ON
    if record.RunStatus == FAILED:
        return EXIT_FAILED
    if inventory.gaps or record.RunStatus != "Succeeded":
        print(f"incomplete: run {record.RunStatus}; {len(inventory.gaps)} collection gap(s), "
              f"{record.SpoolPending} spool entries waiting", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _settings(**overrides):
    from auditors.settings import Settings

    return Settings.from_env(**overrides)


def _input_errors():
    from auditors.pipeline import INPUT_ERRORS
    from auditors.settings import SettingsError

    return (SettingsError, *INPUT_ERRORS)


def _scan(args: argparse.Namespace) -> int:
    from auditors.pipeline import RunRequest, run_audit
    from auditors.services import Services

    progress = _progress(args.quiet, "scan")
    settings = _settings(sink=args.sink, evidence=args.evidence, out_dir=args.out, pairs_file=args.pairs,
                         arm_endpoint=args.arm_endpoint, scope=tuple(args.scope) if args.scope else None)
    services = Services(settings, progress)
    source = "demo" if args.demo else "snapshot" if args.snapshot else "live"
    collector = services.resource_graph(page_size=args.page_size, concurrency=args.concurrency) \
        if source == "live" else None
    outcome = run_audit(settings, RunRequest(source, args.snapshot, args.run_id, collector), services=services,
                        progress=progress)
    return _report(outcome, args.fail_on)


def _run(args: argparse.Namespace) -> int:
    from auditors.pipeline import execute

    return _report(execute(_progress(args.quiet, "run")))


def _evidence(args: argparse.Namespace) -> int:
    from auditors import evidence_commands
    from auditors.services import Services

    services = Services(_settings())
    return evidence_commands.run(args, services.evidence_archive, settings=services.settings)


def _snapshot(args: argparse.Namespace) -> int:
    from auditors.inputs import capture_snapshot
    from auditors.services import Services

    progress = _progress(args.quiet, "snapshot")
    settings = _settings(arm_endpoint=args.arm_endpoint, scope=tuple(args.scope) if args.scope else None)
    collector = Services(settings, progress).resource_graph(page_size=args.page_size, concurrency=args.concurrency)
    manifest = capture_snapshot(collector, args.out, progress)
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


COMMANDS = {"rules": lambda a: _rules(a.json), "snapshot": _snapshot, "run": _run, "evidence": _evidence,
            "scan": _scan}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulate"]:
        return _emulate(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _input_errors() as exc:  # unusable input, settings or credentials: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
