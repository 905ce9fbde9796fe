"""acr-pull-auditor: can every AKS cluster pull from the registries it uses, and if not, why.

Commands: scan (demo, snapshot or live), run (what the Functions timer runs), snapshot (capture live data),
evidence (list, export, verify archived runs), rules (the catalog), emulate (local emulators of the Azure
services, on 127.0.0.1)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

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


REPORT_FORMATS = ("html", "md", "json")
RUN_RECORD = "run.json"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other error (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m auditors", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acr-pull-auditor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="evaluate every cluster x registry pair and write findings",
                               description="Without --snapshot or --demo, collects live from Resource Graph "
                                           "(credentials: AZURE_ACCESS_TOKEN, else DefaultAzureCredential).")
    source = scan.add_mutually_exclusive_group()
    source.add_argument("--snapshot", metavar="PATH", help="JSON / JSON Lines file or directory of Resource Graph rows")
    source.add_argument("--demo", action="store_true", help="scan the embedded demo estate")
    scan.add_argument("--pairs", metavar="FILE", help="YAML or JSON file declaring cluster -> registry pairs")
    scan.add_argument("--exemptions", metavar="FILE",
                      help="YAML or JSON file of approved, expiring exemptions (AUDIT_EXEMPTIONS_FILE)")
    scan.add_argument("--out", metavar="DIR", help="output directory (AUDIT_OUT_DIR; default ./out)")
    scan.add_argument("--fail-on", metavar="SEVERITY", type=_severity,
                      help="exit 1 when a Fail at or above this severity exists (Low, Medium, High, Critical)")
    scan.add_argument("--run-id", type=_run_id, help="run id to stamp on findings (default: a new UUID)")
    scan.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    scan.add_argument("--sink", choices=("local", "log-analytics"), default=None,
                      help="local files only (default), or also Log Analytics (settings from the environment)")
    scan.add_argument("--evidence", action="store_true", default=None,
                      help="write the evidence archive (on by default with --sink log-analytics)")
    scan.add_argument("--workers", type=_bounded(0, 64), metavar="N",
                      help="processes reading large snapshot files and evaluating (AUDIT_WORKERS; default 0: one "
                           "per CPU, up to 8, on large estates; 1: only this one)")
    scan.add_argument("--report", action="append", choices=REPORT_FORMATS, metavar="FORMAT",
                      help="also write report.html, report.md or summary.json beside the findings; repeatable")
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

    explain = commands.add_parser(
        "explain", help="why a cluster can or cannot pull from a registry, step by step, with the fix",
        description="Evaluates one cluster (and the registry, even when nothing pairs them) from the demo, a "
                    "snapshot, live collection, or the findings file of an earlier run.")
    explain.add_argument("cluster", metavar="CLUSTER", help="cluster name, or resource id when names collide")
    explain.add_argument("registry", metavar="REGISTRY", nargs="?", help="registry name, login server or id")
    given = explain.add_mutually_exclusive_group()
    given.add_argument("--snapshot", metavar="PATH", help="a snapshot folder or file, as for scan")
    given.add_argument("--demo", action="store_true", help="the embedded demo estate")
    given.add_argument("--findings", metavar="FILE", help="findings.jsonl (or the out folder) of an earlier run")
    explain.add_argument("--pairs", metavar="FILE", help="YAML or JSON file declaring cluster -> registry pairs")
    explain.add_argument("--exemptions", metavar="FILE", help="exemptions file, as for scan")
    explain.add_argument("--json", action="store_true", help="the explanation as JSON")
    explain.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    _add_collection_options(explain)

    report = commands.add_parser("report", help="write the reports of an earlier run from its findings",
                                 description="report.html (one self-contained page), report.md and summary.json.")
    report.add_argument("--findings", metavar="FILE", required=True,
                        help="findings.jsonl (or .jsonl.gz) of a run, or the out folder that holds it")
    report.add_argument("--run", metavar="FILE", help="the run's record (default: run.json beside the findings)")
    report.add_argument("--out", metavar="DIR", help="where to write (default: beside the findings)")
    report.add_argument("--format", action="append", choices=REPORT_FORMATS, metavar="FORMAT",
                        help="html, md or json; repeatable (default: all three)")

    rules = commands.add_parser("rules", help="list the rule catalog, or show one rule with its documentation")
    rules.add_argument("rule", metavar="RULE-ID", nargs="?", help="one rule, e.g. AKS-ACR-001 (or 001)")
    rules.add_argument("--json", action="store_true", help="print the catalog (or the rule) as JSON")

    commands.add_parser("emulate", help="local HTTPS emulators of Azure services (python -m auditors emulate -h)",
                        add_help=False, prefix_chars="\0")
    return parser


def _rules(args: argparse.Namespace) -> int:
    from auditors.rules import catalog, catalog_document

    if args.rule:
        return _one_rule(args.rule, args.json)
    if args.json:
        print(json.dumps(catalog_document(), indent=2))
        return EXIT_OK
    rows = [(m.id, m.severity.value, m.scope.value, m.category, str(m.seed_cause or "-"), m.title,
             ", ".join(m.controls) or "-") for m in (rule.meta for rule in catalog())]
    header = ("Rule", "Severity", "Scope", "Category", "Cause", "Title", "Controls")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(6)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[6])
    print("\nOne rule with its documentation: python -m auditors rules AKS-ACR-001")
    return EXIT_OK


DOCS_FOLDER = Path(__file__).resolve().parent.parent / "docs" / "rules"


def _one_rule(wanted: str, as_json: bool) -> int:
    from auditors.rules import RULES, catalog, catalog_document

    catalog()  # discovers the rule modules
    rule_id = wanted.upper() if wanted.upper().startswith("AKS-ACR-") else f"AKS-ACR-{wanted.zfill(3)}"
    if rule_id not in RULES:
        print(f"error: no rule {wanted!r}; the rules are {', '.join(sorted(RULES))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    document = next(d for d in catalog_document() if d["id"] == rule_id)
    page = DOCS_FOLDER / f"{rule_id}.md"
    text = page.read_text(encoding="utf-8") if page.is_file() else ""
    if as_json:
        print(json.dumps({**document, "documentation": text or None}, indent=2))
        return EXIT_OK
    if text:  # the page starts with front matter that repeats the metadata: show the page from its heading
        print(text[text.find("\n# ") + 1:] if "\n# " in text else text)
        return EXIT_OK
    meta = RULES[rule_id].meta
    print(f"# {meta.id}: {meta.title}\n\n{meta.synopsis}\n\nSeverity {meta.severity.value}, scope {meta.scope.value}, "
          f"category {meta.category}; verdicts {', '.join(sorted(s.value for s in meta.statuses))}.\n\n"
          f"Fix:\n{meta.remediation}\n\nDocumentation: docs/rules/{meta.id}.md in the source repository")
    return EXIT_OK


def _count(number: int, one: str, many: str = "") -> str:
    return f"{number:,} {one if number == 1 else many or one + 's'}"


def _progress(quiet: bool, tag: str):
    def progress(message: str) -> None:
        if not quiet:
            print(f"[{tag}] {message}", file=sys.stderr, flush=True)

    return progress


def _report(outcome, fail_on=None) -> int:
    """Print the summary of a finished run and choose the exit code."""
    from auditors.pipeline import FAILED, INPUT_ERRORS
    from auditors.report import render
    from auditors.rules import catalog

    record = outcome.record
    if outcome.error is not None:
        print(f"error: {outcome.error}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(outcome.error, INPUT_ERRORS) else EXIT_FAILED
    summary, inventory = outcome.summary, outcome.loaded.inventory
    print(render(summary, catalog()))
    print(f"\n{_count(summary.findings, 'finding')} for {_count(len(inventory.clusters), 'cluster')}, "
          f"{_count(len(inventory.registries), 'registry', 'registries')} and {_count(outcome.pairs, 'pair')} "
          f"({_count(outcome.unpaired_clusters, 'cluster')} with no known registry) in {outcome.seconds:.1f}s; "
          f"run {outcome.run.run_id}")
    if outcome.loaded.coverage is not None:
        print(outcome.loaded.coverage.summary_line())
    changes = outcome.changes
    if changes is not None and outcome.previous:
        carried = (f", {changes.carried_forward:,} carried forward as Unknown (not collected this run)"
                   if changes.carried_forward else "")
        print(f"since the previous run ({outcome.previous}): {changes.new:,} new problem(s), {changes.fixed:,} "
              f"fixed{carried}")
    elif changes is not None:
        print("since the previous run: no previous findings to compare with (every finding is New)")
    if outcome.out_files:
        print(f"wrote {', '.join(str(p) for p in outcome.out_files)}")
    if outcome.replayed is not None and outcome.replayed.rows:
        print(f"log analytics (spool replay): {outcome.replayed.rows:,} rows, "
              f"{outcome.replayed.spooled_rows:,} spooled again")
    remote = outcome.delivered.get("log-analytics")
    if remote is not None:
        upload = remote.detail.get("upload", {})
        lost = upload.get("lost_rows", 0)
        print(f"log analytics (findings): {upload.get('rows', 0):,} rows in {upload.get('requests', 0):,} requests, "
              f"{upload.get('spooled_rows', 0):,} spooled for the next run"
              + (f", {lost:,} neither delivered nor spooled (they are in the local output)" if lost else ""))
    if outcome.exemptions is not None:
        states = record.Exemptions
        soon = ", ".join(f"{e['id']} ({e['expiresOn']})" for e in states.get("expiring", []))
        print(f"exemptions ({outcome.exemptions.path}): {len(states.get('active', []))} in force, "
              f"{sum(summary.exempted.values())} finding(s) exempted; expired: "
              f"{', '.join(e['id'] for e in states.get('expired', [])) or 'none'}; expiring within 14 days: "
              f"{soon or 'none'}; stale (matched nothing): {', '.join(states.get('stale', [])) or 'none'}")
    if record.EvidenceLocation:
        print(f"evidence: {record.EvidenceLocation}")
    for problem in _problems(record.Errors):
        print(f"problem: {problem}", file=sys.stderr)
    gating = summary.fails_at_or_above(fail_on) if fail_on else 0
    if gating:
        exempted = sum(summary.exempted.values())
        print(f"--fail-on {fail_on.value}: {gating} Fail finding(s) at {fail_on.value} or above (worst "
              f"{summary.worst_fail.value}){f'; {exempted} exempted finding(s) not counted' if exempted else ''}",
              file=sys.stderr)
        return EXIT_FAIL_ON
    if record.RunStatus == FAILED:
        return EXIT_FAILED
    if inventory.gaps or record.RunStatus != "Succeeded":
        print(f"incomplete: run {record.RunStatus}; {len(inventory.gaps)} collection gap(s), "
              f"{record.SpoolPending} spool entries waiting", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _problems(errors: list[str]) -> list[str]:
    """The run's errors for a person: storage that is down is one line naming what it cost, not one per use;
    each problem on one line."""
    down: dict[tuple[str, str], list[str]] = {}
    shown = []
    for error in errors:
        match = _STORAGE_DOWN.search(error)
        if match and "neither delivered" in error:  # the rows are the news; the storage is said once, below
            error = error[:match.start()].rstrip(" (") + " (storage unavailable)"
            down.setdefault((match["account"], match["why"].strip()), [])
            match = None
        if match:
            down.setdefault((match["account"], match["why"].strip()), []).append(
                re.split(r"[:(]", error, maxsplit=1)[0].removesuffix(" failed").strip())
        else:
            shown.append(" ".join(error.split()))
    return [f"storage {account} is unavailable, {why}" + (f"; lost for this run: {', '.join(dict.fromkeys(what))}"
                                                          if what else "")
            for (account, why), what in down.items()] + shown


_STORAGE_DOWN = re.compile(r"StorageUnavailable: storage (?P<account>\S+?)/[a-z0-9-]+: (?P<why>[^);]*)")


def _settings(**overrides):
    from auditors.settings import Settings

    return Settings.from_env(**overrides)


def _input_errors():
    from auditors.explain import ExplainError
    from auditors.pipeline import INPUT_ERRORS
    from auditors.settings import SettingsError

    return (SettingsError, ExplainError, *INPUT_ERRORS)


def _scan(args: argparse.Namespace) -> int:
    from auditors.pipeline import RunRequest, run_audit
    from auditors.services import Services

    progress = _progress(args.quiet, "scan")
    settings = _settings(sink=args.sink, evidence=args.evidence, out_dir=args.out, pairs_file=args.pairs,
                         exemptions_file=args.exemptions, arm_endpoint=args.arm_endpoint,
                         scope=tuple(args.scope) if args.scope else None, workers=args.workers)
    services = Services(settings, progress)
    source = "demo" if args.demo else "snapshot" if args.snapshot else "live"
    request = RunRequest(source, args.snapshot, args.run_id,
                         collector_options={"page_size": args.page_size, "concurrency": args.concurrency},
                         report=tuple(args.report or ()))
    outcome = run_audit(settings, request, services=services, progress=progress)
    code = _report(outcome, args.fail_on)
    if outcome.reports:
        print(f"reports: {', '.join(str(p) for p in outcome.reports)}")
    return code


def _explain(args: argparse.Namespace) -> int:
    from auditors import explain

    records = explain.read_findings(args.findings) if args.findings else _evaluate_cluster(args)
    data = explain.explanation(records, args.cluster, args.registry)
    print(json.dumps(data, indent=2, default=str) if args.json else explain.render(data))
    return EXIT_OK


def _evaluate_cluster(args: argparse.Namespace) -> list[dict]:
    """Finding records of one cluster (and the registry asked about), evaluated from the demo, a snapshot or
    live collection."""
    import tempfile

    from auditors.explain import pick_cluster
    from auditors.pairing import resolve_registry
    from auditors.pipeline import RunOutcome, RunRequest, new_run, prepare
    from auditors.services import Services
    from auditors.settings import Settings

    progress = _progress(args.quiet, "explain")
    settings = Settings.from_env(pairs_file=args.pairs, exemptions_file=args.exemptions, arm_endpoint=args.arm_endpoint,
                                 scope=tuple(args.scope) if args.scope else None)
    source = "demo" if args.demo else "snapshot" if args.snapshot else "live"
    request = RunRequest(source, args.snapshot,
                         collector_options={"page_size": args.page_size, "concurrency": args.concurrency})
    run = new_run(request)
    outcome = RunOutcome(run, None)
    with tempfile.TemporaryDirectory(prefix="acr-explain-") as work:
        evaluator = prepare(settings, request, Services(settings, progress), run, Path(work), None, progress, outcome)
    inventory = evaluator.inventory
    cluster = inventory.clusters[pick_cluster(args.cluster, ((c.key, c.name) for c in inventory.clusters.values()))]
    registry = None
    if args.registry:
        keys, problem = resolve_registry(args.registry, inventory)
        if not keys:  # none, or an ambiguous name: the problem says which
            raise _explain_error(f"registry {args.registry!r}: {problem}")
        registry = inventory.registries[keys[0]]
    return [f.to_record() for f in evaluator.cluster_findings(cluster, registry)]


def _explain_error(message: str) -> Exception:
    from auditors.explain import ExplainError

    return ExplainError(message)


def _report_command(args: argparse.Namespace) -> int:
    from auditors.findings import findings_file
    from auditors.reports import write_reports

    findings = findings_file(args.findings)
    if not findings.is_file():
        print(f"error: {findings}: no such findings file", file=sys.stderr)
        return EXIT_BAD_INPUT
    run_file = Path(args.run) if args.run else findings.parent / RUN_RECORD
    run: dict = {}
    if args.run or run_file.is_file():
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"error: {run_file}: unreadable run record: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        written = write_reports(findings, run if isinstance(run, dict) else {}, args.out or findings.parent,
                                args.format or REPORT_FORMATS)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {', '.join(str(p) for p in written)}")
    return EXIT_OK


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
    from auditors.pipeline import beyond_resource_graph
    from auditors.services import Services

    progress = _progress(args.quiet, "snapshot")
    settings = _settings(arm_endpoint=args.arm_endpoint, scope=tuple(args.scope) if args.scope else None)
    services = Services(settings, progress)
    services.check_arm_credential()
    collector = services.resource_graph(page_size=args.page_size, concurrency=args.concurrency)
    manifest = capture_snapshot(collector, args.out, progress, beyond_resource_graph(services))
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


COMMANDS = {"rules": _rules, "snapshot": _snapshot, "run": _run, "evidence": _evidence,
            "scan": _scan, "explain": _explain, "report": _report_command}


def _terminated(signum: int, _frame) -> None:
    """SIGTERM (a CI job cancelled, a container stopped) ends the run as an error does: its workers are stopped,
    its temporary files removed, the previous output left as it was; exit 143."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulate"]:
        return _emulate(argv[1:])
    args = _parser().parse_args(argv)
    # The Azure SDKs log every failed credential and retry at WARNING; the CLI reports problems itself, once.
    logging.getLogger("azure").setLevel(logging.ERROR)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return COMMANDS[args.command](args)
    except _input_errors() as exc:  # unusable input, settings or credentials: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
