"""What a rule sees: one cluster, one registry, or one cluster-registry pair, plus shared analyses.

Shared analyses (pull principal, RBAC, egress, routes, observed pulls) are computed once per object and cached,
so rules stay small and no rule carries its own copy of the logic. Each context also holds the verdicts of the
rules evaluated on it, so a rule that builds on others (the pull verdict AKS-ACR-000, the observed-failure
explanations of AKS-ACR-002) reads their results instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

from auditors import network, rbac
from auditors.arm import subscription_of
from auditors.identity import PullPrincipal, pull_principal
from auditors.model import Cluster, Inventory, Registry
from auditors.observed import ObservedPulls
from auditors.rules import RULES, Result, Rule, Status, unknown


@dataclass
class Environment:
    """Run-wide state shared by every context: the inventory, what the pairs file declares on top of it, and the
    moment verdicts are made for (the snapshot's capture time, else now)."""

    inventory: Inventory
    declared_principals: dict[str, str] = field(default_factory=dict)  # pairs file: appId -> object id
    declared_groups: dict[str, frozenset[str]] = field(default_factory=dict)  # pairs file: group -> member ids
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    credential_warn_days: int = 30
    pull_lookback: timedelta = timedelta(days=1)

    @cached_property
    def roles(self) -> rbac.RoleResolver:
        return rbac.RoleResolver(self.inventory)

    @cached_property
    def principal_map(self) -> dict[str, str]:
        """Service principal appId -> object id: Microsoft Graph's answers, overridden by the pairs file."""
        found = {app: sp.object_id for app, sp in self.inventory.service_principals.items() if sp.object_id}
        return {**found, **self.declared_principals}

    @cached_property
    def group_members(self) -> dict[str, frozenset[str] | None]:
        """Group id -> service-principal members (None: not resolved): Microsoft Graph, overridden by the pairs
        file."""
        return {**self.inventory.group_members, **self.declared_groups}

    @cached_property
    def observed(self) -> ObservedPulls:
        """Pulls Container Insights saw in the window that ends at `now`."""
        return ObservedPulls.from_rows(self.inventory.insights_rows, captured_at=self.now, lookback=self.pull_lookback)

    def prepare(self) -> None:
        """Work out now what every context reads, so that processes forked after this share it instead of each
        working it out again (Container Insights' pulls alone take 0.2 s on the synthetic estate)."""
        for name, member in vars(Environment).items():
            if isinstance(member, cached_property):
                getattr(self, name)


def evaluate(rule: Rule, ctx) -> Result:
    """A rule's verdict on one context, with the engine-wide safeguards: a rule error is Unknown, never a lost
    finding; a verdict the rule does not declare is a rule error; conflicting rows of a resource make its verdicts
    Unknown; a Fail reached while collection missed data the rule depends on becomes Unknown, naming the gap."""
    try:
        result = rule.check(ctx)
        if result.status not in rule.meta.statuses:
            raise ValueError(f"returned {result.status.value}, which it does not declare")
    except Exception as exc:  # a rule bug on one odd row must not drop every other finding
        return unknown(f"Internal error while evaluating {rule.meta.id}: {type(exc).__name__}: {exc}",
                       error=type(exc).__name__)
    conflicting = [key for key in ctx.resource_keys if key in ctx.inventory.conflicting]
    if conflicting and result.status != Status.UNKNOWN:
        return unknown(f"Several rows of {conflicting[0]} disagree, so which is right is unknown (was: "
                       f"{result.status.value}: {result.message})", **result.evidence, conflictingRows=conflicting)
    return _unless_data_missing(rule, result, ctx.inventory, ctx.subscriptions)


def _unless_data_missing(rule: Rule, result: Result, inventory: Inventory, subscriptions: set[str]) -> Result:
    if result.status != Status.FAIL or not inventory.gaps:
        return result
    gaps = inventory.missing(rule.meta.needs, subscriptions) + inventory.missing(rule.meta.needs_anywhere, None)
    if not gaps:
        return result
    reasons = "; ".join(dict.fromkeys(f"{gap.query}: {gap.reason}" for gap in gaps))
    return unknown(f"{result.message} This may be wrong: data it depends on could not be collected ({reasons}).",
                   **result.evidence, wouldFail=True, missingData=[gap.to_dict() for gap in gaps[:10]])


class _Context:
    env: Environment

    @property
    def inventory(self) -> Inventory:
        return self.env.inventory

    @cached_property
    def _results(self) -> dict[str, Result]:
        return {}

    def result(self, rule_id: str) -> Result:
        """This rule's verdict here, evaluated once."""
        result = self._results.get(rule_id)
        if result is None:
            result = self._results[rule_id] = evaluate(RULES[rule_id], self)
        return result


class ClusterContext(_Context):
    def __init__(self, cluster: Cluster, env: Environment) -> None:
        self.cluster = cluster
        self.env = env

    @property
    def resource_keys(self) -> tuple[str, ...]:
        return (self.cluster.key,)

    @cached_property
    def subscriptions(self) -> set[str]:
        return {self.cluster.subscription_id, subscription_of(self.cluster.kubelet_resource_id)} - {""}

    @cached_property
    def principal(self) -> PullPrincipal:
        return pull_principal(self.cluster, self.inventory, self.env.principal_map)

    @cached_property
    def egress(self) -> network.Egress:
        return network.cluster_egress(self.cluster, self.inventory)

    @cached_property
    def vnets(self) -> tuple[list[str], str]:
        return network.node_vnets(self.cluster, self.inventory)


class RegistryContext(_Context):
    def __init__(self, registry: Registry, env: Environment) -> None:
        self.registry = registry
        self.env = env

    @property
    def resource_keys(self) -> tuple[str, ...]:
        return (self.registry.key,)

    @property
    def subscriptions(self) -> set[str]:
        return {self.registry.subscription_id}


class PairContext(_Context):
    def __init__(self, cluster: ClusterContext, registry: Registry) -> None:
        self.cluster_ctx = cluster
        self.cluster = cluster.cluster
        self.registry = registry
        self.env = cluster.env

    @property
    def resource_keys(self) -> tuple[str, ...]:
        return (self.cluster.key, self.registry.key)

    @property
    def subscriptions(self) -> set[str]:
        return {self.cluster.subscription_id, self.registry.subscription_id}

    def pull_access(self, mode: str) -> rbac.PullAccess:
        return rbac.pull_access(self.cluster_ctx.principal.object_id, self.registry.id, mode, self.env.roles,
                                self.env.group_members)

    @cached_property
    def public_route(self) -> network.PublicRoute:
        return network.public_route(self.registry, self.cluster_ctx.egress)

    @cached_property
    def private_route(self) -> network.PrivateRoute:
        vnets, _ = self.cluster_ctx.vnets
        return network.private_route(self.registry, vnets, self.inventory)

    @property
    def login_server(self) -> str:
        return self.registry.login_server or f"{self.registry.name.lower()}.azurecr.io"
