"""A short Markdown summary for tickets and chat: headline counts, root causes, changes, exemptions, the worst
pairs with what Container Insights saw of them, failures by owner."""

from __future__ import annotations

import re

from auditors.reports.data import EXPIRING_SOON_DAYS, FAIL, UNKNOWN, ObservedPulls, ReportData

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


def _observed(observed: ObservedPulls | None) -> str:
    if observed is None:
        return "—"
    return ", ".join(f"{count:,} {md(name)}" for name, count in observed.classes.items())


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

    causes = [f"{row.fail:,} {md(row.stage or 'other')} ({md(row.rule)})" if row.rule else f"{row.fail:,} other"
              for row in data.root_causes if row.fail]
    if causes:
        lines += ["", "Root causes of the pairs that cannot pull, in the order a pull meets them: "
                  + ", ".join(causes) + "."]

    changes = data.changes
    if changes is not None and changes.first_run:
        lines += ["", "Since the last run: no previous run to compare with (every finding is New)."]
    elif changes is not None:
        counted = [f"{changes.new_count:,} new findings" if isinstance(changes.new_count, int) else "",
                   f"{changes.fixed_count:,} fixed" if isinstance(changes.fixed_count, int) else "",
                   f"{changes.new_failures:,} new failures"]
        pairs = [f"{changes.pairs_newly_failing:,} newly cannot pull" if changes.pairs_newly_failing else "",
                 f"{changes.pairs_fixed:,} can pull again" if changes.pairs_fixed else ""]
        pairs_text = "; pairs: " + ", ".join(part for part in pairs if part) if any(pairs) else ""
        lines += ["", "Since the last run: " + ", ".join(part for part in counted if part) + pairs_text + "."]

    exemptions = data.exemptions
    if exemptions is not None:
        expired = ", ".join(md(e.id) for e in exemptions.entries if "expired" in e.states)
        expiring = ", ".join(f"{md(e.id)} ({md(e.expires_on)})" for e in exemptions.entries if "expiring" in e.states)
        stale = ", ".join(md(e.id) for e in exemptions.entries if "stale" in e.states)
        lines += ["", f"Exemptions: {exemptions.active or 0:,} in force, {exemptions.expiring:,} expiring within "
                      f"{EXPIRING_SOON_DAYS} days{f' ({expiring})' if expiring else ''}, {exemptions.expired:,} "
                      f"expired{f' ({expired})' if expired else ''}, {exemptions.stale:,} stale"
                      f"{f' ({stale})' if stale else ''}. Exempted findings (counted apart): "
                      f"{exemptions.exempted_findings:,}."]

    observed = data.observed
    if observed is not None and observed.pairs_with_access_failures:
        classes = ", ".join(f"{count:,} {md(name)}" for name, count in observed.failed_pulls_by_class.items())
        lines += ["", f"Observed in Container Insights: {observed.pairs_with_access_failures:,} pairs with access "
                      f"failures; failed pulls: {classes}."]

    if data.worst_pairs:
        lines += ["", "### Worst pairs", "", "| Cluster | Registry | Verdict | Root cause | Observed |",
                  "|---|---|---|---|---|"]
        for pair in data.worst_pairs[:MAX_PAIRS]:
            cause = f"{md(pair.root_cause)}: {md(_short(pair.root_cause_message))}" if pair.root_cause else md(
                _short(pair.root_cause_message))
            compared = changes is not None and not changes.first_run
            verdict = pair.verdict + (f" ({md(pair.change.lower())})" if compared and pair.change in ("New", "Changed")
                                      else "")
            lines.append(f"| {md(pair.cluster.label)} | {md(pair.registry.label)} | {verdict} | {cause} | "
                         f"{_observed(pair.observed)} |")
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
                lines.append(f"- {md(entry.status)} {md(entry.rule)}{' ' + where if where else ''}: "
                             f"{md(_short(entry.message))}")
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
