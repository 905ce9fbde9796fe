"""Batch evaluation: every registry, every cluster and every cluster-registry pair, once each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from auditors.arm import subscription_of
from auditors.findings import Finding, finding_id
from auditors.model import T_REGISTRY, Cluster, Inventory, Registry
from auditors.pairing import Pair, PairsConfig, pairs_for_cluster
from auditors.rules import Result, Rule, Scope, Status, catalog, unknown
from auditors.rules.context import ClusterContext, Environment, PairContext, RegistryContext

Progress = Callable[[str], None]


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
    if result.status not in (Status.FAIL, Status.UNKNOWN):
        return ""
    return rule.meta.remediation.format_map(_Placeholders({k: v for k, v in values.items() if v}, **result.fix))


def _check(rule: Rule, ctx, subscriptions: set[str]) -> Result:
    try:
        result = rule.check(ctx)
    except Exception as exc:  # a rule bug on one odd row must not drop every other finding
        return unknown(f"Internal error while evaluating {rule.meta.id}: {type(exc).__name__}: {exc}",
                       error=type(exc).__name__)
    return _unless_data_missing(rule, result, ctx.inventory, subscriptions)


def _unless_data_missing(rule: Rule, result: Result, inventory: Inventory, subscriptions: set[str]) -> Result:
    """A Fail reached while collection missed data the rule depends on becomes Unknown, naming the gap."""
    if result.status != Status.FAIL or not inventory.gaps:
        return result
    gaps = inventory.missing(rule.meta.needs, subscriptions) + inventory.missing(rule.meta.needs_anywhere, None)
    if not gaps:
        return result
    reasons = "; ".join(dict.fromkeys(f"{gap.query}: {gap.reason}" for gap in gaps))
    return unknown(f"{result.message} This may be wrong: data it depends on could not be collected ({reasons}).",
                   **result.evidence, wouldFail=True, missingData=[gap.to_dict() for gap in gaps[:10]])


class Evaluator:
    def __init__(self, inventory: Inventory, config: PairsConfig, *, run_id: str, time_generated: str,
                 progress: Progress | None = None, now: datetime | None = None,
                 credential_warn_days: int = 30) -> None:
        self.inventory = inventory
        self.config = config
        self.env = Environment(inventory, config.principals, config.groups, now=now or _moment(inventory),
                               credential_warn_days=credential_warn_days)
        self.run_id = run_id
        self.time_generated = time_generated
        self.progress = progress
        rules = catalog()
        self.rules = {scope: [r for r in rules if r.meta.scope == scope] for scope in Scope}
        self.pair_count = 0
        self.unpaired_clusters = 0

    def run(self) -> Iterator[Finding]:
        for registry in self.inventory.registries.values():
            ctx = RegistryContext(registry, self.env)
            for rule in self.rules[Scope.REGISTRY]:
                yield self._finding(rule, _check(rule, ctx, {registry.subscription_id}), registry=registry,
                                    resource_ids=[registry.id])
        total, last_report = len(self.inventory.clusters), time.monotonic()
        for done, cluster in enumerate(self.inventory.clusters.values(), start=1):
            yield from self._cluster(cluster)
            if self.progress and time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                self.progress(f"evaluated {done:,}/{total:,} clusters, {self.pair_count:,} pairs")

    def _cluster(self, cluster: Cluster) -> Iterator[Finding]:
        ctx = ClusterContext(cluster, self.env)
        principal = ctx.principal.object_id
        subscriptions = {cluster.subscription_id, subscription_of(cluster.kubelet_resource_id)} - {""}
        for rule in self.rules[Scope.CLUSTER]:
            yield self._finding(rule, _check(rule, ctx, subscriptions), cluster=cluster, principal=principal,
                                resource_ids=[cluster.id])
        pairs = pairs_for_cluster(cluster, self.inventory, self.config, self.env.roles, principal)
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
        subscriptions = {ctx.cluster.subscription_id, registry.subscription_id}
        for rule in self.rules[Scope.PAIR]:
            yield self._finding(rule, _check(rule, pair_ctx, subscriptions), cluster=ctx.cluster, registry=registry,
                                principal=principal, source=source, resource_ids=[ctx.cluster.id, registry.id])

    def _finding(self, rule: Rule, result: Result, *, resource_ids: list[str], cluster: Cluster | None = None,
                 registry: Registry | None = None, principal: str = "", source: str = "",
                 declared: str = "") -> Finding:
        meta = rule.meta
        subject = cluster or registry
        values = {
            "principal_id": principal,
            "cluster_name": cluster.name if cluster else "", "cluster_rg": cluster.resource_group if cluster else "",
            "cluster_id": cluster.id if cluster else "", "cluster_location": cluster.location if cluster else "",
            "registry_name": registry.name if registry else declared,
            "registry_rg": registry.resource_group if registry else "", "registry_id": registry.id if registry else "",
        }
        owner = (cluster.owner if cluster else "") or (registry.owner if registry else "")
        return Finding(
            TimeGenerated=self.time_generated,
            RunId=self.run_id,
            FindingId=finding_id(meta.id, *resource_ids),
            RuleId=meta.id,
            RuleTitle=meta.title,
            Severity=meta.severity.value,
            Category=meta.category,
            Status=result.status.value,
            Scope=meta.scope.value,
            ClusterId=cluster.id if cluster else "",
            ClusterName=cluster.name if cluster else "",
            RegistryId=registry.id if registry else "",
            RegistryName=registry.name if registry else declared,
            RegistryLoginServer=registry.login_server if registry else "",
            ResourceId=subject.id if subject else "",
            SubscriptionId=subject.subscription_id if subject else "",
            ResourceGroup=subject.resource_group if subject else "",
            PrincipalId=principal,
            Owner=owner,
            RegistryOwner=registry.owner if registry else "",
            PairSource=source,
            Message=result.message,
            Remediation=_remediation(rule, result, values),
            Evidence=result.evidence,
        )
