"""What a rule sees: one cluster, one registry, or one cluster-registry pair, plus shared analyses.

Shared analyses (pull principal, RBAC, egress, routes) are computed once per object and cached, so
rules stay small and no rule carries its own copy of the logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from auditors import network, rbac
from auditors.identity import PullPrincipal, pull_principal
from auditors.model import Cluster, Inventory, Registry


@dataclass
class Environment:
    """Run-wide state shared by every context: the inventory, what the pairs file declares on top of it, and the
    moment verdicts are made for (the snapshot's capture time, else now)."""

    inventory: Inventory
    declared_principals: dict[str, str] = field(default_factory=dict)  # pairs file: appId -> object id
    declared_groups: dict[str, frozenset[str]] = field(default_factory=dict)  # pairs file: group -> member ids
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    credential_warn_days: int = 30

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


class ClusterContext:
    def __init__(self, cluster: Cluster, env: Environment) -> None:
        self.cluster = cluster
        self.env = env

    @property
    def inventory(self) -> Inventory:
        return self.env.inventory

    @cached_property
    def principal(self) -> PullPrincipal:
        return pull_principal(self.cluster, self.inventory, self.env.principal_map)

    @cached_property
    def egress(self) -> network.Egress:
        return network.cluster_egress(self.cluster, self.inventory)

    @cached_property
    def vnets(self) -> tuple[list[str], str]:
        return network.node_vnets(self.cluster, self.inventory)


class RegistryContext:
    def __init__(self, registry: Registry, env: Environment) -> None:
        self.registry = registry
        self.env = env

    @property
    def inventory(self) -> Inventory:
        return self.env.inventory


class PairContext:
    def __init__(self, cluster: ClusterContext, registry: Registry) -> None:
        self.cluster_ctx = cluster
        self.cluster = cluster.cluster
        self.registry = registry
        self.env = cluster.env

    @property
    def inventory(self) -> Inventory:
        return self.env.inventory

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
