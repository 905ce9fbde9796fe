"""Batch evaluation: every registry, every cluster and every cluster-registry pair, once each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auditors.exemptions import ExemptionSet
from auditors.findings import Finding, finding_id_of_keys, finding_key
from auditors.model import T_REGISTRY, Cluster, Inventory, Registry
from auditors.pairing import Pair, PairsConfig, pairs_for_cluster
from auditors.rules import Result, Rule, Scope, Status, catalog, unknown
from auditors.rules.context import ClusterContext, Environment, PairContext, RegistryContext
from auditors.rules.exemption_expiry import ExemptionContext

Progress = Callable[[str], None]
# A registry's findings cost about a fifth of a cluster's with its pairs (measured on the synthetic estate): shares
# of the evaluation (auditors.workers) are cut so that the first, which has the registries, is not the slowest.
REGISTRY_WEIGHT = 0.2


def _moment(inventory: Inventory) -> datetime:
    """The time verdicts are made for: when the data was captured (a replayed snapshot gives the same verdicts
    later), else now."""
    if inventory.captured_at:
        try:
            return datetime.fromisoformat(inventory.captured_at.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)


class _Placeholders(dict):
    def __missing__(self, key: str) -> str:
        return f"<{key.replace('_', '-')}>"


def _remediation(rule: Rule, result: Result, values: dict[str, str]) -> str:
    template = result.fix.get("remediation") or rule.meta.remediation  # a result may need another kind of fix
    fills = {k: v for k, v in result.fix.items() if k != "remediation"}
    return template.format_map(_Placeholders({k: v for k, v in values.items() if v}, **fills))


class Evaluator:
    def __init__(self, inventory: Inventory, config: PairsConfig, *, run_id: str, time_generated: str,
                 progress: Progress | None = None, now: datetime | None = None,
                 credential_warn_days: int = 30, pull_lookback: timedelta = timedelta(days=1),
                 exemptions: ExemptionSet | None = None) -> None:
        self.inventory = inventory
        self.config = config
        self.exemptions = exemptions
        self.env = Environment(inventory, config.principals, config.groups, now=now or _moment(inventory),
                               credential_warn_days=credential_warn_days, pull_lookback=pull_lookback)
        self.run_id = run_id
        self.time_generated = time_generated
        self.progress = progress
        rules = catalog()
        self.rules = {scope: [r for r in rules if r.meta.scope == scope] for scope in Scope}
        self._meta = {r.meta.id: _RuleColumns.of(r.meta) for r in rules}
        self._subjects: dict[str, _Subject] = {}
        self._keys: dict[str, str] = {}  # resource id -> finding_key
        self.pair_count = 0
        self.unpaired_clusters = 0

    def run(self) -> Iterator[Finding]:
        """Every finding, in order: registries, clusters with their pairs, then one per exemption."""
        yield from self.share(0, 1)
        yield from self.tail()

    def share(self, index: int, shares: int) -> Iterator[Finding]:
        """Share `index` of `shares` (from 0): the registries' findings in the first, then one contiguous run of
        clusters each, about the same work in each. The shares in order, then `tail`, are `run`. Progress is
        reported here only for the whole estate in one share (auditors.workers reports it for shares)."""
        if index == 0:
            for registry in self.inventory.registries.values():
                yield from self._registry(registry)
        clusters = list(self.inventory.clusters.values())
        registries = REGISTRY_WEIGHT * len(self.inventory.registries)  # in clusters' worth of work

        def cut(share: int) -> int:  # the first cluster of this share: every share about the same work
            return min(len(clusters), max(0, round((len(clusters) + registries) * share / shares - registries)))

        first, end = cut(index), cut(index + 1)
        total, last_report = end - first, time.monotonic()
        progress = self.progress if shares == 1 else None
        for done, cluster in enumerate(clusters[first:end], start=1):
            yield from self._cluster(cluster)
            if progress and time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                progress(f"evaluated {done:,}/{total:,} clusters, {self.pair_count:,} pairs")

    def tail(self) -> Iterator[Finding]:
        """The findings made after every other: one per exemption (so its match count is complete)."""
        if self.exemptions is not None:
            yield from self._exemption_findings()

    def cluster_findings(self, cluster: Cluster, registry: Registry | None = None) -> list[Finding]:
        """Every finding about one cluster: its own, its pairs' (or only the pair with `registry`, evaluated even
        when nothing declares it) and those of the registries it pairs with."""
        if registry is None:
            findings = list(self._cluster(cluster))
        else:
            ctx = ClusterContext(cluster, self.env)
            principal = ctx.principal.object_id
            findings = [self._finding(rule, ctx.result(rule.meta.id), cluster=cluster, principal=principal,
                                      resource_ids=[cluster.id]) for rule in self.rules[Scope.CLUSTER]]
            pairs = pairs_for_cluster(cluster, self.inventory, self.config, self.env.roles, principal,
                                      self.env.observed)
            declared = next((p for p in pairs if p.registry_key == registry.key), None)
            findings += self._pair(ctx, declared or Pair(cluster.key, registry.key, registry.name, ["explain"]),
                                   principal)
        paired = {f.RegistryId.lower() for f in findings if f.RegistryId}
        for candidate in self.inventory.registries.values():
            if candidate.id.lower() in paired:
                findings += self._registry(candidate)
        return findings

    def _registry(self, registry: Registry) -> Iterator[Finding]:
        ctx = RegistryContext(registry, self.env)
        for rule in self.rules[Scope.REGISTRY]:
            yield self._finding(rule, ctx.result(rule.meta.id), registry=registry, resource_ids=[registry.id])

    def _exemption_findings(self) -> Iterator[Finding]:
        """One AKS-ACR-013 finding per exemption, after every other finding (so its match count is complete)."""
        for rule in self.rules[Scope.EXEMPTION]:
            for exemption in self.exemptions:
                ctx = ExemptionContext(exemption, self.exemptions.today, self.exemptions.matched(exemption))
                try:
                    result = rule.check(ctx)
                except Exception as exc:  # a rule bug must not drop the finding
                    result = unknown(f"Internal error while evaluating {rule.meta.id}: {type(exc).__name__}: {exc}")
                finding = self._finding(rule, result, resource_ids=[f"exemption:{exemption.id.lower()}"])
                finding.ResourceId = f"exemption:{exemption.id}"
                finding.Owner = exemption.approved_by
                yield finding

    def _cluster(self, cluster: Cluster) -> Iterator[Finding]:
        ctx = ClusterContext(cluster, self.env)
        principal = ctx.principal.object_id
        for rule in self.rules[Scope.CLUSTER]:
            yield self._finding(rule, ctx.result(rule.meta.id), cluster=cluster, principal=principal,
                                resource_ids=[cluster.id])
        pairs = pairs_for_cluster(cluster, self.inventory, self.config, self.env.roles, principal, self.env.observed)
        if not pairs:
            self.unpaired_clusters += 1
        for pair in pairs:
            self.pair_count += 1
            yield from self._pair(ctx, pair, principal)

    def _pair(self, ctx: ClusterContext, pair: Pair, principal: str) -> Iterator[Finding]:
        registry = self.inventory.registries.get(pair.registry_key)
        source = ",".join(pair.sources)
        if registry is None:
            ids = [ctx.cluster.id, f"declared:{pair.declared.lower()}"]
            gaps = self.inventory.missing([T_REGISTRY], None)
            hint = (f" Registries could not be collected everywhere ({'; '.join(g.reason for g in gaps[:3])})."
                    if gaps else " Check the spelling, or collect the registry's subscription.")
            result = unknown(f"Registry {pair.declared!r}, declared by {source}, is not in the inventory: "
                             f"{pair.problem}.{hint}", declared=pair.declared, problem=pair.problem)
            for rule in self.rules[Scope.PAIR]:
                yield self._finding(rule, result, cluster=ctx.cluster, principal=principal, source=source,
                                    resource_ids=ids, declared=pair.declared)
            return
        pair_ctx = PairContext(ctx, registry)
        for rule in self.rules[Scope.PAIR]:
            yield self._finding(rule, pair_ctx.result(rule.meta.id), cluster=ctx.cluster, registry=registry,
                                principal=principal, source=source, resource_ids=[ctx.cluster.id, registry.id])

    def _finding(self, rule: Rule, result: Result, *, resource_ids: list[str], cluster: Cluster | None = None,
                 registry: Registry | None = None, principal: str = "", source: str = "",
                 declared: str = "") -> Finding:
        meta = self._meta[rule.meta.id]
        on_cluster = self._about(cluster) if cluster else _NOBODY
        on_registry = self._about(registry) if registry else _NOBODY
        subject = on_cluster if cluster else on_registry
        status = _STATUS_TEXT[result.status]
        remediation = ""
        if status in _NEEDS_REMEDIATION:
            remediation = _remediation(rule, result, {
                "principal_id": principal, "cluster_name": on_cluster.name, "cluster_rg": on_cluster.resource_group,
                "cluster_id": on_cluster.id, "cluster_location": on_cluster.location,
                "registry_name": on_registry.name if registry else declared,
                "registry_rg": on_registry.resource_group, "registry_id": on_registry.id,
                "registry_login_server": on_registry.login_server,
            })
        exemption = self.exemptions.match(meta.id, cluster, registry) if self.exemptions is not None and \
            meta.scope != Scope.EXEMPTION else None
        return Finding(  # positionally, in column order: a third of the cost of naming 32 arguments
            self.time_generated,  # TimeGenerated
            self.run_id,  # RunId
            finding_id_of_keys(meta.id_upper, [self._key(r) for r in resource_ids]),  # FindingId
            meta.id,  # RuleId
            meta.title,  # RuleTitle
            meta.severity,  # Severity
            meta.category,  # Category
            status,  # Status
            meta.scope,  # Scope
            on_cluster.id,  # ClusterId
            on_cluster.name,  # ClusterName
            on_registry.id,  # RegistryId
            on_registry.name if registry else declared,  # RegistryName
            on_registry.login_server,  # RegistryLoginServer
            subject.id,  # ResourceId
            subject.subscription_id,  # SubscriptionId
            subject.resource_group,  # ResourceGroup
            principal,  # PrincipalId
            on_cluster.owner or on_registry.owner,  # Owner
            on_registry.owner,  # RegistryOwner
            source,  # PairSource
            result.message,  # Message
            remediation,  # Remediation
            meta.controls,  # Controls
            exemption is not None,  # Exempted
            exemption.id if exemption else "",  # ExemptionId
            exemption.expires_on.isoformat() if exemption else None,  # ExemptionExpiresOn
            None, "", "", None,  # FirstSeen, Change, LastKnownStatus, LastSeen: set by the change tracker
            result.evidence,  # Evidence
        )

    def _key(self, resource_id: str) -> str:
        key = self._keys.get(resource_id)
        if key is None:
            key = self._keys[resource_id] = finding_key(resource_id)
        return key

    def _about(self, resource: Cluster | Registry) -> _Subject:
        """The facts every finding about this resource repeats, worked out once per resource."""
        about = self._subjects.get(resource.id)
        if about is None:
            about = self._subjects[resource.id] = _Subject(
                resource.id, resource.name, resource.resource_group, resource.subscription_id, resource.location,
                resource.owner, getattr(resource, "login_server", ""))
        return about


@dataclass(frozen=True, slots=True)
class _Subject:
    id: str
    name: str
    resource_group: str
    subscription_id: str
    location: str
    owner: str
    login_server: str


@dataclass(frozen=True, slots=True)
class _RuleColumns:
    """A rule's metadata as finding columns: the same strings and one shared Controls list for every finding."""

    id: str
    id_upper: str
    title: str
    severity: str
    category: str
    scope: str
    controls: list[str]

    @classmethod
    def of(cls, meta) -> _RuleColumns:
        return cls(meta.id, meta.id.upper(), meta.title, meta.severity.value, meta.category, meta.scope.value,
                   list(meta.controls))


_NOBODY = _Subject("", "", "", "", "", "", "")
_STATUS_TEXT = {status: status.value for status in Status}
_NEEDS_REMEDIATION = frozenset({Status.FAIL.value, Status.UNKNOWN.value})
