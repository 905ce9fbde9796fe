"""Benchmark live collection of every source through the emulators, as the real CLI runs it, then scan the capture.

    python bench/bench_sources.py [--estate DIR] [--clusters 20000] [--registries 5000]
                                  [--role-assignments 1000000] [--subscriptions 2000] [--seed 42]
                                  [--quota 15/5] [--page-size 1000] [--concurrency 4] [--direct] [--work DIR] [--keep]

Generates the estate with bench/synth_estate.py (into --work) unless --estate points at one, then starts, each in
its own process, the emulators the CLI talks to:

    python -m auditors emulate arg   --snapshot ESTATE --quota Q   Resource Graph + Resource Manager deny assignments
    python -m auditors emulate graph --snapshot ESTATE             Microsoft Graph (groups, service principals)
    python -m auditors emulate logs  --snapshot ESTATE             Log Analytics query API (Container Insights)

concatenates their CA certificates into one bundle and runs

    python -m auditors snapshot --out CAPTURE

with AZURE_ARM_ENDPOINT, AUDIT_GRAPH_ENDPOINT, AUDIT_LOGS_QUERY_ENDPOINT, AZURE_ACCESS_TOKEN, GRAPH_ACCESS_TOKEN,
LOGS_QUERY_ACCESS_TOKEN and REQUESTS_CA_BUNDLE set, then `python -m auditors scan --snapshot CAPTURE`.

Prints per source the requests, pages or batches, rows, 429s and seconds (from the capture's manifest.json
coverage, checked against each emulator's /stats), Resource Graph requests against their lower bound
ceil(rows / page size) per query, Container Insights queries against one per workspace and query file, and the
scan of the capture: AKS-ACR-001 verdicts and their Unknown share (groups resolved through the Graph emulator),
with its top reasons.

Container Insights is queried for the lookback (P1D) before *now*, while the synthetic estate's rows are dated up
to 22 hours before its capturedAt (2026-11-29T06:00:00Z): only the rows inside the window are collected (checked
against the estate). `--direct` also scans the estate as it stood at the capture (a hard-linked copy with only
those rows and the capture's time) and checks that it gives the captured AKS-ACR-001 verdicts.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from benchkit import ROOT, EmulatorProcess, Targets, header, make_estate, scaled, unknown_reasons

TARGET_UNKNOWN_SHARE = 0.01


def manifest_time(estate: Path) -> str:
    return orjson.loads((estate / "manifest.json").read_bytes()).get("capturedAt", "?")


def run_cli(args: list[str], env: dict[str, str], log: Path) -> dict:
    """`python -m auditors ARGS` as its own process: wall seconds, exit code and its own peak RSS (wait4)."""
    with log.open("w") as output:
        began = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "auditors", *args], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "exit": process.returncode, "peak_mib": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def groups_with_members(capture: Path) -> int:
    count = 0
    with (capture / "microsoft_graph.jsonl").open("rb") as handle:
        for line in handle:
            row = orjson.loads(line)
            count += row.get("type") == "microsoft.graph/groups" and bool(row.get("transitiveMembers")
                                                                         or row.get("members"))
    return count


def pull_findings(findings: Path) -> dict[str, dict]:
    """AKS-ACR-001 findings (not exempted) by FindingId."""
    rule_key, found = b'"RuleId":"AKS-ACR-001"', {}
    with findings.open("rb") as handle:
        for line in handle:
            if rule_key in line:
                finding = orjson.loads(line)
                if finding["RuleId"] == "AKS-ACR-001" and not finding.get("Exempted"):
                    found[finding["FindingId"]] = finding
    return found


def pull_verdicts(findings: dict[str, dict]) -> Counter:
    return Counter(f["Status"] for f in findings.values())


def differences(expected: dict[str, dict], got: dict[str, dict]) -> Counter:
    """How verdicts changed from `expected` to `got`, and whether the expected one rested on a group's grant."""
    changed: Counter = Counter()
    for key, finding in expected.items():
        other = got.get(key)
        status = other["Status"] if other else "missing"
        if status != finding["Status"]:
            evidence = finding.get("Evidence") or {}
            via_group = any(g.get("group") for key in ("grants", "wildcardGrants") for g in evidence.get(key, []))
            changed[f"{finding['Status']} -> {status}" + (" (granted through a group)" if via_group else "")] += 1
    changed.update({"only in the capture": len(set(got) - set(expected))} if set(got) - set(expected) else {})
    return changed


def in_window(estate: Path, insights: dict) -> Counter:
    """The estate's Container Insights rows inside the capture's lookback window, by type."""
    start, end = insights.get("windowStart", "")[:19], insights.get("capturedAt", "")[:19]
    counts: Counter = Counter()
    with (estate / "container_insights.jsonl").open("rb") as handle:
        for line in handle:
            row = orjson.loads(line)
            if start <= row.get("TimeGenerated", "")[:19] <= end:
                counts[row["type"]] += 1
    return counts


def windowed_estate(estate: Path, target: Path, insights: dict, captured_at: str) -> Path:
    """A copy of the estate (hard links) whose Container Insights rows are those inside the capture's window and
    whose manifest says it was captured when the capture was."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    start, end = insights.get("windowStart", "")[:19], insights.get("capturedAt", "")[:19]
    for path in estate.iterdir():
        if path.name == "container_insights.jsonl":
            with path.open("rb") as source, (target / path.name).open("wb") as kept:
                kept.writelines(line for line in source
                                if start <= orjson.loads(line).get("TimeGenerated", "")[:19] <= end)
        elif path.name == "manifest.json":
            manifest = orjson.loads(path.read_bytes())
            manifest["capturedAt"] = captured_at
            manifest["coverage"]["sources"]["containerInsights"]["capturedAt"] = captured_at
            (target / path.name).write_bytes(orjson.dumps(manifest))
        else:
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copyfile(path, target / path.name)
    return target


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without the auditor's own settings, plus `values`."""
    prefixes = ("AUDIT_", "AZURE_", "LOGS_", "GRAPH_", "KEYVAULT_", "REQUESTS_CA_BUNDLE", "SSL_CERT_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)}, **values}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estate", type=Path, help="existing estate directory (skips generation)")
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--registries", type=int, default=5_000)
    parser.add_argument("--role-assignments", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quota", default="15/5", help="Resource Graph quota of the emulator (default 15/5, "
                                                        "Resource Graph's own)")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--direct", action="store_true", help="also scan the estate itself, for comparison")
    parser.add_argument("--work", type=Path, help="folder for the estate, the capture and the outputs (default: a "
                                                  "temporary one, removed unless --keep)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="acr-bench-sources-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> int:
    estate = args.estate or make_estate(work, scaled(args, 1), args.seed)
    print(f"estate {estate}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    began = time.perf_counter()
    emulators = {
        "arg": EmulatorProcess("arg", "--snapshot", str(estate), "--quota", args.quota, "--page-size",
                               str(args.page_size), ca_out=work / "arg-ca.pem"),
        "graph": EmulatorProcess("graph", "--snapshot", str(estate), ca_out=work / "graph-ca.pem"),
        "logs": EmulatorProcess("logs", "--snapshot", str(estate), ca_out=work / "logs-ca.pem"),
    }
    try:
        for emulator in emulators.values():
            emulator.ready()
        print(f"emulators ready after {time.perf_counter() - began:.1f}s (the three started together, each loading "
              "the estate)", flush=True)
        bundle = work / "emulators-ca.pem"
        bundle.write_bytes(b"".join(e.ca.read_bytes() for e in emulators.values()))
        env = clean_env(AZURE_ARM_ENDPOINT=emulators["arg"].endpoint,
                        AUDIT_GRAPH_ENDPOINT=emulators["graph"].endpoint,
                        AUDIT_LOGS_QUERY_ENDPOINT=emulators["logs"].endpoint,
                        AZURE_ACCESS_TOKEN="bench-arm", GRAPH_ACCESS_TOKEN="bench-graph",
                        LOGS_QUERY_ACCESS_TOKEN="bench-logs", REQUESTS_CA_BUNDLE=str(bundle))
        capture = work / "capture"
        shutil.rmtree(capture, ignore_errors=True)
        collected = run_cli(["snapshot", "--out", str(capture), "--page-size", str(args.page_size),
                             "--concurrency", str(args.concurrency)], env, work / "snapshot.log")
        served = {name: e.stats() for name, e in emulators.items()}
    finally:
        exits = {name: e.stop() for name, e in emulators.items()}
    print(f"snapshot: exit {collected['exit']}, {collected['seconds']:.1f}s wall, {collected['cpu_seconds']:.1f}s CPU, "
          f"peak {collected['peak_mib']:,.0f} MiB (log {work / 'snapshot.log'})")
    if collected["exit"] not in (0,):
        print((work / "snapshot.log").read_text()[-3000:])
    manifest = orjson.loads((capture / "manifest.json").read_bytes())
    coverage = manifest["coverage"]
    sources = coverage.get("sources", {})
    targets = Targets()
    report_sources(args, coverage, sources, served, exits, targets)
    insights = sources.get("containerInsights", {})
    expected = in_window(estate, insights)
    captured = Counter({k: v for k, v in (insights.get("rows") or {}).items() if v})
    print(f"  Container Insights window {insights.get('windowStart')} .. {insights.get('capturedAt')} (the synthetic "
          f"estate's rows are dated up to 22 h before {manifest_time(estate)}; those outside are not collected)")
    targets.line("Container Insights rows = estate rows in window", f"{sum(captured.values()):,} captured, "
                 f"{sum(expected.values()):,} in the estate", "equal", captured == expected)

    header("scan of the capture")
    scanned = run_cli(["scan", "--snapshot", str(capture), "--out", str(work / "out-capture"), "--quiet"],
                      clean_env(), work / "scan-capture.log")
    captured_findings = pull_findings(work / "out-capture" / "findings.jsonl")
    verdicts = pull_verdicts(captured_findings)
    decided = sum(verdicts.values())
    share = verdicts["Unknown"] / decided if decided else 0.0
    print(f"  scan --snapshot CAPTURE: exit {scanned['exit']}, {scanned['seconds']:.1f}s, peak "
          f"{scanned['peak_mib']:,.0f} MiB")
    print(f"  AKS-ACR-001: Pass {verdicts['Pass']:,}, Fail {verdicts['Fail']:,}, Unknown {verdicts['Unknown']:,}")
    groups = sources.get("microsoftGraph", {}).get("rows", {}).get("groups", 0)
    targets.line("AKS-ACR-001 Unknown share (captured)", f"{verdicts['Unknown']:,} of {decided:,} = {share:.2%}",
                 f"<= {TARGET_UNKNOWN_SHARE:.0%}", share <= TARGET_UNKNOWN_SHARE)
    reasons = unknown_reasons(work / "out-capture" / "findings.jsonl")
    print(f"  groups resolved through the Graph emulator: {groups:,}, {groups_with_members(capture):,} of them with "
          f"service-principal members; Unknowns naming a group: "
          f"{sum(n for r, n in reasons.items() if 'group' in r.lower()):,}")
    for reason, count in reasons.most_common(8):
        print(f"    {count:>7,}  {reason}")
    if args.direct:
        # The estate as it stood at the capture: its Container Insights rows inside the capture's lookback window,
        # and the capture's time. Scanned directly, it must give the captured verdicts.
        windowed = windowed_estate(estate, work / "estate-windowed", sources.get("containerInsights", {}),
                                   manifest.get("capturedAt", ""))
        direct = run_cli(["scan", "--snapshot", str(windowed), "--out", str(work / "out-direct"), "--quiet"],
                         clean_env(), work / "scan-direct.log")
        direct_findings = pull_findings(work / "out-direct" / "findings.jsonl")
        same = pull_verdicts(direct_findings)
        print(f"  scan --snapshot ESTATE as at the capture (no collection): {direct['seconds']:.1f}s; AKS-ACR-001 "
              f"Pass {same['Pass']:,}, Fail {same['Fail']:,}, Unknown {same['Unknown']:,}")
        changed = differences(direct_findings, captured_findings)
        targets.line("captured verdicts = the estate's verdicts", f"{sum(changed.values()):,} AKS-ACR-001 differ",
                     "0", not changed)
        for change, count in changed.most_common():
            print(f"    {count:>7,}  {change}")
    targets.close()
    return 0 if collected["exit"] == 0 else 1


def report_sources(args, coverage: dict, sources: dict, served: dict, exits: dict, targets: Targets) -> None:
    header("per source (client's coverage in manifest.json | emulator's own counters)")
    arg, deny, graph, insights = (served["arg"], served["arg"].get("denyAssignments", {}), served["graph"],
                                  served["logs"])
    d, g, c = (sources.get(name, {}) for name in ("denyAssignments", "microsoftGraph", "containerInsights"))
    print(f"  {'source':<20} {'requests':>9} {'pages/batches':>14} {'rows':>11} {'429s':>6} {'seconds':>8}   emulator")
    print(f"  {'Resource Graph':<20} {coverage['requests']:>9,} {coverage['pages']:>14,} {coverage['rows']:>11,} "
          f"{coverage['throttled429']:>6,} {coverage['seconds']:>8.1f}   {arg['requests']:,} requests, "
          f"{arg['pages']:,} pages, {arg['throttled429']:,} 429s")
    print(f"  {'deny assignments':<20} {d.get('requests', 0):>9,} {d.get('pages', 0):>14,} {d.get('rows', 0):>11,} "
          f"{d.get('throttled429', 0):>6,} {d.get('seconds', 0):>8.1f}   {deny.get('requests', 0):,} requests, "
          f"{deny.get('pages', 0):,} pages over {d.get('scopes', 0):,} subscriptions")
    graph_rows = sum((g.get("rows") or {}).values())
    print(f"  {'Microsoft Graph':<20} {g.get('requests', 0):>9,} {g.get('batches', 0):>14,} {graph_rows:>11,} "
          f"{g.get('throttled429', 0):>6,} {g.get('seconds', 0):>8.1f}   {graph['requests']:,} requests, "
          f"{graph['batches']:,} $batch, {graph['items']:,} items, {graph['notFound404']:,} 404s")
    insights_rows = sum((c.get("rows") or {}).values())
    print(f"  {'Container Insights':<20} {c.get('requests', 0):>9,} {c.get('queries', 0):>14,} {insights_rows:>11,} "
          f"{c.get('throttled429', 0):>6,} {c.get('seconds', 0):>8.1f}   {insights['requests']:,} requests, "
          f"{insights['queries']:,} queries over {len(insights.get('perWorkspace', {})):,} workspaces")
    print(f"  (Microsoft Graph rows: {g.get('rows')}; Container Insights: {c.get('workspaces', 0)} workspaces, "
          f"{c.get('clusters', 0):,} clusters, rows {c.get('rows')})")

    print(f"\n  Resource Graph per query (page size {args.page_size}, quota {args.quota}):")
    print(f"    {'query':<20} {'rows':>10} {'requests':>9} {'lower bound':>12}")
    bound_total = 0
    for name, stats in coverage.get("queries", {}).items():
        bound = max(1, math.ceil(stats["rows"] / args.page_size))
        bound_total += bound
        print(f"    {name:<20} {stats['rows']:>10,} {stats['requests']:>9,} {bound:>12,}")
    gaps = coverage.get("gaps", []) + d.get("gaps", []) + g.get("gaps", []) + c.get("gaps", [])
    targets.line("collection complete (no gaps)", f"{len(gaps)} gaps", "0", not gaps)
    targets.line("Resource Graph requests at the lower bound", f"{coverage['requests']:,} for a bound of "
                 f"{bound_total:,}", "= bound", coverage["requests"] <= bound_total)
    from auditors.sources.container_insights import insights_queries

    files = len(insights_queries())
    expected = c.get("workspaces", 0) * files
    targets.line("Container Insights queries per workspace", f"{c.get('queries', 0)} queries, {c.get('requests', 0)} "
                 f"requests for {c.get('workspaces', 0)} workspaces x {files} query files",
                 f"= {expected}", c.get("queries", 0) == expected and c.get("requests", 0) == expected)
    agree = (coverage["requests"] == arg["requests"] and d.get("requests", 0) == deny.get("requests", 0)
             and g.get("requests", 0) == graph["requests"] and c.get("requests", 0) == insights["requests"])
    targets.line("client and emulator request counts agree", str(agree), "True", agree)
    for name, final in exits.items():
        if final:
            print(f"  {name} emulator on exit: " + orjson.dumps({k: v for k, v in final.items() if not isinstance(
                v, dict) or len(v) < 12}).decode()[:400])


if __name__ == "__main__":
    sys.exit(main())
