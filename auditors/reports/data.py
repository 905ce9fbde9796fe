"""Report data: one streaming pass over findings into counts plus a bounded amount of detail.

Counts cover every finding. Detail (messages, fix commands) is kept only for Fail and Unknown findings and
only up to the caps below, so an estate of hundreds of thousands of findings fits in a few tens of MB; every
list that was cut says how many entries it left out.

Pair verdicts come from the AKS-ACR-000 rows ("Cluster can pull from registry") where the findings have them.
Findings files of older runs have none; for those the verdict is derived here the way AKS-ACR-000 makes it: the
first blocking check that fails, in the order a pull meets them (BLOCKING_RULES), else the first that is Unknown.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from auditors.exemptions import EXPIRING_SOON_DAYS
from auditors.observed import ACCESS_CLASSES, CLASSES
from auditors.rules.pull_verdict import BLOCKING_RULES, observed_without_data

PASS, FAIL, UNKNOWN, NOT_APPLICABLE = "Pass", "Fail", "Unknown", "NotApplicable"
EXEMPTED = "Exempted"  # a matrix cell whose only failures are exempted
NOT_PAIRED = ""  # a matrix cell of a cluster and registry that are not a pair
STATUSES = (PASS, FAIL, UNKNOWN, NOT_APPLICABLE)

PAIR_VERDICT_RULE = "AKS-ACR-000"
OBSERVED_RULE = "AKS-ACR-002"
EXEMPTION_RULE = "AKS-ACR-013"
# Checks that stop a pull, in the order a pull meets them, as AKS-ACR-000 (auditors/rules/pull_verdict.py) orders
# them: the identity (AKS-ACR-005 kubelet identity, AKS-ACR-012 service principal; both evaluated on the cluster),
# its permission, the network route, private DNS, then what Container Insights saw (AKS-ACR-002, only where its
# data exists: an Unknown that carries no observed failures does not count). The other rules (cross-region pulls,
# service principals in use, registry posture) make pulls slower or riskier, not impossible.
STAGES = {"AKS-ACR-005": "identity", "AKS-ACR-012": "identity", "AKS-ACR-001": "permission",
          "AKS-ACR-003": "network", "AKS-ACR-004": "DNS", OBSERVED_RULE: "observed failures"}
NO_OWNER = "(no owner tag)"
# Exemption states, as the run record's Exemptions names them.
IN_FORCE, EXPIRING, EXPIRED, STALE = "active", "expiring", "expired", "stale"
UNDECIDED = "undecided"  # an AKS-ACR-013 finding left Unknown, read without a run record

MAX_WORST_PAIRS = 500
MAX_ENTRIES_PER_OWNER = 50
MAX_OWNERS_WITH_DETAIL = 200
MAX_MATRIX_CLUSTERS = 60
MAX_MATRIX_REGISTRIES = 40
MAX_LISTED = 50  # new and fixed findings, exempted findings, gaps, errors, observed pairs, exemption entries
MAX_MESSAGE_CHARS = 1000
MAX_REMEDIATION_CHARS = 4000
MAX_LISTED_MESSAGE_CHARS = 500
MAX_CONTROLS_PER_RULE = 20
MAX_CONTROLS = 500
MAX_OBSERVED_DETAIL = 5000  # pairs whose observed pull failures are kept in detail (the rest are counted)
MAX_EXEMPTION_IDS = 1000
MAX_OBSERVED_ITEMS = 3  # namespaces and client IPs shown per pair

_STATUS_RANK = {FAIL: 3, UNKNOWN: 2, PASS: 0, NOT_APPLICABLE: 0}
_SEVERITY_RANK = {"informational": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_RESOURCE_GROUP = re.compile(r"/resourcegroups/([^/]+)", re.IGNORECASE)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _controls(value: Any) -> list[str]:
    """Controls is a list in findings.jsonl and may be a JSON list or a comma-separated string in findings.csv."""
    if not value:
        return []
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return _controls(json.loads(value))
            except ValueError:
                pass
        return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
    if not isinstance(value, list | tuple):
        return [_text(value)]
    return [_text(part) for part in value if part]


def _evidence(value: Any) -> dict:
    """Evidence is an object in findings.jsonl and a JSON string in findings.csv."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _date(value: Any) -> date | None:
    match = _ISO_DATE.match(_text(value))
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(0))
    except ValueError:
        return None


def _cause_words(message: str, rule: str) -> str:
    """An AKS-ACR-000 message without its lead-in: `Cannot pull: AKS-ACR-001 (<title>): <the check's words>`."""
    if rule:
        for lead in ("Cannot pull: ", "Undecided, no check fails: "):
            head = f"{lead}{rule} ("
            if message.startswith(head) and "): " in message:
                return message.split("): ", 1)[1]
    return message


def resource_group_of(resource_id: str) -> str:
    match = _RESOURCE_GROUP.search(resource_id)
    return match.group(1) if match else ""


def _severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity.strip().lower(), 0)


def _control_key(control: str) -> tuple:
    """Controls grouped by framework (the part before ':'), numbers in numeric order (NS-2 before NS-10)."""
    framework, _, rest = control.partition(":")
    return framework.lower(), [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", rest)]


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
class ObservedPulls:
    """What Container Insights saw of one pair's pulls (AKS-ACR-002 evidence): failed pulls by class."""

    status: str  # the AKS-ACR-002 verdict of the pair
    classes: dict[str, int]  # class -> failed pulls, in the classifier's order
    access_classes: list[str]  # those that are access problems (Unauthorized, Forbidden, NameResolution, Unreachable)
    last_seen: str
    namespaces: list[str]
    client_ips: list[str]  # addresses ACR reported refusing (403)

    @property
    def failed_pulls(self) -> int:
        return sum(self.classes.values())


@dataclass
class PairRow:
    cluster: ResourceRef
    registry: ResourceRef
    owner: str
    verdict: str
    root_cause: str  # rule id
    root_cause_title: str
    root_cause_message: str
    checks: list[CheckResult]  # the blocking checks that did not pass, the root cause first
    advisories: list[str]  # non-blocking rules that failed for this pair
    verdict_source: str  # PAIR_VERDICT_RULE or "derived"
    root_cause_stage: str = ""  # identity, permission, network, DNS or observed failures
    observed: ObservedPulls | None = None
    change: str = ""  # the AKS-ACR-000 row's Change (New, Changed, Unchanged), when the findings carry it


@dataclass
class RootCauseRow:
    """How many pairs each blocking check stops (Fail) or leaves undecided (Unknown), as their root cause."""

    rule: str
    stage: str
    title: str
    fail: int
    unknown: int


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
    findings_by_status: dict[str, int] = field(default_factory=dict)  # not exempted
    findings_exempted: int = 0
    verdict_source: str = "derived"  # PAIR_VERDICT_RULE, "derived" or "mixed"
    pairs_with_observed_access_failures: int = 0


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
    causes: list[list[str]]  # [cluster][registry]: the root-cause rule of a cell that is not Pass, else ""
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
    counts: dict[str, int]  # not exempted
    exempted: int
    controls: list[str]
    in_catalog: bool


@dataclass
class ControlRow:
    """One compliance control: the findings of every rule that provides evidence for it."""

    control: str
    framework: str
    status: str  # the worst of its findings: Fail, Unknown, Exempted (a waived failure), Pass, else NotApplicable
    counts: dict[str, int]  # not exempted
    exempted: int
    rules: list[str]


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
    permissions: dict[str, Any] = field(default_factory=dict)  # what each optional source was allowed to read


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
    change: str = ""
    first_seen: str = ""


@dataclass
class ObservedPair:
    cluster: ResourceRef
    registry: ResourceRef
    verdict: str  # the pair's pull verdict
    observed: ObservedPulls


@dataclass
class ObservedSummary:
    """Image pulls Container Insights saw fail (AKS-ACR-002), over every pair with its data."""

    pairs_observed: int  # pairs whose cluster's Container Insights data was read
    pairs_not_observed: int  # AKS-ACR-002 Unknown without data (no Container Insights, workspace not read)
    pairs_with_failures: int
    pairs_with_access_failures: int
    failed_pulls_by_class: dict[str, int]
    pairs_by_class: dict[str, int]
    listed: list[ObservedPair]  # pairs with access failures, most failed pulls first
    listed_left_out: int


@dataclass
class Changes:
    new_count: int | None  # from the run record
    fixed_count: int | None
    by_change: dict[str, int]  # Change -> findings
    new_failures: int  # Fail or Unknown, not exempted, Change New (the run record's NewCount)
    new_failure_list: list[ListedFinding]
    new_failures_left_out: int
    fixed: int = 0  # Pass or NotApplicable now, Change Changed (was Fail or Unknown)
    fixed_list: list[ListedFinding] = field(default_factory=list)
    fixed_left_out: int = 0
    pairs_newly_failing: int = 0  # AKS-ACR-000 Fail now, not before (Change New or Changed), not exempted
    pairs_fixed: int = 0  # AKS-ACR-000 Pass now, not before (Change Changed)
    first_run: bool = False  # every finding is New: there was no previous run to compare with


@dataclass
class ExemptionEntry:
    """One entry of the exemptions file: its state from the run record (else from its AKS-ACR-013 finding) and
    its details from its AKS-ACR-013 finding."""

    id: str
    states: list[str]  # active (in force), expiring, expired, stale
    expires_on: str = ""
    approved_by: str = ""
    ticket: str = ""
    rules: list[str] = field(default_factory=list)
    justification: str = ""
    matched: int | None = None  # findings it selected in the run (AKS-ACR-013 evidence)
    exempted_here: int = 0  # findings of this report it exempts


@dataclass
class Exemptions:
    exempted_findings: int
    exempted_by_status: dict[str, int]
    listed: list[ListedFinding]
    listed_left_out: int
    active: int | None  # exemptions in force (including expiring and stale ones)
    records: dict[str, list[Any]]  # expiring / expired / stale, as the run record gives them (capped)
    records_left_out: dict[str, int]
    expiring: int = 0
    expired: int = 0
    stale: int = 0
    entries: list[ExemptionEntry] = field(default_factory=list)  # expired first, then expiring, stale, in force
    entries_left_out: int = 0
    states_from: str = ""  # "run record" or "findings" (AKS-ACR-013) or "" when neither says
    exempted_count_reported: int | None = None  # the run record's ExemptedCount


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
    exempted_count_reported: int | None = None  # the run record's ExemptedCount (FindingCount leaves them out)
    evidence_location: str = ""
    manifest_sha256: str = ""
    previous_manifest_sha256: str = ""
    chain_position: int | None = None
    exemptions_sha256: str = ""


@dataclass
class ReportData:
    run: RunFacts
    overview: Overview
    root_causes: list[RootCauseRow]
    worst_pairs: list[PairRow]
    worst_pairs_left_out: int
    matrix: Matrix
    observed: ObservedSummary | None
    owners: list[OwnerFailures]
    rules: list[RuleRow]
    controls: list[ControlRow]
    controls_left_out: int
    coverage: CoverageFacts
    changes: Changes | None
    exemptions: Exemptions | None
    caps: dict[str, int]

    @classmethod
    def build(cls, findings: Iterable[dict], run: dict | None, rules: Iterable[Any] = ()) -> ReportData:
        """One pass over `findings` (records as in findings.jsonl); `run` is the run record (may be empty);
        `rules` is the rule catalog (`auditors.rules.catalog()`), used for titles of rules with no findings."""
        builder = cls.builder(rules)
        for record in findings:
            builder.add(record)
        return builder.finish(run or {})

    @staticmethod
    def builder(rules: Iterable[Any] = ()) -> _Builder:
        """The single pass, to feed one record at a time (`add`) and `finish` with the run record."""
        return _Builder(list(rules))

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
        # cluster-scope blocking checks (AKS-ACR-005, AKS-ACR-012) stop every pull of the cluster: bitmasks over
        # BLOCKING_RULES
        self.blocking_fail = self.blocking_exempted = self.blocking_unknown = 0
        self.messages: dict[str, str] | None = None


class _Pair:
    __slots__ = ("advisories", "change", "cluster", "exempted", "failed", "observed", "owner", "registry",
                 "root_cause", "seq", "unknown", "verdict", "verdict_exempted")

    def __init__(self, cluster: _Resource, registry: _Resource, owner: str, seq: int) -> None:
        self.cluster, self.registry, self.owner, self.seq = cluster, registry, owner, seq
        self.failed = self.exempted = self.unknown = 0  # bitmasks over BLOCKING_RULES
        self.advisories: tuple[str, ...] = ()
        self.verdict: str | None = None  # from an AKS-ACR-000 row
        self.verdict_exempted = False
        self.root_cause = ""
        self.change = ""
        self.observed: ObservedPulls | None = None

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
    we go gives the same pairs as ranking at the end, except for a pair that was left out and later got worse.
    Its earlier messages come back from the last `recent` pairs' messages (findings arrive grouped by pair, so
    this is where they are); past that they are gone and the report shows the rule title instead.
    """

    def __init__(self, cap: int, recent: int = 64) -> None:
        self.cap, self.recent_cap = cap, recent
        self.messages: dict[tuple[str, str], dict[str, CheckResult]] = {}
        self._rank: dict[tuple[str, str], tuple[tuple[int, int, int], int]] = {}
        self._heap: list[tuple[tuple[int, int, int], int, tuple[str, str]]] = []
        self._recent: dict[tuple[str, str], dict[str, CheckResult]] = {}  # oldest first

    def note(self, key: tuple[str, str], pair: _Pair, check: CheckResult) -> None:
        rank = (pair.badness(), -pair.seq)
        if key not in self.messages:
            if len(self.messages) >= self.cap and not self._evict_below(rank):
                self._remember(key, {check.rule: check})
                return
            self.messages[key] = self._recent.pop(key, {})
        if self._rank.get(key) != rank:
            self._rank[key] = rank
            heapq.heappush(self._heap, (rank[0], rank[1], key))
            if len(self._heap) > 4 * self.cap:  # drop superseded heap entries
                self._heap = [(r[0], r[1], k) for k, r in self._rank.items()]
                heapq.heapify(self._heap)
        self.messages[key][check.rule] = check

    def _remember(self, key: tuple[str, str], checks: dict[str, CheckResult]) -> None:
        kept = self._recent.pop(key, {})
        kept.update(checks)
        self._recent[key] = kept  # now the newest
        if len(self._recent) > self.recent_cap:
            del self._recent[next(iter(self._recent))]

    def _evict_below(self, rank: tuple[tuple[int, int, int], int]) -> bool:
        while self._heap:
            badness, order, key = self._heap[0]
            if self._rank.get(key) != (badness, order):
                heapq.heappop(self._heap)  # superseded or evicted
                continue
            if (badness, order) >= rank:
                return False
            heapq.heappop(self._heap)
            del self._rank[key]
            self._remember(key, self.messages.pop(key))
            return True
        return True


class _TopListed:
    """The `cap` highest-priority listed findings of a kind, and how many there were."""

    def __init__(self, cap: int) -> None:
        self.cap, self.count = cap, 0
        self._heap: list[tuple[tuple, ListedFinding]] = []

    def offer(self, priority: tuple, make) -> None:
        self.count += 1
        if len(self._heap) >= self.cap and priority <= self._heap[0][0]:
            return
        item = (priority, make())
        if len(self._heap) >= self.cap:
            heapq.heapreplace(self._heap, item)
        else:
            heapq.heappush(self._heap, item)

    def items(self) -> list[ListedFinding]:
        return [item for _, item in sorted(self._heap, key=lambda entry: entry[0], reverse=True)]


class _OwnerBucket:
    __slots__ = ("entries", "exempted", "fail", "seen", "unknown")

    def __init__(self) -> None:
        self.fail = self.unknown = self.exempted = self.seen = 0
        self.entries: list[tuple[int, int, int, OwnerEntry]] | None = []  # min-heap: the weakest entry on top


def _observed_pulls(status: str, evidence: dict) -> ObservedPulls | None:
    """The failed pulls AKS-ACR-002 evidence counts, or None where it counts none."""
    classes = evidence.get("classes")
    if not isinstance(classes, dict) or not classes:
        return None
    counts = {}
    for name in (*CLASSES, *sorted(set(classes) - set(CLASSES))):
        count = _int(classes.get(name))
        if count:
            counts[_text(name)] = count
    if not counts:
        return None
    failures = evidence.get("failures") if isinstance(evidence.get("failures"), dict) else {}

    def strings(value: Any) -> list[str]:
        return [_text(item)[:200] for item in value[:MAX_OBSERVED_ITEMS]] if isinstance(value, list) else []

    return ObservedPulls(status=status, classes=counts,
                         access_classes=[name for name in counts if name in ACCESS_CLASSES],
                         last_seen=_text(failures.get("lastSeen"))[:40], namespaces=strings(failures.get("namespaces")),
                         client_ips=strings(failures.get("clientIps")))


class _Builder:
    def __init__(self, rules: list[Any]) -> None:
        self.catalog = {rule.meta.id: rule.meta for rule in rules}
        self.seq = 0
        self.status_counts: Counter = Counter()
        self.rule_counts: dict[str, Counter] = {}
        self.rule_exempted: Counter = Counter()
        self.rule_meta_seen: dict[str, tuple[str, str, str]] = {}  # rule -> (title, severity, scope) from findings
        self.rule_controls: dict[str, set[str]] = {}
        self.control_counts: dict[str, Counter] = {}  # control -> status (or Exempted) -> findings
        self.control_rules: dict[str, set[str]] = {}
        self.controls_left_out: set[str] = set()  # at most MAX_CONTROLS of them are remembered
        self.exempted_by_status: Counter = Counter()
        self.clusters: dict[str, _Resource] = {}
        self.registries: dict[str, _Resource] = {}
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.pair_messages = _PairMessages(MAX_WORST_PAIRS)
        self.owners: dict[str, _OwnerBucket] = {}
        self.owners_with_detail = 0
        self.change_counts: Counter = Counter()
        self.new_failures = _TopListed(MAX_LISTED)
        self.fixed = _TopListed(MAX_LISTED)
        self.pairs_newly_failing = self.pairs_fixed = 0
        self.exempted_listed: list[ListedFinding] = []
        self.exempted_by_id: Counter = Counter()
        self.exemption_findings: dict[str, tuple[str, dict, str]] = {}  # id -> (013 status, evidence, date)
        self.exemption_findings_left_out = 0
        self.saw_change = self.saw_exemption = False
        self.observed_pairs = self.observed_without_data = self.observed_detail_kept = 0
        self.observed_pulls: Counter = Counter()  # class -> failed pulls
        self.observed_pairs_by_class: Counter = Counter()
        self.observed_failing_pairs = self.observed_access_pairs = 0
        self.observed_access: list[tuple[tuple[int, int], tuple[str, str]]] = []  # min-heap of pairs to list

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
        counted_as = EXEMPTED if exempted else status
        self.status_counts[counted_as] += 1
        counts = self.rule_counts.get(rule)
        if counts is None:
            counts = self.rule_counts[rule] = Counter()
        counts[counted_as] += 1
        if rule not in self.rule_meta_seen:
            self.rule_meta_seen[rule] = (_text(record.get("RuleTitle")), _text(record.get("Severity")), scope)
        controls = _controls(record.get("Controls"))
        if controls:
            self._add_controls(rule, counted_as, controls)
        exemption_id = _text(record.get("ExemptionId"))
        if exempted:
            self.saw_exemption = True
            self.rule_exempted[rule] += 1
            self.exempted_by_status[status] += 1
            if exemption_id and (exemption_id in self.exempted_by_id or len(self.exempted_by_id) < MAX_EXEMPTION_IDS):
                self.exempted_by_id[exemption_id] += 1
        if rule == EXEMPTION_RULE:
            self._add_exemption_finding(record, status)

        evidence = None
        if rule == OBSERVED_RULE:
            evidence = _evidence(record.get("Evidence"))
        cluster = self._cluster(record) if scope in ("cluster", "pair") else None
        registry = self._registry(record) if scope in ("registry", "pair") else None
        if scope == "pair" and cluster and registry:
            self._add_to_pair(record, rule, status, exempted, cluster, registry, evidence)
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
            self._add_change(record, rule, status, exempted, change, cluster, registry)
        if status in (FAIL, UNKNOWN) and rule != PAIR_VERDICT_RULE:
            self._add_to_owner(record, rule, status, scope, exempted, cluster, registry)
        if exempted and len(self.exempted_listed) < MAX_LISTED:
            self.exempted_listed.append(self._listed(record, cluster, registry))

    def _add_controls(self, rule: str, counted_as: str, controls: list[str]) -> None:
        known = self.rule_controls.setdefault(rule, set())
        if len(known) < MAX_CONTROLS_PER_RULE:
            known.update(controls[: MAX_CONTROLS_PER_RULE - len(known)])
        for control in dict.fromkeys(controls):  # a control named twice in one finding counts once
            counts = self.control_counts.get(control)
            if counts is None:
                if len(self.control_counts) >= MAX_CONTROLS:
                    if len(self.controls_left_out) < MAX_CONTROLS:
                        self.controls_left_out.add(control)
                    continue
                counts = self.control_counts[control] = Counter()
                self.control_rules[control] = set()
            counts[counted_as] += 1
            rules = self.control_rules[control]
            if len(rules) < MAX_CONTROLS_PER_RULE:
                rules.add(rule)

    def _add_exemption_finding(self, record: dict, status: str) -> None:
        self.saw_exemption = True
        evidence = _evidence(record.get("Evidence"))
        exemption_id = _text(evidence.get("exemptionId")) or _text(record.get("ResourceId"))
        if not exemption_id:
            return
        if exemption_id not in self.exemption_findings and len(self.exemption_findings) >= MAX_EXEMPTION_IDS:
            self.exemption_findings_left_out += 1
            return
        kept = {key: evidence.get(key) for key in ("rules", "approvedBy", "expiresOn", "ticket", "justification",
                                                   "matchedFindings")}
        kept["justification"] = _truncate(_text(kept["justification"]), MAX_LISTED_MESSAGE_CHARS)
        self.exemption_findings[exemption_id] = (status, kept, _text(record.get("TimeGenerated")))

    def _add_change(self, record: dict, rule: str, status: str, exempted: bool, change: str,
                    cluster: _Resource | None, registry: _Resource | None) -> None:
        if rule == PAIR_VERDICT_RULE:  # also counted as findings below, as the run record's NewCount does
            if change in ("New", "Changed") and status == FAIL and not exempted:
                self.pairs_newly_failing += 1
            elif change == "Changed" and status == PASS:
                self.pairs_fixed += 1
        severity = _text(record.get("Severity"))
        if change == "New" and status in (FAIL, UNKNOWN) and not exempted:
            self.new_failures.offer((_STATUS_RANK[status], _severity_rank(severity), -self.seq),
                                    lambda: self._listed(record, cluster, registry))
        elif change == "Changed" and status in (PASS, NOT_APPLICABLE):
            self.fixed.offer((_severity_rank(severity), -self.seq), lambda: self._listed(record, cluster, registry))

    def _add_to_pair(self, record: dict, rule: str, status: str, exempted: bool, cluster: _Resource,
                     registry: _Resource, evidence: dict | None) -> None:
        key = (cluster.key, registry.key)
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = _Pair(cluster, registry, _text(record.get("Owner")), self.seq)
        if rule == PAIR_VERDICT_RULE:
            verdict_evidence = _evidence(record.get("Evidence"))
            pair.verdict = status if status in (PASS, FAIL, UNKNOWN) else UNKNOWN
            pair.verdict_exempted = exempted
            pair.root_cause = _text(verdict_evidence.get("rootCause"))
            pair.change = _text(record.get("Change"))
            if status in (FAIL, UNKNOWN):
                self.pair_messages.note(key, pair, CheckResult(rule, status, _truncate(
                    _text(record.get("Message")), MAX_MESSAGE_CHARS)))
                for check in verdict_evidence.get("checks") or ():
                    if isinstance(check, dict) and check.get("status") in (FAIL, UNKNOWN):
                        self.pair_messages.note(key, pair, CheckResult(
                            _text(check.get("rule")), _text(check.get("status")),
                            _truncate(_text(check.get("message")), MAX_MESSAGE_CHARS)))
            return
        if rule == OBSERVED_RULE:
            self._add_observed(key, pair, status, evidence or {})
            if observed_without_data(status, evidence):
                return  # no Container Insights data for this pair: nothing was observed, nothing blocks
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

    def _add_observed(self, key: tuple[str, str], pair: _Pair, status: str, evidence: dict) -> None:
        if observed_without_data(status, evidence):  # as AKS-ACR-000 reads it: no data
            self.observed_without_data += 1
            return
        self.observed_pairs += 1
        observed = _observed_pulls(status, evidence)
        if observed is None:
            return
        self.observed_failing_pairs += 1
        for name, count in observed.classes.items():
            self.observed_pulls[name] += count
            self.observed_pairs_by_class[name] += 1
        if observed.access_classes:
            self.observed_access_pairs += 1
            access = sum(observed.classes[name] for name in observed.access_classes)
            item = ((access, -self.seq), key, observed)
            if len(self.observed_access) < MAX_LISTED:
                heapq.heappush(self.observed_access, item)
            elif item[0] > self.observed_access[0][0]:
                heapq.heapreplace(self.observed_access, item)
        if self.observed_detail_kept < MAX_OBSERVED_DETAIL:
            pair.observed = observed
            self.observed_detail_kept += 1

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
            controls=_controls(record.get("Controls"))[:MAX_CONTROLS_PER_RULE])
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
            exemption_id=_text(record.get("ExemptionId")), expires_on=_text(record.get("ExemptionExpiresOn")),
            change=_text(record.get("Change")), first_seen=_text(record.get("FirstSeen")))

    # the end of the pass -----------------------------------------------------------------------------------

    def finish(self, run: dict) -> ReportData:
        overview, matrix, worst, worst_left_out, root_causes = self._pairs_summary()
        caps = {"worstPairs": MAX_WORST_PAIRS, "entriesPerOwner": MAX_ENTRIES_PER_OWNER,
                "ownersWithDetail": MAX_OWNERS_WITH_DETAIL, "matrixClusters": MAX_MATRIX_CLUSTERS,
                "matrixRegistries": MAX_MATRIX_REGISTRIES, "listed": MAX_LISTED, "controls": MAX_CONTROLS,
                "observedDetail": MAX_OBSERVED_DETAIL}
        controls = self._controls()
        return ReportData(run=self._run_facts(run), overview=overview, root_causes=root_causes, worst_pairs=worst,
                          worst_pairs_left_out=worst_left_out, matrix=matrix, observed=self._observed(),
                          owners=self._owners(), rules=self._rules(), controls=controls,
                          controls_left_out=len(self.controls_left_out), coverage=_coverage(run),
                          changes=self._changes(run), exemptions=self._exemptions(run), caps=caps)

    def _run_facts(self, run: dict) -> RunFacts:
        from auditors import __version__

        return RunFacts(
            run_id=_text(run.get("RunId")), status=_text(run.get("RunStatus")), start=_text(run.get("StartTime")),
            end=_text(run.get("EndTime")), source=_text(run.get("Source")), scope=_text(run.get("Scope")),
            subscriptions_seen=run.get("SubscriptionsSeen"),
            tool_version=_text(run.get("ToolVersion")) or __version__,
            rule_catalog_version=_text(run.get("RuleCatalogVersion")),
            finding_count_reported=_int(run.get("FindingCount")), findings_read=self.seq,
            exempted_count_reported=_int(run.get("ExemptedCount")),
            evidence_location=_text(run.get("EvidenceLocation")), manifest_sha256=_text(run.get("ManifestSha256")),
            previous_manifest_sha256=_text(run.get("PreviousManifestSha256")),
            chain_position=_int(run.get("ChainPosition")) if run.get("ManifestSha256") else None,
            exemptions_sha256=_text(run.get("ExemptionsSha256")))

    def _pairs_summary(self) -> tuple[Overview, Matrix, list[PairRow], int, list[RootCauseRow]]:
        verdicts: Counter = Counter()
        per_cluster: dict[str, Counter] = {}
        per_registry: dict[str, Counter] = {}
        finals: dict[tuple[str, str], tuple[str, int]] = {}
        causes: dict[str, Counter] = {}  # root-cause rule -> verdict -> pairs
        for key, pair in self.pairs.items():
            final = finals[key] = pair.final()
            verdicts[final[0]] += 1
            for axis, resource_key in ((per_cluster, key[0]), (per_registry, key[1])):
                counts = axis.setdefault(resource_key, Counter())
                counts[final[0]] += 1
                counts["pairs"] += 1
            if final[0] in (FAIL, UNKNOWN):
                causes.setdefault(self._root_rule(pair, final), Counter())[final[0]] += 1

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
        cell_causes = [[self._root_rule(self.pairs[(c, r)], finals[(c, r)])
                        if (c, r) in finals and finals[(c, r)][0] not in (PASS, NOT_APPLICABLE) else ""
                        for r in shown_registries] for c in shown_clusters]
        in_matrix_clusters, in_matrix_registries = set(shown_clusters), set(shown_registries)
        outside = Counter(final[0] for key, final in finals.items()
                          if key[0] not in in_matrix_clusters or key[1] not in in_matrix_registries)

        def axis(counts: Counter, resource: _Resource) -> MatrixAxis:
            return MatrixAxis(resource.ref, counts[FAIL], counts[UNKNOWN], counts[EXEMPTED], counts["pairs"])

        matrix = Matrix(
            clusters=[axis(per_cluster[k], self.clusters[k]) for k in shown_clusters],
            registries=[axis(per_registry[k], self.registries[k]) for k in shown_registries], cells=cells,
            causes=cell_causes, clusters_left_out=len(cluster_keys) - len(shown_clusters),
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
            findings_exempted=sum(self.rule_exempted.values()), verdict_source=source,
            pairs_with_observed_access_failures=self.observed_access_pairs)
        # Every blocking check in the order a pull meets it, then any other root cause a verdict row named ("" for
        # a verdict that names none, such as a declared registry that is not in the inventory).
        others = sorted(rule for rule in causes if rule not in BLOCKING_RULES)
        root_causes = []
        for rule in (*BLOCKING_RULES, *(rule for rule in others if rule), *(rule for rule in others if not rule)):
            counts = causes.get(rule, Counter())
            root_causes.append(RootCauseRow(rule=rule, stage=STAGES.get(rule, ""),
                                            title=self._title(rule) if rule else "", fail=counts[FAIL],
                                            unknown=counts[UNKNOWN]))
        return overview, matrix, worst, len(failing) - len(worst), root_causes

    @staticmethod
    def _root_rule(pair: _Pair, final: tuple[str, int]) -> str:
        return BLOCKING_RULES[final[1]] if final[1] >= 0 else pair.root_cause

    def _pair_row(self, key: tuple[str, str], final: tuple[str, int]) -> PairRow:
        pair = self.pairs[key]
        verdict = final[0]
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
        root_rule = self._root_rule(pair, final)
        checks.sort(key=lambda check: check.rule != root_rule)  # the root cause first, then in the order of a pull
        root_message = next((c.message for c in checks if c.rule == root_rule), "")
        if pair.verdict is not None and PAIR_VERDICT_RULE in kept:
            root_message = _cause_words(kept[PAIR_VERDICT_RULE].message, root_rule)
        return PairRow(
            cluster=pair.cluster.ref, registry=pair.registry.ref, owner=pair.owner or NO_OWNER, verdict=verdict,
            root_cause=root_rule, root_cause_title=self._title(root_rule) if root_rule else "",
            root_cause_message=root_message, checks=checks, advisories=list(pair.advisories),
            verdict_source=PAIR_VERDICT_RULE if pair.verdict is not None else "derived",
            root_cause_stage=STAGES.get(root_rule, ""), observed=pair.observed, change=pair.change)

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
            controls = self.rule_controls.get(rule) or (set(meta.controls) if meta is not None else set())
            rows.append(RuleRow(rule=rule, title=title, severity=severity, scope=scope,
                                link=meta.links[0] if meta is not None and meta.links else "",
                                counts={status: counts[status] for status in STATUSES},
                                exempted=self.rule_exempted[rule], controls=sorted(controls, key=_control_key),
                                in_catalog=meta is not None))
        return rows

    def _controls(self) -> list[ControlRow]:
        rows = []
        for control, counts in self.control_counts.items():
            status = next((s for s in (FAIL, UNKNOWN, EXEMPTED, PASS) if counts[s]), NOT_APPLICABLE)
            rows.append(ControlRow(control=control, framework=control.partition(":")[0] if ":" in control else "",
                                   status=status, counts={s: counts[s] for s in STATUSES}, exempted=counts[EXEMPTED],
                                   rules=sorted(self.control_rules[control])))
        rows.sort(key=lambda row: _control_key(row.control))
        return rows

    def _changes(self, run: dict) -> Changes | None:
        new_count, fixed_count = _int(run.get("NewCount")), _int(run.get("FixedCount"))
        # A run record without change tracking still has the columns (0); only findings that carry Change, or
        # counts that say something, make this section.
        if not (self.saw_change or new_count or fixed_count):
            return None
        new, fixed = self.new_failures.items(), self.fixed.items()
        return Changes(new_count=new_count, fixed_count=fixed_count, by_change=dict(self.change_counts),
                       new_failures=self.new_failures.count, new_failure_list=new,
                       new_failures_left_out=self.new_failures.count - len(new), fixed=self.fixed.count,
                       fixed_list=fixed, fixed_left_out=self.fixed.count - len(fixed),
                       pairs_newly_failing=self.pairs_newly_failing, pairs_fixed=self.pairs_fixed,
                       first_run=set(self.change_counts) == {"New"})

    def _observed(self) -> ObservedSummary | None:
        if not (self.observed_pairs or self.observed_without_data):
            return None
        listed = []
        for _, key, observed in sorted(self.observed_access, key=lambda item: item[0], reverse=True):
            pair = self.pairs[key]
            listed.append(ObservedPair(pair.cluster.ref, pair.registry.ref, pair.final()[0], observed))
        order = {name: index for index, name in enumerate(CLASSES)}

        def ordered(counts: Counter) -> dict[str, int]:
            return {name: counts[name] for name in sorted(counts, key=lambda n: (order.get(n, len(order)), n))}

        return ObservedSummary(
            pairs_observed=self.observed_pairs, pairs_not_observed=self.observed_without_data,
            pairs_with_failures=self.observed_failing_pairs, pairs_with_access_failures=self.observed_access_pairs,
            failed_pulls_by_class=ordered(self.observed_pulls), pairs_by_class=ordered(self.observed_pairs_by_class),
            listed=listed, listed_left_out=self.observed_access_pairs - len(listed))

    def _exemptions(self, run: dict) -> Exemptions | None:
        recorded = run.get("Exemptions") if isinstance(run.get("Exemptions"), dict) else None
        if not (self.saw_exemption or recorded):
            return None
        recorded = recorded or {}
        records, left_out = {}, {}
        for kind in (EXPIRING, EXPIRED, STALE):
            items = recorded.get(kind) or []
            items = list(items) if isinstance(items, list | tuple) else [items]
            records[kind] = items[:MAX_LISTED]
            left_out[kind] = max(0, len(items) - MAX_LISTED)
        entries = self._exemption_entries(recorded)
        states_from = ("run record" if any(kind in recorded for kind in (IN_FORCE, EXPIRING, EXPIRED, STALE))
                       else "findings" if self.exemption_findings else "")
        counted = Counter(state for entry in entries for state in entry.states)
        active = recorded.get(IN_FORCE)
        if isinstance(active, list | tuple):  # the entries themselves rather than their number
            active = len(active)
        if _int(active) is None:
            active = counted[IN_FORCE] if entries else None

        def number(kind: str) -> int:
            items = recorded.get(kind)
            return len(items) if isinstance(items, list | tuple) else counted[kind]

        exempted = sum(self.rule_exempted.values())
        shown = entries[:MAX_LISTED]
        return Exemptions(exempted_findings=exempted, exempted_by_status=dict(self.exempted_by_status),
                          listed=self.exempted_listed, listed_left_out=exempted - len(self.exempted_listed),
                          active=active, records=records, records_left_out=left_out, expiring=number(EXPIRING),
                          expired=number(EXPIRED), stale=number(STALE), entries=shown,
                          entries_left_out=len(entries) - len(shown) + self.exemption_findings_left_out,
                          states_from=states_from, exempted_count_reported=_int(run.get("ExemptedCount")))

    def _exemption_entries(self, recorded: dict) -> list[ExemptionEntry]:
        """Every exemption the run record or the AKS-ACR-013 findings name, worst state first."""
        states: dict[str, list[str]] = {}
        expiry: dict[str, str] = {}
        for kind in (IN_FORCE, EXPIRING, EXPIRED, STALE):
            items = recorded.get(kind)
            for item in items if isinstance(items, list | tuple) else ():
                identifier = _text(item.get("id") if isinstance(item, dict) else item)
                if not identifier or (identifier not in states and len(states) >= MAX_EXEMPTION_IDS):
                    continue
                states.setdefault(identifier, [])
                if kind not in states[identifier]:
                    states[identifier].append(kind)
                if isinstance(item, dict) and item.get("expiresOn"):
                    expiry[identifier] = _text(item["expiresOn"])
        from_record = bool(states)
        for identifier, (status, evidence, when) in self.exemption_findings.items():
            if from_record and identifier in states:
                continue
            if status == UNKNOWN:  # the check decided nothing; exempting findings shows it was in force
                states[identifier] = [IN_FORCE] if identifier in self.exempted_by_id else [UNDECIDED]
                continue
            derived = [EXPIRED] if status == FAIL else [IN_FORCE]
            if status != FAIL:  # what the run record would say, from the finding alone
                expires, today = _date(evidence.get("expiresOn")), _date(when)
                if expires and today and (expires - today).days <= EXPIRING_SOON_DAYS:
                    derived.append(EXPIRING)
                if evidence.get("matchedFindings") == 0:
                    derived.append(STALE)
            states[identifier] = derived
        for identifier in self.exempted_by_id:
            states.setdefault(identifier, [IN_FORCE])  # exempts findings, so it was in force
        entries = []
        for identifier, kinds in states.items():
            _, evidence, _ = self.exemption_findings.get(identifier, ("", {}, ""))
            if EXPIRED not in kinds and IN_FORCE not in kinds and UNDECIDED not in kinds:
                kinds = [IN_FORCE, *kinds]  # expiring and stale entries are in force
            rules = evidence.get("rules")
            entries.append(ExemptionEntry(
                id=identifier, states=kinds,
                expires_on=expiry.get(identifier) or _text(evidence.get("expiresOn")),
                approved_by=_text(evidence.get("approvedBy")), ticket=_text(evidence.get("ticket")),
                rules=[_text(r) for r in rules[:MAX_CONTROLS_PER_RULE]] if isinstance(rules, list) else [],
                justification=_text(evidence.get("justification")), matched=_int(evidence.get("matchedFindings")),
                exempted_here=self.exempted_by_id.get(identifier, 0)))
        rank = {EXPIRED: 0, EXPIRING: 1, STALE: 2}
        entries.sort(key=lambda e: (min((rank.get(k, 3) for k in e.states), default=3), e.expires_on, e.id))
        return entries


def _coverage(run: dict) -> CoverageFacts:
    coverage = run.get("Coverage") if isinstance(run.get("Coverage"), dict) else {}
    gaps = [g if isinstance(g, dict) else {"reason": _text(g)} for g in coverage.get("gaps") or []]
    errors = [_text(e) for e in run.get("Errors") or []]
    permissions = run.get("Permissions") if isinstance(run.get("Permissions"), dict) else {}

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
        errors=errors[:MAX_LISTED], errors_left_out=max(0, len(errors) - MAX_LISTED),
        permissions={_text(name): value for name, value in list(permissions.items())[:MAX_LISTED]})
