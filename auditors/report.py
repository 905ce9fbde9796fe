"""Run summary: per-rule counts and the worst cluster-registry pairs (a sink, fed like the others)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from auditors.findings import EncodedFinding
from auditors.rules import Rule, Severity, Status
from auditors.sinks.base import SinkStats

_RANK = {severity.value: severity.rank for severity in Severity}


@dataclass
class Summary:
    name = "summary"
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    # (cluster id, registry id or declared name) -> [(weight, rule id, status)]
    pair_failures: dict[tuple[str, str], list[tuple[int, str, str]]] = field(default_factory=lambda: defaultdict(list))
    pair_names: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    worst_fail: Severity | None = None
    findings: int = 0
    undecided_groups: Counter = field(default_factory=Counter)  # group id -> pair verdicts it left Unknown

    def write(self, batch: list[EncodedFinding]) -> None:
        for encoded in batch:
            self.observe(encoded.finding)

    def observe(self, finding) -> None:
        self.findings += 1
        status = finding.Status
        self.counts[finding.RuleId][status] += 1
        if status == Status.FAIL:
            severity = Severity(finding.Severity)
            if self.worst_fail is None or severity.rank > self.worst_fail.rank:
                self.worst_fail = severity
        elif status == Status.UNKNOWN and "groupGrants" in finding.Evidence:
            self.undecided_groups.update({g.get("group", "") for g in finding.Evidence["groupGrants"]})
        if finding.Scope == "pair" and status in (Status.FAIL, Status.UNKNOWN):
            key = (finding.ClusterId, finding.RegistryId or finding.RegistryName)
            self.pair_failures[key].append((_RANK[finding.Severity] + 1, finding.RuleId, status))
            self.pair_names.setdefault(key, (finding.ClusterName, finding.RegistryName))

    def close(self) -> SinkStats:
        return SinkStats(self.name, rows=self.findings)

    def abort(self) -> None:
        pass

    def total(self, status: Status) -> int:
        return sum(c[status] for c in self.counts.values())

    def worst_pairs(self, limit: int = 10) -> list[tuple[tuple[str, str], list[tuple[int, str, str]]]]:
        def badness(problems: list[tuple[int, str, str]]) -> tuple[int, int]:
            """Fails outrank Unknowns; within each, higher severities and more rules weigh more."""
            fails = sum(weight for weight, _, status in problems if status == Status.FAIL)
            unknowns = sum(weight for weight, _, status in problems if status == Status.UNKNOWN)
            return -fails, -unknowns

        ranked = sorted(self.pair_failures.items(),
                        key=lambda item: (badness(item[1]), self.pair_names[item[0]], item[0]))
        return ranked[:limit]


def render(summary: Summary, rules: list[Rule]) -> str:
    lines = []
    header = f"{'Rule':<12} {'Sev':<7} {'Pass':>6} {'Fail':>6} {'Unknown':>8} {'N/A':>6}  Title"
    lines += [header, "-" * len(header)]
    for rule in rules:
        counts = summary.counts.get(rule.meta.id, Counter())
        lines.append(
            f"{rule.meta.id:<12} {rule.meta.severity.value[:6]:<7} {counts[Status.PASS]:>6} {counts[Status.FAIL]:>6} "
            f"{counts[Status.UNKNOWN]:>8} {counts[Status.NOT_APPLICABLE]:>6}  {rule.meta.title}"
        )
    lines.append(
        f"{'total':<12} {'':<7} {summary.total(Status.PASS):>6} {summary.total(Status.FAIL):>6} "
        f"{summary.total(Status.UNKNOWN):>8} {summary.total(Status.NOT_APPLICABLE):>6}"
    )
    worst = summary.worst_pairs()
    if worst:
        lines += ["", "Worst cluster -> registry pairs:"]
        for key, problems in worst:
            cluster, registry = summary.pair_names[key]
            detail = ", ".join(f"{rule_id} {status}" for _, rule_id, status in sorted(problems, key=lambda p: p[1]))
            lines.append(f"  {cluster} -> {registry}: {detail}")
    if summary.undecided_groups:
        top = ", ".join(f"{group} ({count})" for group, count in summary.undecided_groups.most_common(5))
        lines += ["", "Some pull-permission verdicts are Unknown because a group holds a pull-granting role and its "
                      "members were not read from Microsoft Graph (GroupMember.Read.All).",
                  f"Grant that permission, or declare the members under `groups:` in the pairs file. Top groups: {top}"]
    return "\n".join(lines)
