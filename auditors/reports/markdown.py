"""A short Markdown summary for tickets and chat: headline counts, the worst pairs, failures by owner."""

from __future__ import annotations

import re

from auditors.reports.data import FAIL, UNKNOWN, ReportData

MAX_PAIRS = 10
MAX_PER_OWNER = 5
MAX_OWNERS = 10
MAX_MESSAGE_CHARS = 160

# Characters that start Markdown syntax anywhere in a line: table cells, code spans, emphasis, strikethrough,
# links and images (`(` and `!` only act next to a `[`), headings; `<` and `&` are replaced by entities.
_SIGNIFICANT = re.compile(r"([\\`*_\[\]#|~])")


def md(value: object) -> str:
    """A tenant value (names and tags are chosen by whoever can tag a resource) as inert Markdown text."""
    text = " ".join(str(value or "").split())  # a line break would end a table row or list item
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _SIGNIFICANT.sub(r"\\\1", text)


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def render_markdown(data: ReportData) -> str:
    view, run = data.overview, data.run
    title = "## ACR pull audit" + (f" — run {md(run.run_id)}" if run.run_id else "")
    if run.status:
        title += f" ({md(run.status)})"
    lines = [title, ""]
    lines.append(f"**{view.pairs_fail:,} of {view.pairs:,} cluster → registry pairs cannot pull**, "
                 f"{view.pairs_unknown:,} Unknown, {view.pairs_pass:,} pass"
                 + (f", {view.pairs_exempted:,} exempted" if view.pairs_exempted else "")
                 + f". {view.clusters:,} clusters, {view.registries:,} registries, {view.findings:,} findings "
                 f"({view.findings_by_status.get(FAIL, 0):,} Fail, {view.findings_by_status.get(UNKNOWN, 0):,} Unknown"
                 + (f", {view.findings_exempted:,} exempted" if view.findings_exempted else "") + ").")

    changes = data.changes
    if changes is not None:
        counted = [f"{changes.new_count:,} new findings" if isinstance(changes.new_count, int) else "",
                   f"{changes.fixed_count:,} fixed" if isinstance(changes.fixed_count, int) else "",
                   f"{changes.new_failures:,} new failures"]
        lines += ["", "Since the last run: " + ", ".join(part for part in counted if part) + "."]

    if data.worst_pairs:
        lines += ["", "### Worst pairs", "", "| Cluster | Registry | Verdict | Root cause |", "|---|---|---|---|"]
        for pair in data.worst_pairs[:MAX_PAIRS]:
            cause = f"{md(pair.root_cause)}: {md(_short(pair.root_cause_message))}" if pair.root_cause else md(
                _short(pair.root_cause_message))
            lines.append(f"| {md(pair.cluster.label)} | {md(pair.registry.label)} | {pair.verdict} | {cause} |")
        more = len(data.worst_pairs) - MAX_PAIRS + data.worst_pairs_left_out
        if more > 0:
            lines.append(f"\n… and {more:,} more pairs that cannot pull or are Unknown.")

    if data.owners:
        lines += ["", "### Failures by owner"]
        for owner in data.owners[:MAX_OWNERS]:
            lines += ["", f"**{md(owner.owner)}**: {owner.fail:,} Fail, {owner.unknown:,} Unknown"
                      + (f", {owner.exempted:,} exempted" if owner.exempted else "")]
            for entry in owner.entries[:MAX_PER_OWNER]:
                where = " → ".join(md(part) for part in (entry.cluster, entry.registry) if part)
                lines.append(f"- {md(entry.status)} {md(entry.rule)} {where}: {md(_short(entry.message))}")
            more = owner.fail + owner.unknown - min(len(owner.entries), MAX_PER_OWNER)
            if more > 0:
                lines.append(f"- … and {more:,} more")
        if len(data.owners) > MAX_OWNERS:
            lines += ["", f"… and {len(data.owners) - MAX_OWNERS:,} more owners."]

    cov = data.coverage
    coverage = [f"scope {md(cov.scope)}" if cov.scope else "",
                f"{cov.subscriptions_seen:,} subscriptions" if isinstance(cov.subscriptions_seen, int) else "",
                f"{cov.requests:,} requests" if cov.requests is not None else "",
                f"{cov.rows:,} rows" if cov.rows is not None else "",
                f"{len(cov.gaps) + cov.gaps_left_out:,} gaps", f"{len(cov.errors) + cov.errors_left_out:,} errors"]
    lines += ["", "Coverage: " + ", ".join(part for part in coverage if part) + "."]
    return "\n".join(lines) + "\n"
