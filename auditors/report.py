"""Run summary: per-rule counts and the worst cluster -> registry pairs by their pull verdict (AKS-ACR-000); a
sink, fed like the others."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from auditors.findings import EncodedFinding
from auditors.rules import Rule, Severity, Status
from auditors.sinks.base import SinkStats

PULL_VERDICT = "AKS-ACR-000"
_RANK = {severity.value: severity.rank for severity in Severity}
_WORST_ORDER = {Status.FAIL.value: 0, Status.UNKNOWN.value: 1}  # the pairs a summary lists, worst first
WORST_LISTED = 10


class PairVerdict(NamedTuple):  # a tuple: a worker process sends thousands of them back
    cluster: str
    cluster_group: str
    registry: str
    status: str
    root_cause: str
    message: str  # only where the summary shows it (a pair that cannot pull or is undecided)


@dataclass
class Summary:
    name = "summary"
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # not exempted
    exempted: Counter = field(default_factory=Counter)  # rule id -> exempted findings
    fails_by_severity: Counter = field(default_factory=Counter)  # severity -> Fail findings (not exempted)
    pairs: dict[tuple[str, str], PairVerdict] = field(default_factory=dict)  # (cluster id, registry) -> verdict
    findings: int = 0
    undecided_groups: Counter = field(default_factory=Counter)  # group id -> pair verdicts it left Unknown

    def write(self, batch: list[EncodedFinding]) -> None:
        for encoded in batch:
            self.observe(encoded.finding)

    def observe(self, finding) -> None:
        self.findings += 1
        status = finding.Status
        if finding.Exempted:
            self.exempted[finding.RuleId] += 1
            return
        self.counts[finding.RuleId][status] += 1
        if status == Status.FAIL:
            self.fails_by_severity[finding.Severity] += 1
        elif status == Status.UNKNOWN and "groupGrants" in finding.Evidence:
            self.undecided_groups.update({g.get("group", "") for g in finding.Evidence["groupGrants"]})
        if finding.RuleId == PULL_VERDICT:
            shown = status in _WORST_ORDER
            self.pairs[(finding.ClusterId.lower(), (finding.RegistryId or finding.RegistryName).lower())] = \
                PairVerdict(finding.ClusterName, finding.ResourceGroup, finding.RegistryName, status,
                            finding.Evidence.get("rootCause", "") if shown else "", finding.Message if shown else "")

    def close(self) -> SinkStats:
        return SinkStats(self.name, rows=self.findings)

    def abort(self) -> None:
        pass

    # A worker process summarises each piece in a Summary of its own; the run's takes them over in order.
    def part(self, index: int) -> Summary:
        return Summary()

    def finish(self) -> Summary:
        """What a worker sends back: its counts and pairs, with a message only on the pairs that may be among the
        WORST_LISTED (a share's worst are the only candidates for the whole run's)."""
        keep = {id(pair) for pair in self.worst_pairs(WORST_LISTED)}
        self.pairs = {key: pair if id(pair) in keep or not pair.message else pair._replace(message="", root_cause="")
                      for key, pair in self.pairs.items()}
        return self

    def discard(self, share: Summary) -> None:
        pass

    def absorb(self, share: Summary) -> None:
        self.findings += share.findings
        for rule_id, counts in share.counts.items():
            self.counts[rule_id].update(counts)
        self.exempted.update(share.exempted)
        self.fails_by_severity.update(share.fails_by_severity)
        self.pairs.update(share.pairs)
        self.undecided_groups.update(share.undecided_groups)

    def total(self, status: Status) -> int:
        return sum(c[status] for c in self.counts.values())

    @property
    def worst_fail(self) -> Severity | None:
        ranked = [Severity(s) for s, n in self.fails_by_severity.items() if n]
        return max(ranked, key=lambda s: s.rank) if ranked else None

    def fails_at_or_above(self, severity: Severity) -> int:
        return sum(n for s, n in self.fails_by_severity.items() if _RANK[s] >= severity.rank)

    def worst_pairs(self, limit: int = WORST_LISTED) -> list[PairVerdict]:
        """Pairs that cannot pull first, then undecided ones; by name within each."""
        bad = [p for p in self.pairs.values() if p.status in _WORST_ORDER]
        return sorted(bad, key=lambda p: (_WORST_ORDER[p.status], p.cluster, p.registry, p.cluster_group))[:limit]

    def pair_counts(self) -> Counter:
        return Counter(p.status for p in self.pairs.values())


def render(summary: Summary, rules: list[Rule]) -> str:
    lines = []
    header = f"{'Rule':<12} {'Sev':<7} {'Pass':>6} {'Fail':>6} {'Unknown':>8} {'N/A':>6} {'Exempt':>7}  Title"
    lines += [header, "-" * len(header)]
    for rule in rules:
        counts = summary.counts.get(rule.meta.id, Counter())
        lines.append(
            f"{rule.meta.id:<12} {rule.meta.severity.value[:6]:<7} {counts[Status.PASS]:>6} {counts[Status.FAIL]:>6} "
            f"{counts[Status.UNKNOWN]:>8} {counts[Status.NOT_APPLICABLE]:>6} {summary.exempted[rule.meta.id]:>7}  "
            f"{rule.meta.title}"
        )
    lines.append(
        f"{'total':<12} {'':<7} {summary.total(Status.PASS):>6} {summary.total(Status.FAIL):>6} "
        f"{summary.total(Status.UNKNOWN):>8} {summary.total(Status.NOT_APPLICABLE):>6} "
        f"{sum(summary.exempted.values()):>7}"
    )
    pairs = summary.pair_counts()
    if summary.pairs:
        lines += ["", f"Pull verdicts (AKS-ACR-000): {pairs[Status.FAIL.value]} of {len(summary.pairs)} pair(s) cannot "
                      f"pull, {pairs[Status.UNKNOWN.value]} undecided, {pairs[Status.PASS.value]} can pull."]
    worst = summary.worst_pairs()
    if worst:
        clusters_named: dict[str, set[str]] = defaultdict(set)
        for cluster_id, _ in summary.pairs:
            clusters_named[cluster_id.rsplit("/", 1)[-1]].add(cluster_id)
        duplicate_names = {name for name, ids in clusters_named.items() if len(ids) > 1}
        lines += ["", "Worst cluster -> registry pairs:"]
        for pair in worst:
            cluster = f"{pair.cluster} ({pair.cluster_group})" if pair.cluster.lower() in duplicate_names \
                else pair.cluster
            cause = f", root cause {pair.root_cause}" if pair.root_cause else ""
            lines.append(f"  {cluster} -> {pair.registry}: {pair.status}{cause}: {_short(pair.message)}")
    if summary.undecided_groups:
        top = ", ".join(f"{group} ({count})" for group, count in summary.undecided_groups.most_common(5))
        lines += ["", "Some pull-permission verdicts are Unknown because a group holds a pull-granting role and its "
                      "members were not read from Microsoft Graph (GroupMember.Read.All).",
                  f"Grant that permission, or declare the members under `groups:` in the pairs file. Top groups: {top}"]
    return "\n".join(lines)


def _short(message: str, limit: int = 150) -> str:
    """The root cause's own words: the pull verdict's message after `... (<rule title>): `."""
    text = message.split("): ", 1)[1] if "): " in message[:200] else message
    return text if len(text) <= limit else text[:limit - 1] + "…"
