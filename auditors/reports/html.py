"""The report as one self-contained HTML5 file: inline CSS, no scripts, nothing fetched from anywhere.

Every value that comes from findings or the run record is tenant data (names and tags are chosen by whoever
can tag a resource), so it goes through `_e` before it reaches the page. Status is carried by words and
symbols; colour only repeats it.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from auditors.observed import ACCESS_CLASSES
from auditors.reports.data import (
    BLOCKING_RULES,
    EXEMPTED,
    EXPIRED,
    EXPIRING,
    EXPIRING_SOON_DAYS,
    FAIL,
    IN_FORCE,
    NO_OWNER,
    NOT_APPLICABLE,
    NOT_PAIRED,
    OBSERVED_RULE,
    PAIR_VERDICT_RULE,
    PASS,
    STAGES,
    STALE,
    UNDECIDED,
    UNKNOWN,
    ListedFinding,
    ObservedPulls,
    OwnerEntry,
    ReportData,
    ResourceRef,
)

_SYMBOL = {PASS: "✓", FAIL: "✗", UNKNOWN: "?", EXEMPTED: "⊘", NOT_APPLICABLE: "\u2013", NOT_PAIRED: "—"}
_WORD = {PASS: "Pass", FAIL: "Fail", UNKNOWN: "Unknown", EXEMPTED: "Exempted", NOT_APPLICABLE: "N/A",
         NOT_PAIRED: "not a pair"}
_CLASS = {PASS: "pass", FAIL: "fail", UNKNOWN: "unknown", EXEMPTED: "exempted", NOT_APPLICABLE: "na",
          NOT_PAIRED: "none"}

# The menu's wording differs from the headings' on purpose: the print test finds "Pull verdicts" only in the menu.
_SECTIONS = (("overview", "Tenant overview"), ("matrix", "Pull verdicts"), ("observed", "Observed pulls"),
             ("changes", "Changes"), ("owners", "Failures by owner"), ("exemptions", "Exemptions"),
             ("controls", "Controls"), ("rules", "Rules"), ("coverage", "Coverage"), ("run", "Run facts"))
_STATE_WORDS = {IN_FORCE: "in force", EXPIRING: f"expires within {EXPIRING_SOON_DAYS} days", EXPIRED: "expired",
                STALE: "stale: matched no finding", UNDECIDED: "undecided: the exemption check gave no verdict"}

# Colours: every text/background pair here is above 6.5:1 (WCAG AA asks 4.5:1; most pairs meet AAA's 7:1).
_CSS = """
:root { --ink: #1b1b1b; --muted: #4a4a4a; --line: #c8c8c8; --band: #f3f4f6; --link: #0b4fb3;
  --fail-ink: #8c0010; --fail-bg: #fde7e9; --pass-ink: #0b5a24; --pass-bg: #e3f3e7;
  --unknown-ink: #6a4300; --unknown-bg: #fff1cc; --exempt-ink: #36366b; --exempt-bg: #e9e9f5; }
* { box-sizing: border-box; }
html { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans", sans-serif;
  color: var(--ink); background: #fff; line-height: 1.45; }
body { margin: 0; }
a { color: var(--link); }
a:focus-visible, [tabindex]:focus-visible { outline: 3px solid #1a5fd0; outline-offset: 2px; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; }
.skip-link { position: absolute; left: 0.5rem; top: -4rem; background: #fff; color: var(--link); padding: 0.5rem 1rem;
  border: 2px solid var(--link); z-index: 10; }
.skip-link:focus { top: 0.5rem; }
header.page { background: #14264a; color: #fff; padding: 1.25rem 2rem 1rem; }
header.page h1 { margin: 0 0 0.25rem; font-size: 1.6rem; }
header.page p { margin: 0; color: #e6ebf5; }
nav.sections { background: var(--band); border-bottom: 1px solid var(--line); padding: 0.5rem 2rem; }
nav.sections ul { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 0.25rem 1.25rem; }
main { padding: 0 2rem 2rem; max-width: 92rem; }
section > h2 { margin: 2rem 0 0.75rem; padding-bottom: 0.25rem; border-bottom: 2px solid #14264a; font-size: 1.35rem; }
h3 { font-size: 1.1rem; margin: 1.5rem 0 0.5rem; }
h4 { font-size: 1rem; margin: 0 0 0.35rem; }
.headline { font-size: 1.15rem; margin: 0.5rem 0 1rem; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(8.5rem, 1fr)); gap: 0.75rem;
  margin: 0 0 1rem; padding: 0; }
.tiles div { border: 1px solid var(--line); border-left-width: 6px; border-radius: 4px; padding: 0.5rem 0.75rem; }
.tiles dt { font-size: 0.9rem; color: var(--muted); }
.tiles dd { margin: 0; font-size: 1.6rem; font-weight: 700; }
.tiles .fail { border-left-color: var(--fail-ink); } .tiles .pass { border-left-color: var(--pass-ink); }
.tiles .unknown { border-left-color: #a36b00; } .tiles .exempted { border-left-color: var(--exempt-ink); }
.tiles.small dd { font-size: 1.3rem; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(14rem, 1fr)); gap: 0.5rem 1.5rem;
  margin: 0; }
dl.facts dt { font-size: 0.85rem; color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; caption-side: top; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
td.text, .sub { overflow-wrap: anywhere; }
th[scope="col"], tbody th.id { white-space: nowrap; }
table.wide { width: 100%; }
table.wide td.text { min-width: 16rem; }
thead th { background: var(--band); }
tbody th { font-weight: 600; background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.sub { display: block; font-weight: 400; font-size: 0.85em; color: var(--muted); }
.status { display: inline-block; padding: 0 0.35rem; border-radius: 3px; font-weight: 700; white-space: nowrap; }
.status.fail { color: var(--fail-ink); background: var(--fail-bg); }
.status.pass { color: var(--pass-ink); background: var(--pass-bg); }
.status.unknown { color: var(--unknown-ink); background: var(--unknown-bg); }
.status.exempted { color: var(--exempt-ink); background: var(--exempt-bg); }
.status.na, .status.none { color: var(--muted); font-weight: 400; }
table.matrix td { text-align: center; white-space: nowrap; }
table.matrix td.fail { background: var(--fail-bg); } table.matrix td.pass { background: var(--pass-bg); }
table.matrix td.unknown { background: var(--unknown-bg); } table.matrix td.exempted { background: var(--exempt-bg); }
table.matrix td .status { background: transparent; }
table.matrix td .cause { display: block; font-size: 0.8em; color: var(--muted); }
table.matrix thead th { vertical-align: bottom; max-width: 11rem; overflow-wrap: anywhere; }
.name { white-space: nowrap; }
ul.checks { list-style: none; margin: 0; padding: 0; } ul.checks li { white-space: nowrap; }
.badge { display: inline-block; margin-top: 0.2rem; padding: 0 0.3rem; border: 1px solid var(--ink); border-radius: 3px;
  font-size: 0.8em; white-space: nowrap; }
.note { color: var(--muted); margin: 0.25rem 0 0.75rem; }
.more { font-style: italic; }
.owner { border-top: 1px solid var(--line); margin-top: 1.25rem; }
article.finding { border: 1px solid var(--line); border-left: 6px solid var(--line); border-radius: 4px;
  padding: 0.6rem 0.9rem; margin: 0.6rem 0; }
article.finding.fail { border-left-color: var(--fail-ink); }
article.finding.unknown { border-left-color: #a36b00; }
article.finding p { margin: 0.25rem 0; overflow-wrap: anywhere; }
.where { color: var(--muted); }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 4px; padding: 0.6rem 0.8rem;
  margin: 0.4rem 0 0; overflow-x: auto; font-size: 0.85rem; line-height: 1.4; }
code { font-family: ui-monospace, "Cascadia Mono", "DejaVu Sans Mono", "Liberation Mono", monospace; }
pre, pre code { white-space: pre-wrap; overflow-wrap: anywhere; }  /* soft wraps: copying still gives one line */
ul.plain { padding-left: 1.25rem; }
footer.page { border-top: 1px solid var(--line); color: var(--muted); padding: 1rem 2rem; font-size: 0.9rem; }
@media print {
  @page { margin: 12mm; }
  html { font-size: 10pt; }
  nav.sections, .skip-link { display: none; }
  header.page { background: none; color: var(--ink); padding: 0 0 0.5rem; border-bottom: 2px solid var(--ink); }
  header.page p { color: var(--ink); }
  main, footer.page { padding: 0; max-width: none; }
  .scroll { overflow: visible; }
  thead { display: table-header-group; }
  tr, article.finding, pre, .tiles div { break-inside: avoid; page-break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  a[href^="http"]::after { content: " (" attr(href) ")"; font-size: 0.85em; overflow-wrap: anywhere; }
  .status, td, .tiles div, article.finding { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _status(status: str, word: str | None = None) -> str:
    """A status as symbol plus word; the symbol is decoration for sighted readers, the word is what is read."""
    css = _CLASS.get(status, "na")
    return (f'<span class="status {css}"><span aria-hidden="true">{_SYMBOL.get(status, "")} </span>'
            f"{_e(word or _WORD.get(status, status))}</span>")


def _cell(status: str, cause: str = "") -> str:
    if status == NOT_PAIRED:
        return '<span aria-hidden="true">—</span><span class="visually-hidden">not a pair</span>'
    if not cause:
        return _status(status)
    return (f'{_status(status)}<span class="cause"><span class="visually-hidden">root cause </span>{_e(cause)}'
            "</span>")


def _resource(ref: ResourceRef) -> str:
    if not ref.in_inventory:
        return f'<span class="name">{_e(ref.name)}</span><span class="sub">not in the inventory</span>'
    return f'<span class="name">{_e(ref.name)}</span><span class="sub">{_e(ref.resource_group)}</span>'


def _more(count: int, what: str) -> str:
    return f'<p class="more">… and {count:,} more {_e(what)}</p>' if count > 0 else ""


def _section(anchor: str, title: str, body: str) -> str:
    return (f'<section id="{anchor}" aria-labelledby="{anchor}-title">\n<h2 id="{anchor}-title">{_e(title)}</h2>\n'
            f"{body}</section>\n")


def _table(caption: str, head: Iterable[str], rows: Iterable[str], css: str = "") -> str:
    header = "".join(head)
    klass = f' class="{css}"' if css else ""
    return (f'<div class="scroll" role="region" tabindex="0" aria-label="{_e(caption)}">\n<table{klass}>\n'
            f"<caption>{_e(caption)}</caption>\n<thead><tr>{header}</tr></thead>\n<tbody>\n"
            + "".join(rows) + "</tbody>\n</table>\n</div>\n")


def _th(text: str, num: bool = False) -> str:
    css = ' class="num"' if num else ""
    return f'<th scope="col"{css}>{text}</th>'


def _tiles(tiles: Iterable[tuple[str, str, int]], css: str = "tiles") -> str:
    items = "".join(f'<div class="{kind}"><dt>{_e(label)}</dt><dd>{value:,}</dd></div>\n'
                    for kind, label, value in tiles)
    return f'<dl class="{css}">\n{items}</dl>\n'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>\n'


def render_html(data: ReportData) -> str:
    run = data.run
    title = "ACR pull audit" + (f" — run {run.run_id}" if run.run_id else "")
    sections = [_overview(data), _matrix(data), _observed(data), _changes(data), _owners(data), _exemptions(data),
                _controls(data), _rules(data), _coverage(data), _run_facts(data)]
    nav = "".join(f'<li><a href="#{anchor}">{_e(label)}</a></li>' for anchor, label in _SECTIONS)
    when = run.end or run.start
    subtitle = " · ".join(_e(part) for part in (
        f"Run {run.run_id}" if run.run_id else "", run.status, when, f"scope {run.scope}" if run.scope else "") if part)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        '<a class="skip-link" href="#main">Skip to the report</a>\n'
        f'<header class="page">\n<h1>ACR pull audit</h1>\n<p>{subtitle or "No run record"}</p>\n</header>\n'
        f'<nav class="sections" aria-label="Report sections">\n<ul>{nav}</ul>\n</nav>\n'
        '<main id="main" tabindex="-1">\n' + "".join(sections) + "</main>\n"
        f'<footer class="page">\n<p>Generated by acr-pull-auditor {_e(run.tool_version)}'
        f'{", rule catalog " + _e(run.rule_catalog_version) if run.rule_catalog_version else ""}. '
        "This file is self-contained: it loads nothing from the network.</p>\n</footer>\n</body>\n</html>\n")


def _facts(facts: Iterable[tuple[str, object]]) -> str:
    """Name/value pairs, each in its own <div> (allowed in a <dl>) so the grid keeps a name with its value."""
    rows = "".join(f"<div><dt>{_e(name)}</dt><dd>{_e(value)}</dd></div>\n" for name, value in facts
                   if value is not None and value != "")
    return f'<dl class="facts">\n{rows}</dl>\n'


def _run_facts(data: ReportData) -> str:
    run = data.run
    facts = [("Run id", run.run_id), ("Status", run.status), ("Started", run.start), ("Ended", run.end),
             ("Source", run.source), ("Scope", run.scope), ("Subscriptions seen", _n(run.subscriptions_seen)),
             ("Findings read", f"{run.findings_read:,}")]
    reported = run.finding_count_reported
    if reported is not None:
        # The run record's FindingCount leaves exempted findings out (they are its ExemptedCount).
        exempted = run.exempted_count_reported or 0
        if run.findings_read not in (reported, reported + exempted):
            facts.append(("Findings in the run record",
                          f"{reported:,}{f' and {exempted:,} exempted' if exempted else ''} (this report read "
                          f"{run.findings_read:,}: the counts below are from what it read)"))
    facts += [("Tool version", run.tool_version), ("Rule catalog", run.rule_catalog_version),
              ("Evidence archive", run.evidence_location), ("Evidence manifest SHA-256", run.manifest_sha256),
              ("Position in the evidence chain", _n(run.chain_position)),
              ("Previous manifest SHA-256", run.previous_manifest_sha256),
              ("Exemptions file SHA-256", run.exemptions_sha256)]
    return _section("run", "Run facts", _facts(facts))


def _overview(data: ReportData) -> str:
    view = data.overview
    if view.pairs:
        headline = (f"<strong>{view.pairs_fail:,} of {view.pairs:,}</strong> cluster → registry pairs cannot pull; "
                    f"{view.pairs_unknown:,} could not be decided (Unknown); {view.pairs_pass:,} pass.")
    else:
        headline = "No cluster → registry pairs were found."
    order = " → ".join(f"{STAGES[rule]} ({rule})" for rule in BLOCKING_RULES)
    source = {"derived": "These findings have no AKS-ACR-000 rows (an older run): each pair's verdict is derived "
                         f"the way AKS-ACR-000 makes it, from the checks that can stop a pull, in the order a pull "
                         f"meets them: {order}; {OBSERVED_RULE} only where Container Insights data exists. The first "
                         "that fails is the root cause, else the first that is Unknown.",
              PAIR_VERDICT_RULE: f"Pair verdicts and root causes come from {PAIR_VERDICT_RULE} (Cluster can pull from "
                                 f"registry): the first check that fails in the order a pull meets them: {order}.",
              "mixed": f"Pair verdicts come from {PAIR_VERDICT_RULE} where present, otherwise from the blocking "
                       f"checks in the same order: {order}."}[view.verdict_source]
    tiles = [("fail", "Pairs that cannot pull", view.pairs_fail), ("unknown", "Pairs Unknown", view.pairs_unknown),
             ("pass", "Pairs that pull", view.pairs_pass), ("exempted", "Pairs exempted", view.pairs_exempted),
             ("", "Clusters", view.clusters), ("fail", "Clusters that cannot pull from a registry",
                                               view.clusters_that_cannot_pull),
             ("", "Registries", view.registries), ("", "Findings", view.findings),
             ("exempted", "Findings exempted", view.findings_exempted)]
    if data.observed is not None:
        tiles.append(("fail", "Pairs with observed access failures", view.pairs_with_observed_access_failures))
    extra = []
    if view.registries_not_in_inventory:
        extra.append(f"Declared registries that are not in the inventory: {view.registries_not_in_inventory:,}.")
    if view.clusters_without_pairs:
        extra.append(f"Clusters with no known registry: {view.clusters_without_pairs:,}.")
    by_status = view.findings_by_status
    extra.append(f"Findings: {by_status.get(FAIL, 0):,} Fail, {by_status.get(UNKNOWN, 0):,} Unknown, "
                 f"{by_status.get(PASS, 0):,} Pass, {by_status.get(NOT_APPLICABLE, 0):,} not applicable"
                 + (f"; {view.findings_exempted:,} exempted (counted apart from the verdicts)."
                    if view.findings_exempted else "."))
    notes = "".join(_note(_e(text)) for text in [source, *extra])
    return _section("overview", "Tenant overview", f'<p class="headline">{headline}</p>\n{_tiles(tiles)}{notes}')


def _observed_cell(observed: ObservedPulls | None) -> str:
    if observed is None:
        return "—"
    items = [f"<li>{count:,} {_e(name)}{'' if name in ACCESS_CLASSES else ' (not access)'}</li>"
             for name, count in observed.classes.items()]
    extra = []
    if observed.last_seen:
        extra.append(f"last {_e(observed.last_seen)}")
    if observed.client_ips:
        extra.append("ACR refused " + _e(", ".join(observed.client_ips)))
    tail = f'<span class="sub">{"; ".join(extra)}</span>' if extra else ""
    return f'<ul class="checks">{"".join(items)}</ul>{tail}'


_CHANGE_WORDS = {"New": "new since the last run", "Changed": "changed since the last run"}


def _matrix(data: ReportData) -> str:
    matrix = data.matrix
    parts = []
    if not matrix.clusters:
        parts.append("<p>No pairs to show.</p>\n")
    else:
        head = [_th("Cluster")] + [f'<th scope="col">{_resource(axis.ref)}</th>' for axis in matrix.registries]
        rows = []
        for axis, cells, causes in zip(matrix.clusters, matrix.cells, matrix.causes, strict=True):
            row = "".join(f'<td class="{_CLASS.get(cell, "none")}">{_cell(cell, cause)}</td>'
                          for cell, cause in zip(cells, causes, strict=True))
            rows.append(f'<tr><th scope="row">{_resource(axis.ref)}</th>{row}</tr>\n')
        parts.append(_table("Pull verdict per cluster (rows) and registry (columns), worst first; under each verdict "
                            "that is not Pass, its root cause", head, rows, "matrix"))
        left_out = []
        if matrix.clusters_left_out:
            left_out.append(f"{matrix.clusters_left_out:,} more clusters")
        if matrix.registries_left_out:
            left_out.append(f"{matrix.registries_left_out:,} more registries")
        if left_out:
            parts.append(f'<p class="more">Not shown: {" and ".join(left_out)} '
                         f"(holding {matrix.failing_pairs_left_out:,} failing and "
                         f"{matrix.unknown_pairs_left_out:,} Unknown pairs; all of them are listed below up to "
                         f"{data.caps['worstPairs']:,} pairs, and counted above).</p>\n")
    if any(row.fail or row.unknown for row in data.root_causes):
        rows = []
        for step, row in enumerate(data.root_causes, 1):
            what = (f"{_e(row.rule)}</th><td>{_e(row.stage)}</td><td>{_e(row.title)}" if row.rule else
                    "—</th><td>other</td><td>The verdict names no check (see its message)")
            rows.append(f'<tr><td class="num">{step if row.rule in BLOCKING_RULES else ""}</td>'
                        f'<th scope="row" class="id">{what}</td><td class="num">{row.fail:,}</td>'
                        f'<td class="num">{row.unknown:,}</td></tr>\n')
        parts.append("<h3>Root causes, in the order a pull meets the checks</h3>\n")
        parts.append(_table("Pairs per root cause", [_th("Step", True), _th("Check"), _th("Stage"), _th("Title"),
                                                      _th("Cannot pull", True), _th("Unknown", True)], rows))
        parts.append(_note("A pair's root cause is the first blocking check that fails; the checks after it may fail "
                           "too (they are listed with the pair below). Cross-region pulls, service principals in "
                           "use and registry posture do not block a pull and are never a root cause."))
    parts.append("<h3>Pairs that cannot pull or are Unknown, worst first</h3>\n")
    if data.worst_pairs:
        head = [_th("Cluster and owner"), _th("Registry"), _th("Verdict"), _th("Root cause"), _th("Other checks"),
                _th("Observed pull failures")]
        rows = []
        for pair in data.worst_pairs:
            others = [f"<li>{_e(check.rule)} {_status(check.status)}</li>" for check in pair.checks
                      if check.rule != pair.root_cause]
            others += [f"<li>{_e(rule)} {_status(FAIL)} <span class=\"sub\">does not block pulls</span></li>"
                       for rule in pair.advisories]
            other_checks = f'<ul class="checks">{"".join(others)}</ul>' if others else "—"
            stage = f" ({_e(pair.root_cause_stage)})" if pair.root_cause_stage else ""
            root = (f"<strong>{_e(pair.root_cause)}</strong>{stage} {_e(pair.root_cause_title)}"
                    f'<span class="sub">{_e(pair.root_cause_message)}</span>') if pair.root_cause else _e(
                pair.root_cause_message)
            change = (f'<span class="badge">{_e(_CHANGE_WORDS[pair.change])}</span>'
                      if pair.change in _CHANGE_WORDS and data.changes and not data.changes.first_run else "")
            rows.append(f'<tr><th scope="row">{_resource(pair.cluster)}<span class="sub">owner {_e(pair.owner)}</span>'
                        f"</th><td>{_resource(pair.registry)}</td>"
                        f'<td>{_status(pair.verdict)}{change}</td><td class="text">{root}</td>'
                        f"<td>{other_checks}</td><td>{_observed_cell(pair.observed)}</td></tr>\n")
        parts.append(_table(f"{len(data.worst_pairs):,} pairs that cannot pull or are Unknown", head, rows, "wide"))
        parts.append(_more(data.worst_pairs_left_out, "pairs that cannot pull or are Unknown (counted above)"))
    else:
        parts.append("<p>Every pair can pull.</p>\n")
    return _section("matrix", "Pull verdict matrix", "".join(parts))


def _observed(data: ReportData) -> str:
    observed = data.observed
    title = "Observed pull failures"
    if observed is None:
        return _section("observed", title, f"<p>No Container Insights data in these findings ({OBSERVED_RULE}): "
                                           "the verdicts rest on configuration alone.</p>\n")
    tiles = [("", "Pairs observed", observed.pairs_observed),
             ("fail", "Pairs with access failures", observed.pairs_with_access_failures),
             ("", "Pairs with other failed pulls", observed.pairs_with_failures - observed.pairs_with_access_failures),
             ("unknown", "Pairs not observed", observed.pairs_not_observed)]
    parts = [_tiles(tiles, "tiles small"),
             _note(f"What the clusters' kubelets reported in Container Insights ({OBSERVED_RULE}). Unauthorized, "
                   "Forbidden, NameResolution and Unreachable are access problems and make a pair fail; NotFound, "
                   "Throttled and Other failed pulls are shown but do not. Pairs not observed send no Container "
                   "Insights data (or its workspace was not read): their verdicts rest on configuration alone.")]
    if observed.failed_pulls_by_class:
        rows = [f'<tr><th scope="row">{_e(name)}</th>'
                f"<td>{'access problem' if name in ACCESS_CLASSES else 'not an access problem'}</td>"
                f'<td class="num">{count:,}</td><td class="num">{observed.pairs_by_class.get(name, 0):,}</td></tr>\n'
                for name, count in observed.failed_pulls_by_class.items()]
        parts.append(_table("Failed pulls by class", [_th("Class"), _th("Kind"), _th("Failed pulls", True),
                                                     _th("Pairs", True)], rows))
    if observed.listed:
        rows = []
        for item in observed.listed:
            pulls = item.observed
            classes = ", ".join(f"{count:,} {name}" for name, count in pulls.classes.items())
            rows.append(f'<tr><th scope="row">{_resource(item.cluster)}</th><td>{_resource(item.registry)}</td>'
                        f"<td>{_status(item.verdict)}</td><td>{_e(classes)}</td><td>{_e(pulls.last_seen)}</td>"
                        f"<td>{_e(', '.join(pulls.namespaces))}</td><td>{_e(', '.join(pulls.client_ips))}</td></tr>\n")
        parts.append(_table("Pairs whose pulls failed for access reasons, most failures first",
                            [_th("Cluster"), _th("Registry"), _th("Pair verdict"), _th("Failed pulls"),
                             _th("Last seen"), _th("Namespaces"), _th("Client IPs ACR refused")], rows, "wide"))
        parts.append(_more(observed.listed_left_out, "pairs with access failures"))
    else:
        parts.append("<p>No pull failed for access reasons.</p>\n")
    return _section("observed", title, "".join(parts))


def _owner_entry(entry: OwnerEntry) -> str:
    where = " → ".join(part for part in (entry.cluster, entry.registry) if part) or entry.resource_id
    facts = [f"Severity {_e(entry.severity)}", f"{_e(entry.scope)} scope"]
    if entry.change:
        facts.append(f"change: {_e(entry.change)}")
    if entry.first_seen:
        facts.append(f"first seen {_e(entry.first_seen)}")
    if entry.controls:
        facts.append("controls " + _e(", ".join(entry.controls)))
    fix = (f'<p>Fix:</p>\n<pre><code>{_e(entry.remediation)}</code></pre>\n' if entry.remediation
           else "<p>No fix commands recorded.</p>\n")
    return (f'<article class="finding {_CLASS.get(entry.status, "na")}">\n'
            f"<h4>{_status(entry.status)} {_e(entry.rule)} {_e(entry.title)}</h4>\n"
            f'<p class="where">{_e(where)} · {" · ".join(facts)}</p>\n<p>{_e(entry.message)}</p>\n{fix}</article>\n')


def _owners(data: ReportData) -> str:
    if not data.owners:
        return _section("owners", "Failures by owner", "<p>No Fail or Unknown findings.</p>\n")
    head = [_th("Owner"), _th("Fail", True), _th("Unknown", True), _th("Exempted", True)]
    rows = [f'<tr><th scope="row"><a href="#owner-{index}">{_e(owner.owner)}</a></th>'
            f'<td class="num">{owner.fail:,}</td><td class="num">{owner.unknown:,}</td>'
            f'<td class="num">{owner.exempted:,}</td></tr>\n' for index, owner in enumerate(data.owners, 1)]
    parts = [_note("Owner is the <code>owner</code> tag of the cluster (cluster and pair findings) or of the registry "
                   f"(registry findings); findings without one are under {_e(NO_OWNER)}. Fail first, then Unknown "
                   f"(data the audit could not see). The checks are listed, not the pair verdicts "
                   f"({PAIR_VERDICT_RULE}) they add up to; exempted findings are counted, not listed."),
             _table("Fail and Unknown findings per owner", head, rows)]
    for index, owner in enumerate(data.owners, 1):
        parts.append(f'<section class="owner" aria-labelledby="owner-{index}"><h3 id="owner-{index}">{_e(owner.owner)}'
                     f'<span class="sub">{owner.fail:,} Fail, {owner.unknown:,} Unknown, {owner.exempted:,} '
                     "exempted</span></h3>\n")
        if not owner.detail_kept:
            parts.append(_note(f"Details were kept for the first {data.caps['ownersWithDetail']:,} owners only; "
                               "this owner's findings are counted, not listed."))
        parts.extend(_owner_entry(entry) for entry in owner.entries)
        if owner.detail_kept:
            parts.append(_more(owner.entries_left_out, "findings for this owner (the worst are shown)"))
        parts.append("</section>\n")
    return _section("owners", "Failures by owner", "".join(parts))


def _rules(data: ReportData) -> str:
    head = [_th("Rule"), _th("Title"), _th("Severity"), _th("Scope"), _th("Pass", True), _th("Fail", True),
            _th("Unknown", True), _th("N/A", True), _th("Exempted", True)]
    rows = []
    for row in data.rules:
        title = _e(row.title)
        if row.link.startswith("https://"):
            title += f' <a href="{_e(row.link)}">docs<span class="visually-hidden"> for {_e(row.rule)}</span></a>'
        counts = "".join(f'<td class="num">{row.counts.get(status, 0):,}</td>'
                         for status in (PASS, FAIL, UNKNOWN, NOT_APPLICABLE))
        rows.append(f'<tr><th scope="row" class="id">{_e(row.rule)}</th><td>{title}</td><td>{_e(row.severity)}</td>'
                    f'<td>{_e(row.scope)}</td>{counts}<td class="num">{row.exempted:,}</td></tr>\n')
    note = _note("An exempted finding is counted under Exempted only, not under its verdict; rules without findings in "
                 "this run show zeros. The controls each rule provides evidence for are in the Controls section.")
    return _section("rules", "Per-rule results", _table("Findings per rule and verdict", head, rows) + note)


def _controls(data: ReportData) -> str:
    title = "Compliance controls"
    if not data.controls:
        return _section("controls", title, "<p>These findings name no compliance controls "
                                           "(no <code>Controls</code> field).</p>\n")
    head = [_th("Control"), _th("Result"), _th("Pass", True), _th("Fail", True), _th("Unknown", True),
            _th("N/A", True), _th("Exempted", True), _th("Rules")]
    rows = []
    for row in data.controls:
        counts = "".join(f'<td class="num">{row.counts.get(status, 0):,}</td>'
                         for status in (PASS, FAIL, UNKNOWN, NOT_APPLICABLE))
        rows.append(f'<tr><th scope="row" class="id">{_e(row.control)}</th><td>{_status(row.status)}</td>{counts}'
                    f'<td class="num">{row.exempted:,}</td><td>{_e(", ".join(row.rules))}</td></tr>\n')
    failing = sum(1 for row in data.controls if row.status == FAIL)
    undecided = sum(1 for row in data.controls if row.status == UNKNOWN)
    parts = [f"<p>{failing:,} of {len(data.controls):,} controls have failing findings; {undecided:,} more have "
             "findings that could not be decided.</p>\n",
             _table("Findings per compliance control and verdict", head, rows),
             _note("Each finding counts once under every control its rule provides evidence for (the findings' "
                   "<code>Controls</code>). A control fails when any of its findings fails and is Unknown when none "
                   "fails but one could not be decided; Exempted when its only failures are exempted. Exempted "
                   "findings are counted apart, not under their verdict."),
             _more(data.controls_left_out, "controls (not counted: over the report's limit)")]
    return _section("controls", title, "".join(parts))


def _permission(value: object) -> str:
    if value is True:
        return "granted"
    if value is False:
        return "not granted (that data is missing: verdicts that need it are Unknown)"
    return "not checked" if value is None else str(value)


def _coverage(data: ReportData) -> str:
    cov = data.coverage
    counted = [("Subscriptions seen", cov.subscriptions_seen), ("Resource Graph requests", cov.requests),
               ("Pages", cov.pages), ("Rows", cov.rows), ("Retries", cov.retries), ("Throttled (429)", cov.throttled),
               ("Collection seconds", cov.seconds)]
    facts = [("Scope", cov.scope or None)] + [(name, _n(value)) for name, value in counted if value is not None]
    if cov.management_group_role_data is not None:
        facts.append(("Role data above subscriptions", "collected" if cov.management_group_role_data else
                      "not collected (management-group grants are invisible)"))
    if cov.partial:
        facts.append(("Partial scopes", ", ".join(cov.partial)))
    parts = [_facts(facts)]
    if cov.permissions:
        parts.append("<h3>Optional sources</h3>\n")
        parts.append(_facts((f"{name}", _permission(value)) for name, value in cov.permissions.items()))
    if cov.gaps:
        head = [_th("Query"), _th("Reason"), _th("Subscriptions")]
        gap_rows = [f"<tr><td>{_e(gap.get('query', ''))}</td><td>{_e(gap.get('reason', ''))}</td>"
                    f"<td>{_e(', '.join(map(str, gap.get('subscriptions') or [])) or 'any')}</td></tr>\n"
                    for gap in cov.gaps]
        parts.append(_table(f"Collection gaps: {len(cov.gaps) + cov.gaps_left_out:,} (verdicts that needed the "
                            "missing data are Unknown)", head, gap_rows))
        parts.append(_more(cov.gaps_left_out, "gaps"))
    else:
        parts.append("<p>No collection gaps recorded.</p>\n")
    if cov.errors:
        items = "".join(f"<li>{_e(error)}</li>\n" for error in cov.errors)
        parts.append(f'<h3>Errors</h3>\n<ul class="plain">\n{items}</ul>\n' + _more(cov.errors_left_out, "errors"))
    else:
        parts.append("<p>No run errors recorded.</p>\n")
    return _section("coverage", "Coverage and run errors", "".join(parts))


def _listed_table(caption: str, listed: list[ListedFinding], exemption_columns: bool) -> str:
    head = [_th("Rule"), _th("Status"), _th("Resource"), _th("Owner")]
    head += [_th("Exemption"), _th("Expires")] if exemption_columns else [_th("Since"), _th("Message")]
    rows = []
    for item in listed:
        tail = (f"<td>{_e(item.exemption_id)}</td><td>{_e(item.expires_on)}</td>" if exemption_columns
                else f'<td><span class="name">{_e(item.first_seen)}</span></td>'
                     f'<td class="text">{_e(item.message)}</td>')
        rows.append(f'<tr><th scope="row" class="id">{_e(item.rule)}</th><td>{_status(item.status)}</td>'
                    f'<td>{_e(item.resource)}</td><td><span class="name">{_e(item.owner)}</span></td>{tail}</tr>\n')
    return _table(caption, head, rows)


def _changes(data: ReportData) -> str:
    changes = data.changes
    title = "Changes since the last run"
    if changes is None:
        return _section("changes", title, "<p>No change tracking in these findings (no <code>Change</code> field): "
                                          "they come from a version that did not compare runs.</p>\n")
    if changes.first_run:
        return _section("changes", title, f"<p>No previous run to compare with: every one of the "
                                          f"{sum(changes.by_change.values()):,} findings is New (the first run of "
                                          "this scope, or the previous run's findings could not be read).</p>\n")
    tiles = [("fail", "New Fail or Unknown findings", changes.new_failures),
             ("pass", "Passing now after a change", changes.fixed),
             ("fail", "Pairs that newly cannot pull", changes.pairs_newly_failing),
             ("pass", "Pairs that pull now", changes.pairs_fixed)]
    facts = [("New (run record)", _n(changes.new_count)), ("Fixed (run record)", _n(changes.fixed_count))]
    facts += [(f"Findings marked {change}", f"{count:,}") for change, count in sorted(changes.by_change.items())]
    parts = [_tiles(tiles, "tiles small"), _facts(facts),
             _note("New: Fail or Unknown now, and absent or passing in the last run (<code>Change</code> New), not "
                   "exempted. Passing now after a change: Pass or not applicable now, Fail or Unknown in the last run "
                   "(the run record's Fixed counts those that were Fail). Pair verdicts "
                   f"({PAIR_VERDICT_RULE}) are findings too, and are also counted as pairs.")]
    if changes.new_failure_list:
        parts.append(_listed_table("New failures (Fail or Unknown)", changes.new_failure_list,
                                   exemption_columns=False))
        parts.append(_more(changes.new_failures_left_out, "new failures"))
    if changes.fixed_list:
        parts.append(_listed_table("Passing since the last run", changes.fixed_list, exemption_columns=False))
        parts.append(_more(changes.fixed_left_out, "findings passing now"))
    return _section("changes", title, "".join(parts))


def _exemptions(data: ReportData) -> str:
    exemptions = data.exemptions
    if exemptions is None:
        return _section("exemptions", "Exemptions", "<p>No exemptions in these findings or this run.</p>\n")
    tiles = [("pass", "In force", exemptions.active or 0),
             ("unknown", f"Expiring within {EXPIRING_SOON_DAYS} days", exemptions.expiring),
             ("fail", "Expired", exemptions.expired), ("unknown", "Stale (match nothing)", exemptions.stale),
             ("exempted", "Findings exempted", exemptions.exempted_findings)]
    by_status = ", ".join(f"{count:,} {status}" for status, count in sorted(exemptions.exempted_by_status.items()))
    summary = (f"Exempted findings: {exemptions.exempted_findings:,}{f' ({_e(by_status)})' if by_status else ''}"
               + (f"; active exemptions: {exemptions.active:,}" if exemptions.active is not None else "")
               + ". Exempted findings keep their status but are counted apart: they are not in the verdict counts, "
                 "the pair verdicts or the owners' failures to fix. An expired exemption exempts nothing: its "
                 "findings count again, and AKS-ACR-013 reports it.")
    parts = [_tiles(tiles, "tiles small"), f"<p>{summary}</p>\n"]
    if exemptions.exempted_count_reported is not None and \
            exemptions.exempted_count_reported != exemptions.exempted_findings:
        parts.append(_note(f"The run record counts {exemptions.exempted_count_reported:,} exempted findings; this "
                           f"report read {exemptions.exempted_findings:,}."))
    if exemptions.entries:
        rows = []
        for entry in exemptions.entries:
            status = PASS if IN_FORCE in entry.states and not ({EXPIRING, STALE} & set(entry.states)) else (
                FAIL if EXPIRED in entry.states else UNKNOWN)
            state = "; ".join(_STATE_WORDS.get(kind, kind) for kind in entry.states)
            matched = "" if entry.matched is None else f"{entry.matched:,}"
            rules = ", ".join(f'<span class="name">{_e(rule)}</span>' for rule in entry.rules)
            rows.append(f'<tr><th scope="row" class="id">{_e(entry.id)}</th><td>{_status(status, state)}</td>'
                        f'<td><span class="name">{_e(entry.expires_on)}</span></td>'
                        f"<td>{rules}</td>"
                        f'<td class="num">{matched}</td><td class="num">{entry.exempted_here:,}</td>'
                        f'<td>{_e(entry.approved_by)}</td><td><span class="name">{_e(entry.ticket)}</span></td>'
                        f'<td class="text">{_e(entry.justification)}</td></tr>\n')
        parts.append(_table("Exemptions, expired and expiring first",
                            [_th("Exemption"), _th("State"), _th("Expires"), _th("Rules"), _th("Selected", True),
                             _th("Exempted here", True), _th("Approved by"), _th("Ticket"), _th("Justification")],
                            rows, "wide"))
        parts.append(_more(exemptions.entries_left_out, "exemptions"))
        source = {"run record": "States come from the run record.",
                  "findings": f"No run record: states are read from the {len(exemptions.entries):,} exemptions' "
                              f"AKS-ACR-013 findings (expiring: within {EXPIRING_SOON_DAYS} days of the findings' "
                              "date)."}.get(exemptions.states_from, "")
        parts.append(_note("Selected: findings the exemption matched in the run (expired ones too, which no longer "
                           "exempt them). Exempted here: findings of this report it exempts. " + source))
    if exemptions.listed:
        parts.append(_listed_table("Exempted findings", exemptions.listed, exemption_columns=True))
        parts.append(_more(exemptions.listed_left_out, "exempted findings"))
    return _section("exemptions", "Exemptions", "".join(parts))
