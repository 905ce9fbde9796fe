"""The report as one self-contained HTML5 file: inline CSS, no scripts, nothing fetched from anywhere.

Every value that comes from findings or the run record is tenant data (names and tags are chosen by whoever
can tag a resource), so it goes through `_e` before it reaches the page. Status is carried by words and
symbols; colour only repeats it.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from auditors.reports.data import (
    BLOCKING_RULES,
    EXEMPTED,
    FAIL,
    NO_OWNER,
    NOT_APPLICABLE,
    NOT_PAIRED,
    PAIR_VERDICT_RULE,
    PASS,
    UNKNOWN,
    ListedFinding,
    OwnerEntry,
    ReportData,
    ResourceRef,
)

_SYMBOL = {PASS: "✓", FAIL: "✗", UNKNOWN: "?", EXEMPTED: "⊘", NOT_APPLICABLE: "\u2013", NOT_PAIRED: "—"}
_WORD = {PASS: "Pass", FAIL: "Fail", UNKNOWN: "Unknown", EXEMPTED: "Exempted", NOT_APPLICABLE: "N/A",
         NOT_PAIRED: "not a pair"}
_CLASS = {PASS: "pass", FAIL: "fail", UNKNOWN: "unknown", EXEMPTED: "exempted", NOT_APPLICABLE: "na",
          NOT_PAIRED: "none"}

_SECTIONS = (("run", "Run facts"), ("overview", "Tenant overview"), ("matrix", "Pull verdicts"),
             ("owners", "Failures by owner"), ("rules", "Rules"), ("coverage", "Coverage"),
             ("changes", "Changes"), ("exemptions", "Exemptions"))

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
table.matrix thead th { vertical-align: bottom; max-width: 11rem; overflow-wrap: anywhere; }
.name { white-space: nowrap; }
ul.checks { list-style: none; margin: 0; padding: 0; } ul.checks li { white-space: nowrap; }
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


def _cell(status: str) -> str:
    if status == NOT_PAIRED:
        return '<span aria-hidden="true">—</span><span class="visually-hidden">not a pair</span>'
    return _status(status)


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


def render_html(data: ReportData) -> str:
    run = data.run
    title = "ACR pull audit" + (f" — run {run.run_id}" if run.run_id else "")
    sections = [_run_facts(data), _overview(data), _matrix(data), _owners(data), _rules(data), _coverage(data),
                _changes(data), _exemptions(data)]
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
    if run.finding_count_reported is not None and run.finding_count_reported != run.findings_read:
        facts.append(("Findings in the run record", f"{run.finding_count_reported:,} (this report read "
                                                    f"{run.findings_read:,}: the counts below are from what it read)"))
    facts += [("Tool version", run.tool_version), ("Rule catalog", run.rule_catalog_version)]
    return _section("run", "Run facts", _facts(facts))


def _overview(data: ReportData) -> str:
    view = data.overview
    if view.pairs:
        headline = (f"<strong>{view.pairs_fail:,} of {view.pairs:,}</strong> cluster → registry pairs cannot pull; "
                    f"{view.pairs_unknown:,} could not be decided (Unknown); {view.pairs_pass:,} pass.")
    else:
        headline = "No cluster → registry pairs were found."
    blocking = ", ".join(BLOCKING_RULES)
    source = {"derived": f"Pair verdicts are derived from the checks that block a pull ({blocking}); the other "
                         "rules make pulls slower or riskier, not impossible.",
              PAIR_VERDICT_RULE: f"Pair verdicts come from {PAIR_VERDICT_RULE}.",
              "mixed": f"Pair verdicts come from {PAIR_VERDICT_RULE} where present, otherwise from the blocking "
                       "checks."}[view.verdict_source]
    tiles = [("fail", "Pairs that cannot pull", view.pairs_fail), ("unknown", "Pairs Unknown", view.pairs_unknown),
             ("pass", "Pairs that pull", view.pairs_pass), ("exempted", "Pairs exempted", view.pairs_exempted),
             ("", "Clusters", view.clusters), ("fail", "Clusters that cannot pull from a registry",
                                               view.clusters_that_cannot_pull),
             ("", "Registries", view.registries), ("", "Findings", view.findings)]
    tile_html = "".join(f'<div class="{css}"><dt>{_e(label)}</dt><dd>{value:,}</dd></div>\n'
                        for css, label, value in tiles)
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
    notes = "".join(f'<p class="note">{_e(text)}</p>\n' for text in [source, *extra])
    return _section("overview", "Tenant overview",
                    f'<p class="headline">{headline}</p>\n<dl class="tiles">\n{tile_html}</dl>\n{notes}')


def _matrix(data: ReportData) -> str:
    matrix = data.matrix
    parts = []
    if not matrix.clusters:
        parts.append("<p>No pairs to show.</p>\n")
    else:
        head = [_th("Cluster")] + [f'<th scope="col">{_resource(axis.ref)}</th>' for axis in matrix.registries]
        rows = []
        for axis, cells in zip(matrix.clusters, matrix.cells, strict=True):
            row = "".join(f'<td class="{_CLASS.get(cell, "none")}">{_cell(cell)}</td>' for cell in cells)
            rows.append(f'<tr><th scope="row">{_resource(axis.ref)}</th>{row}</tr>\n')
        parts.append(_table("Pull verdict per cluster (rows) and registry (columns), worst first", head, rows,
                            "matrix"))
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
    parts.append("<h3>Pairs that cannot pull or are Unknown, worst first</h3>\n")
    if data.worst_pairs:
        head = [_th("Cluster"), _th("Registry"), _th("Verdict"), _th("Root cause"), _th("Other checks"),
                _th("Owner")]
        rows = []
        for pair in data.worst_pairs:
            others = [f"<li>{_e(check.rule)} {_status(check.status)}</li>" for check in pair.checks
                      if check.rule != pair.root_cause]
            others += [f"<li>{_e(rule)} {_status(FAIL)} <span class=\"sub\">does not block pulls</span></li>"
                       for rule in pair.advisories]
            other_checks = f'<ul class="checks">{"".join(others)}</ul>' if others else "—"
            root = (f"<strong>{_e(pair.root_cause)}</strong> {_e(pair.root_cause_title)}"
                    f'<span class="sub">{_e(pair.root_cause_message)}</span>') if pair.root_cause else _e(
                pair.root_cause_message)
            rows.append(f'<tr><th scope="row">{_resource(pair.cluster)}</th><td>{_resource(pair.registry)}</td>'
                        f'<td>{_status(pair.verdict)}</td><td class="text">{root}</td>'
                        f"<td>{other_checks}</td>"
                        f'<td><span class="name">{_e(pair.owner)}</span></td></tr>\n')
        parts.append(_table(f"{len(data.worst_pairs):,} pairs that cannot pull or are Unknown", head, rows, "wide"))
        parts.append(_more(data.worst_pairs_left_out, "pairs that cannot pull or are Unknown (counted above)"))
    else:
        parts.append("<p>Every pair can pull.</p>\n")
    return _section("matrix", "Pull verdict matrix", "".join(parts))


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
    parts = ['<p class="note">Owner is the <code>owner</code> tag of the cluster (cluster and pair findings) or of '
             f"the registry (registry findings); findings without one are under {_e(NO_OWNER)}. Fail first, then "
             "Unknown (data the audit could not see); exempted findings are counted, not listed.</p>\n",
             _table("Fail and Unknown findings per owner", head, rows)]
    for index, owner in enumerate(data.owners, 1):
        parts.append(f'<section class="owner" aria-labelledby="owner-{index}"><h3 id="owner-{index}">{_e(owner.owner)}'
                     f'<span class="sub">{owner.fail:,} Fail, {owner.unknown:,} Unknown, {owner.exempted:,} '
                     "exempted</span></h3>\n")
        if not owner.detail_kept:
            parts.append(f'<p class="note">Details were kept for the first {data.caps["ownersWithDetail"]:,} '
                         "owners only; this owner's findings are counted, not listed.</p>\n")
        parts.extend(_owner_entry(entry) for entry in owner.entries)
        if owner.detail_kept:
            parts.append(_more(owner.entries_left_out, "findings for this owner (the worst are shown)"))
        parts.append("</section>\n")
    return _section("owners", "Failures by owner", "".join(parts))


def _rules(data: ReportData) -> str:
    show_controls = any(row.controls for row in data.rules)
    head = [_th("Rule"), _th("Title"), _th("Severity"), _th("Scope"), _th("Pass", True), _th("Fail", True),
            _th("Unknown", True), _th("N/A", True), _th("Exempted", True)]
    if show_controls:
        head.append(_th("Controls"))
    rows = []
    for row in data.rules:
        title = _e(row.title)
        if row.link.startswith("https://"):
            title += f' <a href="{_e(row.link)}">docs<span class="visually-hidden"> for {_e(row.rule)}</span></a>'
        counts = "".join(f'<td class="num">{row.counts.get(status, 0):,}</td>'
                         for status in (PASS, FAIL, UNKNOWN, NOT_APPLICABLE))
        controls = f"<td>{_e(', '.join(row.controls))}</td>" if show_controls else ""
        rows.append(f'<tr><th scope="row" class="id">{_e(row.rule)}</th><td>{title}</td><td>{_e(row.severity)}</td>'
                    f'<td>{_e(row.scope)}</td>{counts}<td class="num">{row.exempted:,}</td>{controls}</tr>\n')
    note = ('<p class="note">An exempted finding is counted under Exempted only, not under its verdict; '
            "rules without findings in this run show zeros.</p>\n")
    return _section("rules", "Per-rule results", _table("Findings per rule and verdict", head, rows) + note)


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
    head += [_th("Exemption"), _th("Expires")] if exemption_columns else [_th("Message")]
    rows = []
    for item in listed:
        tail = (f"<td>{_e(item.exemption_id)}</td><td>{_e(item.expires_on)}</td>" if exemption_columns
                else f"<td>{_e(item.message)}</td>")
        rows.append(f'<tr><th scope="row" class="id">{_e(item.rule)}</th><td>{_status(item.status)}</td>'
                    f'<td>{_e(item.resource)}</td><td><span class="name">{_e(item.owner)}</span></td>{tail}</tr>\n')
    return _table(caption, head, rows)


def _changes(data: ReportData) -> str:
    changes = data.changes
    if changes is None:
        return _section("changes", "Changes since the last run",
                        "<p>No change tracking in these findings (no <code>Change</code> field).</p>\n")
    facts = [("New findings (run record)", _n(changes.new_count)),
             ("Fixed findings (run record)", _n(changes.fixed_count)),
             ("New failures in this report", f"{changes.new_failures:,}")]
    facts += [(f"Findings marked {change}", f"{count:,}") for change, count in sorted(changes.by_change.items())]
    parts = [_facts(facts)]
    if changes.new_failure_list:
        parts.append(_listed_table("New failures", changes.new_failure_list, exemption_columns=False))
        parts.append(_more(changes.new_failures_left_out, "new failures"))
    return _section("changes", "Changes since the last run", "".join(parts))


def _exemptions(data: ReportData) -> str:
    exemptions = data.exemptions
    if exemptions is None:
        return _section("exemptions", "Exemptions", "<p>No exemptions in these findings or this run.</p>\n")
    by_status = ", ".join(f"{count:,} {status}" for status, count in sorted(exemptions.exempted_by_status.items()))
    parts = [f"<p>Exempted findings: {exemptions.exempted_findings:,}{f' ({_e(by_status)})' if by_status else ''}"
             + (f"; active exemptions: {exemptions.active:,}" if exemptions.active is not None else "")
             + ". Exempted findings are counted apart and are not in the failures to fix.</p>\n"]
    if exemptions.listed:
        parts.append(_listed_table("Exempted findings", exemptions.listed, exemption_columns=True))
        parts.append(_more(exemptions.listed_left_out, "exempted findings"))
    for kind, label in (("expiring", "Expiring soon"), ("expired", "Expired"), ("stale", "Stale (match nothing)")):
        records = exemptions.records.get(kind) or []
        if not records:
            continue
        items = "".join(f"<li>{_record(item)}</li>\n" for item in records)
        parts.append(f'<h3>{_e(label)}: {len(records) + exemptions.records_left_out.get(kind, 0):,}</h3>\n'
                     f'<ul class="plain">\n{items}</ul>\n' + _more(exemptions.records_left_out.get(kind, 0), kind))
    return _section("exemptions", "Exemptions", "".join(parts))


def _record(item: object) -> str:
    if isinstance(item, dict):
        return "; ".join(f"<strong>{_e(key)}</strong>: {_e(value)}" for key, value in item.items())
    return _e(item)
