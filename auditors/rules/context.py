"""What a rule sees: one cluster, one registry, or one cluster-registry pair, plus shared analyses.

Shared analyses (pull principal, RBAC, egress, routes) are computed once per object and cached, so
rules stay small and no rule carries its own copy of the logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from auditors import network, rbac
from auditors.model import (
    IDENTITY_MANAGED,
    IDENTITY_NONE,
    IDENTITY_SERVICE_PRINCIPAL,
    Cluster,
    Inventory,
    Registry,
)


@dataclass
class PullPrincipal:
    object_id: str
    kind: str  # "kubelet identity" or "service principal"
    reason: str = ""  # why object_id is empty


@dataclass
class Environment:
    """Run-wide state shared by every context."""

    inventory: Inventory
    principal_map: dict[str, str] = field(default_factory=dict)  # service principal appId -> object id

    @cached_property
    def roles(self) -> rbac.RoleResolver:
        return rbac.RoleResolver(self.inventory)


def pull_principal(cluster: Cluster, env: Environment) -> PullPrincipal:
    kind = cluster.identity_kind
    if kind == IDENTITY_MANAGED:
        object_id = cluster.kubelet_object_id or env.inventory.identities.get(cluster.kubelet_resource_id.lower(), "")
        if object_id:
            return PullPrincipal(object_id, "kubelet identity")
        return PullPrincipal("", "kubelet identity", "the cluster row names no kubelet identity object id")
    if kind == IDENTITY_SERVICE_PRINCIPAL:
        client_id = cluster.service_principal_client_id.lower()
        object_id = env.principal_map.get(client_id, "")
        if object_id:
            return PullPrincipal(object_id, "service principal")
        return PullPrincipal(
            "", "service principal",
            f"the cluster authenticates as service principal appId {client_id}; Resource Graph does not map appIds "
            "to object ids (add it under `principals:` in the pairs file)",
        )
    if kind == IDENTITY_NONE:
        return PullPrincipal("", "none", "the cluster has no identity (identity type None, no service principal)")
    return PullPrincipal("", "unknown", "the cluster row has neither servicePrincipalProfile nor identity")


class ClusterContext:
    def __init__(self, cluster: Cluster, env: Environment) -> None:
        self.cluster = cluster
        self.env = env

    @property
    def inventory(self) -> Inventory:
        return self.env.inventory

    @cached_property
    def principal(self) -> PullPrincipal:
        return pull_principal(self.cluster, self.env)

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
    def __init__(self, cluster: ClusterContext, registry: Registry, sources: list[str]) -> None:
        self.cluster_ctx = cluster
        self.cluster = cluster.cluster
        self.registry = registry
        self.sources = sources
        self.env = cluster.env

    @property
    def inventory(self) -> Inventory:
        return self.env.inventory

    def pull_access(self, mode: str) -> rbac.PullAccess:
        return rbac.pull_access(self.cluster_ctx.principal.object_id, self.registry.id, mode, self.env.roles)

    @cached_property
    def public_route(self) -> network.PublicRoute:
        return network.public_route(self.registry, self.cluster_ctx.egress)

    @cached_property
    def private_route(self) -> network.PrivateRoute:
        vnets, _ = self.cluster_ctx.vnets
        return network.private_route(self.registry, vnets, self.inventory)
