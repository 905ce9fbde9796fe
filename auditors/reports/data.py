"""Report data: one streaming pass over findings into counts plus a bounded amount of detail.

Counts cover every finding. Detail (messages, fix commands) is kept only for Fail and Unknown findings and
only up to the caps below, so an estate of hundreds of thousands of findings fits in a few tens of MB; every
list that was cut says how many entries it left out.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, UNKNOWN, NOT_APPLICABLE = "Pass", "Fail", "Unknown", "NotApplicable"
EXEMPTED = "Exempted"  # a matrix cell whose only failures are exempted
NOT_PAIRED = ""  # a matrix cell of a cluster and registry that are not a pair
STATUSES = (PASS, FAIL, UNKNOWN, NOT_APPLICABLE)

PAIR_VERDICT_RULE = "AKS-ACR-000"
# Checks that stop a pull, in root-cause order: a cluster-wide identity problem first, then the path a pull takes
# (network route, name resolution, permission). Used for pairs without an AKS-ACR-000 row. The other rules
# (cross-region pulls, service principals, registry posture) make pulls slower or riskier, not impossible.
BLOCKING_RULES = ("AKS-ACR-005", "AKS-ACR-003", "AKS-ACR-004", "AKS-ACR-001")
NO_OWNER = "(no owner tag)"

MAX_WORST_PAIRS = 500
MAX_ENTRIES_PER_OWNER = 50
MAX_OWNERS_WITH_DETAIL = 200
MAX_MATRIX_CLUSTERS = 60
MAX_MATRIX_REGISTRIES = 40
MAX_LISTED = 50  # new failures, exempted findings, gaps, errors, exemption records
MAX_MESSAGE_CHARS = 1000
MAX_REMEDIATION_CHARS = 4000
MAX_LISTED_MESSAGE_CHARS = 500
MAX_CONTROLS_PER_RULE = 20

_STATUS_RANK = {FAIL: 3, UNKNOWN: 2, PASS: 0, NOT_APPLICABLE: 0}
_SEVERITY_RANK = {"informational": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_RESOURCE_GROUP = re.compile(r"/resourcegroups/([^/]+)", re.IGNORECASE)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _controls(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
    return [_text(part) for part in value if part]


def _evidence(value: Any) -> dict:
    """Evidence is an object in findings.jsonl and a JSON string in findings.csv."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def resource_group_of(resource_id: str) -> str:
    match = _RESOURCE_GROUP.search(resource_id)
    return match.group(1) if match else ""


def _severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity.strip().lower(), 0)


@dataclass
class ResourceRef:
    """A cluster or registry as the report shows it; `id` is the grouping key, the name is not unique."""

    id: str
    name: str
    resource_group: str
    subscription: str = ""
    owner: str = ""
    in_inventory: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} ({self.resource_group})" if self.resource_group else self.name


@dataclass
class CheckResult:
    rule: str
    status: str
    message: str = ""


@dataclass
class PairRow:
    cluster: ResourceRef
    registry: ResourceRef
    owner: str
    verdict: str
    root_cause: str  # rule id
    root_cause_title: str
    root_cause_message: str
    checks: list[CheckResult]  # the blocking checks that did not pass
    advisories: list[str]  # non-blocking rules that failed for this pair
    verdict_source: str  # PAIR_VERDICT_RULE or "derived"


@dataclass
class Overview:
    clusters: int = 0
    registries: int = 0
    registries_not_in_inventory: int = 0
    clusters_without_pairs: int = 0
    clusters_that_cannot_pull: int = 0
    pairs: int = 0
    pairs_pass: int = 0
    pairs_fail: int = 0
    pairs_unknown: int = 0
    pairs_exempted: int = 0
    findings: int = 0
    findings_by_status: dict[str, int] = field(default_factory=dict)
    findings_exempted: int = 0
    verdict_source: str = "derived"  # PAIR_VERDICT_RULE, "derived" or "mixed"


@dataclass
class MatrixAxis:
    ref: ResourceRef
    fail: int
    unknown: int
    exempted: int
    pairs: int


@dataclass
class Matrix:
    clusters: list[MatrixAxis]
    registries: list[MatrixAxis]
    cells: list[list[str]]  # [cluster][registry]: Pass, Fail, Unknown, Exempted or "" (not a pair)
    clusters_left_out: int
    registries_left_out: int
    failing_pairs_left_out: int
    unknown_pairs_left_out: int


@dataclass
class OwnerEntry:
    rule: str
    title: str
    severity: str
    status: str
    scope: str
    cluster: str  # labels: name (resource group)
    registry: str
    resource_id: str
    message: str
    remediation: str
    first_seen: str = ""
    change: str = ""
    controls: list[str] = field(default_factory=list)


@dataclass
class OwnerFailures:
    owner: str
    fail: int
    unknown: int
    exempted: int
    entries: list[OwnerEntry]  # worst first, at most MAX_ENTRIES_PER_OWNER
    entries_left_out: int
    detail_kept: bool = True  # False past MAX_OWNERS_WITH_DETAIL owners: counts only


@dataclass
class RuleRow:
    rule: str
    title: str
    severity: str
    scope: str
    link: str
    counts: dict[str, int]
    exempted: int
    controls: list[str]
    in_catalog: bool


@dataclass
class CoverageFacts:
    scope: str
    subscriptions_seen: int | None
    requests: int | None
    pages: int | None
    rows: int | None
    retries: int | None
    throttled: int | None
    seconds: float | None
    partial: list[str]
    management_group_role_data: bool | None
    gaps: list[dict[str, Any]]
    gaps_left_out: int
    errors: list[str]
    errors_left_out: int


@dataclass
class ListedFinding:
    rule: str
    status: str
    severity: str
    resource: str  # label
    owner: str
    message: str
    exemption_id: str = ""
    expires_on: str = ""


@dataclass
class Changes:
    new_count: int | None  # from the run record
    fixed_count: int | None
    by_change: dict[str, int]  # Change -> findings
    new_failures: int
    new_failure_list: list[ListedFinding]
    new_failures_left_out: int


@dataclass
class Exemptions:
    exempted_findings: int
    exempted_by_status: dict[str, int]
    listed: list[ListedFinding]
    listed_left_out: int
    active: int | None  # from the run record's Exemptions
    records: dict[str, list[Any]]  # expiring / expired / stale, as the run record gives them (capped)
    records_left_out: dict[str, int]


@dataclass
class RunFacts:
    run_id: str
    status: str
    start: str
    end: str
    source: str
    scope: str
    subscriptions_seen: int | None
    tool_version: str
    rule_catalog_version: str
    finding_count_reported: int | None  # what the run record says
    findings_read: int  # what this report read


@dataclass
class ReportData:
    run: RunFacts
    overview: Overview
    worst_pairs: list[PairRow]
    worst_pairs_left_out: int
    matrix: Matrix
    owners: list[OwnerFailures]
    rules: list[RuleRow]
    coverage: CoverageFacts
    changes: Changes | None
    exemptions: Exemptions | None
    caps: dict[str, int]

    @classmethod
    def build(cls, findings: Iterable[dict], run: dict | None, rules: Iterable[Any] = ()) -> ReportData:
        """One pass over `findings` (records as in findings.jsonl); `run` is the run record (may be empty);
        `rules` is the rule catalog (`auditors.rules.catalog()`), used for titles of rules with no findings."""
        builder = _Builder(list(rules))
        for record in findings:
            builder.add(record)
        return builder.finish(run or {})

    def to_json(self) -> dict[str, Any]:
        return asdict(self, dict_factory=lambda items: {_camel(key): value for key, value in items})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# --- the single pass ---------------------------------------------------------------------------------------


class _Resource:
    __slots__ = ("blocking_exempted", "blocking_fail", "blocking_unknown", "key", "messages", "ref")

    def __init__(self, key: str, ref: ResourceRef) -> None:
        self.key, self.ref = key, ref  # pair keys reuse `key`, so a pair costs no new strings
        # cluster-scope blocking checks (AKS-ACR-005) stop every pull of the cluster: bitmasks over BLOCKING_RULES
        self.blocking_fail = self.blocking_exempted = self.blocking_unknown = 0
        self.messages: dict[str, str] | None = None


class _Pair:
    __slots__ = ("advisories", "cluster", "exempted", "failed", "owner", "registry", "root_cause", "seq",
                 "unknown", "verdict", "verdict_exempted")

    def __init__(self, cluster: _Resource, registry: _Resource, owner: str, seq: int) -> None:
        self.cluster, self.registry, self.owner, self.seq = cluster, registry, owner, seq
        self.failed = self.exempted = self.unknown = 0  # bitmasks over BLOCKING_RULES
        self.advisories: tuple[str, ...] = ()
        self.verdict: str | None = None  # from an AKS-ACR-000 row
        self.verdict_exempted = False
        self.root_cause = ""

    def final(self) -> tuple[str, int]:
        """(verdict, root-cause bit index or -1). Exempted failures do not make a pair Fail, but mark it Exempted."""
        failed = self.failed | self.cluster.blocking_fail
        exempted = self.exempted | self.cluster.blocking_exempted
        unknown = self.unknown | self.cluster.blocking_unknown
        if self.verdict is not None:
            verdict = EXEMPTED if self.verdict_exempted and self.verdict != PASS else self.verdict
            root = BLOCKING_RULES.index(self.root_cause) if self.root_cause in BLOCKING_RULES else -1
            return verdict, root
        if failed:
            return FAIL, _lowest_bit(failed)
        if unknown:
            return UNKNOWN, _lowest_bit(unknown)
        if exempted:
            return EXEMPTED, _lowest_bit(exempted)
        return PASS, -1

    def badness(self) -> tuple[int, int, int]:
        verdict, _ = self.final()
        failed = self.failed | self.cluster.blocking_fail
        unknown = self.unknown | self.cluster.blocking_unknown
        return _VERDICT_RANK[verdict], failed.bit_count(), unknown.bit_count()


_VERDICT_RANK = {FAIL: 3, UNKNOWN: 2, EXEMPTED: 1, PASS: 0, NOT_APPLICABLE: 0}


def _lowest_bit(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


class _PairMessages:
    """Messages of the blocking checks of the worst pairs so far, at most `cap` pairs.

    A pair's check rows only make it worse as they arrive, so keeping the worst `cap` by (badness, arrival) as
    we go gives the same pairs as ranking at the end, except for a pair that was pushed out and later got worse:
    its earlier messages are gone and the report shows the rule title instead.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.messages: dict[tuple[str, str], dict[str, CheckResult]] = {}
        self._rank: dict[tuple[str, str], tuple[tuple[int, int, int], int]] = {}
        self._heap: list[tuple[tuple[int, int, int], int, tuple[str, str]]] = []

    def note(self, key: tuple[str, str], pair: _Pair, check: CheckResult) -> None:
        rank = (pair.badness(), -pair.seq)
        if key not in self.messages:
            if len(self.messages) >= self.cap and not self._evict_below(rank):
                return
            self.messages[key] = {}
        if self._rank.get(key) != rank:
            self._rank[key] = rank
            heapq.heappush(self._heap, (rank[0], rank[1], key))
            if len(self._heap) > 4 * self.cap:  # drop superseded heap entries
                self._heap = [(r[0], r[1], k) for k, r in self._rank.items()]
                heapq.heapify(self._heap)
        self.messages[key][check.rule] = check

    def _evict_below(self, rank: tuple[tuple[int, int, int], int]) -> bool:
        while self._heap:
            badness, order, key = self._heap[0]
            if self._rank.get(key) != (badness, order):
                heapq.heappop(self._heap)  # superseded or evicted
                continue
            if (badness, order) >= rank:
                return False
            heapq.heappop(self._heap)
            del self.messages[key], self._rank[key]
            return True
        return True


class _OwnerBucket:
    __slots__ = ("entries", "exempted", "fail", "seen", "unknown")

    def __init__(self) -> None:
        self.fail = self.unknown = self.exempted = self.seen = 0
        self.entries: list[tuple[int, int, int, OwnerEntry]] | None = []  # min-heap: the weakest entry on top


class _Builder:
    def __init__(self, rules: list[Any]) -> None:
        self.catalog = {rule.meta.id: rule.meta for rule in rules}
        self.seq = 0
        self.status_counts: Counter = Counter()
        self.rule_counts: dict[str, Counter] = {}
        self.rule_exempted: Counter = Counter()
        self.rule_meta_seen: dict[str, tuple[str, str, str]] = {}  # rule -> (title, severity, scope) from findings
        self.rule_controls: dict[str, set[str]] = {}
        self.exempted_by_status: Counter = Counter()
        self.clusters: dict[str, _Resource] = {}
        self.registries: dict[str, _Resource] = {}
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.pair_messages = _PairMessages(MAX_WORST_PAIRS)
        self.owners: dict[str, _OwnerBucket] = {}
        self.owners_with_detail = 0
        self.change_counts: Counter = Counter()
        self.new_failures: list[ListedFinding] = []
        self.new_failure_count = 0
        self.exempted_listed: list[ListedFinding] = []
        self.saw_change = self.saw_exemption = False
        self.verdict_rows = 0

    # resources -------------------------------------------------------------------------------------------

    def _cluster(self, record: dict) -> _Resource | None:
        cluster_id = _text(record.get("ClusterId"))
        if not cluster_id:
            return None
        key = cluster_id.lower()
        found = self.clusters.get(key)
        if found is None:
            ref = ResourceRef(id=cluster_id, name=_text(record.get("ClusterName")) or cluster_id.rsplit("/", 1)[-1],
                              resource_group=resource_group_of(cluster_id) or _text(record.get("ResourceGroup")),
                              subscription=_text(record.get("SubscriptionId")), owner=_text(record.get("Owner")))
            found = self.clusters[key] = _Resource(key, ref)
        return found

    def _registry(self, record: dict) -> _Resource | None:
        registry_id = _text(record.get("RegistryId"))
        name = _text(record.get("RegistryName")) or _text(record.get("RegistryLoginServer"))
        if not registry_id and not name:
            return None
        # A declared registry missing from the inventory has no id; its declared name is all there is.
        key = registry_id.lower() if registry_id else f"declared:{name.lower()}"
        found = self.registries.get(key)
        if found is None:
            resource_group = resource_group_of(registry_id)
            if registry_id and not resource_group and record.get("Scope") == "registry":
                resource_group = _text(record.get("ResourceGroup"))
            ref = ResourceRef(id=registry_id, name=name or registry_id.rsplit("/", 1)[-1],
                              resource_group=resource_group, owner=_text(record.get("RegistryOwner")),
                              in_inventory=bool(registry_id))
            found = self.registries[key] = _Resource(key, ref)
        return found

    # one finding -------------------------------------------------------------------------------------------

    def add(self, record: dict) -> None:
        self.seq += 1
        rule = _text(record.get("RuleId"))
        status = _text(record.get("Status"))
        scope = _text(record.get("Scope"))
        exempted = _flag(record.get("Exempted"))
        # An exempted finding is counted once, as exempted, so the verdict counts are what is left to fix.
        self.status_counts[EXEMPTED if exempted else status] += 1
        counts = self.rule_counts.get(rule)
        if counts is None:
            counts = self.rule_counts[rule] = Counter()
        counts[EXEMPTED if exempted else status] += 1
        if rule not in self.rule_meta_seen:
            self.rule_meta_seen[rule] = (_text(record.get("RuleTitle")), _text(record.get("Severity")), scope)
        controls = _controls(record.get("Controls"))
        if controls:
            known = self.rule_controls.setdefault(rule, set())
            if len(known) < MAX_CONTROLS_PER_RULE:
                known.update(controls[: MAX_CONTROLS_PER_RULE - len(known)])
        if exempted:
            self.saw_exemption = True
            self.rule_exempted[rule] += 1
            self.exempted_by_status[status] += 1
        if "Exempted" in record or "ExemptionId" in record:
            self.saw_exemption = True

        cluster = self._cluster(record) if scope in ("cluster", "pair") else None
        registry = self._registry(record) if scope in ("registry", "pair") else None
        if scope == "pair" and cluster and registry:
            self._add_to_pair(record, rule, status, exempted, cluster, registry)
        elif scope == "cluster" and cluster and rule in BLOCKING_RULES and status in (FAIL, UNKNOWN):
            bit = 1 << BLOCKING_RULES.index(rule)
            if exempted:
                cluster.blocking_exempted |= bit
            elif status == FAIL:
                cluster.blocking_fail |= bit
            else:
                cluster.blocking_unknown |= bit
            if cluster.messages is None:
                cluster.messages = {}
            cluster.messages[rule] = _truncate(_text(record.get("Message")), MAX_MESSAGE_CHARS)

        change = _text(record.get("Change"))
        if change:
            self.saw_change = True
            self.change_counts[change] += 1
        if status in (FAIL, UNKNOWN) and rule != PAIR_VERDICT_RULE:
            self._add_to_owner(record, rule, status, scope, exempted, cluster, registry)
            if change == "New" and status == FAIL and not exempted:
                self.new_failure_count += 1
                if len(self.new_failures) < MAX_LISTED:
                    self.new_failures.append(self._listed(record, cluster, registry))
        if exempted and len(self.exempted_listed) < MAX_LISTED:
            self.exempted_listed.append(self._listed(record, cluster, registry))

    def _add_to_pair(self, record: dict, rule: str, status: str, exempted: bool, cluster: _Resource,
                     registry: _Resource) -> None:
        key = (cluster.key, registry.key)
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = _Pair(cluster, registry, _text(record.get("Owner")), self.seq)
        if rule == PAIR_VERDICT_RULE:
            self.verdict_rows += 1
            evidence = _evidence(record.get("Evidence"))
            pair.verdict = status if status in (PASS, FAIL, UNKNOWN) else UNKNOWN
            pair.verdict_exempted = exempted
            pair.root_cause = _text(evidence.get("rootCause"))
            if status in (FAIL, UNKNOWN):
                self.pair_messages.note(key, pair, CheckResult(rule, status, _truncate(
                    _text(record.get("Message")), MAX_MESSAGE_CHARS)))
                for check in evidence.get("checks") or ():
                    if isinstance(check, dict) and check.get("status") in (FAIL, UNKNOWN):
                        self.pair_messages.note(key, pair, CheckResult(
                            _text(check.get("rule")), _text(check.get("status")),
                            _truncate(_text(check.get("message")), MAX_MESSAGE_CHARS)))
            return
        if status not in (FAIL, UNKNOWN):
            return
        if rule not in BLOCKING_RULES:
            if status == FAIL and not exempted and rule not in pair.advisories:
                pair.advisories = (*pair.advisories, rule)
            return
        bit = 1 << BLOCKING_RULES.index(rule)
        if exempted:
            pair.exempted |= bit
        elif status == FAIL:
            pair.failed |= bit
        else:
            pair.unknown |= bit
        self.pair_messages.note(key, pair, CheckResult(
            rule, EXEMPTED if exempted else status, _truncate(_text(record.get("Message")), MAX_MESSAGE_CHARS)))

    def _add_to_owner(self, record: dict, rule: str, status: str, scope: str, exempted: bool,
                      cluster: _Resource | None, registry: _Resource | None) -> None:
        owner = _text(record.get("RegistryOwner" if scope == "registry" else "Owner")).strip() or NO_OWNER
        bucket = self.owners.get(owner)
        if bucket is None:
            bucket = self.owners[owner] = _OwnerBucket()
            if self.owners_with_detail < MAX_OWNERS_WITH_DETAIL:
                self.owners_with_detail += 1
            else:
                bucket.entries = None
        if exempted:
            bucket.exempted += 1
            return
        if status == FAIL:
            bucket.fail += 1
        else:
            bucket.unknown += 1
        bucket.seen += 1
        if bucket.entries is None:
            return
        severity = _text(record.get("Severity"))
        priority = (_STATUS_RANK.get(status, 0), _severity_rank(severity), -self.seq)
        if len(bucket.entries) >= MAX_ENTRIES_PER_OWNER and priority <= bucket.entries[0][:3]:
            return
        entry = OwnerEntry(
            rule=rule, title=_text(record.get("RuleTitle")), severity=severity, status=status, scope=scope,
            cluster=cluster.ref.label if cluster else "", registry=registry.ref.label if registry else "",
            resource_id=_text(record.get("ResourceId")),
            message=_truncate(_text(record.get("Message")), MAX_MESSAGE_CHARS),
            remediation=_truncate(_text(record.get("Remediation")), MAX_REMEDIATION_CHARS),
            first_seen=_text(record.get("FirstSeen")), change=_text(record.get("Change")),
            controls=_controls(record.get("Controls")))
        item = (*priority, entry)
        if len(bucket.entries) >= MAX_ENTRIES_PER_OWNER:
            heapq.heapreplace(bucket.entries, item)
        else:
            heapq.heappush(bucket.entries, item)

    @staticmethod
    def _listed(record: dict, cluster: _Resource | None, registry: _Resource | None) -> ListedFinding:
        where = " → ".join(r.ref.label for r in (cluster, registry) if r is not None)
        owner_field = "RegistryOwner" if record.get("Scope") == "registry" else "Owner"
        return ListedFinding(
            rule=_text(record.get("RuleId")), status=_text(record.get("Status")),
            severity=_text(record.get("Severity")), resource=where or _text(record.get("ResourceId")),
            owner=_text(record.get(owner_field)) or NO_OWNER,
            message=_truncate(_text(record.get("Message")), MAX_LISTED_MESSAGE_CHARS),
            exemption_id=_text(record.get("ExemptionId")), expires_on=_text(record.get("ExemptionExpiresOn")))

    # the end of the pass -----------------------------------------------------------------------------------

    def finish(self, run: dict) -> ReportData:
        overview, matrix, worst, worst_left_out = self._pairs_summary()
        caps = {"worstPairs": MAX_WORST_PAIRS, "entriesPerOwner": MAX_ENTRIES_PER_OWNER,
                "ownersWithDetail": MAX_OWNERS_WITH_DETAIL, "matrixClusters": MAX_MATRIX_CLUSTERS,
                "matrixRegistries": MAX_MATRIX_REGISTRIES, "listed": MAX_LISTED}
        return ReportData(run=self._run_facts(run), overview=overview, worst_pairs=worst,
                          worst_pairs_left_out=worst_left_out, matrix=matrix, owners=self._owners(),
                          rules=self._rules(), coverage=_coverage(run), changes=self._changes(run),
                          exemptions=self._exemptions(run), caps=caps)

    def _run_facts(self, run: dict) -> RunFacts:
        from auditors import __version__

        reported = run.get("FindingCount")
        return RunFacts(
            run_id=_text(run.get("RunId")), status=_text(run.get("RunStatus")), start=_text(run.get("StartTime")),
            end=_text(run.get("EndTime")), source=_text(run.get("Source")), scope=_text(run.get("Scope")),
            subscriptions_seen=run.get("SubscriptionsSeen"),
            tool_version=_text(run.get("ToolVersion")) or __version__,
            rule_catalog_version=_text(run.get("RuleCatalogVersion")),
            finding_count_reported=reported if isinstance(reported, int) else None, findings_read=self.seq)

    def _pairs_summary(self) -> tuple[Overview, Matrix, list[PairRow], int]:
        verdicts: Counter = Counter()
        per_cluster: dict[str, Counter] = {}
        per_registry: dict[str, Counter] = {}
        finals: dict[tuple[str, str], tuple[str, int]] = {}
        for key, pair in self.pairs.items():
            final = finals[key] = pair.final()
            verdicts[final[0]] += 1
            for axis, resource_key in ((per_cluster, key[0]), (per_registry, key[1])):
                counts = axis.setdefault(resource_key, Counter())
                counts[final[0]] += 1
                counts["pairs"] += 1

        failing = [(pair.badness(), -pair.seq, key) for key, pair in self.pairs.items()
                   if finals[key][0] in (FAIL, UNKNOWN)]
        worst_keys = [key for _, _, key in heapq.nlargest(MAX_WORST_PAIRS, failing)]
        worst = [self._pair_row(key, finals[key]) for key in worst_keys]

        def ranking(counts: Counter, ref: ResourceRef) -> tuple:
            return -counts[FAIL], -counts[UNKNOWN], -counts[EXEMPTED], ref.name.lower(), ref.resource_group.lower()

        cluster_keys = sorted(per_cluster, key=lambda k: ranking(per_cluster[k], self.clusters[k].ref))
        registry_keys = sorted(per_registry, key=lambda k: ranking(per_registry[k], self.registries[k].ref))
        shown_clusters, shown_registries = cluster_keys[:MAX_MATRIX_CLUSTERS], registry_keys[:MAX_MATRIX_REGISTRIES]
        cells = [[finals[(c, r)][0] if (c, r) in finals else NOT_PAIRED for r in shown_registries]
                 for c in shown_clusters]
        in_matrix_clusters, in_matrix_registries = set(shown_clusters), set(shown_registries)
        outside = Counter(final[0] for key, final in finals.items()
                          if key[0] not in in_matrix_clusters or key[1] not in in_matrix_registries)

        def axis(counts: Counter, resource: _Resource) -> MatrixAxis:
            return MatrixAxis(resource.ref, counts[FAIL], counts[UNKNOWN], counts[EXEMPTED], counts["pairs"])

        matrix = Matrix(
            clusters=[axis(per_cluster[k], self.clusters[k]) for k in shown_clusters],
            registries=[axis(per_registry[k], self.registries[k]) for k in shown_registries], cells=cells,
            clusters_left_out=len(cluster_keys) - len(shown_clusters),
            registries_left_out=len(registry_keys) - len(shown_registries),
            failing_pairs_left_out=outside[FAIL], unknown_pairs_left_out=outside[UNKNOWN])

        with_verdict_rows = sum(1 for pair in self.pairs.values() if pair.verdict is not None)
        source = ("derived" if not with_verdict_rows else
                  PAIR_VERDICT_RULE if with_verdict_rows == len(self.pairs) else "mixed")
        overview = Overview(
            clusters=len(self.clusters),
            registries=sum(1 for r in self.registries.values() if r.ref.in_inventory),
            registries_not_in_inventory=sum(1 for r in self.registries.values() if not r.ref.in_inventory),
            clusters_without_pairs=len(self.clusters) - len(per_cluster),
            clusters_that_cannot_pull=sum(1 for counts in per_cluster.values() if counts[FAIL]),
            pairs=len(self.pairs), pairs_pass=verdicts[PASS], pairs_fail=verdicts[FAIL],
            pairs_unknown=verdicts[UNKNOWN], pairs_exempted=verdicts[EXEMPTED], findings=self.seq,
            findings_by_status={status: self.status_counts[status] for status in STATUSES},
            findings_exempted=sum(self.rule_exempted.values()), verdict_source=source)
        return overview, matrix, worst, len(failing) - len(worst)

    def _pair_row(self, key: tuple[str, str], final: tuple[str, int]) -> PairRow:
        pair = self.pairs[key]
        verdict, root_bit = final
        kept = self.pair_messages.messages.get(key, {})
        cluster_messages = pair.cluster.messages or {}
        # An AKS-ACR-000 row lists its own checks (its blocking set may differ from ours); keep them as given.
        checks = [check for rule, check in kept.items() if rule != PAIR_VERDICT_RULE and rule not in BLOCKING_RULES]
        for bit, rule in enumerate(BLOCKING_RULES):
            if (pair.failed | pair.cluster.blocking_fail) >> bit & 1:
                status = FAIL
            elif (pair.unknown | pair.cluster.blocking_unknown) >> bit & 1:
                status = UNKNOWN
            elif (pair.exempted | pair.cluster.blocking_exempted) >> bit & 1:
                status = EXEMPTED
            elif rule in kept:  # reported only by the AKS-ACR-000 row's checks
                status = kept[rule].status
            else:
                continue
            message = kept[rule].message if rule in kept else cluster_messages.get(rule, "")
            checks.append(CheckResult(rule, status, message or self._title(rule)))
        if pair.verdict is not None and pair.root_cause:  # the verdict's root cause first
            checks.sort(key=lambda check: check.rule != pair.root_cause)
        root_rule = BLOCKING_RULES[root_bit] if root_bit >= 0 else pair.root_cause
        root_message = next((c.message for c in checks if c.rule == root_rule), "")
        if pair.verdict is not None and PAIR_VERDICT_RULE in kept:
            root_message = kept[PAIR_VERDICT_RULE].message  # the verdict's message leads with the root cause
        return PairRow(
            cluster=pair.cluster.ref, registry=pair.registry.ref, owner=pair.owner or NO_OWNER, verdict=verdict,
            root_cause=root_rule, root_cause_title=self._title(root_rule) if root_rule else "",
            root_cause_message=root_message, checks=checks, advisories=list(pair.advisories),
            verdict_source=PAIR_VERDICT_RULE if pair.verdict is not None else "derived")

    def _title(self, rule: str) -> str:
        if rule in self.catalog:
            return self.catalog[rule].title
        return self.rule_meta_seen.get(rule, ("", "", ""))[0] or rule

    def _owners(self) -> list[OwnerFailures]:
        result = []
        for owner, bucket in self.owners.items():
            if not (bucket.fail or bucket.unknown or bucket.exempted):
                continue
            entries = [item[3] for item in sorted(bucket.entries or (), reverse=True, key=lambda item: item[:3])]
            result.append(OwnerFailures(owner=owner, fail=bucket.fail, unknown=bucket.unknown,
                                        exempted=bucket.exempted, entries=entries,
                                        entries_left_out=bucket.seen - len(entries),
                                        detail_kept=bucket.entries is not None))
        result.sort(key=lambda o: (-o.fail, -o.unknown, o.owner == NO_OWNER, o.owner.lower()))
        return result

    def _rules(self) -> list[RuleRow]:
        rows = []
        for rule in sorted(set(self.catalog) | set(self.rule_counts)):
            meta = self.catalog.get(rule)
            title, severity, scope = self.rule_meta_seen.get(rule, ("", "", ""))
            if meta is not None:
                title, severity, scope = meta.title, meta.severity.value, meta.scope.value
            counts = self.rule_counts.get(rule, Counter())
            rows.append(RuleRow(rule=rule, title=title, severity=severity, scope=scope,
                                link=meta.links[0] if meta is not None and meta.links else "",
                                counts={status: counts[status] for status in STATUSES},
                                exempted=self.rule_exempted[rule],
                                controls=sorted(self.rule_controls.get(rule, ())), in_catalog=meta is not None))
        return rows

    def _changes(self, run: dict) -> Changes | None:
        if not (self.saw_change or "NewCount" in run or "FixedCount" in run):
            return None
        return Changes(new_count=run.get("NewCount"), fixed_count=run.get("FixedCount"),
                       by_change=dict(self.change_counts), new_failures=self.new_failure_count,
                       new_failure_list=self.new_failures,
                       new_failures_left_out=self.new_failure_count - len(self.new_failures))

    def _exemptions(self, run: dict) -> Exemptions | None:
        recorded = run.get("Exemptions") if isinstance(run.get("Exemptions"), dict) else None
        if not (self.saw_exemption or recorded):
            return None
        recorded = recorded or {}
        records, left_out = {}, {}
        for kind in ("expiring", "expired", "stale"):
            items = recorded.get(kind) or []
            items = list(items) if isinstance(items, list | tuple) else [items]
            records[kind] = items[:MAX_LISTED]
            left_out[kind] = max(0, len(items) - MAX_LISTED)
        active = recorded.get("active")
        if isinstance(active, list | tuple):  # the entries themselves rather than their number
            active = len(active)
        exempted = sum(self.rule_exempted.values())
        return Exemptions(exempted_findings=exempted, exempted_by_status=dict(self.exempted_by_status),
                          listed=self.exempted_listed, listed_left_out=exempted - len(self.exempted_listed),
                          active=active if isinstance(active, int) else None, records=records,
                          records_left_out=left_out)


def _coverage(run: dict) -> CoverageFacts:
    coverage = run.get("Coverage") if isinstance(run.get("Coverage"), dict) else {}
    gaps = [g if isinstance(g, dict) else {"reason": _text(g)} for g in coverage.get("gaps") or []]
    errors = [_text(e) for e in run.get("Errors") or []]

    def number(name: str) -> Any:
        value = coverage.get(name)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    return CoverageFacts(
        scope=_text(coverage.get("scope") or run.get("Scope")),
        subscriptions_seen=coverage.get("subscriptionsSeen", run.get("SubscriptionsSeen")),
        requests=number("requests"), pages=number("pages"), rows=number("rows"), retries=number("retries"),
        throttled=number("throttled429"), seconds=number("seconds"),
        partial=[_text(p) for p in coverage.get("partial") or []],
        management_group_role_data=coverage.get("managementGroupRoleData"),
        gaps=gaps[:MAX_LISTED], gaps_left_out=max(0, len(gaps) - MAX_LISTED),
        errors=errors[:MAX_LISTED], errors_left_out=max(0, len(errors) - MAX_LISTED))
