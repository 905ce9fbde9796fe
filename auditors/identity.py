"""Which principal pulls images for a cluster."""

from __future__ import annotations

from dataclasses import dataclass

from auditors.model import (
    IDENTITY_MANAGED,
    IDENTITY_NONE,
    IDENTITY_SERVICE_PRINCIPAL,
    Cluster,
    Inventory,
)


@dataclass
class PullPrincipal:
    object_id: str
    kind: str  # "kubelet identity" or "service principal"
    reason: str = ""  # why object_id is empty



def pull_principal(cluster: Cluster, inventory: Inventory, principal_map: dict[str, str]) -> PullPrincipal:
    """The principal whose role assignments decide pulls: the kubelet identity, or the service principal."""
    kind = cluster.identity_kind
    if kind == IDENTITY_MANAGED:
        object_id = cluster.kubelet_object_id or inventory.identities.get(cluster.kubelet_resource_id.lower(), "")
        if object_id:
            return PullPrincipal(object_id, "kubelet identity")
        return PullPrincipal("", "kubelet identity", "the cluster row names no kubelet identity object id")
    if kind == IDENTITY_SERVICE_PRINCIPAL:
        client_id = cluster.service_principal_client_id.lower()
        object_id = principal_map.get(client_id, "")
        if object_id:
            return PullPrincipal(object_id, "service principal")
        known = inventory.service_principals.get(client_id)
        if known is not None and not known.object_id:
            return PullPrincipal("", "service principal", f"the cluster's service principal appId {client_id} no "
                                                          "longer exists in Microsoft Graph (see AKS-ACR-012)")
        return PullPrincipal(
            "", "service principal",
            f"the cluster authenticates as service principal appId {client_id}, whose object id Microsoft Graph did "
            f"not give ({graph_state(inventory, 'Application.Read.All')}); it can also be declared under "
            "`principals:` in the pairs file",
        )
    if kind == IDENTITY_NONE:
        return PullPrincipal("", "none", "the cluster has no identity (identity type None, no service principal)")
    return PullPrincipal("", "unknown", "the cluster row has neither servicePrincipalProfile nor identity")


def graph_state(inventory: Inventory, permission: str) -> str:
    """Why Microsoft Graph data is missing, for messages: not permitted, not queried, or not found."""
    permitted = inventory.permissions.get(permission)
    if permitted is False:
        return f"the auditor's identity lacks the Microsoft Graph permission {permission}"
    if permission not in inventory.permissions:
        return f"Microsoft Graph was not queried; it needs {permission}"
    return "the lookup did not answer"
